import { test } from "node:test";
import assert from "node:assert/strict";
import { gemmChainTwin, gemmErrorScale, gemmTwin } from "./twins/gemm.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/kernels/kernels.ts";

/**
 * Every kernel build: both variants, each on an unshared memory and on a
 * shared one (the worker pool's threads build, whose tiles module holds a
 * copy of the main tile per thread slot).
 */
interface Build {
  variant: KernelVariant;
  shared: boolean;
  name: string;
}
const BUILDS: Build[] = VARIANTS.flatMap((variant) => [
  { variant, shared: false, name: variant },
  { variant, shared: true, name: `${variant} shared` },
]);

const memoryOf = (build: Build, megabytes: number) =>
  new TestMemory(build.variant, megabytes, build.shared);

// Tile edges (assembly/gemm.ts): the main tiles are a row pair by 24 or 16
// columns (three or two 8-wide B panels), run by the generated tiles module
// over a copy of the panels in a fixed region (24-column chunks while they
// leave a multiple of 16 plus under 8); columns past the last full 16 run 2x16 or
// 2x8 tiles (4x8 for two pairs at once when 8 or fewer are left), the
// last of an odd row count 1x32 and 1x8 tiles. k runs in
// blocks of 64 (KC: a shorter block enters the written-out loop part way),
// 256 at a time (KS), rows in blocks of 256 (MC). N = 1 runs 8 rows
// (row-major A) or 4 (A^T) at a time.
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 17, 9],
  [1, 7, 33],
  [1, 5, 40],
  [2, 9, 16],
  [2, 3, 17],
  [2, 6, 24],
  [3, 5, 7],
  [3, 4, 9],
  [4, 8, 8],
  [4, 1, 15],
  [5, 7, 15],
  [5, 8, 8],
  [6, 8, 8],
  [7, 9, 16],
  [8, 2, 25],
  [9, 4, 32],
  [11, 3, 17],
  [12, 16, 24],
  [13, 31, 33],
  [94, 64, 8],
  [95, 12, 7],
  [96, 64, 8],
  [97, 255, 9],
  [25, 256, 31],
  [19, 257, 40],
  [101, 600, 23],
  [200, 130, 130],
  [1003, 13, 11],
  [6, 1030, 9],
  [3, 40, 1029],
  // Wide and deep at once: several k-blocks, 33-38 panels.
  [23, 300, 300],
  [97, 256, 264],
  // k-block edges (KC 64, entered part way) with full 16-column chunks.
  [2, 64, 16],
  [2, 65, 16],
  [3, 63, 32],
  [4, 128, 48],
  [5, 129, 31],
  [6, 1, 16],
  // Few rows (2-15): tiles of up to 5 rows with A in a region, 1x8 on a partial panel.
  [6, 70, 41],
  [11, 130, 24],
  [15, 64, 17],
  [14, 300, 8],
  // Row blocks (MC 256) and k superblocks (KS 256).
  [191, 20, 16],
  [255, 20, 16],
  [256, 70, 16],
  [257, 70, 33],
  [513, 16, 16],
  [40, 257, 48],
  // Even rows past the few-rows kernels, whole 16-column chunks only.
  [16, 5, 16],
  [64, 300, 32],
  [386, 70, 64],
  [200, 1030, 48],
  // One even row block (16-256 rows) with B row-major: the region copies read
  // B's rows in place, only the columns past the last full 16 are packed.
  [64, 90, 41],
  [96, 300, 20],
  [130, 70, 7],
  [96, 65, 72],
  [256, 70, 40],
  // 24-column chunks, then 16-column ones, then a tail: 24 + 16 + 1, 24 + 2 x 16
  // (not 2 x 24 + 8), 3 x 24 over two row blocks and a short k-block.
  [30, 130, 41],
  [66, 64, 56],
  [200, 70, 72],
  [38, 129, 24],
  // N = 1: a dot product per row (row-major A), four rows as lanes (A^T).
  [8, 4, 1],
  [9, 7, 1],
  [17, 256, 1],
  [3, 300, 1],
  [1003, 64, 1],
];

/**
 * Random A (M x K), B (K x N floats, read as op(B) = B or B^T), bias and a
 * start for C in `mem`, drawn from `seed`; the returned call runs C = c0 +
 * A op(B) + bias, ReLU on kernels `k` and returns C.
 */
function randomGemm(mem: TestMemory, M: number, K: number, N: number, seed: number) {
  const next = rng(seed);
  const A = mem.f32(M * K, randomArray(M * K, next));
  const B = mem.f32(K * N, randomArray(K * N, next));
  const bias = mem.f32(N, randomArray(N, next));
  const c0 = randomArray(M * N, next);
  const C = mem.f32(M * N);
  const work = mem.alloc(mem.k.gemmWorkspaceBytes(K, N));
  return (k: Kernels, transB: boolean): Float32Array => {
    C.view.set(c0);
    k.gemm(
      C.ptr,
      A.ptr,
      B.ptr,
      bias.ptr,
      work,
      M,
      K,
      N,
      K,
      transB ? K : N,
      N,
      false,
      transB,
      true,
      true,
    );
    return C.view.slice();
  };
}

interface Operands {
  a: Float32Array;
  b: Float32Array;
  c0: Float32Array;
  bias: Float32Array;
}

/** f32 operands of an M x K x N product (A M*K or K*M values, B K*N), seeded. */
function operands(M: number, K: number, N: number, seed: number): Operands {
  const next = rng(seed);
  return {
    a: Float32Array.from(randomArray(M * K, next)),
    b: Float32Array.from(randomArray(K * N, next)),
    c0: Float32Array.from(randomArray(M * N, next)),
    bias: Float32Array.from(randomArray(N, next)),
  };
}

interface Call {
  transA: boolean;
  transB: boolean;
  accumulate: boolean;
  bias: boolean;
  relu: boolean;
}

const label = (build: Build, [M, K, N]: number[], call: Call) =>
  `${build.name} ${call.transA ? "T" : "N"}${call.transB ? "T" : "N"} ${M}x${K}x${N} ` +
  `acc=${call.accumulate} bias=${call.bias} relu=${call.relu}`;

/**
 * Runs `gemm` and `gemmPacked` (op(B) packed by `gemmPackB`) on the same
 * operands in a fresh memory; returns both C.
 */
function runBoth(
  build: Build,
  [M, K, N]: [number, number, number],
  ops: Operands,
  call: Call,
): { perCall: Float32Array; packed: Float32Array } {
  const mem = memoryOf(build, 16);
  const k = mem.k;
  const A = mem.f32(M * K, ops.a), B = mem.f32(K * N, ops.b), bias = mem.f32(N, ops.bias);
  const C1 = mem.f32(M * N, ops.c0), C2 = mem.f32(M * N, ops.c0);
  const work = mem.alloc(k.gemmWorkspaceBytes(K, N));
  const packed = mem.alloc(k.gemmPackedBBytes(K, N));
  const biasPtr = call.bias ? bias.ptr : 0;
  const lda = call.transA ? M : K;
  const { transA, transB, accumulate, relu } = call;
  k.gemm(
    C1.ptr,
    A.ptr,
    B.ptr,
    biasPtr,
    work,
    M,
    K,
    N,
    lda,
    transB ? K : N,
    N,
    transA,
    transB,
    accumulate,
    relu,
  );
  k.gemmPackB(packed, B.ptr, K, N, transB);
  k.gemmPacked(C2.ptr, A.ptr, packed, biasPtr, work, M, K, N, lda, N, transA, accumulate, relu);
  return { perCall: C1.view.slice(), packed: C2.view.slice() };
}

/** The chain twin of `call`, fused or not. */
function chain(
  [M, K, N]: [number, number, number],
  ops: Operands,
  call: Call,
  fused: boolean,
): Float32Array {
  return gemmChainTwin(ops.a, ops.b, M, K, N, {
    transA: call.transA,
    transB: call.transB,
    c: call.accumulate ? ops.c0 : undefined,
    bias: call.bias ? ops.bias : undefined,
    relu: call.relu,
    fused,
  });
}

/** Index of the first element whose bits differ, or -1. */
function firstBitDifference(x: Float32Array, y: Float32Array): number {
  const xb = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const yb = new Uint32Array(y.buffer, y.byteOffset, y.length);
  for (let i = 0; i < xb.length; i++) if (xb[i] !== yb[i]) return i;
  return -1;
}

/**
 * Whether the build's multiply-add rounds once. The plain simd build
 * multiplies then adds; `relaxed_madd` may do either (the relaxed-simd
 * spec allows both): V8 on x86-64 with FMA3 fuses, JavaScriptCore (Bun)
 * does not. Told apart by a product of two steps: (1 + 2^-12)^2 - (1 +
 * 2^-12)^2 is -2^-24 when the second step is fused (the first product
 * rounds to 1 + 2^-11), 0 when its product is rounded first.
 */
function fusedMultiplyAdd(build: Build): boolean {
  const mem = memoryOf(build, 1);
  const x = 1 + 2 ** -12;
  // 1x2 times 2x2 (N = 2: the panel tiles); column 0 of B is [x, x].
  const A = mem.f32(2, [x, -x]), B = mem.f32(4, [x, 0, x, 0]), C = mem.f32(2);
  const work = mem.alloc(mem.k.gemmWorkspaceBytes(2, 2));
  mem.k.gemm(C.ptr, A.ptr, B.ptr, 0, work, 1, 2, 2, 2, 2, 2, false, false, false, false);
  assert.ok(C.view[0] === 0 || C.view[0] === -(2 ** -24), `${build.name}: C = ${C.view[0]}`);
  return C.view[0] !== 0;
}

const FUSED = new Map(BUILDS.map((b) => [b.name, fusedMultiplyAdd(b)]));

test("gemm simd: the plain simd builds multiply, then add (two roundings)", () => {
  for (const build of BUILDS.filter((b) => b.variant === "simd")) {
    assert.equal(fusedMultiplyAdd(build), false, build.name);
  }
});

/**
 * Both entries against the chain twin bit for bit (which also makes them
 * equal to each other), and the chain twin against the f64 product within
 * f32 rounding.
 */
function checkExact(
  build: Build,
  shape: [number, number, number],
  call: Call,
  seed: number,
) {
  const [M, K, N] = shape;
  const ops = operands(M, K, N, seed);
  const { perCall, packed } = runBoth(build, shape, ops, call);
  const name = label(build, shape, call);
  const expected = chain(shape, ops, call, FUSED.get(build.name)!);
  const i = firstBitDifference(perCall, expected);
  if (i >= 0) assert.fail(`${name}: gemm C[${i}] = ${perCall[i]}, chain twin ${expected[i]}`);
  const j = firstBitDifference(packed, perCall);
  if (j >= 0) assert.fail(`${name}: gemmPacked C[${j}] = ${packed[j]}, gemm ${perCall[j]}`);
  // The chain twin itself against the f64 product (once per case: the
  // shared builds share the unshared builds' twin values).
  if (build.shared) return;
  const exact = gemmTwin(ops.a, ops.b, M, K, N, {
    transA: call.transA,
    transB: call.transB,
    c: call.accumulate ? ops.c0 : undefined,
    bias: call.bias ? ops.bias : undefined,
    relu: call.relu,
  });
  const scale = gemmErrorScale(ops.a, ops.b, M, K, N, call.transA, call.transB);
  for (let e = 0; e < M * N; e++) {
    const tol = 4e-7 * (scale[e] + 2) * Math.sqrt(K + 1);
    if (!(Math.abs(expected[e] - exact[e]) <= tol)) {
      assert.fail(`${name}: chain twin C[${e}] = ${expected[e]}, f64 product ${exact[e]}`);
    }
  }
}

const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;
const opName = (transA: boolean, transB: boolean) => `${transA ? "T" : "N"}${transB ? "T" : "N"}`;

for (const build of BUILDS) {
  const variant = build.name;
  for (const [transA, transB] of TRANSPOSES) {
    const name = opName(transA, transB);
    test(`gemm ${variant} ${name}: every tile edge shape, per call and pre-packed, is the f32 chain twin bit for bit`, () => {
      const call = { transA, transB, accumulate: false, bias: false, relu: false };
      SHAPES.forEach((shape, i) => checkExact(build, shape, call, i));
    });
    test(`gemm ${variant} ${name}: accumulate, bias and ReLU epilogues`, () => {
      let seed = 100;
      for (
        const shape of [
          [1, 3, 5],
          [3, 7, 17],
          [7, 13, 9],
          [13, 300, 17],
          [98, 40, 16],
          [21, 70, 48],
        ] as const
      ) {
        for (const accumulate of [false, true]) {
          for (const bias of [false, true]) {
            for (const relu of [false, true]) {
              checkExact(build, [...shape], { transA, transB, accumulate, bias, relu }, seed++);
            }
          }
        }
      }
    });
  }

  // ReLU is f32x4.max(x, 0) in two instructions (assembly/simd.ts `relu`,
  // scripts/gemm_tiles.ts): NaN must stay NaN and -0 become +0 in every
  // tile. A row of tiny negative products gives -0 in the relaxed builds
  // (fma rounds -1e-60 + 0 to -0; mul then add gives +0).
  test(`gemm ${variant}: ReLU keeps NaN and turns -0 into +0 in every tile`, () => {
    const fused = FUSED.get(build.name)!;
    for (const [M, K, N] of [[1, 3, 40], [3, 5, 20], [41, 5, 40], [200, 70, 33]]) {
      for (const [transA, transB] of TRANSPOSES) {
        const nanRow = (i: number) => i % 3 === 1;
        const a = new Float32Array(M * K).fill(-1e-30), b = new Float32Array(K * N).fill(1e-30);
        for (let i = 0; i < M; i++) if (nanRow(i)) a[transA ? i : i * K] = NaN;
        const ops = { a, b, c0: new Float32Array(M * N), bias: new Float32Array(N) };
        const call = { transA, transB, accumulate: false, bias: false };
        const name = label(build, [M, K, N], { ...call, relu: true });
        const on = runBoth(build, [M, K, N], ops, { ...call, relu: true });
        const off = runBoth(build, [M, K, N], ops, { ...call, relu: false });
        for (let e = 0; e < M * N; e++) {
          const nan = nanRow(Math.floor(e / N));
          for (const got of [on.perCall[e], on.packed[e]]) {
            if (nan ? !Number.isNaN(got) : !Object.is(got, 0)) {
              assert.fail(`${name}: C[${e}] = ${Object.is(got, -0) ? "-0" : got} after ReLU`);
            }
          }
          // Without ReLU the same product is -0 where the FMA is fused: the case is real.
          if (!nan && !Object.is(off.perCall[e], fused ? -0 : 0)) {
            assert.fail(`${name}: C[${e}] = ${off.perCall[e]} without ReLU`);
          }
        }
      }
    }
  });

  test(`gemm ${variant}: serving shapes (1-10 rows x 256 x 1536, NT, pre-packed) match the chain twin`, () => {
    for (const M of [1, 2, 3, 4, 10]) {
      checkExact(build, [M, 256, 1536], {
        transA: false,
        transB: true,
        accumulate: false,
        bias: true,
        relu: true,
      }, M);
    }
  });

  test(`gemm ${variant}: every thread slot (its own region, or none past the last) gives the same bits`, () => {
    // 37 rows run the 2x16 tiles; 7 and 13 rows the few-rows kernels, which only
    // slot 0 has (slots 1-9 run 7 rows as pairs).
    for (const [M, K, N] of [[37, 150, 48], [7, 150, 45], [13, 70, 40]]) {
      const mem = memoryOf(build, 4);
      const gemmNT = randomGemm(mem, M, K, N, 21);
      const run = (k: Kernels) => gemmNT(k, true);
      const expected = run(mem.k);
      // Slots 1-7 have regions of their own in the shared build, 8 and 9 run
      // without the generated tiles; an unshared build has one region.
      for (const slot of [1, 2, 7, 8, 9]) {
        const k = instantiateKernels(mem.instance.memory, build.variant).exports;
        k.setThreadSlot(slot);
        const i = firstBitDifference(run(k), expected);
        assert.equal(i, -1, `${M}x${K}x${N} slot ${slot}: C[${i}] differs from slot 0`);
      }
    }
  });

  test(`gemm ${variant}: the main tile runs from its thread slot's region in the reserved bytes`, () => {
    // The generated tiles read B's 16- or 24-column chunks from a fixed region
    // per thread slot (1024 + 6144 x slot, KC = 64 rows of 16 or 24 floats):
    // after a call, the region holds the last chunk of the last k-block. 32
    // columns run as two 16-column chunks, 48 as two 24-column ones (three
    // 16-column ones where the 2x24 tile is off: the plain simd build, Bun).
    const M = 20, K = 64; // 16 rows or more: the 2-row tiles, not the few-rows kernels
    const wide = memoryOf(build, 1).k.gemmWideTiles() === 1 ? 24 : 16;
    for (const [N, chunk] of [[32, 16], [48, wide]]) {
      const mem = memoryOf(build, 2);
      const B = mem.f32(K * N, Array.from({ length: K * N }, (_, i) => i + 1));
      const A = mem.f32(M * K), C = mem.f32(M * N);
      const work = mem.alloc(mem.k.gemmWorkspaceBytes(K, N));
      const memory = mem.instance.memory;
      const region = (slot: number) =>
        new Float32Array(memory.buffer, 1024 + 6144 * slot, K * chunk);
      const lastChunk = Array.from({ length: K * chunk }, (_, i) => {
        const [k, j] = [Math.floor(i / chunk), i % chunk];
        return k * N + N - chunk + j + 1; // B[k, N - chunk + j]
      });
      const call = (k: Kernels) =>
        k.gemm(C.ptr, A.ptr, B.ptr, 0, work, M, K, N, K, N, N, false, false, false, false);
      for (const slot of build.shared ? [0, 1, 7] : [0]) {
        for (const s of [0, 1, 7]) region(s).fill(0);
        const k = instantiateKernels(memory, build.variant).exports;
        k.setThreadSlot(slot);
        call(k);
        assert.deepEqual(Array.from(region(slot)), lastChunk, `N ${N}: slot ${slot}'s region`);
        for (const other of [0, 1, 7].filter((s) => s !== slot)) {
          assert.ok(
            region(other).every((v) => v === 0),
            `slot ${slot} wrote slot ${other}'s region`,
          );
        }
      }
      // An unshared build has one region, whatever slot it is told.
      if (!build.shared) {
        region(0).fill(0);
        const k = instantiateKernels(memory, build.variant).exports;
        k.setThreadSlot(3);
        call(k);
        assert.deepEqual(Array.from(region(0)), lastChunk);
      }
    }
  });

  test(`gemm ${variant}: 2x24 tiles run where the engine holds them in registers; off, the same bits`, () => {
    // V8 (Deno) runs them in the relaxed-simd builds; Bun's JavaScriptCore
    // spills their 15 vectors (kernels.ts turns them off there); the plain
    // simd build has none.
    const mem = memoryOf(build, 4);
    const bun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
    const engineDefault = mem.k.gemmWideTiles() === 1;
    assert.equal(engineDefault, build.variant === "relaxed-simd" && !bun);
    for (const [M, K, N] of [[64, 130, 72], [30, 64, 56], [300, 70, 41]]) {
      const gemmNN = randomGemm(mem, M, K, N, 31);
      const run = (wide: boolean) => {
        mem.k.setGemmWideTiles(wide);
        assert.equal(mem.k.gemmWideTiles() === 1, wide && build.variant === "relaxed-simd");
        return gemmNN(mem.k, false);
      };
      const i = firstBitDifference(run(false), run(true));
      assert.equal(i, -1, `${M}x${K}x${N}: C[${i}] differs between 2x16 and 2x24 tiles`);
    }
    mem.k.setGemmWideTiles(engineDefault);
  });

  test(`gemm ${variant}: an operand in the reserved first 64 KiB traps instead of being overwritten`, () => {
    const mem = memoryOf(build, 4);
    const A = mem.f32(4 * 16), B = mem.f32(16 * 16), C = mem.f32(4 * 16);
    const work = mem.alloc(mem.k.gemmWorkspaceBytes(16, 16));
    const call = (c: number, a: number, b: number, w: number) => () =>
      mem.k.gemm(c, a, b, 0, w, 4, 16, 16, 16, 16, 16, false, false, false, false);
    call(C.ptr, A.ptr, B.ptr, work)();
    for (const low of [64, 1024, 65536 - 64]) {
      assert.throws(call(low, A.ptr, B.ptr, work), WebAssembly.RuntimeError, "C");
      assert.throws(call(C.ptr, low, B.ptr, work), WebAssembly.RuntimeError, "A");
      assert.throws(call(C.ptr, A.ptr, low, work), WebAssembly.RuntimeError, "B");
      assert.throws(call(C.ptr, A.ptr, B.ptr, low), WebAssembly.RuntimeError, "work");
      assert.throws(() => mem.k.gemmPackB(low, B.ptr, 16, 16, false), WebAssembly.RuntimeError);
      assert.throws(() => mem.k.gemmPackB(work, low, 16, 16, false), WebAssembly.RuntimeError);
    }
  });

  test(`gemm ${variant}: K = 0 applies only the epilogue`, () => {
    const mem = memoryOf(build, 1);
    const C = mem.f32(6, [1, -2, 3, -4, 5, -6]);
    const bias = mem.f32(3, [0.5, 0.5, 0.5]);
    mem.k.gemm(C.ptr, 0, 0, bias.ptr, 0, 2, 0, 3, 0, 3, 3, false, false, true, true);
    assert.deepEqual(Array.from(C.view), [1.5, 0, 3.5, 0, 5.5, 0]);
    mem.k.gemm(C.ptr, 0, 0, 0, 0, 2, 0, 3, 0, 3, 3, false, false, false, false);
    assert.deepEqual(Array.from(C.view), [0, 0, 0, 0, 0, 0]);
    C.view.set([1, -2, 3, -4, 5, -6]);
    mem.k.gemmPacked(C.ptr, 0, 0, bias.ptr, 0, 2, 0, 3, 0, 3, false, true, true);
    assert.deepEqual(Array.from(C.view), [1.5, 0, 3.5, 0, 5.5, 0]);
  });

  // Guards around C, the packed B and the workspace: each region is exactly
  // as large as the size functions say.
  test(`gemm ${variant}: writes nothing outside C, the packed B or the workspace`, () => {
    const cases = [
      [7, 5, 11, false, false],
      [13, 300, 17, true, true],
      [9, 7, 1, false, true],
    ] as const;
    for (const [M, K, N, transA, transB] of cases) {
      const mem = memoryOf(build, 4);
      const next = rng(9);
      const A = mem.f32(M * K, randomArray(M * K, next));
      const B = mem.f32(K * N, randomArray(K * N, next));
      const guard = 16;
      const guarded = (floats: number) => {
        const block = mem.f32(floats + 2 * guard);
        block.view.fill(42);
        return { ptr: block.ptr + 4 * guard, view: block.view, floats };
      };
      const C = guarded(M * N);
      const work = guarded(mem.k.gemmWorkspaceBytes(K, N) / 4);
      const packed = guarded(mem.k.gemmPackedBBytes(K, N) / 4);
      const lda = transA ? M : K;
      mem.k.gemm(
        C.ptr,
        A.ptr,
        B.ptr,
        0,
        work.ptr,
        M,
        K,
        N,
        lda,
        transB ? K : N,
        N,
        transA,
        transB,
        false,
        false,
      );
      mem.k.gemmPackB(packed.ptr, B.ptr, K, N, transB);
      mem.k.gemmPacked(C.ptr, A.ptr, packed.ptr, 0, work.ptr, M, K, N, lda, N, transA, true, true);
      for (const [name, region] of Object.entries({ C, work, packed })) {
        for (let i = 0; i < guard; i++) {
          assert.equal(region.view[i], 42, `${name}: before it at ${i}`);
          assert.equal(region.view[guard + region.floats + i], 42, `${name}: after it at ${i}`);
        }
      }
    }
  });

  // Linear layer Y = X W: the backward GEMMs (NT for dX, TN for dW) must be
  // the gradient of L = sum(G * Y), checked by central differences of the
  // f64 forward.
  test(`gemm ${variant}: NT and TN give the finite-difference gradient of NN`, () => {
    const mem = memoryOf(build, 1);
    const [Bn, F, H] = [5, 7, 9];
    const next = rng(3);
    const x = randomArray(Bn * F, next), w = randomArray(F * H, next);
    const g = randomArray(Bn * H, next);
    const loss = (xv: Float64Array, wv: Float64Array) =>
      gemmTwin(xv, wv, Bn, F, H).reduce((s, y, i) => s + y * g[i], 0);
    const X = mem.f32(Bn * F, x), W = mem.f32(F * H, w), G = mem.f32(Bn * H, g);
    const dX = mem.f32(Bn * F), dW = mem.f32(F * H, new Float32Array(F * H).fill(0.25));
    const work = mem.alloc(
      Math.max(mem.k.gemmWorkspaceBytes(H, F), mem.k.gemmWorkspaceBytes(Bn, H)),
    );
    mem.k.gemm(dX.ptr, G.ptr, W.ptr, 0, work, Bn, H, F, H, H, F, false, true, false, false);
    mem.k.gemm(dW.ptr, X.ptr, G.ptr, 0, work, F, Bn, H, F, H, H, true, false, true, false);
    // Twin in f64 on the f32-rounded values the kernel saw.
    const xf = Float64Array.from(X.view), wf = Float64Array.from(W.view);
    const dxRef = finiteDifferences(xf, (v) => loss(v, wf));
    const dwRef = finiteDifferences(wf, (v) => loss(xf, v)).map((v) => v + 0.25);
    assertClose(dX.view, dxRef, "dX", { rtol: 1e-4, atol: 1e-4 });
    assertClose(dW.view, dwRef, "dW (accumulated onto 0.25)", { rtol: 1e-4, atol: 1e-4 });
  });
}

// Row ranges: with `lda`, a call over rows [r0, r1) of op(A) and C gives
// those rows of the full call bit for bit, whichever tiles cover them (the
// threaded GEMM, src/kernels/threads.ts, relies on it). Compared: one call,
// the pool's split (chunks of 12), odd chunks crossing the row pairs and
// MC = 256, and one call per row; per call and pre-packed; across KC = 64
// and KS = 256.
function rowSplitCase(
  k: Kernels,
  mem: TestMemory,
  [M, K, N]: [number, number, number],
  transA: boolean,
  transB: boolean,
  packedB: boolean,
): void {
  const next = rng(77);
  const A = mem.f32(M * K, randomArray(M * K, next));
  const B = mem.f32(K * N, randomArray(K * N, next));
  const bias = mem.f32(N, randomArray(N, next));
  const c0 = randomArray(M * N, next);
  const work = mem.alloc(k.gemmWorkspaceBytes(K, N));
  const packed = mem.alloc(k.gemmPackedBBytes(K, N));
  k.gemmPackB(packed, B.ptr, K, N, transB);
  const lda = transA ? M : K;
  const run = (ranges: number[][]): Uint32Array => {
    const C = mem.f32(M * N, c0);
    for (const [r0, r1] of ranges) {
      const a = A.ptr + 4 * (transA ? r0 : r0 * lda);
      const c = C.ptr + 4 * r0 * N;
      if (packedB) {
        k.gemmPacked(c, a, packed, bias.ptr, work, r1 - r0, K, N, lda, N, transA, true, true);
      } else {
        k.gemm(
          c,
          a,
          B.ptr,
          bias.ptr,
          work,
          r1 - r0,
          K,
          N,
          lda,
          transB ? K : N,
          N,
          transA,
          transB,
          true,
          true,
        );
      }
    }
    return new Uint32Array(C.view.buffer, C.ptr, M * N).slice();
  };
  const chunks = (size: number) =>
    Array.from({ length: Math.ceil(M / size) }, (_, i) => [i * size, Math.min(M, (i + 1) * size)]);
  const full = run([[0, M]]);
  assert.deepEqual(run(chunks(12)), full, "chunks of 12 rows");
  assert.deepEqual(
    run([[0, 5], [5, 12], [12, 109], [109, 110], [110, 203], [203, M]]),
    full,
    "odd ranges",
  );
  assert.deepEqual(run(chunks(1)), full, "row by row");
}

for (const build of BUILDS) {
  for (const [transA, transB] of [[false, false], [false, true], [true, false]] as const) {
    const name = opName(transA, transB);
    test(`gemm ${build.name} ${name}: full, split and row-by-row calls agree bit for bit`, () => {
      const mem = memoryOf(build, 16);
      const shapes: [number, number, number][] = [
        [213, 300, 21],
        [213, 300, 1],
        [101, 260, 270],
        [213, 70, 48],
        [300, 70, 48],
      ];
      for (const shape of shapes) {
        rowSplitCase(mem.k, mem, shape, transA, transB, false);
        rowSplitCase(mem.k, mem, shape, transA, transB, true);
      }
    });
  }
}

// Strides: operands that are column blocks of wider matrices (one expert's
// columns of a [B, E*H] stack) give the packed call's result bit for bit, and
// C's other columns stay untouched.
for (const variant of VARIANTS) {
  for (const [transA, transB] of [[false, false], [false, true], [true, false]] as const) {
    const name = `${transA ? "T" : "N"}${transB ? "T" : "N"}`;
    test(`gemm ${variant} ${name}: ldb and ldc address column blocks of wider matrices`, () => {
      // N = 1 with B^T also takes the single-column path (a strided C column); with a strided
      // non-transposed B it takes the panel path (another summation order), not compared here.
      // 38 and 64 rows with B row-major: the tiles' region copies read the wide B in place.
      const shapes = transB ? [[37, 300, 21], [37, 300, 1]] : [[37, 300, 21], [38, 300, 21], [
        64,
        70,
        40,
      ]];
      for (const [M, K, N] of shapes) {
        const mem = new TestMemory(variant, 4);
        const next = rng(5);
        const [aRows, aCols] = transA ? [K, M] : [M, K], [bRows, bCols] = transB ? [N, K] : [K, N];
        const a = randomArray(aRows * aCols, next), b = randomArray(bRows * bCols, next);
        const bias = mem.f32(N, randomArray(N, next));
        const c0 = randomArray(M * N, next);
        const A = mem.f32(aRows * aCols, a), B = mem.f32(bRows * bCols, b);
        const packed = mem.f32(M * N, c0);
        // The same B inside a wider matrix (7 columns on each side), C likewise.
        const ldb = bCols + 14, ldc = N + 9;
        const wideB = mem.f32(bRows * ldb, randomArray(bRows * ldb, next));
        for (let r = 0; r < bRows; r++) {
          wideB.view.set(B.view.subarray(r * bCols, (r + 1) * bCols), r * ldb + 7);
        }
        const wideC = mem.f32(M * ldc, new Float32Array(M * ldc).fill(42));
        for (let r = 0; r < M; r++) {
          wideC.view.set(packed.view.subarray(r * N, (r + 1) * N), r * ldc + 4);
        }
        const work = mem.alloc(mem.k.gemmWorkspaceBytes(K, N));
        const lda = transA ? M : K;
        mem.k.gemm(
          packed.ptr,
          A.ptr,
          B.ptr,
          bias.ptr,
          work,
          M,
          K,
          N,
          lda,
          bCols,
          N,
          transA,
          transB,
          true,
          true,
        );
        mem.k.gemm(
          wideC.ptr + 16,
          A.ptr,
          wideB.ptr + 28,
          bias.ptr,
          work,
          M,
          K,
          N,
          lda,
          ldb,
          ldc,
          transA,
          transB,
          true,
          true,
        );
        for (let r = 0; r < M; r++) {
          for (let j = 0; j < ldc; j++) {
            const got = wideC.view[r * ldc + j];
            const want = j >= 4 && j < 4 + N ? packed.view[r * N + j - 4] : 42;
            if (!Object.is(got, want)) assert.fail(`C[${r}, ${j}] = ${got}, expected ${want}`);
          }
        }
      }
    });
  }
}

import { test } from "node:test";
import assert from "node:assert/strict";
import { gemmErrorScale, gemmTwin } from "./twins/gemm.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

// Tile edges: MR is 6 (relaxed) or 4 (simd), NR 8, KC 256, MC 96.
const SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 17, 9],
  [3, 5, 7],
  [4, 8, 8],
  [5, 7, 15],
  [6, 8, 8],
  [7, 9, 16],
  [11, 3, 17],
  [12, 16, 24],
  [13, 31, 33],
  [96, 64, 8],
  [97, 255, 9],
  [25, 256, 31],
  [19, 257, 40],
  [101, 600, 23],
  [200, 130, 130],
];

function checkGemm(
  variant: (typeof VARIANTS)[number],
  [M, K, N]: [number, number, number],
  transA: boolean,
  transB: boolean,
  accumulate: boolean,
  withBias: boolean,
  relu: boolean,
  seed: number,
) {
  const mem = new TestMemory(variant, 16);
  const next = rng(seed);
  const a = randomArray(M * K, next);
  const b = randomArray(K * N, next);
  const c0 = randomArray(M * N, next);
  const bias = randomArray(N, next);
  const A = mem.f32(M * K, a), B = mem.f32(K * N, b), C = mem.f32(M * N, c0);
  const Bias = mem.f32(N, bias);
  const work = mem.alloc(mem.k.gemmWorkspaceBytes(K, N));
  mem.k.gemm(
    C.ptr,
    A.ptr,
    B.ptr,
    withBias ? Bias.ptr : 0,
    work,
    M,
    K,
    N,
    transA ? M : K,
    transB ? K : N,
    N,
    transA,
    transB,
    accumulate,
    relu,
  );
  // Compare against the f32-rounded inputs (the kernel sees f32).
  const f = (x: Float64Array) => Float32Array.from(x);
  const expected = gemmTwin(f(a), f(b), M, K, N, {
    transA,
    transB,
    c: accumulate ? f(c0) : undefined,
    bias: withBias ? f(bias) : undefined,
    relu,
  });
  const scale = gemmErrorScale(f(a), f(b), M, K, N, transA, transB);
  const label = `${variant} ${transA ? "T" : "N"}${
    transB ? "T" : "N"
  } ${M}x${K}x${N} acc=${accumulate} bias=${withBias} relu=${relu}`;
  for (let i = 0; i < M * N; i++) {
    const tol = 4e-7 * (scale[i] + 2) * Math.sqrt(K + 1);
    if (!(Math.abs(C.view[i] - expected[i]) <= tol)) {
      assert.fail(`${label}: C[${i}] = ${C.view[i]}, expected ${expected[i]}`);
    }
  }
}

for (const variant of VARIANTS) {
  for (const [transA, transB] of [[false, false], [false, true], [true, false], [true, true]]) {
    const name = `${transA ? "T" : "N"}${transB ? "T" : "N"}`;
    test(`gemm ${variant} ${name}: every tile edge shape matches the f64 twin`, () => {
      SHAPES.forEach((shape, i) =>
        checkGemm(variant, shape, transA, transB, false, false, false, i)
      );
    });
    test(`gemm ${variant} ${name}: accumulate, bias and ReLU epilogues`, () => {
      let seed = 100;
      for (const shape of [[1, 3, 5], [7, 13, 9], [13, 300, 17], [98, 40, 16]] as const) {
        for (const accumulate of [false, true]) {
          for (const bias of [false, true]) {
            for (const relu of [false, true]) {
              checkGemm(variant, [...shape], transA, transB, accumulate, bias, relu, seed++);
            }
          }
        }
      }
    });
  }

  test(`gemm ${variant}: K = 0 applies only the epilogue`, () => {
    const mem = new TestMemory(variant, 1);
    const C = mem.f32(6, [1, -2, 3, -4, 5, -6]);
    const bias = mem.f32(3, [0.5, 0.5, 0.5]);
    mem.k.gemm(C.ptr, 0, 0, bias.ptr, 0, 2, 0, 3, 0, 3, 3, false, false, true, true);
    assert.deepEqual(Array.from(C.view), [1.5, 0, 3.5, 0, 5.5, 0]);
    mem.k.gemm(C.ptr, 0, 0, 0, 0, 2, 0, 3, 0, 3, 3, false, false, false, false);
    assert.deepEqual(Array.from(C.view), [0, 0, 0, 0, 0, 0]);
  });

  test(`gemm ${variant}: writes nothing outside C`, () => {
    const mem = new TestMemory(variant, 1);
    const [M, K, N] = [7, 5, 11];
    const next = rng(9);
    const A = mem.f32(M * K, randomArray(M * K, next));
    const B = mem.f32(K * N, randomArray(K * N, next));
    const block = mem.f32(M * N + 32);
    block.view.fill(42);
    const cPtr = block.ptr + 16 * 4;
    const work = mem.alloc(mem.k.gemmWorkspaceBytes(K, N));
    mem.k.gemm(cPtr, A.ptr, B.ptr, 0, work, M, K, N, K, N, N, false, false, false, false);
    for (let i = 0; i < 16; i++) assert.equal(block.view[i], 42, `before C at ${i}`);
    for (let i = 16 + M * N; i < M * N + 32; i++) {
      assert.equal(block.view[i], 42, `after C at ${i}`);
    }
  });

  // Linear layer Y = X W: the backward GEMMs (NT for dX, TN for dW) must be
  // the gradient of L = sum(G * Y), checked by central differences of the
  // f64 forward.
  test(`gemm ${variant}: NT and TN give the finite-difference gradient of NN`, () => {
    const mem = new TestMemory(variant, 1);
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
// those rows of the full call bit for bit (the threaded GEMM relies on it).
// Ranges start on and off the tile height, and cross MC = 96 and KC = 256.
for (const variant of VARIANTS) {
  for (const [transA, transB] of [[false, false], [false, true], [true, false]] as const) {
    const name = `${transA ? "T" : "N"}${transB ? "T" : "N"}`;
    test(`gemm ${variant} ${name}: a row range equals those rows of the full call`, () => {
      const [M, K, N] = [203, 300, 21];
      const mem = new TestMemory(variant, 4);
      const next = rng(77);
      const A = mem.f32(M * K, randomArray(M * K, next));
      const B = mem.f32(K * N, randomArray(K * N, next));
      const bias = mem.f32(N, randomArray(N, next));
      const c0 = randomArray(M * N, next);
      const full = mem.f32(M * N, c0);
      const part = mem.f32(M * N, c0);
      const work = mem.alloc(mem.k.gemmWorkspaceBytes(K, N));
      const lda = transA ? M : K, ldb = transB ? K : N;
      const strides = [lda, ldb, N] as const;
      mem.k.gemm(
        full.ptr,
        A.ptr,
        B.ptr,
        bias.ptr,
        work,
        M,
        K,
        N,
        ...strides,
        transA,
        transB,
        true,
        true,
      );
      for (const [r0, r1] of [[0, 5], [5, 12], [12, 109], [109, 110], [110, 203]]) {
        const a = A.ptr + 4 * (transA ? r0 : r0 * lda);
        const c = part.ptr + 4 * r0 * N;
        mem.k.gemm(
          c,
          a,
          B.ptr,
          bias.ptr,
          work,
          r1 - r0,
          K,
          N,
          ...strides,
          transA,
          transB,
          true,
          true,
        );
      }
      for (let i = 0; i < M * N; i++) {
        if (!Object.is(part.view[i], full.view[i])) {
          assert.fail(`C[${i}] = ${part.view[i]} by ranges, ${full.view[i]} in one call`);
        }
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
      const [M, K, N] = [37, 300, 21];
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
    });
  }
}

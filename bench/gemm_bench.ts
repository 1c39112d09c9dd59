// GEMM throughput on the MMoE shapes M x K x N: the 15 of the Taobao model
// at batch 1024 and 4096 (F = 256, experts [512, 256, 128], towers [256,
// 128, 64]) as NN, NT and TN, then the shapes the model uses once experts
// are stacked (1024x256x1536), the towers, the gates (N = 3, or 6 stacked)
// and the serving path (1-100 rows, NT on packed weights).
//
// Per shape: the scalar TypeScript loop (baseline), `gemm` (B packed on
// every call) and `gemmPacked` (B packed once, as the model's weights are)
// in both builds, and both on 2 threads (rows, or columns for few rows,
// split over the kernel pool of src/kernels/threads.ts as the model splits
// them). The peak probe of each build runs first in the same process.
// `deno task bench:report bench/gemm_bench.ts` prints GFLOP/s = 2*M*K*N /
// best time and the share of that peak (of one core: 2 threads reach 2.0 at
// most).
import { createArenaMemory } from "../src/kernels/arena.ts";
import {
  bestKernelVariant,
  type GemmOp,
  instantiateKernels,
  KERNEL_RESERVED_BYTES,
  type Kernels,
  type KernelVariant,
} from "../src/kernels/kernels.ts";
import { KernelPool, threadsSupported } from "../src/kernels/threads.ts";
import { VARIANTS } from "../tests/_util.ts";
import { benchPeak } from "./_peak.ts";

type Op = "NN" | "NT" | "TN";
interface Case {
  op: Op;
  M: number;
  K: number;
  N: number;
}

const MMOE_SHAPES: [number, number, number][] = [
  [1024, 256, 512],
  [1024, 512, 256],
  [1024, 256, 128],
  [1024, 128, 64],
  [4096, 256, 512],
];
const CASES: Case[] = [
  ...MMOE_SHAPES.flatMap(([M, K, N]) =>
    (["NN", "NT", "TN"] as const).map((op) => ({ op, M, K, N }))
  ),
  { op: "NT", M: 1024, K: 256, N: 1536 }, // 3 experts' first layers stacked
  { op: "NT", M: 1024, K: 128, N: 256 }, // tower layer
  { op: "NT", M: 1024, K: 64, N: 1 }, // tower output
  { op: "NT", M: 1024, K: 256, N: 3 }, // gate
  { op: "NT", M: 1024, K: 256, N: 6 }, // two gates stacked
  ...[1, 2, 4, 10, 100].flatMap((M) => [
    { op: "NT" as const, M, K: 256, N: 1536 }, // serving: stacked experts
    { op: "NT" as const, M, K: 128, N: 256 }, // serving: tower
  ]),
];

const floats = (f: (c: Case) => number) => Math.max(...CASES.map(f));
const A_FLOATS = floats(({ M, K }) => M * K);
const B_FLOATS = floats(({ K, N }) => K * N);
const C_FLOATS = floats(({ M, N }) => M * N);

/** One memory with A, B, C, scratch per thread and packed B per weight shape. */
class BenchMemory {
  readonly k: Kernels;
  readonly f32: Float32Array;
  readonly a: number;
  readonly b: number;
  readonly c: number;
  readonly works: number[];
  readonly pool: KernelPool | null;
  #next: number;
  #packed = new Map<string, number>();

  constructor(variant: KernelVariant, threads: number) {
    const probe = instantiateKernels(new WebAssembly.Memory({ initial: 1 }), variant).exports;
    const workBytes = floats(({ K, N }) => probe.gemmWorkspaceBytes(K, N));
    const packedBytes = 2 * CASES.reduce((s, { K, N }) => s + probe.gemmPackedBBytes(K, N), 0);
    const bytes = KERNEL_RESERVED_BYTES + 4 * (A_FLOATS + B_FLOATS + C_FLOATS) +
      threads * workBytes + packedBytes + 65536;
    const memory = threads > 1
      ? createArenaMemory(bytes, { shared: true })
      : new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) });
    this.k = instantiateKernels(memory, variant).exports;
    this.f32 = new Float32Array(memory.buffer);
    this.a = KERNEL_RESERVED_BYTES;
    this.b = this.a + 4 * A_FLOATS;
    this.c = this.b + 4 * B_FLOATS;
    this.works = Array.from({ length: threads }, (_, t) => this.c + 4 * C_FLOATS + t * workBytes);
    this.#next = this.c + 4 * C_FLOATS + threads * workBytes;
    for (let i = this.a / 4; i < this.c / 4; i++) this.f32[i] = Math.sin(i) * 0.5;
    this.pool = threads > 1 ? new KernelPool(memory, variant, this.works, this.k) : null;
  }

  /** op(B) of `c` packed by gemmPackB (once per weight shape). */
  packed({ op, K, N }: Case): number {
    const transB = op === "NT";
    const key = `${K}x${N} ${transB}`;
    let offset = this.#packed.get(key);
    if (offset === undefined) {
      offset = this.#next;
      this.#next += Math.ceil(this.k.gemmPackedBBytes(K, N) / 64) * 64;
      this.k.gemmPackB(offset, this.b, K, N, transB);
      this.#packed.set(key, offset);
    }
    return offset;
  }
}

/** The plain version: triple loop over the same f32 memory, no blocking. */
function scalarGemm(s: BenchMemory, { op, M, K, N }: Case): void {
  const { f32 } = s;
  const transA = op === "TN", transB = op === "NT";
  const a = s.a / 4, b = s.b / 4, c = s.c / 4;
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let sum = 0;
      for (let k = 0; k < K; k++) {
        sum += f32[a + (transA ? k * M + i : i * K + k)] *
          f32[b + (transB ? j * K + k : k * N + j)];
      }
      f32[c + i * N + j] = sum;
    }
  }
}

for (const variant of VARIANTS) benchPeak(variant);

const single = new Map(VARIANTS.map((v) => [v, new BenchMemory(v, 1)]));
const best = bestKernelVariant();
const twoThreads = threadsSupported() ? new BenchMemory(best, 2) : null;
if (twoThreads) {
  await twoThreads.pool!.start();
  globalThis.addEventListener("unload", () => twoThreads.pool!.close());
}

for (const c of CASES) {
  const { op, M, K, N } = c;
  const transA = op === "TN", transB = op === "NT";
  const lda = transA ? M : K;
  const group = `${op} ${M}x${K}x${N}`;
  const big = M * K * N > 1 << 24;
  Deno.bench({
    name: `${group} scalar TS`,
    group,
    baseline: true,
    n: big ? 1 : undefined,
    warmup: big ? 1 : undefined,
    fn: () => scalarGemm(single.get("simd")!, c),
  });
  for (const variant of VARIANTS) {
    const s = single.get(variant)!;
    Deno.bench({
      name: `${group} wasm ${variant}`,
      group,
      fn: () => {
        s.k.gemm(
          s.c,
          s.a,
          s.b,
          0,
          s.works[0],
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
      },
    });
    if (op === "TN") continue; // B is an activation there: packed on every call
    const packed = s.packed(c);
    Deno.bench({
      name: `${group} wasm ${variant} packed`,
      group,
      fn: () => {
        s.k.gemmPacked(s.c, s.a, packed, 0, s.works[0], M, K, N, lda, N, transA, false, false);
      },
    });
  }
  if (twoThreads && M >= 24) {
    const s = twoThreads;
    const op: GemmOp = {
      c: s.c,
      ldc: N,
      a: s.a,
      lda,
      transA,
      b: s.b,
      ldb: transB ? K : N,
      transB,
      bias: 0,
      M,
      K,
      N,
      accumulate: false,
      relu: false,
    };
    Deno.bench({
      name: `${group} wasm ${best} 2 threads`,
      group,
      fn: () => s.pool!.gemms(s.k, [op]),
    });
    if (op.transA) continue;
    const packed = { ...op, b: s.packed(c), packed: true };
    Deno.bench({
      name: `${group} wasm ${best} packed 2 threads`,
      group,
      fn: () => s.pool!.gemms(s.k, [packed]),
    });
  }
}

// Packing a weight once per optimizer step: the stacked experts' first layer.
for (const transB of [true, false]) {
  const s = single.get(best)!;
  const [K, N] = [256, 1536];
  const packed = s.packed({ op: transB ? "NT" : "NN", M: 1, K, N });
  Deno.bench({
    name: `gemmPackB ${transB ? "B^T" : "B"} ${K}x${N} ${best} [${K * N} values]`,
    group: "pack",
    fn: () => s.k.gemmPackB(packed, s.b, K, N, transB),
  });
}

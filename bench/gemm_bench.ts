// GEMM throughput: NN (forward), NT (input gradient), TN (weight gradient) on
// the MMoE shapes M x K x N. GFLOP/s = 2*M*K*N / time; `deno task bench:report`
// prints it. The scalar TypeScript loop over the same memory is the baseline.
// The best variant also runs on 2 threads (rows split across a Worker pool
// on a shared memory, src/threads.ts).
import { createArenaMemory } from "../src/kernels/arena.ts";
import {
  bestKernelVariant,
  instantiateKernels,
  type Kernels,
  type KernelVariant,
} from "../src/kernels/kernels.ts";
import { GemmPool, threadsSupported } from "../src/kernels/threads.ts";
import { VARIANTS } from "../tests/_util.ts";

const SHAPES: [number, number, number][] = [
  [1024, 256, 512],
  [1024, 512, 256],
  [1024, 256, 128],
  [1024, 128, 64],
  [4096, 256, 512],
];
const CASES = [["NN", false, false], ["NT", false, true], ["TN", true, false]] as const;

interface Setup {
  k: Kernels;
  f32: Float32Array;
  a: number;
  b: number;
  c: number;
  work: number;
}

/** Scratch per thread: gemmWorkspaceBytes of the largest shape is ~0.6 MiB. */
const WORK_BYTES = 1 << 20;

function setup(
  variant: KernelVariant,
  [M, K, N]: [number, number, number],
  threads = 1,
): Setup & { pool: GemmPool | null } {
  const bytes = (M * K + K * N + M * N) * 4 + threads * WORK_BYTES + 4096;
  const memory = threads > 1
    ? createArenaMemory(bytes + 65536, { shared: true })
    : new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) + 1 });
  const { exports: k } = instantiateKernels(memory, variant);
  const f32 = new Float32Array(memory.buffer);
  const a = 1024, b = a + M * K * 4, c = b + K * N * 4, work = c + M * N * 4;
  for (let i = a / 4; i < c / 4; i++) f32[i] = Math.sin(i) * 0.5;
  const works = Array.from({ length: threads - 1 }, (_, t) => work + (t + 1) * WORK_BYTES);
  const pool = threads > 1 ? new GemmPool(memory, variant, works) : null;
  return { k, f32, a, b, c, work, pool };
}

/** The plain version: triple loop, f32 memory, no blocking. */
function scalarGemm(
  s: Setup,
  M: number,
  K: number,
  N: number,
  transA: boolean,
  transB: boolean,
): void {
  const { f32 } = s;
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

for (const shape of SHAPES) {
  const [M, K, N] = shape;
  for (const [name, transA, transB] of CASES) {
    const group = `${name} ${M}x${K}x${N}`;
    const plain = setup("simd", shape);
    Deno.bench({
      name: `${group} scalar TS`,
      group,
      baseline: true,
      n: 2,
      warmup: 1,
      fn: () => scalarGemm(plain, M, K, N, transA, transB),
    });
    for (const variant of VARIANTS) {
      const s = setup(variant, shape);
      Deno.bench({
        name: `${group} wasm ${variant}`,
        group,
        fn: () => {
          const [lda, ldb] = [transA ? M : K, transB ? K : N];
          s.k.gemm(s.c, s.a, s.b, 0, s.work, M, K, N, lda, ldb, N, transA, transB, false, false);
        },
      });
    }
    if (threadsSupported()) {
      const s = setup(bestKernelVariant(), shape, 2);
      await s.pool!.start();
      Deno.bench({
        name: `${group} wasm ${bestKernelVariant()} 2 threads`,
        group,
        fn: () => {
          const op = {
            c: s.c,
            ldc: N,
            a: s.a,
            lda: transA ? M : K,
            transA,
            b: s.b,
            ldb: transB ? K : N,
          };
          s.pool!.gemm(
            s.k,
            { ...op, transB, bias: 0, M, K, N, accumulate: false, relu: false },
            s.work,
          );
        },
      });
      globalThis.addEventListener("unload", () => s.pool!.close());
    }
  }
}

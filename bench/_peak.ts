/**
 * This core's Wasm SIMD multiply-add ceiling, measured in the same process
 * as the kernels compared with it: the probe (assembly/probe.ts) runs 12
 * register-resident f32x4 chains, relaxed madd in the relaxed-simd build and
 * mul + add in the simd build, exactly as the GEMM micro-kernels do, with
 * no memory access. Machines differ between runs (Zen 3 at 2.45-3 GHz,
 * Zen 5 at 3.3-4.3 GHz): GEMM and model figures are reported as a share of
 * this peak, with the absolute value beside it.
 *
 * A bench file calls {@link benchPeak} per kernel variant; `bench/report.ts`
 * finds those benches with {@link parsePeakBench} and divides every GFLOP/s
 * figure of the same variant by the peak. Scripts (`bench/train_bench.ts`,
 * `bench/compare.ts`) call {@link measurePeak}.
 *
 * @module
 */
import {
  bestKernelVariant,
  instantiateKernels,
  type KernelVariant,
} from "../src/kernels/kernels.ts";

/** Flops of one probe iteration: 12 chains x 4 lanes x (multiply + add). */
export const PEAK_FLOPS_PER_ITERATION = 96;

/** Iterations of one timed probe call: ~2-4 ms at 25-50 GFLOP/s. */
export const PEAK_ITERATIONS = 1_000_000;

/** Name of the peak bench of `variant`, carrying its flop count. */
export function peakBenchName(variant: KernelVariant): string {
  return `peak ${variant} [${PEAK_ITERATIONS * PEAK_FLOPS_PER_ITERATION} flop]`;
}

/** The variant and flops of a bench named by {@link peakBenchName}, or null. */
export function parsePeakBench(name: string): { variant: string; flops: number } | null {
  const match = name.match(/^peak (\S+) \[(\d+) flop\]$/);
  return match ? { variant: match[1], flops: Number(match[2]) } : null;
}

/** Registers the peak probe of `variant` as a `Deno.bench` (group "peak"). */
export function benchPeak(variant: KernelVariant): void {
  const { exports: k } = instantiateKernels(new WebAssembly.Memory({ initial: 1 }), variant);
  Deno.bench({
    name: peakBenchName(variant),
    group: "peak",
    fn: () => {
      k.peakProbe(PEAK_ITERATIONS, 0.999, 0.001);
    },
  });
}

/**
 * GFLOP/s per core of `variant` (default the build the models run) on this
 * thread, now: the best of `calls` timed probe calls (~3 ms each) after two
 * untimed ones. Best-of, because the machine may be shared: the peak is what
 * the core does when it runs, as the best round of a benchmark is.
 */
export function measurePeak(variant: KernelVariant = bestKernelVariant(), calls = 30): number {
  const { exports: k } = instantiateKernels(new WebAssembly.Memory({ initial: 1 }), variant);
  k.peakProbe(PEAK_ITERATIONS, 0.999, 0.001);
  k.peakProbe(PEAK_ITERATIONS, 0.999, 0.001);
  let best = Infinity;
  for (let i = 0; i < calls; i++) {
    const start = performance.now();
    k.peakProbe(PEAK_ITERATIONS, 0.999, 0.001);
    best = Math.min(best, performance.now() - start);
  }
  return (PEAK_ITERATIONS * PEAK_FLOPS_PER_ITERATION) / (best / 1000) / 1e9;
}

/** The reference GEMM, built on first use. */
let reference: (() => number) | null = null;

/**
 * GFLOP/s of a fixed GEMM on this thread, now: the experts' second layer
 * forward of the Taobao model (1024 x 512 by a pre-packed 512 x 256, NT,
 * bias and ReLU; ~6 ms), the best of two calls, on its own memory. Unlike
 * {@link measurePeak} (registers only) it reads L2, L3 and memory as the
 * model's kernels do, so a neighbour on a shared host that slows the
 * model slows it too: benches run it between rounds and drop the rounds
 * where it ran slow.
 */
export function referenceGemm(): number {
  if (reference === null) {
    const [M, K, N] = [1024, 512, 256];
    const memory = new WebAssembly.Memory({ initial: 128 });
    const { exports: k } = instantiateKernels(memory, bestKernelVariant());
    const f32 = new Float32Array(memory.buffer);
    let at = 65536;
    const alloc = (bytes: number) => {
      const p = at;
      at += Math.ceil(bytes / 64) * 64;
      return p;
    };
    const [a, w, bias] = [alloc(4 * M * K), alloc(4 * N * K), alloc(4 * N)];
    const [c, packed] = [alloc(4 * M * N), alloc(k.gemmPackedBBytes(K, N))];
    const work = alloc(k.gemmWorkspaceBytes(K, N));
    if (at > memory.buffer.byteLength) throw new Error("referenceGemm: memory too small");
    for (let i = a / 4; i < (bias + 4 * N) / 4; i++) f32[i] = Math.sin(i) * 0.5;
    k.gemmPackB(packed, w, K, N, true);
    reference = () => {
      let best = Infinity;
      for (let i = 0; i < 2; i++) {
        const start = performance.now();
        k.gemmPacked(c, a, packed, bias, work, M, K, N, K, N, false, false, true);
        best = Math.min(best, performance.now() - start);
      }
      return (2 * M * K * N) / (best / 1000) / 1e9;
    };
    reference();
  }
  return reference();
}

/**
 * The compute ceiling the MMoE benchmarks are measured against: GEMM FLOP
 * per sample, computed from the config, and a throughput as a share of this
 * machine's Wasm SIMD peak (peak GFLOP/s per core x threads / FLOP per
 * sample is the most samples/s the cores could do).
 *
 * FLOP counted: 2 K N per Linear [K -> N] per row (one multiply-add = 2).
 * Training runs three GEMMs per Linear: the forward, the weight gradient and
 * the input gradient. The input gradient of the first layers (experts, gates
 * or gate MLPs, all reading the group input) is computed too: it is what
 * the embedding rows receive, so training is exactly 3 x forward. Not
 * counted (< 0.3% for the Taobao config at batch 1024): the expert mixture
 * (2 E D per task), activations, softmax, losses, embedding gather/scatter
 * and the optimizer updates (about 10 flop per dense parameter per step).
 *
 * The peak is measured in the same process by default (the
 * register-resident FMA probe of `bench/_peak.ts`, {@link ceilingPeak}), or
 * passed in (`--peak <GFLOP/s per core>`) to compare runs against one figure.
 *
 * @module
 */
import type { ResolvedConfig } from "../src/config/config.ts";
import { measurePeak } from "./_peak.ts";

/** One Linear the forward runs per row, with how many copies (experts, tasks). */
export interface LinearShape {
  /** What it is: `expert layer 0`, `gate`, `tower layer 1`, `tower output`... */
  name: string;
  /** Input width K. */
  inWidth: number;
  /** Output width N. */
  outWidth: number;
  /** Copies: E for expert layers, T for gates and towers. */
  copies: number;
}

/** FLOP per sample of a config's model. */
export interface ModelFlops {
  /** Forward GEMM FLOP per sample (inference). */
  forward: number;
  /** Forward + input gradient + weight gradient: 3 x forward. */
  train: number;
  /** The Linears counted. */
  linears: LinearShape[];
}

/** Every Linear of `config`'s MMoE forward and its GEMM FLOP per sample. */
export function modelFlops(config: ResolvedConfig): ModelFlops {
  const E = config.numExpert, T = config.towers.length;
  const linears: LinearShape[] = [];
  const mlp = (what: string, inWidth: number, units: number[], copies: number): number => {
    units.forEach((outWidth, l) => {
      linears.push({
        name: `${what} layer ${l}`,
        inWidth: l === 0 ? inWidth : units[l - 1],
        outWidth,
        copies,
      });
    });
    return units.length > 0 ? units[units.length - 1] : inWidth;
  };
  const F = config.inputWidth;
  const D = mlp("expert", F, config.expertMlp.hiddenUnits, E);
  const gateIn = config.gateMlp ? mlp("gate mlp", F, config.gateMlp.hiddenUnits, T) : F;
  linears.push({ name: "gate", inWidth: gateIn, outWidth: E, copies: T });
  for (const tower of config.towers) {
    const h = mlp(`tower ${tower.name}`, D, tower.mlp?.hiddenUnits ?? [], 1);
    linears.push({
      name: `tower ${tower.name} output`,
      inWidth: h,
      outWidth: tower.numClass,
      copies: 1,
    });
  }
  const forward = linears.reduce((sum, l) => sum + 2 * l.inWidth * l.outWidth * l.copies, 0);
  return { forward, train: 3 * forward, linears };
}

/**
 * The share of the ceiling a throughput reaches: FLOP per item x items per
 * second / (peak GFLOP/s per core x threads). 1 is every core's SIMD
 * multiply-add unit busy all the time.
 */
export function shareOfPeak(
  flopPerItem: number,
  itemsPerSecond: number,
  peakGflops: number,
  threads = 1,
): number {
  return flopPerItem * itemsPerSecond / (peakGflops * 1e9 * threads);
}

/** `--peak` as a positive number of GFLOP/s per core, or null when not given. */
export function parsePeak(value: string | undefined): number | null {
  if (value === undefined) return null;
  const peak = Number(value);
  if (!(peak > 0) || !Number.isFinite(peak)) {
    throw new RangeError(`--peak: expected GFLOP/s per core (a positive number), got ${value}`);
  }
  return peak;
}

/** The peak of a run: `--peak` when given, else measured now on this thread. */
export function ceilingPeak(value: string | undefined): { gflops: number; source: string } {
  const given = parsePeak(value);
  if (given !== null) return { gflops: given, source: "--peak" };
  return { gflops: measurePeak(), source: "measured in this process (bench/_peak.ts)" };
}

/** `0.41` -> `41%`; "-" without a peak. */
export function formatShare(share: number | null): string {
  return share === null ? "-" : `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%`;
}

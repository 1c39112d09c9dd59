// Peak probe: the Wasm SIMD f32 multiply-add throughput of this core, in the
// same process as the kernels it is compared with (bench/_peak.ts).
//
// Twelve independent f32x4 chains acc = acc * s + t stay in registers (12
// accumulators + s + t, and one product temporary in the simd build: 15 of
// the 16 XMM registers V8 allocates), so the loop does no memory access and
// no other arithmetic. Twelve chains cover the multiply-add latency (4 cycles
// for an FMA, 3 + 3 for mul then add on Zen 3/Zen 5) at two per cycle: the
// loop runs at the FMA ports' throughput, 16 flop/cycle with 128-bit vectors.
// The relaxed-simd build uses `relaxed_madd` (one FMA where the host has
// one), the plain simd build mul + add (two instructions on separate ports),
// exactly as `fma` in simd.ts does for the GEMM micro-kernels.

import { fma, hsum } from "./simd";

/**
 * Runs `iterations` x 12 f32x4 multiply-adds acc = acc * s + t entirely in
 * registers (96 flop an iteration) and returns the sum of the accumulators
 * (so the loop is live).
 * With |s| < 1 the chains converge to t / (1 - s) and stay finite.
 */
export function peakProbe(iterations: i32, s: f32, t: f32): f32 {
  const vs = f32x4.splat(s);
  const vt = f32x4.splat(t);
  let a0 = f32x4.splat(0.0), a1 = f32x4.splat(0.1), a2 = f32x4.splat(0.2);
  let a3 = f32x4.splat(0.3), a4 = f32x4.splat(0.4), a5 = f32x4.splat(0.5);
  let a6 = f32x4.splat(0.6), a7 = f32x4.splat(0.7), a8 = f32x4.splat(0.8);
  let a9 = f32x4.splat(0.9), a10 = f32x4.splat(1.0), a11 = f32x4.splat(1.1);
  for (let i = 0; i < iterations; i++) {
    a0 = fma(a0, vs, vt);
    a1 = fma(a1, vs, vt);
    a2 = fma(a2, vs, vt);
    a3 = fma(a3, vs, vt);
    a4 = fma(a4, vs, vt);
    a5 = fma(a5, vs, vt);
    a6 = fma(a6, vs, vt);
    a7 = fma(a7, vs, vt);
    a8 = fma(a8, vs, vt);
    a9 = fma(a9, vs, vt);
    a10 = fma(a10, vs, vt);
    a11 = fma(a11, vs, vt);
  }
  const low = f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3));
  const mid = f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7));
  const high = f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11));
  return hsum(f32x4.add(low, f32x4.add(mid, high)));
}

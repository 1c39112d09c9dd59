// Shared helpers for every kernel family: f32x4 fma, partial loads and stores,
// horizontal sum, and table-free exp (scalar and f32x4).
//
// `fma(a, b, c)` is `a * b + c` on four f32 lanes. In the relaxed-simd build it
// is `f32x4.relaxed_madd` (one instruction where the host has FMA, and it
// saves the register a separate product needs); in the plain simd build it is
// mul then add. Results may differ in the last bit between the two builds.

// @ts-ignore: decorator
@inline
export function fma(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(f32x4.mul(a, b), c);
  }
}

/**
 * ReLU on four lanes, exactly f32x4.max(x, 0) (NaN stays NaN, -0 becomes
 * +0, like torch.relu): pmax(x, 0) is `x < 0 ? 0 : x` (one maxps; keeps
 * NaN and -0) and + 0 turns -0 into +0 without changing anything else. V8
 * lowers f32x4.max to ~8 instructions for its NaN and signed-zero rules;
 * these are two.
 */
// @ts-ignore: decorator
@inline
export function relu(x: v128): v128 {
  return f32x4.add(f32x4.pmax(x, f32x4.splat(0)), f32x4.splat(0));
}

/** Loads `count` (0..3) f32 from `ptr` into the low lanes, zero elsewhere. */
// @ts-ignore: decorator
@inline
export function loadPartial(ptr: usize, count: i32): v128 {
  let v = f32x4.splat(0);
  if (count > 0) v = f32x4.replace_lane(v, 0, load<f32>(ptr));
  if (count > 1) v = f32x4.replace_lane(v, 1, load<f32>(ptr, 4));
  if (count > 2) v = f32x4.replace_lane(v, 2, load<f32>(ptr, 8));
  return v;
}

/** Stores the low `count` (0..3) lanes of `v` to `ptr`. */
// @ts-ignore: decorator
@inline
export function storePartial(ptr: usize, v: v128, count: i32): void {
  if (count > 0) store<f32>(ptr, f32x4.extract_lane(v, 0));
  if (count > 1) store<f32>(ptr, f32x4.extract_lane(v, 1), 4);
  if (count > 2) store<f32>(ptr, f32x4.extract_lane(v, 2), 8);
}

/** Horizontal sum of four f32 lanes. */
// @ts-ignore: decorator
@inline
export function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) +
    f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3);
}

// ------------------------------------------------------------------------ exp
//
// Table-free on purpose: AssemblyScript's `Mathf.exp`/`Math.exp` (and `log`)
// read a lookup table from a data segment at a fixed low address, which the
// caller's arena owns (scripts/build_wasm.ts rejects any data section). Both
// take x <= 0 only, all the kernels need (softmax after max subtraction,
// e^-|z| in sigmoid, tanh, GELU): for x > 0 they are wrong, not just inexact.

/**
 * e^x for x <= 0 (or NaN), scalar: musl's table-free expf (Cody-Waite
 * reduction x = k ln2 + r, |r| <= ln2/2, rational approximation of e^r;
 * < 1 ulp). Results below e^-87 (~1.6e-38, near FLT_MIN) flush to 0.
 */
// @ts-ignore: decorator
@inline
export function expNonPositive(x: f32): f32 {
  if (x < -87) return 0;
  const ln2hi = reinterpret<f32>(0x3f317200); // 6.9314575195e-1
  const ln2lo = reinterpret<f32>(0x35bfbe8e); // 1.4286067653e-6
  const invln2 = reinterpret<f32>(0x3fb8aa3b); // 1.4426950216
  const P1 = reinterpret<f32>(0x3e2aaa8f); // 1.6666625440e-1
  const P2 = reinterpret<f32>(0xbb355215); // -2.7667332906e-3
  let k = 0;
  let hi = x;
  let lo: f32 = 0;
  if (x < -0.34657359) {
    // |x| > ln2/2: k = round(x / ln2) <= -1, and >= -126 since x >= -87.
    k = <i32>(invln2 * x - 0.5);
    hi = x - <f32>k * ln2hi;
    lo = <f32>k * ln2lo;
    x = hi - lo;
  } else if (x > -1.2207031e-4) {
    return 1 + x; // |x| < 2^-13: e^x = 1 + x to f32 precision
  }
  const xx = x * x;
  const c = x - xx * (P1 + xx * P2);
  const y: f32 = 1 + ((x * c) / (2 - c) - lo + hi);
  return y * reinterpret<f32>(<u32>(0x7f + k) << 23);
}

/** Below this e^x is under the smallest normal f32 and expNonPositiveVec returns 0. */
const EXP_VEC_LIMIT: f32 = -87.3;
const LOG2E: f32 = 1.442695;
/** ln 2 split so n * LN2_HI is exact for |n| < 2^15 (Cody-Waite reduction). */
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -0.00021219444;

/**
 * p * x + c on four lanes, one Horner step (plain mul + add, not `fma`:
 * both builds give the same bits).
 */
// @ts-ignore: decorator
@inline
export function horner(p: v128, x: v128, c: f32): v128 {
  return f32x4.add(f32x4.mul(p, x), f32x4.splat(c));
}

/**
 * e^x on four lanes for x <= 0 (or NaN), within 1.02 ulp; 0 below x = -87.3.
 * e^x = 2^n e^r with n = round(x log2 e), |r| <= ln2/2, e^r = 1 + r + r^2
 * P(r), P a degree-4 least-squares fit on Chebyshev nodes (numpy), and 2^n
 * built in the exponent bits (n in [-126, 0] on every lane not masked to 0).
 * ~7x faster than scalar `Mathf.expm1` (~28 ns a value).
 */
// @ts-ignore: decorator
@inline
export function expNonPositiveVec(x: v128): v128 {
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(LOG2E)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(LN2_HI)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(LN2_LO)));
  let p = f32x4.splat(0.0013934551);
  p = horner(p, r, 0.008363779);
  p = horner(p, r, 0.041666456);
  p = horner(p, r, 0.16666573);
  p = horner(p, r, 0.5);
  const er = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(r, r), p), r), f32x4.splat(1));
  const scale = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(er, scale), f32x4.lt(x, f32x4.splat(EXP_VEC_LIMIT)));
}

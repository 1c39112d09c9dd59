// Shared SIMD helpers for every kernel family.
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

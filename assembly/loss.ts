// Tower losses: fused sigmoid + binary cross-entropy with logits, and tzrec's
// per-row loss weights (sample weight, task space, mean normalisation, tower
// weight).
//
// Both run once per tower per step over B rows (BCE ~0.4 ms, weights ~30 us at
// B = 8192, against ~1 s of GEMMs per step), so they are scalar and spend f64
// where it buys exactness.

/**
 * e^-a for a >= 0 (or NaN): 1 / (1 + expm1(a)), within 2 ulp; 0 past a =
 * 88.72, where e^-a is subnormal. Not `Mathf.exp`: at -O3 it is table-based
 * and its table would be a data segment written into the caller's arena.
 * (activation.ts has an f32x4 exp; importing it would need an export, and
 * index.ts's `export *` makes every export a Wasm export.)
 */
// @ts-ignore: decorator
@inline
function expNeg(a: f32): f32 {
  return 1 / (1 + Mathf.expm1(a));
}

/**
 * Sigmoid + BCE with logits over B rows, one pass. Returns sum_i w_i l_i (f64)
 * with l_i = max(z,0) - z y + log(1 + exp(-|z|)) (torch BCEWithLogitsLoss,
 * stable for any |z|) and y = label (1 - s) + s/2 (tzrec label smoothing);
 * w_i = weights[i], or 1 when `weights` is 0. Writes probs[i] = sigmoid(z_i)
 * when `probs` is not 0 and dLogits[i] = gradScale * w_i * (sigmoid(z_i) - y_i)
 * when `dLogits` is not 0. `dLogits` or `probs` may equal `logits`.
 */
export function sigmoidBinaryCrossEntropy(
  dLogits: usize,
  probs: usize,
  logits: usize,
  labels: usize,
  weights: usize,
  B: i32,
  labelSmoothing: f32,
  gradScale: f32,
): f64 {
  const keep: f32 = 1 - labelSmoothing;
  const half: f32 = 0.5 * labelSmoothing;
  let total: f64 = 0;
  for (let i = 0; i < B; i++) {
    const off = <usize>i << 2;
    const z = load<f32>(logits + off);
    const y = load<f32>(labels + off) * keep + half;
    const w: f32 = weights != 0 ? load<f32>(weights + off) : 1;
    const e = expNeg(abs(z)); // e^-|z| in [0, 1]
    const r: f32 = 1 / (1 + e);
    const p = z >= 0 ? r : e * r;
    const zd = <f64>z;
    const loss = max(zd, 0) - zd * <f64>y + <f64>Mathf.log1p(e);
    total += <f64>w * loss;
    if (probs != 0) store<f32>(probs + off, p);
    if (dLogits != 0) store<f32>(dLogits + off, gradScale * w * (p - y));
  }
  return total;
}

/**
 * tzrec tower loss weights over B rows: w_i = sampleWeights[i] (or 1 when 0);
 * if `indicator` is not 0, w_i *= inWeight when indicator[i] > 0 else
 * outWeight; w /= mean(w), non-finite results set to 0 (a batch with no row
 * in the task space has mean 0 and gets all-zero weights, not NaN); w *=
 * towerWeight. `w` may equal `sampleWeights` or `indicator`.
 */
export function taskSpaceWeights(
  w: usize,
  sampleWeights: usize,
  indicator: usize,
  B: i32,
  inWeight: f64,
  outWeight: f64,
  towerWeight: f64,
): void {
  let sum: f64 = 0;
  for (let i = 0; i < B; i++) {
    const off = <usize>i << 2;
    let wi: f64 = sampleWeights != 0 ? <f64>load<f32>(sampleWeights + off) : 1;
    if (indicator != 0) wi *= load<f32>(indicator + off) > 0 ? inWeight : outWeight;
    const stored = <f32>wi;
    store<f32>(w + off, stored);
    sum += <f64>stored;
  }
  const mean = sum / <f64>B;
  for (let i = 0; i < B; i++) {
    const off = <usize>i << 2;
    let wi = <f64>load<f32>(w + off) / mean;
    if (!isFinite<f64>(wi)) wi = 0;
    store<f32>(w + off, <f32>(wi * towerWeight));
  }
}

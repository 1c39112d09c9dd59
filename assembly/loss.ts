// Tower losses, each fused with its gradient: sigmoid + binary cross-entropy
// with logits, softmax + cross-entropy, squared error; and tzrec's per-row
// loss weights (sample weight, task space, mean normalisation, tower weight).
//
// They run once per tower per step over B rows (BCE ~0.4 ms, weights ~30 us at
// B = 8192, against ~1 s of GEMMs per step), so they are scalar and spend f64
// where it buys exactness. exp is simd.ts's table-free `expNonPositive`
// (< 1 ulp); logs are `Mathf.log1p`/`Math.log1p` (musl, table-free), never
// `Math.log`, whose table would be a data segment written into the arena.

import { expNonPositive } from "./simd";

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
    const e = expNonPositive(-abs(z)); // e^-|z| in [0, 1]
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
 * Softmax + cross-entropy over B rows of C logits (B x C, row-major). labels[i]
 * is the class index stored as f32, in [0, C) (a label matching no class
 * leaves only the smoothing term). Returns sum_i w_i l_i (f64) with
 *   l_i = -sum_c t_ic log softmax(z_i)_c,  t_ic = (1 - s) [c == label_i] + s/C
 * (torch CrossEntropyLoss(label_smoothing=s)); w_i = weights[i], or 1 when
 * `weights` is 0. Writes probs[i,c] = softmax(z_i)_c when `probs` is not 0
 * and dLogits[i,c] = gradScale * w_i * (softmax(z_i)_c - t_ic) when `dLogits`
 * is not 0. `dLogits` or `probs` may equal `logits`.
 */
export function softmaxCrossEntropy(
  dLogits: usize,
  probs: usize,
  logits: usize,
  labels: usize,
  weights: usize,
  B: i32,
  C: i32,
  labelSmoothing: f32,
  gradScale: f32,
): f64 {
  const keep: f64 = 1 - <f64>labelSmoothing;
  const spread: f64 = <f64>labelSmoothing / <f64>C;
  const rowBytes = <usize>C << 2;
  // e^(z_c - max) waits in the first output asked for until the row sum is known.
  const parked = probs != 0 ? probs : dLogits;
  let total: f64 = 0;
  for (let i = 0; i < B; i++) {
    const off = <usize>i << 2;
    const row = <usize>i * rowBytes;
    const z = logits + row;
    const label = <i32>load<f32>(labels + off);
    const w: f64 = weights != 0 ? <f64>load<f32>(weights + off) : 1;
    let zMax = load<f32>(z);
    for (let c = 1; c < C; c++) zMax = max(zMax, load<f32>(z + (<usize>c << 2)));
    // With d_c = z_c - max <= 0 (in f64: exact unless the two exponents differ
    // by more than 29), l = log sum_c e^d_c - (1 - s) d_label - (s/C) sum_c d_c:
    // every term is >= 0, so nothing cancels, and logits of any size stay finite.
    let sum: f64 = 0;
    let dSum: f64 = 0;
    let dLabel: f64 = 0;
    for (let c = 0; c < C; c++) {
      const zc = load<f32>(z + (<usize>c << 2));
      const e = expNonPositive(zc - zMax);
      const d = <f64>zc - <f64>zMax;
      sum += <f64>e;
      dSum += d;
      if (c == label) dLabel = d;
      if (parked != 0) store<f32>(parked + row + (<usize>c << 2), e);
    }
    // sum >= 1 (the max contributes e^0), so sum - 1 is exact and
    // log1p(sum - 1) is log(sum) without Math.log's table.
    total += w * (Math.log1p(sum - 1) - keep * dLabel - spread * dSum);
    if (parked == 0) continue;
    const g = <f64>gradScale * w;
    for (let c = 0; c < C; c++) {
      const at = row + (<usize>c << 2);
      const p = <f64>load<f32>(parked + at) / sum;
      if (probs != 0) store<f32>(probs + at, <f32>p);
      if (dLogits != 0) {
        const target = c == label ? keep + spread : spread;
        store<f32>(dLogits + at, <f32>(g * (p - target)));
      }
    }
  }
  return total;
}

/**
 * Squared error over B rows (tzrec l2_loss: torch MSELoss before the mean):
 * returns sum_i w_i (y_i - label_i)^2 (f64), w_i = weights[i] or 1 when
 * `weights` is 0; writes dY[i] = gradScale * w_i * 2 (y_i - label_i) when `dY`
 * is not 0. `dY` may equal `y`.
 */
export function squaredError(
  dY: usize,
  y: usize,
  labels: usize,
  weights: usize,
  B: i32,
  gradScale: f32,
): f64 {
  let total: f64 = 0;
  for (let i = 0; i < B; i++) {
    const off = <usize>i << 2;
    const d = <f64>load<f32>(y + off) - <f64>load<f32>(labels + off);
    const w: f64 = weights != 0 ? <f64>load<f32>(weights + off) : 1;
    total += w * d * d;
    if (dY != 0) store<f32>(dY + off, <f32>(<f64>gradScale * w * 2 * d));
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

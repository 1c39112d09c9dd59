// Plain TypeScript twin of assembly/norm.ts: f64, textbook two-pass formulas,
// one obvious loop per formula. Matrices are B x H row-major.

/** Options of a BatchNorm1d forward, mirroring the kernel arguments. */
export interface BatchNormTwinOptions {
  momentum: number;
  eps: number;
  training: boolean;
}

/** What batchNormForwardTwin returns: the output, saved statistics and new running statistics. */
export interface BatchNormTwinResult {
  y: Float64Array;
  mean: Float64Array;
  invStd: Float64Array;
  runningMean: Float64Array;
  runningVar: Float64Array;
}

/**
 * torch.nn.BatchNorm1d: training normalises with the batch mean and biased
 * variance and moves the running statistics toward the batch mean and the
 * unbiased variance (the biased one when B = 1, where torch raises); eval
 * normalises with the running statistics.
 */
export function batchNormForwardTwin(
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  runningMean: ArrayLike<number>,
  runningVar: ArrayLike<number>,
  B: number,
  H: number,
  { momentum, eps, training }: BatchNormTwinOptions,
): BatchNormTwinResult {
  const mean = new Float64Array(H), invStd = new Float64Array(H);
  const newMean = Float64Array.from(runningMean), newVar = Float64Array.from(runningVar);
  for (let h = 0; h < H; h++) {
    if (training) {
      let sum = 0;
      for (let b = 0; b < B; b++) sum += x[b * H + h];
      const m = sum / B;
      let squares = 0;
      for (let b = 0; b < B; b++) squares += (x[b * H + h] - m) ** 2;
      const variance = squares / B;
      const unbiased = B > 1 ? squares / (B - 1) : variance;
      mean[h] = m;
      invStd[h] = 1 / Math.sqrt(variance + eps);
      newMean[h] = (1 - momentum) * runningMean[h] + momentum * m;
      newVar[h] = (1 - momentum) * runningVar[h] + momentum * unbiased;
    } else {
      mean[h] = runningMean[h];
      invStd[h] = 1 / Math.sqrt(runningVar[h] + eps);
    }
  }
  const y = new Float64Array(B * H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      y[b * H + h] = gamma[h] * (x[b * H + h] - mean[h]) * invStd[h] + beta[h];
    }
  }
  return { y, mean, invStd, runningMean: newMean, runningVar: newVar };
}

/**
 * Analytic training-mode BatchNorm backward, per column with xhat = (x -
 * mean) invStd: dx = gamma invStd (dy - mean_b(dy) - xhat mean_b(dy xhat));
 * dGamma = dGamma0 + sum_b dy xhat; dBeta = dBeta0 + sum_b dy.
 */
export function batchNormBackwardTwin(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  mean: ArrayLike<number>,
  invStd: ArrayLike<number>,
  B: number,
  H: number,
  dGamma0: ArrayLike<number>,
  dBeta0: ArrayLike<number>,
): { dx: Float64Array; dGamma: Float64Array; dBeta: Float64Array } {
  const dx = new Float64Array(B * H);
  const dGamma = Float64Array.from(dGamma0), dBeta = Float64Array.from(dBeta0);
  for (let h = 0; h < H; h++) {
    let sumDy = 0, sumDyXhat = 0;
    for (let b = 0; b < B; b++) {
      const i = b * H + h;
      sumDy += dy[i];
      sumDyXhat += dy[i] * (x[i] - mean[h]) * invStd[h];
    }
    dBeta[h] += sumDy;
    dGamma[h] += sumDyXhat;
    for (let b = 0; b < B; b++) {
      const i = b * H + h;
      const xhat = (x[i] - mean[h]) * invStd[h];
      dx[i] = gamma[h] * invStd[h] * (dy[i] - sumDy / B - xhat * sumDyXhat / B);
    }
  }
  return { dx, dGamma, dBeta };
}

/**
 * torch.nn.LayerNorm(H) on each of the G groups of H columns of every row of
 * a B x (G*H) batch (G LayerNorms side by side, group g with gamma and beta
 * at g*H): mean and invStd per (row, group), biased variance.
 */
export function layerNormForwardTwin(
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  B: number,
  G: number,
  H: number,
  eps: number,
): { y: Float64Array; mean: Float64Array; invStd: Float64Array } {
  const y = new Float64Array(B * G * H), mean = new Float64Array(B * G);
  const invStd = new Float64Array(B * G);
  for (let r = 0; r < B * G; r++) {
    const g = (r % G) * H;
    let sum = 0;
    for (let h = 0; h < H; h++) sum += x[r * H + h];
    const m = sum / H;
    let squares = 0;
    for (let h = 0; h < H; h++) squares += (x[r * H + h] - m) ** 2;
    const s = 1 / Math.sqrt(squares / H + eps);
    mean[r] = m;
    invStd[r] = s;
    for (let h = 0; h < H; h++) y[r * H + h] = gamma[g + h] * (x[r * H + h] - m) * s + beta[g + h];
  }
  return { y, mean, invStd };
}

/**
 * Analytic LayerNorm backward, per (row, group) with xhat = (x - mean) invStd
 * and g = dy gamma: dx = invStd (g - mean_h(g) - xhat mean_h(g xhat));
 * dGamma = dGamma0 + sum_b dy xhat; dBeta = dBeta0 + sum_b dy (per group).
 */
export function layerNormBackwardTwin(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  gamma: ArrayLike<number>,
  mean: ArrayLike<number>,
  invStd: ArrayLike<number>,
  B: number,
  G: number,
  H: number,
  dGamma0: ArrayLike<number>,
  dBeta0: ArrayLike<number>,
): { dx: Float64Array; dGamma: Float64Array; dBeta: Float64Array } {
  const dx = new Float64Array(B * G * H);
  const dGamma = Float64Array.from(dGamma0), dBeta = Float64Array.from(dBeta0);
  for (let r = 0; r < B * G; r++) {
    const g = (r % G) * H;
    let sumG = 0, sumGXhat = 0;
    for (let h = 0; h < H; h++) {
      const i = r * H + h;
      const xhat = (x[i] - mean[r]) * invStd[r];
      sumG += dy[i] * gamma[g + h];
      sumGXhat += dy[i] * gamma[g + h] * xhat;
      dGamma[g + h] += dy[i] * xhat;
      dBeta[g + h] += dy[i];
    }
    for (let h = 0; h < H; h++) {
      const i = r * H + h;
      const xhat = (x[i] - mean[r]) * invStd[r];
      dx[i] = invStd[r] * (dy[i] * gamma[g + h] - sumG / H - xhat * sumGXhat / H);
    }
  }
  return { dx, dGamma, dBeta };
}

/** murmur3's 32-bit finaliser on a u32. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The dropout draw of value i: u = (fmix32(fmix32(i + key) + key) >>> 8) /
 * 2^24 with key = fmix32(seed + 0x9e3779b9), all u32 arithmetic.
 */
export function dropoutUniform(i: number, seed: number): number {
  const key = fmix32((seed + 0x9e3779b9) >>> 0);
  return (fmix32((fmix32((i + key) >>> 0) + key) >>> 0) >>> 8) / 2 ** 24;
}

/**
 * Inverted dropout: mask = u >= ratio ? 1/(1-ratio) : 0, y = x * mask. The
 * kernel takes `ratio` as f32 and computes the scale in f32, so this does too
 * (the mask and y are then exact f32 values).
 */
export function dropoutForwardTwin(
  x: ArrayLike<number>,
  n: number,
  ratio: number,
  seed: number,
): { y: Float64Array; mask: Float64Array } {
  const r = Math.fround(ratio);
  const scale = Math.fround(1 / Math.fround(1 - r));
  const y = new Float64Array(n), mask = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    mask[i] = dropoutUniform(i, seed) >= r ? scale : 0;
    y[i] = Math.fround(x[i] * mask[i]);
  }
  return { y, mask };
}

/** out = a * b elementwise, rounded to f32 like the kernel's single multiply. */
export function multiplyTwin(a: ArrayLike<number>, b: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.fround(a[i] * b[i]);
  return out;
}

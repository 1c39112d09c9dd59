// Normalisation layers, inverted dropout, the elementwise product and fill.
//
// BatchNorm1d (Ioffe & Szegedy, ICML 2015; torch.nn.BatchNorm1d) normalises
// each column h of a B x H row-major batch; LayerNorm (Ba et al., 2016;
// torch.nn.LayerNorm(H), elementwise affine) each row, or each H-wide group
// of a row when G models' layers are stacked side by side. Both use the biased
// variance and save mean and invStd = 1/sqrt(var + eps) for the backward, like
// torch's save_mean / save_invstd.
//
// BatchNorm statistics (Welford in chunks): the batch is read in chunks of
// CHUNK rows, four columns (one f32x4) at a time. The first chunk's mean and
// centred sum of squares M2 are two-pass values; every later chunk is summed
// once about the running mean (sum d, sum d^2 with d = x - mean, no
// cancellation since the running mean is already close) and merged with the
// pairwise update of Chan, Golub & LeVeque (1979). The variance is never a
// difference of large sums (E[x^2] - E[x]^2 loses everything when |mean| >>
// std), and no scratch is needed: `mean` and `invStd` hold the running mean
// and M2 until the batch is done. The running mean is kept relative to row 0
// (x - x[0,h], exact when |mean| >> std), so merges round at the scale of the
// spread, not of the mean. Normalising and both passes of the backward stream
// the batch in row order: a few sequential streams, which the prefetchers
// follow (the backward in CHUNK-row column tiles measured 1.5x slower).

import { fma, hsum, loadPartial, storePartial } from "./simd";

/**
 * Rows per BatchNorm statistics chunk. A tile (4 columns x CHUNK rows) reads
 * CHUNK cache lines that the next tile to the right reads again, so they must
 * stay in L1, also at a power-of-two row stride where they share few sets;
 * longer chunks merge less often. 16 measured fastest at 8192 x 512 (4 to 64
 * tried).
 */
const CHUNK: i32 = 16;

/** Four columns at `p`, or the first `count` (1..3) with zeros above. */
// @ts-ignore: decorator
@inline
function loadColumns(p: usize, count: i32): v128 {
  return count == 4 ? v128.load(p) : loadPartial(p, count);
}

/** Stores the first `count` (1..4) lanes of `v` at `p`. */
// @ts-ignore: decorator
@inline
function storeColumns(p: usize, v: v128, count: i32): void {
  if (count == 4) v128.store(p, v);
  else storePartial(p, v, count);
}

/**
 * torch.nn.BatchNorm1d on the H columns of a B-row batch x whose rows (of x
 * and y) are `ldx` floats apart, per column h:
 *   training: mean, var = batch mean and biased variance; saved mean[h] and
 *     invStd[h] = 1/sqrt(var + eps), and variance[h] = the unbiased variance
 *     var * B/(B-1) that torch moves runningVar toward (the biased one when
 *     B = 1, which torch rejects in training). The running statistics are
 *     not touched: `batchNormRunningUpdate` commits them once the step is
 *     known to be good.
 *   eval: mean[h] = runningMean[h], invStd[h] = 1/sqrt(runningVar[h] + eps)
 *     (`variance` is not read or written).
 * Then y = gamma * (x - mean) * invStd + beta. `y` may equal `x`. Columns
 * are independent: any column split gives the same values.
 */
export function batchNormForward(
  y: usize,
  mean: usize,
  invStd: usize,
  variance: usize,
  runningMean: usize,
  runningVar: usize,
  x: usize,
  gamma: usize,
  beta: usize,
  B: i32,
  H: i32,
  ldx: i32,
  eps: f32,
  training: bool,
): void {
  const ld = <usize> ldx << 2;
  if (training) {
    for (let r0 = 0; r0 < B; r0 += CHUNK) {
      const rows = min(CHUNK, B - r0);
      const xc = x + <usize> r0 * ld;
      // Full 4-column tiles with a literal count (the inlined loads have no
      // branch), then the last 1-3 columns.
      let off: usize = 0;
      let h = 0;
      if (r0 == 0) {
        for (; h + 4 <= H; h += 4, off += 16) {
          firstChunkMoments(mean + off, invStd + off, x + off, ld, rows, 4);
        }
        if (h < H) firstChunkMoments(mean + off, invStd + off, x + off, ld, rows, H - h);
      } else {
        for (; h + 4 <= H; h += 4, off += 16) {
          mergeChunkMoments(mean + off, invStd + off, xc + off, x + off, ld, rows, r0, 4);
        }
        if (h < H) {
          mergeChunkMoments(mean + off, invStd + off, xc + off, x + off, ld, rows, r0, H - h);
        }
      }
    }
    batchStatistics(mean, invStd, variance, x, B, H, eps);
  } else {
    runningStatistics(mean, invStd, runningMean, runningVar, H, eps);
  }
  for (let b = 0; b < B; b++) {
    const yr = y + <usize> b * ld, xr = x + <usize> b * ld;
    let off: usize = 0;
    let h = 0;
    for (; h + 4 <= H; h += 4, off += 16) {
      normalizeColumns(yr, xr, mean, invStd, gamma, beta, off, 4);
    }
    if (h < H) normalizeColumns(yr, xr, mean, invStd, gamma, beta, off, H - h);
  }
}

/**
 * Mean and M2 of the first chunk's tile (`rows` rows from `x`, `count`
 * columns, row stride `ld` bytes), two-pass and shifted by row 0: stores the
 * mean of x - x[0] and M2 = sum (x - mean)^2.
 */
// @ts-ignore: decorator
@inline
function firstChunkMoments(
  mean: usize,
  m2: usize,
  x: usize,
  ld: usize,
  rows: i32,
  count: i32,
): void {
  const shift = loadColumns(x, count);
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let p = x;
  let r = 0;
  for (; r + 2 <= rows; r += 2) {
    s0 = f32x4.add(s0, f32x4.sub(loadColumns(p, count), shift));
    s1 = f32x4.add(s1, f32x4.sub(loadColumns(p + ld, count), shift));
    p += ld << 1;
  }
  if (r < rows) s0 = f32x4.add(s0, f32x4.sub(loadColumns(p, count), shift));
  const chunkMean = f32x4.div(f32x4.add(s0, s1), f32x4.splat(<f32> rows));
  // x - (shift + chunkMean) without rounding shift + chunkMean at the mean's scale.
  s0 = f32x4.splat(0);
  s1 = f32x4.splat(0);
  p = x;
  r = 0;
  for (; r + 2 <= rows; r += 2) {
    const d0 = f32x4.sub(f32x4.sub(loadColumns(p, count), shift), chunkMean);
    const d1 = f32x4.sub(f32x4.sub(loadColumns(p + ld, count), shift), chunkMean);
    s0 = fma(d0, d0, s0);
    s1 = fma(d1, d1, s1);
    p += ld << 1;
  }
  if (r < rows) {
    const d = f32x4.sub(f32x4.sub(loadColumns(p, count), shift), chunkMean);
    s0 = fma(d, d, s0);
  }
  storeColumns(mean, chunkMean, count);
  storeColumns(m2, f32x4.add(s0, s1), count);
}

/**
 * Merges one later tile (`rows` rows from `x`, `count` columns) into the
 * running mean (of x - row0) and M2 of the `seen` rows before
 * it, in one pass: S1 = sum d and S2 = sum d^2 with d = x - c, c = row0 +
 * mean rounded to f32. The chunk mean is c + S1/rows and its M2 is S2 - S1^2 /
 * rows, without cancellation as c is within ~std/sqrt(seen) of it. Chan et
 * al.: delta = chunk mean - running mean; mean += delta rows/n; M2 += chunk M2
 * + delta^2 seen rows/n, n = seen + rows.
 */
// @ts-ignore: decorator
@inline
function mergeChunkMoments(
  mean: usize,
  m2: usize,
  x: usize,
  row0: usize,
  ld: usize,
  rows: i32,
  seen: i32,
  count: i32,
): void {
  const shift = loadColumns(row0, count);
  const oldMean = loadColumns(mean, count);
  const centre = f32x4.add(shift, oldMean);
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let q0 = f32x4.splat(0), q1 = f32x4.splat(0);
  let p = x;
  let r = 0;
  for (; r + 2 <= rows; r += 2) {
    const d0 = f32x4.sub(loadColumns(p, count), centre);
    const d1 = f32x4.sub(loadColumns(p + ld, count), centre);
    s0 = f32x4.add(s0, d0);
    s1 = f32x4.add(s1, d1);
    q0 = fma(d0, d0, q0);
    q1 = fma(d1, d1, q1);
    p += ld << 1;
  }
  if (r < rows) {
    const d = f32x4.sub(loadColumns(p, count), centre);
    s0 = f32x4.add(s0, d);
    q0 = fma(d, d, q0);
  }
  const sum = f32x4.add(s0, s1);
  const chunkMean = f32x4.div(sum, f32x4.splat(<f32> rows)); // relative to centre
  const chunkM2 = f32x4.sub(f32x4.add(q0, q1), f32x4.mul(sum, chunkMean));
  // Chunk mean minus running mean: chunkMean plus how far rounding moved the
  // centre above the running mean.
  const delta = f32x4.add(chunkMean, f32x4.sub(f32x4.sub(centre, shift), oldMean));
  const n = <f32> (seen + rows);
  storeColumns(mean, fma(delta, f32x4.splat(<f32> rows / n), oldMean), count);
  const cross = f32x4.mul(f32x4.mul(delta, delta), f32x4.splat((<f32> seen * <f32> rows) / n));
  storeColumns(m2, f32x4.add(f32x4.add(loadColumns(m2, count), chunkM2), cross), count);
}

/** y = (x - mean) * invStd * gamma + beta on `count` columns from byte `off` of one row. */
// @ts-ignore: decorator
@inline
function normalizeColumns(
  y: usize,
  x: usize,
  mean: usize,
  invStd: usize,
  gamma: usize,
  beta: usize,
  off: usize,
  count: i32,
): void {
  const scale = f32x4.mul(loadColumns(invStd + off, count), loadColumns(gamma + off, count));
  const centred = f32x4.sub(loadColumns(x + off, count), loadColumns(mean + off, count));
  storeColumns(y + off, fma(centred, scale, loadColumns(beta + off, count)), count);
}

/**
 * Turns the running mean of x - x[0,:] (in `mean`) into the mean and M2 (in
 * `invStd`) into invStd = 1/sqrt(M2/B + eps), and stores the unbiased
 * variance M2/(B-1) (M2/B when B = 1) in `variance`.
 */
function batchStatistics(
  mean: usize,
  invStd: usize,
  variance: usize,
  x: usize,
  B: i32,
  H: i32,
  eps: f32,
): void {
  const one = f32x4.splat(1);
  const batch = f32x4.splat(<f32> B);
  const unbiasedDivisor = f32x4.splat(<f32> (B - 1)); // used only when B > 1
  for (let h = 0; h < H; h += 4) {
    const off = <usize> h << 2;
    const count = min(4, H - h);
    const m2 = loadColumns(invStd + off, count);
    const biased = f32x4.div(m2, batch);
    storeColumns(
      invStd + off,
      f32x4.div(one, f32x4.sqrt(f32x4.add(biased, f32x4.splat(eps)))),
      count,
    );
    storeColumns(variance + off, B > 1 ? f32x4.div(m2, unbiasedDivisor) : biased, count);
    const m = f32x4.add(loadColumns(x + off, count), loadColumns(mean + off, count));
    storeColumns(mean + off, m, count);
  }
}

/**
 * Commits a train-mode batchNormForward to torch's running statistics:
 * runningMean = (1 - momentum) runningMean + momentum mean, runningVar
 * likewise toward `variance` (the unbiased batch variance it saved), over
 * H columns.
 */
export function batchNormRunningUpdate(
  runningMean: usize,
  runningVar: usize,
  mean: usize,
  variance: usize,
  H: i32,
  momentum: f32,
): void {
  const mom = f32x4.splat(momentum);
  const keep = f32x4.splat(1 - momentum);
  for (let h = 0; h < H; h += 4) {
    const off = <usize> h << 2;
    const count = min(4, H - h);
    const rm = f32x4.add(
      f32x4.mul(keep, loadColumns(runningMean + off, count)),
      f32x4.mul(mom, loadColumns(mean + off, count)),
    );
    const rv = f32x4.add(
      f32x4.mul(keep, loadColumns(runningVar + off, count)),
      f32x4.mul(mom, loadColumns(variance + off, count)),
    );
    storeColumns(runningMean + off, rm, count);
    storeColumns(runningVar + off, rv, count);
  }
}

/** Eval mode: mean = runningMean, invStd = 1/sqrt(runningVar + eps). */
function runningStatistics(
  mean: usize,
  invStd: usize,
  runningMean: usize,
  runningVar: usize,
  H: i32,
  eps: f32,
): void {
  const one = f32x4.splat(1);
  for (let h = 0; h < H; h += 4) {
    const off = <usize> h << 2;
    const count = min(4, H - h);
    storeColumns(mean + off, loadColumns(runningMean + off, count), count);
    const v = f32x4.add(loadColumns(runningVar + off, count), f32x4.splat(eps));
    storeColumns(invStd + off, f32x4.div(one, f32x4.sqrt(v)), count);
  }
}

/**
 * Backward of batchNormForward in training mode, per column h with
 * xhat = (x - mean) * invStd:
 *   dBeta[h]  += sum_b dy[b,h]
 *   dGamma[h] += sum_b dy[b,h] xhat[b,h]
 *   dx[b,h]    = gamma[h] invStd[h] (dy - sum_b dy / B - xhat sum_b dy xhat / B)
 * over the H columns of B-row matrices whose rows (dx, dy, x) are `ldx`
 * floats apart. Two row-order streams over dy and x (the column sums, then
 * dx): between them rows 0 and 1 of dx, its only scratch, hold per-column
 * coefficients, and those two rows are written last. So `dx` must not alias
 * `dy` or `x`. Columns are independent: any column split gives the same
 * values.
 */
export function batchNormBackward(
  dx: usize,
  dGamma: usize,
  dBeta: usize,
  dy: usize,
  x: usize,
  gamma: usize,
  mean: usize,
  invStd: usize,
  B: i32,
  H: i32,
  ldx: i32,
): void {
  if (B == 1) {
    batchNormBackwardOneRow(dx, dGamma, dBeta, dy, x, gamma, mean, invStd, H);
    return;
  }
  const ld = <usize> ldx << 2;
  // Pass 1: sum dy and sum dy (x - mean) into dx rows 0 and 1, two rows per step.
  const sumDy = dx, sumDyCentred = dx + ld;
  let b = 0;
  for (; b + 2 <= B; b += 2) {
    const start = <usize> b * ld;
    addRowSums(sumDy, sumDyCentred, dy + start, x + start, mean, ld, 2, b == 0, H);
  }
  if (b < B) {
    const start = <usize> b * ld;
    addRowSums(sumDy, sumDyCentred, dy + start, x + start, mean, ld, 1, false, H);
  }

  // Parameter gradients, and per column dx = k dy + (x - mean) alpha + beta
  // with k = gamma invStd, alpha = -k invStd^2 sum dy (x - mean) / B and
  // beta = -k sum dy / B; beta and alpha replace the sums in dx rows 0 and 1.
  const coefBeta = dx, coefAlpha = dx + ld;
  const batch = f32x4.splat(<f32> B);
  for (let h = 0; h < H; h += 4) {
    const off = <usize> h << 2;
    const count = min(4, H - h);
    const s = loadColumns(invStd + off, count);
    const sumB = loadColumns(sumDy + off, count);
    const sumG = f32x4.mul(loadColumns(sumDyCentred + off, count), s); // sum dy xhat
    storeColumns(dBeta + off, f32x4.add(loadColumns(dBeta + off, count), sumB), count);
    storeColumns(dGamma + off, f32x4.add(loadColumns(dGamma + off, count), sumG), count);
    const k = f32x4.mul(s, loadColumns(gamma + off, count));
    const beta = f32x4.div(f32x4.mul(k, sumB), batch);
    const alpha = f32x4.div(f32x4.mul(f32x4.mul(k, s), sumG), batch);
    storeColumns(coefBeta + off, f32x4.neg(beta), count);
    storeColumns(coefAlpha + off, f32x4.neg(alpha), count);
  }

  // Pass 2: rows 2.. first, then rows 0 and 1 together.
  for (b = 2; b < B; b++) {
    const start = <usize> b * ld;
    const dxr = dx + start, dyr = dy + start, xr = x + start;
    inputGradRows(dxr, dyr, xr, gamma, mean, invStd, coefAlpha, coefBeta, ld, 1, H);
  }
  inputGradRows(dx, dy, x, gamma, mean, invStd, coefAlpha, coefBeta, ld, 2, H);
}

/**
 * Adds sum dy and sum dy (x - mean) over `rows` (1 or 2) rows to the column
 * sums, or stores them when `first`.
 */
// @ts-ignore: decorator
@inline
function addRowSums(
  sumDy: usize,
  sumDyCentred: usize,
  dy: usize,
  x: usize,
  mean: usize,
  ld: usize,
  rows: i32,
  first: bool,
  H: i32,
): void {
  let off: usize = 0;
  let h = 0;
  for (; h + 4 <= H; h += 4, off += 16) {
    addColumnSums(sumDy, sumDyCentred, dy, x, mean, off, ld, rows, first, 4);
  }
  if (h < H) addColumnSums(sumDy, sumDyCentred, dy, x, mean, off, ld, rows, first, H - h);
}

/** addRowSums on `count` columns from byte `off`. */
// @ts-ignore: decorator
@inline
function addColumnSums(
  sumDy: usize,
  sumDyCentred: usize,
  dy: usize,
  x: usize,
  mean: usize,
  off: usize,
  ld: usize,
  rows: i32,
  first: bool,
  count: i32,
): void {
  const m = loadColumns(mean + off, count);
  let d = loadColumns(dy + off, count);
  let sumB = d;
  let sumG = f32x4.mul(d, f32x4.sub(loadColumns(x + off, count), m));
  if (rows == 2) {
    d = loadColumns(dy + ld + off, count);
    sumB = f32x4.add(sumB, d);
    sumG = fma(d, f32x4.sub(loadColumns(x + ld + off, count), m), sumG);
  }
  if (!first) {
    sumB = f32x4.add(loadColumns(sumDy + off, count), sumB);
    sumG = f32x4.add(loadColumns(sumDyCentred + off, count), sumG);
  }
  storeColumns(sumDy + off, sumB, count);
  storeColumns(sumDyCentred + off, sumG, count);
}

/**
 * dx = gamma invStd dy + (x - mean) alpha + beta on `rows` (1 or 2)
 * consecutive rows. For rows 0 and 1 alpha and beta are dx rows 1 and 0
 * themselves: each column group reads them before writing both rows.
 */
// @ts-ignore: decorator
@inline
function inputGradRows(
  dx: usize,
  dy: usize,
  x: usize,
  gamma: usize,
  mean: usize,
  invStd: usize,
  coefAlpha: usize,
  coefBeta: usize,
  ld: usize,
  rows: i32,
  H: i32,
): void {
  let off: usize = 0;
  let h = 0;
  for (; h + 4 <= H; h += 4, off += 16) {
    inputGradColumns(dx, dy, x, gamma, mean, invStd, coefAlpha, coefBeta, off, ld, rows, 4);
  }
  if (h < H) {
    inputGradColumns(dx, dy, x, gamma, mean, invStd, coefAlpha, coefBeta, off, ld, rows, H - h);
  }
}

/** inputGradRows on `count` columns from byte `off`. */
// @ts-ignore: decorator
@inline
function inputGradColumns(
  dx: usize,
  dy: usize,
  x: usize,
  gamma: usize,
  mean: usize,
  invStd: usize,
  coefAlpha: usize,
  coefBeta: usize,
  off: usize,
  ld: usize,
  rows: i32,
  count: i32,
): void {
  const alpha = loadColumns(coefAlpha + off, count), beta = loadColumns(coefBeta + off, count);
  const m = loadColumns(mean + off, count);
  const k = f32x4.mul(loadColumns(invStd + off, count), loadColumns(gamma + off, count));
  const rest0 = fma(f32x4.sub(loadColumns(x + off, count), m), alpha, beta);
  const dx0 = fma(loadColumns(dy + off, count), k, rest0);
  if (rows == 2) {
    const rest1 = fma(f32x4.sub(loadColumns(x + ld + off, count), m), alpha, beta);
    storeColumns(dx + ld + off, fma(loadColumns(dy + ld + off, count), k, rest1), count);
  }
  storeColumns(dx + off, dx0, count);
}

/** batchNormBackward for B = 1: the column sums are the row itself. */
function batchNormBackwardOneRow(
  dx: usize,
  dGamma: usize,
  dBeta: usize,
  dy: usize,
  x: usize,
  gamma: usize,
  mean: usize,
  invStd: usize,
  H: i32,
): void {
  for (let h = 0; h < H; h += 4) {
    const off = <usize> h << 2;
    const count = min(4, H - h);
    const d = loadColumns(dy + off, count);
    const s = loadColumns(invStd + off, count);
    const centred = f32x4.sub(loadColumns(x + off, count), loadColumns(mean + off, count));
    const xhat = f32x4.mul(centred, s);
    const dXhat = f32x4.mul(d, xhat);
    storeColumns(dBeta + off, f32x4.add(loadColumns(dBeta + off, count), d), count);
    storeColumns(dGamma + off, f32x4.add(loadColumns(dGamma + off, count), dXhat), count);
    // dy - sum dy / 1 = 0 leaves -xhat * (dy xhat).
    const g = f32x4.neg(f32x4.mul(xhat, dXhat));
    storeColumns(dx + off, f32x4.mul(g, f32x4.mul(s, loadColumns(gamma + off, count))), count);
  }
}

/**
 * torch.nn.LayerNorm(H) on each H-wide group of a B x (G*H) batch: G
 * LayerNorms side by side (the stacked experts' or gates' layer, member g in
 * columns g*H, with its own gamma/beta at g*H), each normalising its own H
 * columns of every row. mean and invStd are saved per (row, group), [B, G]:
 * invStd = 1/sqrt(biased var + eps), two passes over the H values (in L1).
 * y = gamma * (x - mean) * invStd + beta. `y` may equal `x`. G = 1 is a plain
 * LayerNorm over B x H.
 */
export function layerNormForward(
  y: usize,
  mean: usize,
  invStd: usize,
  x: usize,
  gamma: usize,
  beta: usize,
  B: i32,
  G: i32,
  H: i32,
  eps: f32,
): void {
  const groupBytes = <usize> H << 2;
  const rows = B * G;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize> r * groupBytes;
    const yr = y + <usize> r * groupBytes;
    const affine = <usize> (r % G) * groupBytes;
    const gr = gamma + affine, br = beta + affine;
    const m = rowSum(xr, H) / <f32> H;
    const s: f32 = 1 / Mathf.sqrt(rowSquaredDeviation(xr, m, H) / <f32> H + eps);
    store<f32>(mean + (<usize> r << 2), m);
    store<f32>(invStd + (<usize> r << 2), s);
    const mv = f32x4.splat(m), sv = f32x4.splat(s);
    let h = 0;
    for (; h + 4 <= H; h += 4) {
      const off = <usize> h << 2;
      const xhat = f32x4.mul(f32x4.sub(v128.load(xr + off), mv), sv);
      v128.store(yr + off, fma(xhat, v128.load(gr + off), v128.load(br + off)));
    }
    for (; h < H; h++) {
      const off = <usize> h << 2;
      const xhat = (load<f32>(xr + off) - m) * s;
      store<f32>(yr + off, xhat * load<f32>(gr + off) + load<f32>(br + off));
    }
  }
}

/** sum of x[0..H), four accumulators. */
function rowSum(x: usize, H: i32): f32 {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
  let h = 0;
  for (; h + 16 <= H; h += 16) {
    const p = x + (<usize> h << 2);
    s0 = f32x4.add(s0, v128.load(p));
    s1 = f32x4.add(s1, v128.load(p, 16));
    s2 = f32x4.add(s2, v128.load(p, 32));
    s3 = f32x4.add(s3, v128.load(p, 48));
  }
  for (; h + 4 <= H; h += 4) s0 = f32x4.add(s0, v128.load(x + (<usize> h << 2)));
  let sum = hsum(f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3)));
  for (; h < H; h++) sum += load<f32>(x + (<usize> h << 2));
  return sum;
}

/** sum of (x[h] - m)^2 over [0, H), four accumulators. */
function rowSquaredDeviation(x: usize, m: f32, H: i32): f32 {
  const mv = f32x4.splat(m);
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
  let h = 0;
  for (; h + 16 <= H; h += 16) {
    const p = x + (<usize> h << 2);
    const d0 = f32x4.sub(v128.load(p), mv), d1 = f32x4.sub(v128.load(p, 16), mv);
    const d2 = f32x4.sub(v128.load(p, 32), mv), d3 = f32x4.sub(v128.load(p, 48), mv);
    s0 = fma(d0, d0, s0);
    s1 = fma(d1, d1, s1);
    s2 = fma(d2, d2, s2);
    s3 = fma(d3, d3, s3);
  }
  for (; h + 4 <= H; h += 4) {
    const d = f32x4.sub(v128.load(x + (<usize> h << 2)), mv);
    s0 = fma(d, d, s0);
  }
  let sum = hsum(f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3)));
  for (; h < H; h++) {
    const d = load<f32>(x + (<usize> h << 2)) - m;
    sum += d * d;
  }
  return sum;
}

/**
 * Backward of layerNormForward, per row b and group k with xhat = (x -
 * mean[b,k]) * invStd[b,k] and g = dy * gamma[k]:
 *   dGamma[k,h] += sum_b dy xhat;  dBeta[k,h] += sum_b dy
 *   dx[b,k,h]    = invStd[b,k] (g - sum_h g / H - xhat sum_h g xhat / H)
 * `dx` may equal `dy`.
 */
export function layerNormBackward(
  dx: usize,
  dGammaAll: usize,
  dBetaAll: usize,
  dy: usize,
  x: usize,
  gammaAll: usize,
  mean: usize,
  invStd: usize,
  B: i32,
  G: i32,
  H: i32,
): void {
  const rowBytes = <usize> H << 2;
  const rows = B * G;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize> r * rowBytes;
    const dyr = dy + <usize> r * rowBytes;
    const dxr = dx + <usize> r * rowBytes;
    const affine = <usize> (r % G) * rowBytes;
    const gamma = gammaAll + affine, dGamma = dGammaAll + affine, dBeta = dBetaAll + affine;
    const m = load<f32>(mean + (<usize> r << 2));
    const s = load<f32>(invStd + (<usize> r << 2));
    const mv = f32x4.splat(m), sv = f32x4.splat(s);
    let sg0 = f32x4.splat(0), sg1 = f32x4.splat(0);
    let sgx0 = f32x4.splat(0), sgx1 = f32x4.splat(0);
    let h = 0;
    for (; h + 8 <= H; h += 8) {
      const off = <usize> h << 2;
      const d0 = v128.load(dyr + off), d1 = v128.load(dyr + off, 16);
      const xh0 = f32x4.mul(f32x4.sub(v128.load(xr + off), mv), sv);
      const xh1 = f32x4.mul(f32x4.sub(v128.load(xr + off, 16), mv), sv);
      const g0 = f32x4.mul(d0, v128.load(gamma + off));
      const g1 = f32x4.mul(d1, v128.load(gamma + off, 16));
      sg0 = f32x4.add(sg0, g0);
      sg1 = f32x4.add(sg1, g1);
      sgx0 = fma(g0, xh0, sgx0);
      sgx1 = fma(g1, xh1, sgx1);
      v128.store(dGamma + off, fma(d0, xh0, v128.load(dGamma + off)));
      v128.store(dGamma + off, fma(d1, xh1, v128.load(dGamma + off, 16)), 16);
      v128.store(dBeta + off, f32x4.add(v128.load(dBeta + off), d0));
      v128.store(dBeta + off, f32x4.add(v128.load(dBeta + off, 16), d1), 16);
    }
    for (; h + 4 <= H; h += 4) {
      const off = <usize> h << 2;
      const d = v128.load(dyr + off);
      const xh = f32x4.mul(f32x4.sub(v128.load(xr + off), mv), sv);
      const g = f32x4.mul(d, v128.load(gamma + off));
      sg0 = f32x4.add(sg0, g);
      sgx0 = fma(g, xh, sgx0);
      v128.store(dGamma + off, fma(d, xh, v128.load(dGamma + off)));
      v128.store(dBeta + off, f32x4.add(v128.load(dBeta + off), d));
    }
    let sumG = hsum(f32x4.add(sg0, sg1));
    let sumGx = hsum(f32x4.add(sgx0, sgx1));
    const tail = h;
    for (; h < H; h++) {
      const off = <usize> h << 2;
      const d = load<f32>(dyr + off);
      const xh = (load<f32>(xr + off) - m) * s;
      const g = d * load<f32>(gamma + off);
      sumG += g;
      sumGx += g * xh;
      store<f32>(dGamma + off, load<f32>(dGamma + off) + d * xh);
      store<f32>(dBeta + off, load<f32>(dBeta + off) + d);
    }

    const a = sumG / <f32> H, c = sumGx / <f32> H;
    const av = f32x4.splat(a), cv = f32x4.splat(c);
    for (h = 0; h < tail; h += 4) {
      const off = <usize> h << 2;
      const xh = f32x4.mul(f32x4.sub(v128.load(xr + off), mv), sv);
      const g = f32x4.mul(v128.load(dyr + off), v128.load(gamma + off));
      const t = f32x4.sub(f32x4.sub(g, av), f32x4.mul(xh, cv));
      v128.store(dxr + off, f32x4.mul(t, sv));
    }
    for (; h < H; h++) {
      const off = <usize> h << 2;
      const xh = (load<f32>(xr + off) - m) * s;
      const g = load<f32>(dyr + off) * load<f32>(gamma + off);
      store<f32>(dxr + off, (g - a - xh * c) * s);
    }
  }
}

/**
 * murmur3's 32-bit finaliser (fmix32, Appleby): a bijection of u32 in which
 * every input bit flips each output bit with probability ~1/2.
 */
function fmix32(h: u32): u32 {
  h ^= h >>> 16;
  h *= 0x85ebca6b;
  h ^= h >>> 13;
  h *= 0xc2b2ae35;
  h ^= h >>> 16;
  return h;
}

/** fmix32 on four u32 lanes. */
// @ts-ignore: decorator
@inline
function fmix32x4(h: v128): v128 {
  h = v128.xor(h, i32x4.shr_u(h, 16));
  h = i32x4.mul(h, i32x4.splat(0x85ebca6b));
  h = v128.xor(h, i32x4.shr_u(h, 13));
  h = i32x4.mul(h, i32x4.splat(0xc2b2ae35));
  return v128.xor(h, i32x4.shr_u(h, 16));
}

/** 2^-24: u = (hash >>> 8) * 2^-24 is exact in f32 and uniform on [0, 1). */
const UNIT: f32 = 5.9604645e-8;

/**
 * Inverted dropout (torch.nn.Dropout in training) over n values, the values
 * `first` to `first + n - 1` of a tensor (y, mask and x point at value
 * `first`): value i is kept when u_i >= ratio, with u_i =
 * (fmix32(fmix32(i + key) + key) >>> 8) * 2^-24 and key = fmix32(seed +
 * 0x9e3779b9), a counter-based hash (as in Salmon et al.'s Philox, SC 2011:
 * a pure function of (seed, i), so any value of any step can be redrawn,
 * a tensor split into ranges draws the same mask, and both builds draw the
 * same mask). mask[i] = kept ? 1/(1-ratio) : 0; y = x * mask. `y` may equal
 * `x`. The backward is `multiply(dx, dy, mask, n)`.
 */
export function dropoutForward(
  y: usize,
  mask: usize,
  x: usize,
  n: i32,
  first: i32,
  ratio: f32,
  seed: u32,
): void {
  const key = fmix32(seed + 0x9e3779b9);
  const scale: f32 = 1 / (1 - ratio);
  const keyv = i32x4.splat(key);
  const scalev = f32x4.splat(scale);
  const ratiov = f32x4.splat(ratio);
  const unitv = f32x4.splat(UNIT);
  let index = i32x4.add(i32x4(0, 1, 2, 3), i32x4.splat(first));
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize> i << 2;
    const h = fmix32x4(i32x4.add(fmix32x4(i32x4.add(index, keyv)), keyv));
    const u = f32x4.mul(f32x4.convert_i32x4_u(i32x4.shr_u(h, 8)), unitv);
    const m = v128.and(scalev, f32x4.ge(u, ratiov));
    v128.store(mask + off, m);
    v128.store(y + off, f32x4.mul(v128.load(x + off), m));
    index = i32x4.add(index, i32x4.splat(4));
  }
  for (; i < n; i++) {
    const off = <usize> i << 2;
    const h = fmix32(fmix32(<u32> (first + i) + key) + key);
    const m: f32 = <f32> (h >>> 8) * UNIT >= ratio ? scale : 0;
    store<f32>(mask + off, m);
    store<f32>(y + off, load<f32>(x + off) * m);
  }
}

/** out[i] = value over n values (zeroing gradients and scratch). */
export function fill(out: usize, value: f32, n: i32): void {
  const v = f32x4.splat(value);
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const off = <usize> i << 2;
    v128.store(out + off, v);
    v128.store(out + off, v, 16);
    v128.store(out + off, v, 32);
    v128.store(out + off, v, 48);
  }
  for (; i < n; i++) store<f32>(out + (<usize> i << 2), value);
}

/** out[i] = a[i] * b[i] over n values; `out` may equal `a` or `b`. */
export function multiply(out: usize, a: usize, b: usize, n: i32): void {
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    const off = <usize> i << 2;
    const a0 = v128.load(a + off), a1 = v128.load(a + off, 16);
    const a2 = v128.load(a + off, 32), a3 = v128.load(a + off, 48);
    const b0 = v128.load(b + off), b1 = v128.load(b + off, 16);
    const b2 = v128.load(b + off, 32), b3 = v128.load(b + off, 48);
    v128.store(out + off, f32x4.mul(a0, b0));
    v128.store(out + off, f32x4.mul(a1, b1), 16);
    v128.store(out + off, f32x4.mul(a2, b2), 32);
    v128.store(out + off, f32x4.mul(a3, b3), 48);
  }
  for (; i + 4 <= n; i += 4) {
    const off = <usize> i << 2;
    v128.store(out + off, f32x4.mul(v128.load(a + off), v128.load(b + off)));
  }
  for (; i < n; i++) {
    const off = <usize> i << 2;
    store<f32>(out + off, load<f32>(a + off) * load<f32>(b + off));
  }
}

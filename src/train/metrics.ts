/**
 * Eval metrics with tzrec's semantics, as streaming accumulators: feed each
 * eval batch to `update`, read the value once with `compute`.
 *
 * - {@link BinnedAuc}: tzrec `auc {thresholds: N}`, which is torchmetrics
 *   `BinaryAUROC(thresholds=N)`: O(N) memory, quantised by N.
 * - {@link ExactAuc}: rank-based AUC with ties averaged (sklearn
 *   `roc_auc_score`); this library's addition. O(rows) memory.
 * - {@link GroupedAuc}: tzrec `grouped_auc`: mean of exact per-group AUCs over
 *   groups that hold both labels. O(rows) memory.
 * - {@link MeanAbsoluteError}, {@link MeanSquaredError}, {@link Accuracy},
 *   {@link MulticlassAccuracy}: torchmetrics' metrics of the same names.
 *   O(1) memory.
 * - {@link WeightedMean}: the eval loss, a batch-size-weighted mean of
 *   per-batch losses (torchmetrics `MeanMetric` as tzrec feeds it).
 *
 * {@link createMetric} builds one from a config's {@link ResolvedMetric}.
 * Sums are kept in f64 (torchmetrics keeps f32 states), so values agree with
 * tzrec's to float32 rounding. An `update` that throws leaves the metric as
 * it was before the call.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BinnedAuc, ExactAuc } from "./metrics.ts";
 * const probs = new Float32Array([0.1, 0.4, 0.35, 0.8]);
 * const labels = new Float32Array([0, 0, 1, 1]);
 * const binned = new BinnedAuc(200, "auc_ctr"), exact = new ExactAuc("exact_auc_ctr");
 * binned.update(probs, labels);
 * exact.update(probs, labels);
 * assert.equal(exact.compute(), 0.75);
 * assert.ok(Math.abs(binned.compute() - 0.75) < 1e-6);
 * ```
 * @module
 */
import type { ResolvedMetric } from "../config/config.ts";

export type { ResolvedMetric };

/**
 * What every metric accumulator offers. `preds` are probabilities
 * (`probs_<t>`) for the AUCs and accuracy, raw outputs (`y_<t>`) for the
 * regression errors; `labels` hold one label per row; `groups` (one key per
 * row) is read by {@link GroupedAuc} only. For a partial batch in a reused
 * buffer pass `subarray(0, rows)` views (no copy).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createMetric, type Metric } from "./metrics.ts";
 * const metrics: Metric[] = [
 *   createMetric({ kind: "auc", name: "auc_ctr", thresholds: 200 }),
 *   createMetric({ kind: "grouped_auc", name: "grouped_auc_ctr", groupingKey: "user_id" }),
 * ];
 * const probs = new Float32Array([0.9, 0.2, 0.3, 0.6]);
 * const labels = new Float32Array([1, 0, 1, 0]);
 * const users = [7, 7, 8, 8];
 * for (const m of metrics) m.update(probs, labels, users);
 * assert.deepEqual(metrics.map((m) => [m.name, m.compute()]), [
 *   ["auc_ctr", 0.75],
 *   ["grouped_auc_ctr", 0.5], // user 7: 1, user 8: 0
 * ]);
 * ```
 */
export interface Metric {
  /** Reported name, `<metric>_<tower>` (e.g. `auc_ctr`). */
  readonly name: string;
  /** Adds one batch. Throws (changing nothing) on a bad row. */
  update(preds: Float32Array, labels: Float32Array, groups?: ArrayLike<string | number>): void;
  /** The metric over every row added since construction or {@link Metric.reset}. */
  compute(): number;
  /** Forgets every row. */
  reset(): void;
}

// ------------------------------------------------------------------ validation

function checkBatch(name: string, preds: unknown, labels: unknown): number {
  if (!(preds instanceof Float32Array)) {
    throw new TypeError(`${name}: preds must be a Float32Array`);
  }
  if (!(labels instanceof Float32Array)) {
    throw new TypeError(`${name}: labels must be a Float32Array`);
  }
  if (preds.length !== labels.length) {
    throw new RangeError(
      `${name}: preds has ${preds.length} rows but labels has ${labels.length}`,
    );
  }
  return preds.length;
}

function badProbability(name: string, row: number, p: number): RangeError {
  return new RangeError(`${name}: probability at row ${row} is ${p}, expected a value in [0, 1]`);
}

function badLabel(name: string, row: number, y: number): RangeError {
  return new RangeError(`${name}: label at row ${row} is ${y}, expected 0 or 1`);
}

function notFinite(name: string, what: string, row: number, v: number): RangeError {
  return new RangeError(`${name}: ${what} at row ${row} is ${v}, expected a finite number`);
}

/** Throws unless every pred is finite and every label is 0 or 1. */
function checkScoresAndLabels(name: string, scores: Float32Array, labels: Float32Array): void {
  for (let i = 0; i < scores.length; i++) {
    if (!Number.isFinite(scores[i])) throw notFinite(name, "score", i, scores[i]);
    const y = labels[i];
    if (y !== 0 && y !== 1) throw badLabel(name, i, y);
  }
}

/** Doubles `buf` until it holds `need` elements (amortised O(1) appends). */
function ensureCapacity<T extends Float32Array | Int32Array>(buf: T, need: number): T {
  if (need <= buf.length) return buf;
  const next = new (buf.constructor as new (n: number) => T)(Math.max(need, buf.length * 2));
  next.set(buf);
  return next;
}

// ------------------------------------------------------------------ binned AUC

/**
 * `torch.linspace(start, end, steps)` in float32, bit for bit with PyTorch's
 * scalar CPU kernel (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp):
 * step = (end - start) / (steps - 1) in f32; index i < floor(steps / 2) is
 * `start + step * i`, the rest `end - step * (steps - 1 - i)`, every operation
 * rounded to f32, and the two ends returned exactly. These are the thresholds
 * of torchmetrics' `thresholds=N`. (PyTorch's AVX2/AVX512 builds of that
 * file get `-mfma` under GCC's default `-ffp-contract=fast`, which may fuse
 * the back half into one rounding and move some values by 1 ulp; only a
 * probability lying exactly between the two floats would count differently.)
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { torchLinspace } from "./metrics.ts";
 * assert.deepEqual(Array.from(torchLinspace(0, 1, 5)), [0, 0.25, 0.5, 0.75, 1]);
 * // Not the nearest float32 to 6/9: the back half counts down from `end`.
 * assert.equal(torchLinspace(0, 1, 10)[6], 0.6666666269302368);
 * ```
 */
export function torchLinspace(start: number, end: number, steps: number): Float32Array {
  if (!Number.isInteger(steps) || steps < 0) {
    throw new RangeError(`torchLinspace: steps must be a non-negative integer, got ${steps}`);
  }
  const f = Math.fround;
  const out = new Float32Array(steps);
  if (steps === 0) return out;
  const s = f(start), e = f(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f(f(e - s) / f(steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f(s + f(step * i)) : f(e - f(step * (steps - 1 - i)));
  }
  out[0] = s;
  out[steps - 1] = e;
  return out;
}

/**
 * A ROC curve in torchmetrics `binary_roc` order: thresholds descending, FPR
 * ascending, one point per threshold.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BinnedAuc, type RocCurve } from "./metrics.ts";
 * const auc = new BinnedAuc(3);
 * auc.update(new Float32Array([0.2, 0.7]), new Float32Array([0, 1]));
 * const curve: RocCurve = auc.roc();
 * assert.deepEqual(Array.from(curve.thresholds), [1, 0.5, 0]);
 * assert.deepEqual(Array.from(curve.fpr), [0, 0, 1]);
 * assert.deepEqual(Array.from(curve.tpr), [0, 1, 1]);
 * ```
 */
export interface RocCurve {
  /** False positive rate FP / (FP + TN) per threshold (0 when there is no negative). */
  fpr: Float32Array;
  /** True positive rate TP / (TP + FN) per threshold (0 when there is no positive). */
  tpr: Float32Array;
  /** The thresholds, 1 down to 0; a row is positive at tau iff prob >= tau. */
  thresholds: Float32Array;
}

/**
 * Index of the last threshold <= p (thresholds ascending, t[0] = 0 <= p <= 1):
 * a guess from p * (N - 1), then at most a step or two to fix f32 rounding.
 */
function lastThresholdAtOrBelow(t: Float64Array, last: number, p: number): number {
  let k = (p * last) | 0;
  while (k < last && t[k + 1] <= p) k++;
  while (t[k] > p) k--;
  return k;
}

/**
 * Binned AUROC, exactly torchmetrics `BinaryAUROC(thresholds=N)` (what tzrec
 * builds for `auc {thresholds: N}`, default 200):
 *
 * - thresholds = `torch.linspace(0, 1, N)` in f32 ({@link torchLinspace});
 * - at threshold tau a row is predicted positive iff prob >= tau, and the
 *   TP/FP/TN/FN counts per threshold add up over every batch (O(N) memory);
 * - TPR = TP / (TP + FN), FPR = FP / (FP + TN) in f32 with 0/0 -> 0
 *   (`_safe_divide`), flipped so FPR ascends (`_binary_roc_compute`);
 * - AUC = trapezoid rule over those N points (`torch.trapz(tpr, fpr)`).
 *
 * Each row costs O(1): its bin (the number of thresholds <= prob) comes from
 * p * (N - 1) checked against the f32 thresholds, and `compute` turns the
 * per-bin counts into per-threshold counts with suffix sums.
 *
 * torchmetrics' quirks are kept on purpose: there is no (0, 0) point, so area
 * before the first threshold (1.0) is lost when rows have prob exactly 1; a
 * single-class eval set gives 0 (all TPR or all FPR are 0), not NaN; rows
 * inside one bin count as ties, so the value is quantised by N (why cvr
 * towers use 1000+ thresholds). Probabilities must lie in [0, 1] (torchmetrics
 * would instead apply a sigmoid to the whole batch) and labels be 0 or 1.
 * The trapezoid sum is taken in f64 over the f32 curve, so `compute` agrees
 * with torch's f32 sum to ~1e-6.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BinnedAuc } from "./metrics.ts";
 * // torchmetrics' binary_roc docstring example, thresholds=5.
 * const auc = new BinnedAuc(5, "auc_ctr");
 * auc.update(new Float32Array([0, 0.5]), new Float32Array([0, 1]));
 * auc.update(new Float32Array([0.7, 0.8]), new Float32Array([1, 0]));
 * const { fpr, tpr, thresholds } = auc.roc();
 * assert.deepEqual(Array.from(fpr), [0, 0.5, 0.5, 0.5, 1]);
 * assert.deepEqual(Array.from(tpr), [0, 0, 1, 1, 1]);
 * assert.deepEqual(Array.from(thresholds), [1, 0.75, 0.5, 0.25, 0]);
 * assert.equal(auc.compute(), 0.5);
 * ```
 */
export class BinnedAuc implements Metric {
  /** Reported name. */
  readonly name: string;
  /** Thresholds ascending, f32 values held as f64 for the comparisons. */
  readonly #t: Float64Array;
  /** counts[2k + label]: rows whose last threshold <= prob is t[k]. Length 2N. */
  readonly #counts: Float64Array;

  /**
   * An empty accumulator over `torch.linspace(0, 1, thresholds)`.
   *
   * @param thresholds N >= 2, the number of thresholds in [0, 1] (tzrec default 200).
   * @param name Reported name.
   */
  constructor(thresholds = 200, name = "auc") {
    if (!Number.isInteger(thresholds) || thresholds < 2) {
      throw new RangeError(`${name}: thresholds must be an integer >= 2, got ${thresholds}`);
    }
    this.name = name;
    this.#t = Float64Array.from(torchLinspace(0, 1, thresholds));
    this.#counts = new Float64Array(2 * thresholds);
  }

  /** The N thresholds, ascending (a copy). */
  get thresholds(): Float32Array {
    return Float32Array.from(this.#t);
  }

  /** Adds a batch: probabilities in [0, 1] and labels 0 or 1, one per row. */
  update(probs: Float32Array, labels: Float32Array): void {
    const rows = checkBatch(this.name, probs, labels);
    const t = this.#t, counts = this.#counts, last = t.length - 1;
    for (let i = 0; i < rows; i++) {
      const p = probs[i], y = labels[i];
      if (!(p >= 0 && p <= 1) || (y !== 0 && y !== 1)) {
        this.#remove(probs, labels, i);
        throw p >= 0 && p <= 1 ? badLabel(this.name, i, y) : badProbability(this.name, i, p);
      }
      counts[2 * lastThresholdAtOrBelow(t, last, p) + y]++;
    }
  }

  /** Takes back rows [0, end) of a batch whose row `end` was rejected. */
  #remove(probs: Float32Array, labels: Float32Array, end: number): void {
    const t = this.#t, last = t.length - 1;
    for (let i = 0; i < end; i++) {
      this.#counts[2 * lastThresholdAtOrBelow(t, last, probs[i]) + labels[i]]--;
    }
  }

  /**
   * The ROC curve torchmetrics `binary_roc(..., thresholds=N)` returns, bit
   * for bit: N points, thresholds descending, FPR and TPR ascending, f32.
   */
  roc(): RocCurve {
    const n = this.#t.length, counts = this.#counts, f = Math.fround;
    let positives = 0, negatives = 0;
    for (let k = 0; k < n; k++) {
      negatives += counts[2 * k];
      positives += counts[2 * k + 1];
    }
    const fpr = new Float32Array(n), tpr = new Float32Array(n), thresholds = new Float32Array(n);
    // Threshold i predicts positive the rows whose bin k >= i: suffix sums,
    // written at n - 1 - i (torchmetrics flips to thresholds descending).
    let tp = 0, fp = 0;
    for (let i = n - 1; i >= 0; i--) {
      fp += counts[2 * i];
      tp += counts[2 * i + 1];
      const j = n - 1 - i;
      // _safe_divide: int64 counts -> f32, f32 division, 0 where the denominator is 0.
      fpr[j] = negatives > 0 ? f(f(fp) / f(negatives)) : 0;
      tpr[j] = positives > 0 ? f(f(tp) / f(positives)) : 0;
      thresholds[j] = this.#t[i];
    }
    return { fpr, tpr, thresholds };
  }

  /** AUC: trapezoid rule over {@link BinnedAuc.roc}'s points (0 before any row). */
  compute(): number {
    const { fpr, tpr } = this.roc();
    let area = 0;
    for (let j = 1; j < fpr.length; j++) area += (fpr[j] - fpr[j - 1]) * (tpr[j] + tpr[j - 1]);
    return area / 2;
  }

  /** Forgets every row. */
  reset(): void {
    this.#counts.fill(0);
  }
}

// ------------------------------------------------------------------- exact AUC

/**
 * Mann-Whitney AUC of two ascending score lists: P(pos > neg) + P(pos = neg) / 2.
 * Equals the trapezoid area of the exact ROC curve (ties form one diagonal
 * step), i.e. sklearn `roc_auc_score` and torchmetrics `thresholds=None`.
 */
function sortedAuc(pos: Float32Array, neg: Float32Array): number {
  let below = 0, wins = 0;
  for (let i = 0; i < pos.length;) {
    const v = pos[i];
    let run = 1;
    while (i + run < pos.length && pos[i + run] === v) run++;
    while (below < neg.length && neg[below] < v) below++;
    let ties = 0;
    while (below + ties < neg.length && neg[below + ties] === v) ties++;
    wins += run * (below + ties / 2);
    i += run;
  }
  return wins / (pos.length * neg.length);
}

/**
 * Exact AUC: rank based with tied scores averaged (Mann-Whitney U / (P N)),
 * equal to sklearn `roc_auc_score` and torchmetrics `BinaryAUROC()` without
 * thresholds. Keeps every score: O(rows) memory (4 bytes a row), O(rows log
 * rows) `compute`. Scores may be any finite numbers (probabilities or
 * logits: the ranks are the same); labels must be 0 or 1. A single-class eval
 * set gives NaN (undefined, as sklearn reports it).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ExactAuc } from "./metrics.ts";
 * const auc = new ExactAuc("exact_auc_ctr");
 * // The positive at 0.4 ties one negative: half a win.
 * auc.update(new Float32Array([0.1, 0.4, 0.4, 0.8]), new Float32Array([0, 0, 1, 1]));
 * assert.equal(auc.compute(), 0.875);
 * ```
 */
export class ExactAuc implements Metric {
  /** Reported name. */
  readonly name: string;
  #pos = new Float32Array(1024);
  #neg = new Float32Array(1024);
  #positives = 0;
  #negatives = 0;

  /**
   * An empty accumulator.
   *
   * @param name Reported name.
   */
  constructor(name = "exact_auc") {
    this.name = name;
  }

  /** Adds a batch: finite scores and labels 0 or 1, one per row. */
  update(scores: Float32Array, labels: Float32Array): void {
    const rows = checkBatch(this.name, scores, labels);
    checkScoresAndLabels(this.name, scores, labels);
    let ones = 0;
    for (let i = 0; i < rows; i++) ones += labels[i];
    this.#pos = ensureCapacity(this.#pos, this.#positives + ones);
    this.#neg = ensureCapacity(this.#neg, this.#negatives + rows - ones);
    const pos = this.#pos, neg = this.#neg;
    let p = this.#positives, n = this.#negatives;
    for (let i = 0; i < rows; i++) {
      if (labels[i] === 1) pos[p++] = scores[i];
      else neg[n++] = scores[i];
    }
    this.#positives = p;
    this.#negatives = n;
  }

  /** The AUC; NaN while either class has no row. */
  compute(): number {
    if (this.#positives === 0 || this.#negatives === 0) return NaN;
    // Row order carries no meaning here, so the stored scores are sorted in place.
    return sortedAuc(
      this.#pos.subarray(0, this.#positives).sort(),
      this.#neg.subarray(0, this.#negatives).sort(),
    );
  }

  /** Forgets every row (keeps the buffers). */
  reset(): void {
    this.#positives = 0;
    this.#negatives = 0;
  }
}

/**
 * tzrec `grouped_auc` (tzrec/metrics/grouped_auc.py `GroupedAUC`): rows are
 * grouped by a key (tzrec: the first id of the `grouping_key` feature, e.g.
 * the user), each group gets its exact AUC, groups whose labels are all equal
 * are skipped, and the result is the unweighted mean over the groups kept;
 * NaN when no group is kept (tzrec divides 0 by 0). Keys compare with
 * `SameValueZero`, so `1` and `"1"` are different groups. O(rows) memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { GroupedAuc } from "./metrics.ts";
 * const gauc = new GroupedAuc("grouped_auc_ctr", "user_id");
 * gauc.update(
 *   new Float32Array([0.9, 0.1, 0.2, 0.8, 0.5, 0.6]),
 *   new Float32Array([1, 0, 1, 0, 1, 1]),
 *   ["a", "a", "b", "b", "c", "c"], // group c has positives only: skipped
 * );
 * assert.equal(gauc.compute(), 0.5); // mean of a: 1 and b: 0
 * assert.equal(gauc.groupsKept, 2);
 * ```
 */
export class GroupedAuc implements Metric {
  /** Reported name. */
  readonly name: string;
  /** Column or feature whose value is the group key (from the config). */
  readonly groupingKey: string;
  #ids = new Map<string | number, number>();
  #group = new Int32Array(1024);
  #score = new Float32Array(1024);
  /** Label of each row as 0 / 1 (Int32 so it shares the growth helper). */
  #label = new Int32Array(1024);
  #rows = 0;
  #kept = 0;

  /**
   * An empty accumulator.
   *
   * @param name Reported name.
   * @param groupingKey The config's `grouping_key`, kept for the caller.
   */
  constructor(name = "grouped_auc", groupingKey = "") {
    this.name = name;
    this.groupingKey = groupingKey;
  }

  /** Groups kept (both labels present) by the last {@link GroupedAuc.compute}. */
  get groupsKept(): number {
    return this.#kept;
  }

  /** Adds a batch: finite scores, labels 0 or 1 and one group key per row. */
  update(scores: Float32Array, labels: Float32Array, groups?: ArrayLike<string | number>): void {
    const rows = checkBatch(this.name, scores, labels);
    if (groups === undefined || groups === null || typeof groups.length !== "number") {
      throw new TypeError(`${this.name}: groups (one key per row) are required`);
    }
    if (groups.length !== rows) {
      throw new RangeError(`${this.name}: preds has ${rows} rows but groups has ${groups.length}`);
    }
    checkScoresAndLabels(this.name, scores, labels);
    for (let i = 0; i < rows; i++) {
      const key = groups[i];
      if (typeof key !== "string" && typeof key !== "number") {
        throw new TypeError(`${this.name}: group key at row ${i} must be a string or number`);
      }
    }
    const end = this.#rows + rows;
    this.#group = ensureCapacity(this.#group, end);
    this.#score = ensureCapacity(this.#score, end);
    this.#label = ensureCapacity(this.#label, end);
    this.#score.set(scores, this.#rows);
    const ids = this.#ids, group = this.#group, label = this.#label;
    for (let i = 0, r = this.#rows; i < rows; i++, r++) {
      const key = groups[i];
      let id = ids.get(key);
      if (id === undefined) {
        id = ids.size;
        ids.set(key, id);
      }
      group[r] = id;
      label[r] = labels[i];
    }
    this.#rows = end;
  }

  /** Mean exact AUC over the groups holding both labels; NaN if there is none. */
  compute(): number {
    const groupCount = this.#ids.size, rows = this.#rows;
    const group = this.#group, label = this.#label, score = this.#score;
    // Counting sort of the rows by group: positives first, then negatives.
    const positives = new Int32Array(groupCount), sizes = new Int32Array(groupCount);
    for (let r = 0; r < rows; r++) {
      sizes[group[r]]++;
      positives[group[r]] += label[r];
    }
    const start = new Int32Array(groupCount + 1);
    for (let g = 0; g < groupCount; g++) start[g + 1] = start[g] + sizes[g];
    const sorted = new Float32Array(rows);
    const nextPos = start.slice(0, groupCount), nextNeg = new Int32Array(groupCount);
    for (let g = 0; g < groupCount; g++) nextNeg[g] = start[g] + positives[g];
    for (let r = 0; r < rows; r++) {
      const g = group[r];
      sorted[label[r] === 1 ? nextPos[g]++ : nextNeg[g]++] = score[r];
    }
    let sum = 0, kept = 0;
    for (let g = 0; g < groupCount; g++) {
      const p = positives[g], n = sizes[g] - p;
      if (p === 0 || n === 0) continue;
      const mid = start[g] + p;
      sum += sortedAuc(sorted.subarray(start[g], mid).sort(), sorted.subarray(mid, mid + n).sort());
      kept++;
    }
    this.#kept = kept;
    return kept > 0 ? sum / kept : NaN;
  }

  /** Forgets every row and group. */
  reset(): void {
    this.#ids.clear();
    this.#rows = 0;
    this.#kept = 0;
  }
}

// ------------------------------------------------------------ mean-type metrics

/**
 * Mean absolute error, torchmetrics `MeanAbsoluteError`: sum |pred - label| /
 * rows over every batch (tzrec feeds `y_<t>` of an `l2_loss` tower). NaN
 * before any row (torchmetrics: 0 / 0).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MeanAbsoluteError } from "./metrics.ts";
 * const mae = new MeanAbsoluteError("mean_absolute_error_price");
 * mae.update(new Float32Array([1, 2]), new Float32Array([1.5, 0]));
 * mae.update(new Float32Array([3]), new Float32Array([3.5]));
 * assert.equal(mae.compute(), 1); // (0.5 + 2 + 0.5) / 3
 * ```
 */
export class MeanAbsoluteError implements Metric {
  /** Reported name. */
  readonly name: string;
  #sum = 0;
  #rows = 0;

  /**
   * An empty accumulator.
   *
   * @param name Reported name.
   */
  constructor(name = "mean_absolute_error") {
    this.name = name;
  }

  /** Adds a batch of finite predictions and labels. */
  update(preds: Float32Array, labels: Float32Array): void {
    const rows = checkBatch(this.name, preds, labels);
    let sum = 0;
    for (let i = 0; i < rows; i++) {
      const d = preds[i] - labels[i];
      if (!Number.isFinite(d)) throw regressionError(this.name, preds, labels, i);
      sum += Math.abs(d);
    }
    this.#sum += sum;
    this.#rows += rows;
  }

  /** The mean absolute error; NaN before any row. */
  compute(): number {
    return this.#sum / this.#rows;
  }

  /** Forgets every row. */
  reset(): void {
    this.#sum = 0;
    this.#rows = 0;
  }
}

function regressionError(
  name: string,
  preds: Float32Array,
  labels: Float32Array,
  row: number,
): RangeError {
  return Number.isFinite(preds[row])
    ? notFinite(name, "label", row, labels[row])
    : notFinite(name, "prediction", row, preds[row]);
}

/**
 * Mean squared error, torchmetrics `MeanSquaredError`: sum (pred - label)^2 /
 * rows over every batch. NaN before any row.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MeanSquaredError } from "./metrics.ts";
 * const mse = new MeanSquaredError("mean_squared_error_price");
 * mse.update(new Float32Array([1, 2, 3]), new Float32Array([1.5, 0, 3.5]));
 * assert.equal(mse.compute(), 1.5); // (0.25 + 4 + 0.25) / 3
 * ```
 */
export class MeanSquaredError implements Metric {
  /** Reported name. */
  readonly name: string;
  #sum = 0;
  #rows = 0;

  /**
   * An empty accumulator.
   *
   * @param name Reported name.
   */
  constructor(name = "mean_squared_error") {
    this.name = name;
  }

  /** Adds a batch of finite predictions and labels. */
  update(preds: Float32Array, labels: Float32Array): void {
    const rows = checkBatch(this.name, preds, labels);
    let sum = 0;
    for (let i = 0; i < rows; i++) {
      const d = preds[i] - labels[i];
      if (!Number.isFinite(d)) throw regressionError(this.name, preds, labels, i);
      sum += d * d;
    }
    this.#sum += sum;
    this.#rows += rows;
  }

  /** The mean squared error; NaN before any row. */
  compute(): number {
    return this.#sum / this.#rows;
  }

  /** Forgets every row. */
  reset(): void {
    this.#sum = 0;
    this.#rows = 0;
  }
}

/**
 * Binary accuracy, torchmetrics `BinaryAccuracy(threshold)` (tzrec
 * `accuracy {threshold: 0.5}`): a row is predicted 1 iff prob > threshold
 * (strictly: torchmetrics `_binary_stat_scores_format` uses `>`, unlike the
 * AUROC's `>=`), and the value is the fraction of rows whose prediction equals
 * the label. Probabilities in [0, 1], labels 0 or 1. NaN before any row
 * (torchmetrics returns 0 there).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Accuracy } from "./metrics.ts";
 * const acc = new Accuracy(0.5, "accuracy_ctr");
 * // 0.5 is not above the threshold, so it predicts 0: right for label 0.
 * acc.update(new Float32Array([0.5, 0.9, 0.2, 0.7]), new Float32Array([0, 1, 1, 0]));
 * assert.equal(acc.compute(), 0.5);
 * ```
 */
export class Accuracy implements Metric {
  /** Reported name. */
  readonly name: string;
  /** A row is predicted positive iff its probability is above this. */
  readonly threshold: number;
  #correct = 0;
  #rows = 0;

  /**
   * An empty accumulator.
   *
   * @param threshold Decision threshold in [0, 1] (tzrec default 0.5).
   * @param name Reported name.
   */
  constructor(threshold = 0.5, name = "accuracy") {
    if (!(threshold >= 0 && threshold <= 1)) {
      throw new RangeError(`${name}: threshold must be in [0, 1], got ${threshold}`);
    }
    this.name = name;
    // torchmetrics compares the f32 probabilities with the Python float threshold (f64).
    this.threshold = threshold;
  }

  /** Adds a batch: probabilities in [0, 1] and labels 0 or 1. */
  update(probs: Float32Array, labels: Float32Array): void {
    const rows = checkBatch(this.name, probs, labels);
    let correct = 0;
    for (let i = 0; i < rows; i++) {
      const p = probs[i], y = labels[i];
      if (!(p >= 0 && p <= 1)) throw badProbability(this.name, i, p);
      if (y !== 0 && y !== 1) throw badLabel(this.name, i, y);
      if ((p > this.threshold ? 1 : 0) === y) correct++;
    }
    this.#correct += correct;
    this.#rows += rows;
  }

  /** Fraction of rows predicted right; NaN before any row. */
  compute(): number {
    return this.#correct / this.#rows;
  }

  /** Forgets every row. */
  reset(): void {
    this.#correct = 0;
    this.#rows = 0;
  }
}

/**
 * Multiclass accuracy, tzrec `accuracy {}` on a tower with num_class > 1:
 * torchmetrics `Accuracy(task="multiclass", num_classes=C, top_k=1)`, whose
 * average is "micro" (the `Accuracy` wrapper's default): the fraction of rows
 * whose most probable class is the label; on ties the lowest class wins, as
 * `torch.argmax`. `probs` are rows x C, row-major (`probs_<t>`); labels are
 * class ids in [0, C). The decision threshold plays no part (torchmetrics
 * ignores it for multiclass). NaN before any row.
 *
 * @example torchmetrics' MulticlassAccuracy docstring data: 3 of 4 rows right (micro)
 * ```ts
 * import assert from "node:assert/strict";
 * import { MulticlassAccuracy } from "./metrics.ts";
 * const acc = new MulticlassAccuracy(3, "accuracy_grade");
 * acc.update(
 *   new Float32Array([0.16, 0.26, 0.58, 0.22, 0.61, 0.17, 0.71, 0.09, 0.2, 0.05, 0.82, 0.13]),
 *   new Float32Array([2, 1, 0, 0]),
 * );
 * assert.equal(acc.compute(), 0.75);
 * ```
 */
export class MulticlassAccuracy implements Metric {
  /** Reported name. */
  readonly name: string;
  /** Classes C. */
  readonly numClasses: number;
  #correct = 0;
  #rows = 0;

  /**
   * An empty accumulator.
   *
   * @param numClasses Classes C (at least 2).
   * @param name Reported name.
   */
  constructor(numClasses: number, name = "accuracy") {
    if (!Number.isInteger(numClasses) || numClasses < 2) {
      throw new RangeError(`${name}: numClasses must be an integer >= 2, got ${numClasses}`);
    }
    this.name = name;
    this.numClasses = numClasses;
  }

  /** Adds a batch: rows x C finite probabilities and one class id per row. */
  update(probs: Float32Array, labels: Float32Array): void {
    if (!(probs instanceof Float32Array)) {
      throw new TypeError(`${this.name}: preds must be a Float32Array`);
    }
    if (!(labels instanceof Float32Array)) {
      throw new TypeError(`${this.name}: labels must be a Float32Array`);
    }
    const C = this.numClasses, rows = labels.length;
    if (probs.length !== rows * C) {
      throw new RangeError(
        `${this.name}: preds has ${probs.length} values, expected ${rows} rows x ${C} classes`,
      );
    }
    let correct = 0;
    for (let i = 0; i < rows; i++) {
      const y = labels[i];
      if (!(Number.isInteger(y) && y >= 0 && y < C)) {
        throw new RangeError(
          `${this.name}: label at row ${i} is ${y}, expected a class id in [0, ${C})`,
        );
      }
      let best = 0, max = probs[i * C];
      for (let c = 0; c < C; c++) {
        const p = probs[i * C + c];
        if (!Number.isFinite(p)) throw notFinite(this.name, "probability", i, p);
        if (p > max) max = p, best = c;
      }
      if (best === y) correct++;
    }
    this.#correct += correct;
    this.#rows += rows;
  }

  /** Fraction of rows whose top class is the label; NaN before any row. */
  compute(): number {
    return this.#correct / this.#rows;
  }

  /** Forgets every row. */
  reset(): void {
    this.#correct = 0;
    this.#rows = 0;
  }
}

/**
 * Weighted mean of scalars: how tzrec reports each loss in eval
 * (`torchmetrics.MeanMetric().update(loss, batch_size)`): sum(value *
 * weight) / sum(weight), so with batch sizes as weights every row counts the
 * same. NaN before any weight.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WeightedMean } from "./metrics.ts";
 * const loss = new WeightedMean("binary_cross_entropy_ctr");
 * loss.update(0.5, 3); // a batch of 3 rows with mean loss 0.5
 * loss.update(1.0, 1); // the last, partial batch
 * assert.equal(loss.compute(), 0.625);
 * ```
 */
export class WeightedMean {
  /** Reported name (the loss name, e.g. `binary_cross_entropy_ctr`). */
  readonly name: string;
  #sum = 0;
  #weight = 0;

  /**
   * An empty accumulator.
   *
   * @param name Reported name.
   */
  constructor(name = "mean") {
    this.name = name;
  }

  /** Adds `value` with `weight` (finite, >= 0; e.g. the batch's row count). */
  update(value: number, weight = 1): void {
    if (!Number.isFinite(value)) {
      throw new RangeError(`${this.name}: value is ${value}, expected a finite number`);
    }
    if (!(weight >= 0 && weight < Infinity)) {
      throw new RangeError(`${this.name}: weight is ${weight}, expected a finite number >= 0`);
    }
    this.#sum += value * weight;
    this.#weight += weight;
  }

  /** The weighted mean; NaN before any weight. */
  compute(): number {
    return this.#sum / this.#weight;
  }

  /** Forgets every value. */
  reset(): void {
    this.#sum = 0;
    this.#weight = 0;
  }
}

// --------------------------------------------------------------------- factory

/**
 * The accumulator for one of a tower's configured metrics, named by the
 * config (`auc_ctr`, ...). `auc` is {@link BinnedAuc}, `exact_auc`
 * {@link ExactAuc}, `grouped_auc` {@link GroupedAuc} (its `groupingKey` names
 * the column to pass as `groups`), `mean_absolute_error`
 * {@link MeanAbsoluteError}, `mean_squared_error` {@link MeanSquaredError},
 * `accuracy` {@link Accuracy} (num_class 1 and 2) or {@link MulticlassAccuracy}
 * (num_class > 2).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Accuracy, createMetric } from "./metrics.ts";
 * const metric = createMetric({ kind: "accuracy", name: "accuracy_ctr", threshold: 0.3, numClass: 1 });
 * assert.ok(metric instanceof Accuracy && metric.threshold === 0.3);
 * metric.update(new Float32Array([0.4, 0.2]), new Float32Array([1, 0]));
 * assert.equal(metric.compute(), 1);
 * ```
 */
export function createMetric(spec: ResolvedMetric): Metric {
  switch (spec.kind) {
    case "auc":
      return new BinnedAuc(spec.thresholds, spec.name);
    case "exact_auc":
      return new ExactAuc(spec.name);
    case "grouped_auc":
      return new GroupedAuc(spec.name, spec.groupingKey);
    case "mean_absolute_error":
      return new MeanAbsoluteError(spec.name);
    case "mean_squared_error":
      return new MeanSquaredError(spec.name);
    case "accuracy":
      // num_class 2: the trainer passes probs1, and argmax over 2 classes is
      // probs1 > 0.5 (a tie goes to class 0 either way).
      return spec.numClass > 2
        ? new MulticlassAccuracy(spec.numClass, spec.name)
        : new Accuracy(spec.numClass === 2 ? 0.5 : spec.threshold, spec.name);
    default: {
      const unknown: never = spec;
      throw new TypeError(
        `unknown metric kind ${JSON.stringify((unknown as ResolvedMetric).kind)}`,
      );
    }
  }
}

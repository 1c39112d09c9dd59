import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Accuracy,
  BinnedAuc,
  createMetric,
  ExactAuc,
  GroupedAuc,
  MeanAbsoluteError,
  MeanSquaredError,
  MulticlassAccuracy,
  torchLinspace,
  WeightedMean,
} from "../src/train/metrics.ts";
import type { ResolvedMetric } from "../src/config/config.ts";
import { rng } from "./_util.ts";

const f32 = (values: number[]) => new Float32Array(values);
const f = Math.fround;

/**
 * ctr-like rows: 30% positives, scores with a clear signal squashed into
 * (0, 1) by z / (1 + |z|) (plain arithmetic, so every engine makes the same
 * f32 values).
 */
function ctrData(rows: number, seed: number) {
  const next = rng(seed);
  const probs = new Float32Array(rows), labels = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    const y = next() < 0.3 ? 1 : 0;
    const z = 1.2 * (y - 0.5) + 1.5 * (next() + next() + next() - 1.5);
    probs[i] = 0.5 + z / (2 + 2 * Math.abs(z));
    labels[i] = y;
  }
  return { probs, labels };
}

/** cvr-like rows: 5% positives, every probability in [0.002, 0.022]. */
function cvrData(rows: number, seed: number) {
  const next = rng(seed);
  const probs = new Float32Array(rows), labels = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    const y = next() < 0.05 ? 1 : 0;
    probs[i] = 0.002 + 0.012 * next() + 0.008 * y * next();
    labels[i] = y;
  }
  return { probs, labels };
}

/** All-pairs Mann-Whitney AUC in f64: the definition, O(P N). */
function pairwiseAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  let wins = 0, pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (scores[i] > scores[j]) wins += 1;
      else if (scores[i] === scores[j]) wins += 0.5;
    }
  }
  return wins / pairs;
}

/** The next f32 below a positive f32. */
function nextDown(x: number): number {
  const bits = new Int32Array(new Float32Array([x]).buffer);
  bits[0]--;
  return new Float32Array(bits.buffer)[0];
}

function binnedAuc(thresholds: number, probs: Float32Array, labels: Float32Array): number {
  const auc = new BinnedAuc(thresholds);
  auc.update(probs, labels);
  return auc.compute();
}

function exactAuc(probs: Float32Array, labels: Float32Array): number {
  const auc = new ExactAuc();
  auc.update(probs, labels);
  return auc.compute();
}

// -------------------------------------------------------------- torchLinspace

test("torchLinspace: small counts and exact ends", () => {
  assert.deepEqual(Array.from(torchLinspace(0, 1, 5)), [0, 0.25, 0.5, 0.75, 1]);
  assert.deepEqual(Array.from(torchLinspace(0, 1, 2)), [0, 1]);
  assert.deepEqual(Array.from(torchLinspace(0, 1, 3)), [0, 0.5, 1]);
  assert.deepEqual(Array.from(torchLinspace(0, 1, 1)), [0]);
  assert.equal(torchLinspace(0, 1, 0).length, 0);
  assert.throws(() => torchLinspace(0, 1, -1), RangeError);
  assert.throws(() => torchLinspace(0, 1, 2.5), RangeError);
});

test("torchLinspace: f32 values of PyTorch's two-sided formula", () => {
  // step = f32(1/9); i = 6 >= 10/2 counts down: 1 - f32(step * 3), which is
  // one ulp below f32(6/9).
  const ten = torchLinspace(0, 1, 10);
  assert.equal(ten[6], 0.6666666269302368);
  assert.notEqual(ten[6], f(6 / 9));
  assert.equal(ten[3], f(f(1 / 9) * 3));
  // i = 7 of 15 is past halfway (7 = floor(15 / 2)): 1 - f32(f32(1/14) * 7) = 0.5.
  assert.equal(torchLinspace(0, 1, 15)[7], 0.5);
  // Values from an independent numpy float32 implementation of the formula.
  assert.equal(torchLinspace(0, 1, 1000)[600], 0.6006006002426147);
  assert.equal(torchLinspace(0, 1, 200)[137], 0.6884422302246094);
  for (const n of [2, 3, 4, 7, 200, 1000, 10000]) {
    const t = torchLinspace(0, 1, n);
    assert.equal(t[0], 0, `n=${n} first`);
    assert.equal(t[n - 1], 1, `n=${n} last`);
    for (let i = 1; i < n; i++) assert.ok(t[i] > t[i - 1], `n=${n} ascending at ${i}`);
    for (let i = 0; i < n; i++) {
      assert.ok(Math.abs(t[i] - i / (n - 1)) <= 1.2e-7, `n=${n} close to i/(n-1) at ${i}`);
    }
  }
});

// ------------------------------------------------------------------ BinnedAuc

test("BinnedAuc: torchmetrics binary_roc / binary_auroc docstring, thresholds=5", () => {
  // torchmetrics docs: preds [0, 0.5, 0.7, 0.8], target [0, 1, 1, 0] ->
  // fpr [0, .5, .5, .5, 1], tpr [0, 0, 1, 1, 1], thresholds [1, .75, .5, .25, 0], AUROC 0.5.
  const auc = new BinnedAuc(5);
  auc.update(f32([0, 0.5, 0.7, 0.8]), f32([0, 1, 1, 0]));
  const { fpr, tpr, thresholds } = auc.roc();
  assert.deepEqual(Array.from(fpr), [0, 0.5, 0.5, 0.5, 1]);
  assert.deepEqual(Array.from(tpr), [0, 0, 1, 1, 1]);
  assert.deepEqual(Array.from(thresholds), [1, 0.75, 0.5, 0.25, 0]);
  assert.equal(auc.compute(), 0.5);
});

test("BinnedAuc: torchmetrics multiclass_auroc docstring, one-vs-rest, thresholds=5", () => {
  // torchmetrics docs: multiclass_auroc(preds, target, num_classes=5,
  // average=None, thresholds=5) = [1.0000, 1.0000, 0.3333, 0.3333, 0.0000];
  // each class is the binary binned AUROC of its column against target == c.
  const preds = [
    [0.75, 0.05, 0.05, 0.05, 0.05],
    [0.05, 0.75, 0.05, 0.05, 0.05],
    [0.05, 0.05, 0.75, 0.05, 0.05],
    [0.05, 0.05, 0.05, 0.75, 0.05],
  ];
  const target = [0, 1, 3, 2];
  const expected = [1, 1, 0.3333, 0.3333, 0];
  for (let c = 0; c < 5; c++) {
    const value = binnedAuc(
      5,
      f32(preds.map((row) => row[c])),
      f32(target.map((t) => (t === c ? 1 : 0))),
    );
    assert.ok(Math.abs(value - expected[c]) < 5e-5, `class ${c}: ${value}`);
  }
});

test("BinnedAuc: probabilities exactly on the thresholds 0, 1 and interior ones", () => {
  // thresholds 0, .25, .5, .75, 1; a row is positive at tau iff p >= tau.
  // Descending: tau=1 {p=1: +} -> (0, 1/3); .75 {+,+} -> (0, 2/3);
  // .5 adds a negative -> (1/2, 2/3); .25 adds a positive -> (1/2, 1); 0 -> (1, 1).
  // Area: 1/2 * 2/3 + 1/2 * 1 = 5/6, the exact AUC of these distinct scores.
  const auc = new BinnedAuc(5);
  auc.update(f32([0, 0.25, 0.5, 0.75, 1]), f32([0, 1, 0, 1, 1]));
  const { fpr, tpr } = auc.roc();
  assert.deepEqual(Array.from(fpr), [0, 0, 0.5, 0.5, 1]);
  assert.deepEqual(Array.from(tpr), [f(1 / 3), f(2 / 3), f(2 / 3), 1, 1]);
  assert.ok(Math.abs(auc.compute() - 5 / 6) < 1e-7);
});

test("BinnedAuc: a probability equal to an interior f32 threshold counts at it, one ulp below does not", () => {
  for (const [n, k] of [[200, 137], [1000, 600], [1000, 1], [7, 3]]) {
    const t = torchLinspace(0, 1, n)[k];
    // Positive exactly at t, negative one f32 below: separated only if p >= t
    // uses the f32 threshold itself.
    assert.equal(binnedAuc(n, f32([t, nextDown(t)]), f32([1, 0])), 1, `n=${n} k=${k}`);
    assert.equal(binnedAuc(n, f32([nextDown(t), t]), f32([1, 0])), 0, `n=${n} k=${k} swapped`);
    // Both in the bin [t, next threshold): a tie.
    assert.equal(binnedAuc(n, f32([t, t]), f32([1, 0])), 0.5, `n=${n} k=${k} tie`);
  }
});

test("BinnedAuc: rows at prob 1.0 lose the area before the first point (no (0, 0) point)", () => {
  // One negative at exactly 1.0 moves torchmetrics' first point to (0.5, 1):
  // the triangle from (0, 0) is not counted, 0.5 instead of the exact 0.75.
  const probs = f32([1, 1, 0.2]), labels = f32([1, 0, 0]);
  assert.equal(binnedAuc(200, probs, labels), 0.5);
  assert.equal(exactAuc(probs, labels), 0.75);
  // All rows tied at 1.0: every point is (1, 1), area 0 (exact: 0.5).
  assert.equal(binnedAuc(200, f32([1, 1]), f32([1, 0])), 0);
  // All rows tied at 0.0: the curve still starts at (0, 0), so 0.5.
  assert.equal(binnedAuc(200, f32([0, 0]), f32([1, 0])), 0.5);
});

test("BinnedAuc: single-class and empty eval sets give 0 (torchmetrics' 0/0 -> 0)", () => {
  const positives = new BinnedAuc(200);
  positives.update(f32([0.1, 0.6, 0.9]), f32([1, 1, 1]));
  assert.equal(positives.compute(), 0);
  assert.deepEqual(Array.from(new Set(positives.roc().fpr)), [0]);
  const negatives = new BinnedAuc(200);
  negatives.update(f32([0.1, 0.6, 0.9]), f32([0, 0, 0]));
  assert.equal(negatives.compute(), 0);
  assert.deepEqual(Array.from(new Set(negatives.roc().tpr)), [0]);
  assert.equal(new BinnedAuc(200).compute(), 0);
});

test("BinnedAuc: equals the exact AUC of the bin index (brute-force bins, all pairs)", () => {
  for (const n of [2, 3, 7, 200, 1000]) {
    const next = rng(100 + n);
    const rows = 1500;
    const t = torchLinspace(0, 1, n);
    const probs = new Float32Array(rows), labels = new Float32Array(rows);
    for (let i = 0; i < rows; i++) {
      labels[i] = next() < 0.4 ? 1 : 0;
      // Every fifth row sits exactly on a threshold below 1 (1.0 would drop
      // the first segment, tested above).
      probs[i] = i % 5 === 0
        ? t[Math.floor(next() * (n - 1))]
        : Math.min(0.999, Math.max(0, 0.35 * labels[i] + 0.65 * next()));
    }
    const bins = Array.from(probs, (p) => t.filter((tau) => tau <= p).length);
    const value = binnedAuc(n, probs, labels);
    assert.ok(Math.abs(value - pairwiseAuc(bins, labels)) < 1e-6, `n=${n}: ${value}`);
  }
});

test("BinnedAuc: reference values from an independent numpy torchmetrics implementation", () => {
  // numpy, float32: thresholds by the linspace formula, preds[:, None] >=
  // thresholds[None, :], per-threshold TP/FP/TN/FN, f32 rates with 0/0 -> 0,
  // flipped, trapezoid summed in f64 (torch sums in f32: 0.868398786,
  // 0.868451238, 0.711327672, 0.728846610 by numpy's f32 trapezoid, within
  // 1e-7). Exact AUC there by all pairs with ties as 1/2.
  const ctr = ctrData(3000, 11), cvr = cvrData(4000, 12);
  const cases: [string, { probs: Float32Array; labels: Float32Array }, number, number][] = [
    ["ctr 200", ctr, 200, 0.8683987174960125],
    ["ctr 1000", ctr, 1000, 0.868451229729848],
    ["cvr 200", cvr, 200, 0.7113276289700796],
    ["cvr 1000", cvr, 1000, 0.7288465845122245],
  ];
  for (const [label, data, n, expected] of cases) {
    const value = binnedAuc(n, data.probs, data.labels);
    assert.ok(Math.abs(value - expected) < 1e-12, `${label}: ${value} vs ${expected}`);
  }
  assert.ok(Math.abs(exactAuc(ctr.probs, ctr.labels) - 0.8684549267884888) < 1e-12);
  assert.ok(Math.abs(exactAuc(cvr.probs, cvr.labels) - 0.7284968828970925) < 1e-12);
});

test("BinnedAuc: converges to the exact AUC as thresholds grow", () => {
  const { probs, labels } = ctrData(100_000, 5);
  const exact = exactAuc(probs, labels);
  const errors = [20, 200, 10_000].map((n) => Math.abs(binnedAuc(n, probs, labels) - exact));
  assert.ok(errors[2] < 1e-3, `10000 thresholds: error ${errors[2]}`);
  assert.ok(errors[2] < errors[0], `10000 vs 20 thresholds: ${errors}`);
});

test("BinnedAuc: quantisation on cvr-like probabilities, 200 vs 1000 thresholds", () => {
  // Probabilities in [0.002, 0.022] fall into ~4 bins of width 1/199 but ~20
  // of width 1/999: the 200-threshold AUC is far below the exact one.
  const { probs, labels } = cvrData(4000, 12);
  const exact = exactAuc(probs, labels);
  const coarse = Math.abs(binnedAuc(200, probs, labels) - exact);
  const fine = Math.abs(binnedAuc(1000, probs, labels) - exact);
  assert.ok(coarse > 0.01, `200 thresholds: error ${coarse}`);
  assert.ok(fine < 0.001, `1000 thresholds: error ${fine}`);
});

test("BinnedAuc: independent of how rows are split into update() calls", () => {
  const { probs, labels } = ctrData(3000, 21);
  const whole = new BinnedAuc(1000);
  whole.update(probs, labels);
  const split = new BinnedAuc(1000);
  const next = rng(3);
  for (let start = 0; start < probs.length;) {
    const size = [0, 1, 2, 17, 512, 1024][Math.floor(next() * 6)];
    const end = Math.min(probs.length, start + size);
    split.update(probs.subarray(start, end), labels.subarray(start, end));
    start = end;
  }
  assert.equal(split.compute(), whole.compute());
  assert.deepEqual(split.roc(), whole.roc());
});

test("BinnedAuc: reset forgets rows; thresholds getter is torch.linspace", () => {
  const auc = new BinnedAuc(7);
  auc.update(f32([0.9, 0.1]), f32([0, 1]));
  assert.equal(auc.compute(), 0);
  auc.reset();
  auc.update(f32([0.9, 0.1]), f32([1, 0]));
  assert.equal(auc.compute(), 1);
  assert.deepEqual(auc.thresholds, torchLinspace(0, 1, 7));
  auc.thresholds[3] = 5; // a copy: the metric is unaffected
  assert.equal(auc.thresholds[3], torchLinspace(0, 1, 7)[3]);
});

test("BinnedAuc: bad arguments and rows throw and leave the counts unchanged", () => {
  for (const n of [1, 0, -3, 2.5, NaN]) assert.throws(() => new BinnedAuc(n), RangeError);
  const auc = new BinnedAuc(200, "auc_ctr");
  const { probs, labels } = ctrData(100, 4);
  auc.update(probs, labels);
  const before = auc.roc();
  assert.throws(() => auc.update(f32([0.1, 0.2]), f32([1])), {
    name: "RangeError",
    message: "auc_ctr: preds has 2 rows but labels has 1",
  });
  assert.throws(
    () => auc.update([0.1] as unknown as Float32Array, f32([1])),
    TypeError,
  );
  for (const bad of [NaN, 1.5, -0.25, Infinity]) {
    assert.throws(() => auc.update(f32([0.2, 0.3, bad, 0.4]), f32([0, 1, 1, 0])), {
      name: "RangeError",
      message: `auc_ctr: probability at row 2 is ${bad}, expected a value in [0, 1]`,
    });
  }
  for (const bad of [2, 0.5, -1, NaN]) {
    assert.throws(() => auc.update(f32([0.2, 0.3, 0.4]), f32([0, 1, bad])), {
      name: "RangeError",
      message: `auc_ctr: label at row 2 is ${bad}, expected 0 or 1`,
    });
  }
  assert.deepEqual(auc.roc(), before);
});

// -------------------------------------------------------------------- ExactAuc

test("ExactAuc: hand cases with ties (sklearn roc_auc_score docs: 0.75)", () => {
  assert.equal(exactAuc(f32([0.1, 0.4, 0.35, 0.8]), f32([0, 0, 1, 1])), 0.75);
  // The positive at 0.4 ties a negative: (1 + 0.5) + 2 wins of 4 pairs.
  assert.equal(exactAuc(f32([0.1, 0.4, 0.4, 0.8]), f32([0, 0, 1, 1])), 0.875);
  assert.equal(exactAuc(f32([0.5, 0.5, 0.5, 0.5]), f32([0, 1, 0, 1])), 0.5);
  assert.equal(exactAuc(f32([0.9, 0.8, 0.1]), f32([0, 0, 1])), 0);
  // Any finite scores (logits) rank the same.
  assert.equal(exactAuc(f32([-3, 7, 2, -1]), f32([0, 1, 1, 0])), 1);
});

test("ExactAuc: matches all-pairs AUC on heavily tied data, any batching", () => {
  const next = rng(8);
  const rows = 1500;
  const scores = new Float32Array(rows), labels = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    labels[i] = next() < 0.35 ? 1 : 0;
    scores[i] = Math.round(100 * (0.3 * labels[i] + 0.7 * next())) / 100;
  }
  const auc = new ExactAuc();
  for (let start = 0; start < rows; start += 333) {
    auc.update(scores.subarray(start, start + 333), labels.subarray(start, start + 333));
    auc.compute(); // sorting the stored scores in between must not matter
  }
  assert.ok(Math.abs(auc.compute() - pairwiseAuc(scores, labels)) < 1e-12);
});

test("ExactAuc: single class and empty are NaN; reset; bad rows change nothing", () => {
  assert.ok(Number.isNaN(exactAuc(f32([0.1, 0.2]), f32([1, 1]))));
  assert.ok(Number.isNaN(exactAuc(f32([0.1, 0.2]), f32([0, 0]))));
  assert.ok(Number.isNaN(new ExactAuc().compute()));
  const auc = new ExactAuc("exact_auc_ctr");
  auc.update(f32([0.2, 0.7]), f32([0, 1]));
  assert.throws(() => auc.update(f32([0.9, NaN]), f32([0, 1])), {
    name: "RangeError",
    message: "exact_auc_ctr: score at row 1 is NaN, expected a finite number",
  });
  assert.throws(() => auc.update(f32([0.9]), f32([3])), RangeError);
  assert.throws(() => auc.update(f32([0.9]), f32([])), RangeError);
  assert.equal(auc.compute(), 1);
  auc.reset();
  auc.update(f32([0.2, 0.7]), f32([1, 0]));
  assert.equal(auc.compute(), 0);
});

// ------------------------------------------------------------------ GroupedAuc

test("GroupedAuc: keeps groups with both labels, unweighted mean", () => {
  // a: 1; b: 0; c: positives only and d: negatives only are dropped;
  // e: the positive ties one negative and loses to the other: 0.25.
  const gauc = new GroupedAuc("grouped_auc_ctr", "user_id");
  gauc.update(
    f32([0.9, 0.1, 0.2, 0.8, 0.3, 0.6, 0.5]),
    f32([1, 0, 1, 0, 1, 1, 0]),
    ["a", "a", "b", "b", "c", "c", "d"],
  );
  // Later batches add rows to existing groups and new ones.
  gauc.update(f32([0.4, 0.5, 0.5, 0.7]), f32([0, 1, 0, 0]), ["d", "e", "e", "e"]);
  assert.ok(Math.abs(gauc.compute() - (1 + 0 + 0.25) / 3) < 1e-15);
  assert.equal(gauc.groupsKept, 3);
  assert.equal(gauc.groupingKey, "user_id");
});

test("GroupedAuc: equals the mean of per-group exact AUCs on random data", () => {
  const next = rng(31);
  const rows = 5000, groupCount = 300;
  const scores = new Float32Array(rows), labels = new Float32Array(rows);
  const groups = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    groups[i] = Math.floor(next() * next() * groupCount); // skewed sizes, some tiny
    labels[i] = next() < 0.3 ? 1 : 0;
    scores[i] = Math.round(50 * (0.2 * labels[i] + next())) / 50;
  }
  const gauc = new GroupedAuc();
  for (let start = 0; start < rows; start += 700) {
    const end = Math.min(rows, start + 700);
    gauc.update(
      scores.subarray(start, end),
      labels.subarray(start, end),
      groups.subarray(start, end),
    );
  }
  let sum = 0, kept = 0;
  for (let g = 0; g < groupCount; g++) {
    const idx = [...groups.keys()].filter((i) => groups[i] === g);
    const s = idx.map((i) => scores[i]), y = idx.map((i) => labels[i]);
    if (!y.includes(0) || !y.includes(1)) continue;
    sum += pairwiseAuc(s, y);
    kept++;
  }
  assert.ok(kept > 50 && kept < groupCount, `kept ${kept}`);
  assert.ok(Math.abs(gauc.compute() - sum / kept) < 1e-12);
  assert.equal(gauc.groupsKept, kept);
});

test("GroupedAuc: no group with both labels is NaN; keys 1 and '1' differ; reset", () => {
  const gauc = new GroupedAuc();
  gauc.update(f32([0.9, 0.1]), f32([1, 0]), [1, "1"]);
  assert.ok(Number.isNaN(gauc.compute()));
  assert.equal(gauc.groupsKept, 0);
  assert.ok(Number.isNaN(new GroupedAuc().compute()));
  gauc.update(f32([0.3]), f32([0]), [1]);
  assert.equal(gauc.compute(), 1);
  gauc.reset();
  assert.ok(Number.isNaN(gauc.compute()));
});

test("GroupedAuc: groups are required and checked; bad rows change nothing", () => {
  const gauc = new GroupedAuc("grouped_auc_ctr");
  gauc.update(f32([0.9, 0.1]), f32([1, 0]), [7, 7]);
  assert.throws(() => gauc.update(f32([0.5]), f32([1])), {
    name: "TypeError",
    message: "grouped_auc_ctr: groups (one key per row) are required",
  });
  assert.throws(() => gauc.update(f32([0.5, 0.4]), f32([1, 0]), [7]), {
    name: "RangeError",
    message: "grouped_auc_ctr: preds has 2 rows but groups has 1",
  });
  assert.throws(
    () => gauc.update(f32([0.5]), f32([1]), [null] as unknown as number[]),
    TypeError,
  );
  assert.throws(() => gauc.update(f32([0.5, 0.2]), f32([1, 2]), [7, 7]), RangeError);
  assert.throws(() => gauc.update(f32([Infinity]), f32([1]), [7]), RangeError);
  assert.equal(gauc.compute(), 1);
});

// ---------------------------------------------------------- mean-type metrics

test("MeanAbsoluteError and MeanSquaredError: hand cases over batches", () => {
  const mae = new MeanAbsoluteError(), mse = new MeanSquaredError();
  for (const m of [mae, mse]) {
    assert.ok(Number.isNaN(m.compute()));
    m.update(f32([1, -2]), f32([1.5, 0]));
    m.update(f32([]), f32([]));
    m.update(f32([3, 10]), f32([3.5, 10]));
  }
  assert.equal(mae.compute(), (0.5 + 2 + 0.5 + 0) / 4);
  assert.equal(mse.compute(), (0.25 + 4 + 0.25 + 0) / 4);
  for (const m of [mae, mse]) {
    assert.throws(() => m.update(f32([1, NaN]), f32([1, 1])), {
      name: "RangeError",
      message: `${m.name}: prediction at row 1 is NaN, expected a finite number`,
    });
    assert.throws(() => m.update(f32([1, 2]), f32([Infinity, 1])), {
      name: "RangeError",
      message: `${m.name}: label at row 0 is Infinity, expected a finite number`,
    });
    assert.throws(() => m.update(f32([1]), f32([1, 2])), RangeError);
  }
  assert.equal(mae.compute(), 0.75);
  assert.equal(mse.compute(), 1.125);
  mae.reset();
  mae.update(f32([2]), f32([-1]));
  assert.equal(mae.compute(), 3);
});

test("Accuracy: prob > threshold is 1 (strict, as torchmetrics)", () => {
  const acc = new Accuracy(0.5, "accuracy_ctr");
  assert.ok(Number.isNaN(acc.compute()));
  // 0.5 -> 0 (right for label 0, wrong for label 1); the next f32 above -> 1.
  acc.update(f32([0.5, 0.5, 0.50000006, 0, 1]), f32([0, 1, 1, 0, 1]));
  assert.equal(acc.compute(), 4 / 5);
  const zero = new Accuracy(0);
  zero.update(f32([0, 1e-30, 1]), f32([0, 1, 1]));
  assert.equal(zero.compute(), 1);
  const one = new Accuracy(1);
  one.update(f32([1, 0.3]), f32([1, 0]));
  assert.equal(one.compute(), 0.5);
  for (const bad of [-0.1, 1.1, NaN]) assert.throws(() => new Accuracy(bad), RangeError);
  assert.throws(() => acc.update(f32([0.2, 2]), f32([0, 1])), {
    name: "RangeError",
    message: "accuracy_ctr: probability at row 1 is 2, expected a value in [0, 1]",
  });
  assert.throws(() => acc.update(f32([0.2]), f32([0.5])), RangeError);
  assert.equal(acc.compute(), 4 / 5);
  acc.reset();
  acc.update(f32([0.9]), f32([0]));
  assert.equal(acc.compute(), 0);
});

test("MulticlassAccuracy: torchmetrics' docstring data, micro average (tzrec's Accuracy wrapper)", () => {
  // torchmetrics MulticlassAccuracy docstring: these preds and targets give
  // 0.8333 with average="macro" (per class 0.5, 1, 1). tzrec builds
  // torchmetrics.Accuracy(task="multiclass"), whose average is "micro": the
  // argmax of rows 0..2 is the label, row 3 predicts 1 for label 0 -> 3/4.
  const probs = f32([0.16, 0.26, 0.58, 0.22, 0.61, 0.17, 0.71, 0.09, 0.2, 0.05, 0.82, 0.13]);
  const target = f32([2, 1, 0, 0]);
  const acc = new MulticlassAccuracy(3, "accuracy_grade");
  assert.ok(Number.isNaN(acc.compute()));
  acc.update(probs, target);
  assert.equal(acc.compute(), 0.75);
  // Macro from the same argmaxes, as the docstring's 0.8333 check of the data.
  const recall = [0, 1, 2].map((c) => {
    const rows = [0, 1, 2, 3].filter((r) => target[r] === c);
    const hits = rows.filter((r) =>
      [0, 1, 2].reduce((b, k) => probs[r * 3 + k] > probs[r * 3 + b] ? k : b, 0) === c
    );
    return hits.length / rows.length;
  });
  assert.deepEqual(recall, [0.5, 1, 1]);
  // Ties go to the lowest class, as torch.argmax.
  acc.reset();
  acc.update(f32([0.5, 0.5, 0, 0.25, 0.25, 0.5]), f32([0, 1]));
  assert.equal(acc.compute(), 0.5);
  // Batches add up.
  acc.update(f32([0.1, 0.8, 0.1]), f32([1]));
  assert.equal(acc.compute(), 2 / 3);
});

test("MulticlassAccuracy: bad shapes, labels and probabilities throw and change nothing", () => {
  const acc = new MulticlassAccuracy(3, "accuracy_grade");
  acc.update(f32([0.2, 0.7, 0.1]), f32([1]));
  assert.throws(() => acc.update(f32([0.2, 0.8]), f32([1])), {
    name: "RangeError",
    message: "accuracy_grade: preds has 2 values, expected 1 rows x 3 classes",
  });
  assert.throws(() => acc.update(f32([0.2, 0.7, 0.1]), f32([3])), {
    name: "RangeError",
    message: "accuracy_grade: label at row 0 is 3, expected a class id in [0, 3)",
  });
  assert.throws(() => acc.update(f32([0.2, 0.7, 0.1]), f32([0.5])), RangeError);
  assert.throws(() => acc.update(f32([0.2, NaN, 0.1]), f32([0])), RangeError);
  assert.equal(acc.compute(), 1);
  assert.throws(() => new MulticlassAccuracy(1), RangeError);
});

test("WeightedMean: batch-size weighted loss mean", () => {
  const loss = new WeightedMean("binary_cross_entropy_ctr");
  assert.ok(Number.isNaN(loss.compute()));
  loss.update(0.5, 1024);
  loss.update(0.25, 1024);
  loss.update(2, 0); // an empty batch adds nothing
  loss.update(1, 512);
  assert.equal(loss.compute(), (0.5 * 1024 + 0.25 * 1024 + 512) / 2560);
  assert.throws(() => loss.update(NaN, 3), {
    name: "RangeError",
    message: "binary_cross_entropy_ctr: value is NaN, expected a finite number",
  });
  assert.throws(() => loss.update(1, -1), RangeError);
  assert.throws(() => loss.update(1, Infinity), RangeError);
  loss.reset();
  loss.update(3);
  assert.equal(loss.compute(), 3);
});

// ---------------------------------------------------------------- createMetric

test("createMetric: every kind, named by the config", () => {
  const specs: ResolvedMetric[] = [
    { kind: "auc", name: "auc_cvr", thresholds: 1000 },
    { kind: "exact_auc", name: "exact_auc_ctr" },
    { kind: "grouped_auc", name: "grouped_auc_ctr", groupingKey: "user_id" },
    { kind: "mean_absolute_error", name: "mean_absolute_error_price" },
    { kind: "mean_squared_error", name: "mean_squared_error_price" },
    { kind: "accuracy", name: "accuracy_ctr", threshold: 0.3, numClass: 1 },
  ];
  const classes = [BinnedAuc, ExactAuc, GroupedAuc, MeanAbsoluteError, MeanSquaredError, Accuracy];
  specs.forEach((spec, i) => {
    const metric = createMetric(spec);
    assert.ok(metric instanceof classes[i], spec.kind);
    assert.equal(metric.name, spec.name);
  });
  const auc = createMetric(specs[0]) as BinnedAuc;
  assert.equal(auc.thresholds.length, 1000);
  assert.equal((createMetric(specs[2]) as GroupedAuc).groupingKey, "user_id");
  assert.equal((createMetric(specs[5]) as Accuracy).threshold, 0.3);
  // num_class > 2: multiclass; 2: argmax of two classes, probs1 > 0.5 whatever the threshold.
  const grade = createMetric({
    kind: "accuracy",
    name: "accuracy_grade",
    threshold: 0.3,
    numClass: 3,
  });
  assert.ok(grade instanceof MulticlassAccuracy && grade.numClasses === 3);
  const two = createMetric({ kind: "accuracy", name: "accuracy_two", threshold: 0.3, numClass: 2 });
  assert.ok(two instanceof Accuracy && two.threshold === 0.5);
  assert.throws(
    () => createMetric({ kind: "auc", name: "auc_ctr", thresholds: 1 }),
    RangeError,
  );
  assert.throws(
    () => createMetric({ kind: "recall_at_k", name: "x" } as unknown as ResolvedMetric),
    { name: "TypeError", message: 'unknown metric kind "recall_at_k"' },
  );
});

// Eval metric throughput on 1M rows: BinnedAuc.update (O(1) per row: a bin
// from p * (N - 1), fixed against the f32 thresholds) against the plain
// per-threshold loop (O(N) per row, torchmetrics' `_update_loop` done row by
// row), for tzrec's default 200 and the cvr 1000 thresholds; ExactAuc's
// O(rows log rows) compute for scale. `deno task bench:report` prints rows/s.
import { BinnedAuc, ExactAuc, torchLinspace } from "../src/train/metrics.ts";
import { rng } from "../tests/_util.ts";

const ROWS = 1_000_000;
const next = rng(1);
const probs = new Float32Array(ROWS), labels = new Float32Array(ROWS);
for (let i = 0; i < ROWS; i++) {
  labels[i] = next() < 0.1 ? 1 : 0;
  probs[i] = Math.min(1, 0.6 * next() + 0.4 * labels[i] * next());
}

/** The plain version: every row compared with every threshold. */
function naiveUpdate(
  thresholds: Float32Array,
  tp: Float64Array,
  fp: Float64Array,
  probs: Float32Array,
  labels: Float32Array,
): void {
  const n = thresholds.length;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i], counts = labels[i] === 1 ? tp : fp;
    for (let k = 0; k < n; k++) if (p >= thresholds[k]) counts[k]++;
  }
}

for (const n of [200, 1000]) {
  const group = `auc update ${n} thresholds`;
  const thresholds = torchLinspace(0, 1, n);
  const tp = new Float64Array(n), fp = new Float64Array(n);
  Deno.bench({
    name: `${group} per-threshold loop [${ROWS} rows]`,
    group,
    baseline: true,
    n: 3,
    warmup: 1,
    fn: () => naiveUpdate(thresholds, tp, fp, probs, labels),
  });
  const auc = new BinnedAuc(n);
  Deno.bench({
    name: `${group} BinnedAuc [${ROWS} rows]`,
    group,
    fn: () => auc.update(probs, labels),
  });
}

Deno.bench({
  name: `ExactAuc update + compute [${ROWS} rows]`,
  n: 5,
  warmup: 1,
  fn: () => {
    const auc = new ExactAuc();
    auc.update(probs, labels);
    auc.compute();
  },
});

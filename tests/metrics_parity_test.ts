// Metrics parity with PyTorch: tests/fixtures/metrics.json, written by
// tools/make_fixtures.py from torch 1.13 (thresholds from torch.linspace,
// binned AUC as torchmetrics BinaryAUROC(thresholds=N) in f32, exact rank
// AUC with ties averaged in f64).
//
// torchLinspace follows torch 2.x's scalar kernel, while the fixture's
// thresholds come from torch 1.13's AVX2 kernel; the two differ by 1 ulp at
// some indices (the count is in the test names below). The generator only puts
// probabilities exactly on thresholds where every linspace variant agrees, so
// each expected AUC holds under either one; the last test per set checks that.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { BinnedAuc, ExactAuc, torchLinspace } from "../src/train/metrics.ts";

/** One eval set of the fixture. */
interface MetricsSet {
  name: string;
  note: string;
  probs: number[];
  labels: number[];
  auc_200: number;
  auc_1000: number;
  /** null where it is undefined (a single-class set). */
  exact_auc: number | null;
}

interface MetricsFixture {
  torch_version: string;
  thresholds_200: number[];
  thresholds_1000: number[];
  sets: MetricsSet[];
}

const fixture: MetricsFixture = JSON.parse(
  readFileSync(new URL("./fixtures/metrics.json", import.meta.url), "utf8"),
);

const THRESHOLD_COUNTS = [200, 1000] as const;

/** torch sums the trapezoids in f32; this library in f64 over the same f32 curve. */
const BINNED_AUC_TOLERANCE = 5e-7;
/** Both sides are f64 rank statistics. */
const EXACT_AUC_TOLERANCE = 1e-9;

/** Rows fed per `update` in the streaming check: not a divisor of any set size. */
const CHUNK_ROWS = 97;

const bits = new Int32Array(1), bitsAsFloat = new Float32Array(bits.buffer);

/** Distance in f32 ulps between two non-negative f32 values (their bit patterns are ordered). */
function ulpDistance(a: number, b: number): number {
  bitsAsFloat[0] = a;
  const ia = bits[0];
  bitsAsFloat[0] = b;
  return Math.abs(ia - bits[0]);
}

/** torch's thresholds (f32) and the indices where torchLinspace differs from them. */
function compareThresholds(n: (typeof THRESHOLD_COUNTS)[number]) {
  const torch = Float32Array.from(fixture[`thresholds_${n}`]);
  const ours = torchLinspace(0, 1, n);
  const differing: number[] = [];
  for (let i = 0; i < n; i++) if (ours[i] !== torch[i]) differing.push(i);
  return { torch, ours, differing };
}

for (const n of THRESHOLD_COUNTS) {
  const { torch, ours, differing } = compareThresholds(n);
  // The count is in the test name so every run reports it.
  test(`torchLinspace(0, 1, ${n}) vs torch ${fixture.torch_version}: ${differing.length} of ${n} thresholds differ, each by 1 ulp at most`, () => {
    assert.equal(ours.length, torch.length, "length");
    assert.equal(ours[0], torch[0], "first");
    assert.equal(ours[n - 1], torch[n - 1], "last");
    for (const i of differing) {
      assert.ok(
        ulpDistance(ours[i], torch[i]) <= 1,
        `index ${i}: torchLinspace ${ours[i]}, torch ${torch[i]}`,
      );
    }
  });
}

/**
 * How many of a set's probabilities equal a threshold where torchLinspace
 * and torch differ: only those can fall in another bin than in torch.
 */
function probsOnDifferingThresholds(set: MetricsSet, n: (typeof THRESHOLD_COUNTS)[number]) {
  const { torch, ours, differing } = compareThresholds(n);
  const values = new Set<number>();
  for (const i of differing) values.add(torch[i]).add(ours[i]);
  return Float32Array.from(set.probs).filter((p) => values.has(p)).length;
}

for (const set of fixture.sets) {
  const probs = Float32Array.from(set.probs), labels = Float32Array.from(set.labels);

  for (const n of THRESHOLD_COUNTS) {
    test(`BinnedAuc(${n}) matches torchmetrics on "${set.name}"`, () => {
      const whole = new BinnedAuc(n);
      whole.update(probs, labels);
      const auc = whole.compute();
      const expected = set[`auc_${n}`];
      assert.ok(
        Math.abs(auc - expected) <= BINNED_AUC_TOLERANCE,
        `${set.note}: got ${auc}, torch ${expected} (off by ${auc - expected}); ` +
          `${probsOnDifferingThresholds(set, n)} probs lie exactly on a threshold ` +
          `where torchLinspace and torch differ by 1 ulp`,
      );
      const streamed = new BinnedAuc(n);
      for (let start = 0; start < probs.length; start += CHUNK_ROWS) {
        const end = Math.min(start + CHUNK_ROWS, probs.length);
        streamed.update(probs.subarray(start, end), labels.subarray(start, end));
      }
      assert.equal(streamed.compute(), auc, "batches of 97 rows give the same value");
    });
  }

  test(`"${set.name}" has no probability on a threshold where torchLinspace and torch differ`, () => {
    for (const n of THRESHOLD_COUNTS) {
      assert.equal(probsOnDifferingThresholds(set, n), 0, `${n} thresholds`);
    }
  });

  test(`ExactAuc matches the f64 rank AUC on "${set.name}"`, () => {
    const exact = new ExactAuc();
    exact.update(probs, labels);
    const auc = exact.compute();
    if (set.exact_auc === null) {
      assert.ok(Number.isNaN(auc), `single-class set: got ${auc}, expected NaN`);
    } else {
      assert.ok(
        Math.abs(auc - set.exact_auc) <= EXACT_AUC_TOLERANCE,
        `got ${auc}, expected ${set.exact_auc}`,
      );
    }
  });
}

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  bceRowTwin,
  sigmoidBinaryCrossEntropyTwin,
  smoothLabel,
  softmaxCrossEntropyTwin,
  squaredErrorTwin,
  taskSpaceWeightsTwin,
} from "./twins/loss.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

const SIZES = [1, 3, 4, 5, 7, 8, 9, 16, 17, 1001, 8193];

/** `n` labels in {0, 1}, about `rate` of them 1. */
function randomLabels(n: number, next: () => number, rate = 0.3): Float64Array {
  return Float64Array.from({ length: n }, () => (next() < rate ? 1 : 0));
}

/** Sum of |w_i l_i|: the scale of the f32 rounding in the kernel's loss sum. */
function lossScale(z: ArrayLike<number>, y: ArrayLike<number>, w?: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < z.length; i++) s += Math.abs((w ? w[i] : 1) * bceRowTwin(z[i], y[i]));
  return s;
}

/** Softmax cross-entropy shapes: rows B and classes C, tile-sized and not. */
const CE_ROWS = [1, 3, 7, 33];
const CE_CLASSES = [2, 3, 5, 17];

/** `n` class indices in [0, C), uniform. */
function randomClasses(n: number, C: number, next: () => number): Float64Array {
  return Float64Array.from({ length: n }, () => Math.floor(next() * C));
}

/**
 * sum_i |w_i| (1 + l_i): the scale of the kernel's loss error, which is
 * absolute per row (f32 exp under log sum exp), not relative to l_i.
 */
function crossEntropyScale(
  z: Float32Array,
  labels: ArrayLike<number>,
  w: ArrayLike<number> | undefined,
  B: number,
  C: number,
  s: number,
): number {
  let total = 0;
  for (let i = 0; i < B; i++) {
    const row = z.subarray(i * C, (i + 1) * C);
    const l = softmaxCrossEntropyTwin(row, [labels[i]], undefined, 1, C, s, 1).loss;
    total += Math.abs(w ? w[i] : 1) * (1 + Math.abs(l));
  }
  return total;
}

for (const variant of VARIANTS) {
  test(`sigmoidBinaryCrossEntropy ${variant}: loss, probs and dLogits match the twin at every size`, () => {
    const mem = new TestMemory(variant, 4);
    const next = rng(1);
    for (const B of SIZES) {
      for (const withWeights of [false, true]) {
        for (const smoothing of [0, 0.1]) {
          const z = mem.f32(B, randomArray(B, next, -8, 8));
          const y = mem.f32(B, randomLabels(B, next));
          const w = mem.f32(B, randomArray(B, next, 0, 3));
          const probs = mem.f32(B), dLogits = mem.f32(B);
          const s = Math.fround(smoothing), scale = Math.fround(1 / B);
          const loss = mem.k.sigmoidBinaryCrossEntropy(
            dLogits.ptr,
            probs.ptr,
            z.ptr,
            y.ptr,
            withWeights ? w.ptr : 0,
            B,
            s,
            scale,
          );
          const weights = withWeights ? w.view : undefined;
          const expected = sigmoidBinaryCrossEntropyTwin(z.view, y.view, weights, B, s, scale);
          const label = `B=${B} weights=${withWeights} s=${smoothing}`;
          const smoothed = Array.from(y.view, (v) => smoothLabel(v, s));
          const tol = 1e-6 * lossScale(z.view, smoothed, weights);
          assert.ok(
            Math.abs(loss - expected.loss) <= tol,
            `${label}: loss ${loss} vs ${expected.loss}`,
          );
          assertClose(probs.view, expected.probs, `${label} probs`, { rtol: 1e-6, atol: 1e-7 });
          assertClose(dLogits.view, expected.dLogits, `${label} dLogits`, {
            rtol: 1e-6,
            atol: 1e-7 * scale * 3,
          });
        }
      }
    }
  });

  test(`sigmoidBinaryCrossEntropy ${variant}: label smoothing moves the target to y (1 - s) + s/2`, () => {
    const mem = new TestMemory(variant, 1);
    const z = mem.f32(2, [0, 0]), y = mem.f32(2, [1, 0]), dLogits = mem.f32(2);
    const loss = mem.k.sigmoidBinaryCrossEntropy(dLogits.ptr, 0, z.ptr, y.ptr, 0, 2, 0.2, 1);
    // At z = 0 p = 1/2, targets 0.9 and 0.1: l = log 2 each, dL/dz = 0.5 - y.
    assert.ok(Math.abs(loss - 2 * Math.LN2) < 1e-6, `loss ${loss}`);
    assertClose(dLogits.view, [-0.4, 0.4], "dLogits", { rtol: 1e-6, atol: 1e-7 });
  });

  test(`sigmoidBinaryCrossEntropy ${variant}: null probs, dLogits and weights write nothing and weigh 1`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 9;
    const next = rng(2);
    const z = mem.f32(B, randomArray(B, next, -4, 4)), y = mem.f32(B, randomLabels(B, next));
    const ones = mem.f32(B, new Array(B).fill(1));
    const probs = mem.f32(B), dLogits = mem.f32(B);
    // Bytes 0..63 are below every allocation: a write through a 0 pointer lands there.
    const low = new Uint8Array(mem.instance.memory.buffer, 0, 64);
    low.fill(0xa5);
    const bare = mem.k.sigmoidBinaryCrossEntropy(0, 0, z.ptr, y.ptr, 0, B, 0.1, 0.5);
    assert.ok(low.every((v) => v === 0xa5), "nothing written through a 0 pointer");
    const weighted = mem.k.sigmoidBinaryCrossEntropy(
      dLogits.ptr,
      probs.ptr,
      z.ptr,
      y.ptr,
      ones.ptr,
      B,
      0.1,
      0.5,
    );
    assert.equal(bare, weighted, "weights 0 means weight 1");
    const expected = sigmoidBinaryCrossEntropyTwin(
      z.view,
      y.view,
      undefined,
      B,
      Math.fround(0.1),
      0.5,
    );
    assertClose(probs.view, expected.probs, "probs", { rtol: 1e-6, atol: 1e-7 });
    assertClose(dLogits.view, expected.dLogits, "dLogits", { rtol: 1e-6, atol: 1e-7 });
  });

  test(`sigmoidBinaryCrossEntropy ${variant}: |z| = 100 and 1e4 give finite loss, probs and gradients`, () => {
    const mem = new TestMemory(variant, 1);
    const logits = [100, -100, 1e4, -1e4, 100, -100, 1e4, -1e4, 3e38, -3e38];
    const labels = [0, 0, 0, 0, 1, 1, 1, 1, 0, 1];
    const B = logits.length;
    const z = mem.f32(B, logits), y = mem.f32(B, labels);
    const probs = mem.f32(B), dLogits = mem.f32(B);
    for (const s of [0, 0.1]) {
      const sf = Math.fround(s);
      const loss = mem.k.sigmoidBinaryCrossEntropy(
        dLogits.ptr,
        probs.ptr,
        z.ptr,
        y.ptr,
        0,
        B,
        sf,
        1,
      );
      const expected = sigmoidBinaryCrossEntropyTwin(z.view, y.view, undefined, B, sf, 1);
      assert.ok(Number.isFinite(loss), `loss ${loss}`);
      assert.ok(Math.abs(loss - expected.loss) <= 1e-6 * Math.abs(expected.loss), `s=${s} loss`);
      for (let i = 0; i < B; i++) {
        assert.ok(probs.view[i] >= 0 && probs.view[i] <= 1, `p(${logits[i]}) = ${probs.view[i]}`);
        assert.ok(Number.isFinite(dLogits.view[i]), `dLogits(${logits[i]}) = ${dLogits.view[i]}`);
      }
      assertClose(dLogits.view, expected.dLogits, `s=${s} dLogits`, { rtol: 1e-6, atol: 1e-7 });
    }
  });

  test(`sigmoidBinaryCrossEntropy ${variant}: dLogits equals finite differences of the weighted f64 loss`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 13, s = Math.fround(0.1), scale = Math.fround(1 / B);
    const next = rng(3);
    const z = mem.f32(B, randomArray(B, next, -6, 6)), y = mem.f32(B, randomLabels(B, next, 0.5));
    const w = mem.f32(B, randomArray(B, next, 0, 2)), dLogits = mem.f32(B);
    mem.k.sigmoidBinaryCrossEntropy(dLogits.ptr, 0, z.ptr, y.ptr, w.ptr, B, s, scale);
    const loss = (zv: Float64Array) =>
      scale * sigmoidBinaryCrossEntropyTwin(zv, y.view, w.view, B, s, scale).loss;
    const expected = finiteDifferences(Float64Array.from(z.view), loss);
    assertClose(dLogits.view, expected, "dL/dz", { rtol: 1e-5, atol: 1e-7 });
  });

  test(`sigmoidBinaryCrossEntropy ${variant}: dLogits may overwrite logits`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 7;
    const next = rng(4);
    const data = randomArray(B, next, -5, 5);
    const z = mem.f32(B, data), y = mem.f32(B, randomLabels(B, next)), probs = mem.f32(B);
    const expected = sigmoidBinaryCrossEntropyTwin(z.view, y.view, undefined, B, 0, 1);
    const loss = mem.k.sigmoidBinaryCrossEntropy(z.ptr, probs.ptr, z.ptr, y.ptr, 0, B, 0, 1);
    assert.ok(Math.abs(loss - expected.loss) <= 1e-6 * expected.loss);
    assertClose(z.view, expected.dLogits, "dLogits in place", { rtol: 1e-6, atol: 1e-7 });
    assertClose(probs.view, expected.probs, "probs", { rtol: 1e-6, atol: 1e-7 });
  });

  test(`softmaxCrossEntropy ${variant}: loss, probs and dLogits match the twin for B in {1, 3, 7, 33}, C in {2, 3, 5, 17}`, () => {
    const mem = new TestMemory(variant, 4);
    const next = rng(11);
    for (const B of CE_ROWS) {
      for (const C of CE_CLASSES) {
        for (const withWeights of [false, true]) {
          for (const smoothing of [0, 0.1]) {
            const z = mem.f32(B * C, randomArray(B * C, next, -8, 8));
            const y = mem.f32(B, randomClasses(B, C, next));
            const w = mem.f32(B, randomArray(B, next, 0, 3));
            const probs = mem.f32(B * C), dLogits = mem.f32(B * C);
            const s = Math.fround(smoothing), scale = Math.fround(1 / B);
            const loss = mem.k.softmaxCrossEntropy(
              dLogits.ptr,
              probs.ptr,
              z.ptr,
              y.ptr,
              withWeights ? w.ptr : 0,
              B,
              C,
              s,
              scale,
            );
            const weights = withWeights ? w.view : undefined;
            const expected = softmaxCrossEntropyTwin(z.view, y.view, weights, B, C, s, scale);
            const label = `B=${B} C=${C} weights=${withWeights} s=${smoothing}`;
            const tol = 1e-6 * crossEntropyScale(z.view, y.view, weights, B, C, s);
            assert.ok(
              Math.abs(loss - expected.loss) <= tol,
              `${label}: loss ${loss} vs ${expected.loss}`,
            );
            assertClose(probs.view, expected.probs, `${label} probs`, { rtol: 1e-6, atol: 1e-7 });
            assertClose(dLogits.view, expected.dLogits, `${label} dLogits`, {
              rtol: 1e-6,
              atol: 1e-7 * scale * 3,
            });
          }
        }
      }
    }
  });

  test(`softmaxCrossEntropy ${variant}: label smoothing moves the target to (1 - s) onehot + s/C`, () => {
    const mem = new TestMemory(variant, 1);
    const C = 4;
    const z = mem.f32(C, [0, 0, 0, 0]), y = mem.f32(1, [1]), dLogits = mem.f32(C);
    const loss = mem.k.softmaxCrossEntropy(dLogits.ptr, 0, z.ptr, y.ptr, 0, 1, C, 0.2, 1);
    // p = 1/4 everywhere and the targets sum to 1, so l = log 4 whatever s is;
    // targets 0.8 + 0.05 and 0.05: dL/dz = 1/4 - t.
    assert.ok(Math.abs(loss - Math.log(4)) < 1e-6, `loss ${loss}`);
    assertClose(dLogits.view, [0.2, -0.6, 0.2, 0.2], "dLogits", { rtol: 1e-6, atol: 1e-7 });
  });

  test(`softmaxCrossEntropy ${variant}: logits of +-1e4 and +-3e38 give finite loss, probs and gradients`, () => {
    const mem = new TestMemory(variant, 1);
    const C = 3;
    const rows = [
      [1e4, -1e4, 0],
      [1e4, -1e4, 0],
      [1e4, -1e4, 0],
      [-1e4, -1e4, -1e4],
      [1e4, 1e4, -1e4],
      [-1e4, 1e4, 1e4],
      [3e38, -3e38, 0],
      [-3e38, -3e38, 3e38],
    ];
    const labels = [0, 1, 2, 2, 2, 0, 1, 2];
    const B = rows.length;
    const z = mem.f32(B * C, rows.flat()), y = mem.f32(B, labels);
    const probs = mem.f32(B * C), dLogits = mem.f32(B * C);
    for (const smoothing of [0, 0.1]) {
      const s = Math.fround(smoothing);
      const loss = mem.k.softmaxCrossEntropy(dLogits.ptr, probs.ptr, z.ptr, y.ptr, 0, B, C, s, 1);
      const expected = softmaxCrossEntropyTwin(z.view, y.view, undefined, B, C, s, 1);
      assert.ok(Number.isFinite(loss), `s=${smoothing}: loss ${loss}`);
      assert.ok(
        Math.abs(loss - expected.loss) <= 1e-6 * expected.loss,
        `s=${smoothing}: loss ${loss} vs ${expected.loss}`,
      );
      for (let i = 0; i < B; i++) {
        let sum = 0;
        for (let c = 0; c < C; c++) {
          const p = probs.view[i * C + c], g = dLogits.view[i * C + c];
          assert.ok(p >= 0 && p <= 1, `row ${i}: p[${c}] = ${p}`);
          assert.ok(Number.isFinite(g), `row ${i}: dLogits[${c}] = ${g}`);
          sum += p;
        }
        assert.ok(Math.abs(sum - 1) < 1e-6, `row ${i}: probs sum to ${sum}`);
      }
      assertClose(probs.view, expected.probs, `s=${smoothing} probs`, { rtol: 1e-6, atol: 1e-7 });
      assertClose(dLogits.view, expected.dLogits, `s=${smoothing} dLogits`, {
        rtol: 1e-6,
        atol: 1e-7,
      });
    }
  });

  test(`softmaxCrossEntropy ${variant}: null probs, dLogits and weights write nothing and weigh 1`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 7, C = 5, s = Math.fround(0.1);
    const next = rng(12);
    const z = mem.f32(B * C, randomArray(B * C, next, -4, 4));
    const y = mem.f32(B, randomClasses(B, C, next));
    const ones = mem.f32(B, new Array(B).fill(1));
    const probs = mem.f32(B * C), dLogits = mem.f32(B * C);
    const expected = softmaxCrossEntropyTwin(z.view, y.view, undefined, B, C, s, 0.5);
    // Bytes 0..63 are below every allocation: a write through a 0 pointer lands there.
    const low = new Uint8Array(mem.instance.memory.buffer, 0, 64);
    low.fill(0xa5);
    const bare = mem.k.softmaxCrossEntropy(0, 0, z.ptr, y.ptr, 0, B, C, s, 0.5);
    const probsOnly = mem.k.softmaxCrossEntropy(0, probs.ptr, z.ptr, y.ptr, 0, B, C, s, 0.5);
    assertClose(probs.view, expected.probs, "probs alone", { rtol: 1e-6, atol: 1e-7 });
    const gradOnly = mem.k.softmaxCrossEntropy(dLogits.ptr, 0, z.ptr, y.ptr, 0, B, C, s, 0.5);
    assertClose(dLogits.view, expected.dLogits, "dLogits alone", { rtol: 1e-6, atol: 1e-7 });
    assert.ok(low.every((v) => v === 0xa5), "nothing written through a 0 pointer");
    probs.view.fill(0);
    dLogits.view.fill(0);
    const weighted = mem.k.softmaxCrossEntropy(
      dLogits.ptr,
      probs.ptr,
      z.ptr,
      y.ptr,
      ones.ptr,
      B,
      C,
      s,
      0.5,
    );
    assert.equal(bare, weighted, "weights 0 means weight 1");
    assert.equal(probsOnly, weighted, "the loss does not depend on the outputs asked for");
    assert.equal(gradOnly, weighted, "the loss does not depend on the outputs asked for");
    assertClose(probs.view, expected.probs, "probs", { rtol: 1e-6, atol: 1e-7 });
    assertClose(dLogits.view, expected.dLogits, "dLogits", { rtol: 1e-6, atol: 1e-7 });
  });

  test(`softmaxCrossEntropy ${variant}: dLogits or probs may overwrite logits`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 3, C = 5, s = Math.fround(0.1);
    const next = rng(13);
    const data = randomArray(B * C, next, -5, 5);
    const y = mem.f32(B, randomClasses(B, C, next));
    const z = mem.f32(B * C, data), probs = mem.f32(B * C), dLogits = mem.f32(B * C);
    const expected = softmaxCrossEntropyTwin(z.view, y.view, undefined, B, C, s, 1);
    const tol = 1e-6 * crossEntropyScale(z.view, y.view, undefined, B, C, s);
    let loss = mem.k.softmaxCrossEntropy(z.ptr, probs.ptr, z.ptr, y.ptr, 0, B, C, s, 1);
    assert.ok(Math.abs(loss - expected.loss) <= tol, `dLogits in place: loss ${loss}`);
    assertClose(z.view, expected.dLogits, "dLogits in place", { rtol: 1e-6, atol: 1e-7 });
    assertClose(probs.view, expected.probs, "probs", { rtol: 1e-6, atol: 1e-7 });
    z.view.set(data);
    loss = mem.k.softmaxCrossEntropy(dLogits.ptr, z.ptr, z.ptr, y.ptr, 0, B, C, s, 1);
    assert.ok(Math.abs(loss - expected.loss) <= tol, `probs in place: loss ${loss}`);
    assertClose(z.view, expected.probs, "probs in place", { rtol: 1e-6, atol: 1e-7 });
    assertClose(dLogits.view, expected.dLogits, "dLogits", { rtol: 1e-6, atol: 1e-7 });
  });

  test(`softmaxCrossEntropy ${variant}: dLogits equals finite differences of the weighted f64 loss`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 5, C = 4, s = Math.fround(0.1), scale = Math.fround(1 / B);
    const next = rng(14);
    const z = mem.f32(B * C, randomArray(B * C, next, -6, 6));
    const y = mem.f32(B, randomClasses(B, C, next));
    const w = mem.f32(B, randomArray(B, next, 0, 2)), dLogits = mem.f32(B * C);
    mem.k.softmaxCrossEntropy(dLogits.ptr, 0, z.ptr, y.ptr, w.ptr, B, C, s, scale);
    const loss = (zv: Float64Array) =>
      scale * softmaxCrossEntropyTwin(zv, y.view, w.view, B, C, s, scale).loss;
    const expected = finiteDifferences(Float64Array.from(z.view), loss);
    assertClose(dLogits.view, expected, "dL/dz", { rtol: 1e-5, atol: 1e-7 });
  });

  test(`squaredError ${variant}: loss and dY match the twin at every size`, () => {
    const mem = new TestMemory(variant, 1);
    const next = rng(15);
    for (const B of [...CE_ROWS, 1001]) {
      for (const withWeights of [false, true]) {
        const yHat = mem.f32(B, randomArray(B, next, -10, 10));
        const y = mem.f32(B, randomArray(B, next, -10, 10));
        const w = mem.f32(B, randomArray(B, next, 0, 3)), dY = mem.f32(B);
        const scale = Math.fround(1 / B), weights = withWeights ? w.view : undefined;
        const loss = mem.k.squaredError(dY.ptr, yHat.ptr, y.ptr, withWeights ? w.ptr : 0, B, scale);
        const expected = squaredErrorTwin(yHat.view, y.view, weights, B, scale);
        const label = `B=${B} weights=${withWeights}`;
        // f64 throughout, f32 only in the stored dY.
        assert.ok(
          Math.abs(loss - expected.loss) <= 1e-12 * expected.loss,
          `${label}: loss ${loss} vs ${expected.loss}`,
        );
        assertClose(dY.view, expected.dY, `${label} dY`, { rtol: 6e-8, atol: 0 });
      }
    }
  });

  test(`squaredError ${variant}: null dY and weights write nothing and weigh 1; dY may overwrite y`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 9;
    const next = rng(16);
    const data = randomArray(B, next, -3, 3);
    const yHat = mem.f32(B, data), y = mem.f32(B, randomArray(B, next, -3, 3));
    const ones = mem.f32(B, new Array(B).fill(1));
    const low = new Uint8Array(mem.instance.memory.buffer, 0, 64);
    low.fill(0xa5);
    const bare = mem.k.squaredError(0, yHat.ptr, y.ptr, 0, B, 0.5);
    assert.ok(low.every((v) => v === 0xa5), "nothing written through a 0 pointer");
    const expected = squaredErrorTwin(yHat.view, y.view, undefined, B, 0.5);
    const inPlace = mem.k.squaredError(yHat.ptr, yHat.ptr, y.ptr, ones.ptr, B, 0.5);
    assert.equal(bare, inPlace, "weights 0 means weight 1");
    assertClose(yHat.view, expected.dY, "dY in place", { rtol: 6e-8, atol: 0 });
  });

  test(`squaredError ${variant}: dY equals finite differences of the weighted f64 loss`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 11, scale = Math.fround(1 / B);
    const next = rng(17);
    const yHat = mem.f32(B, randomArray(B, next, -3, 3)), y = mem.f32(B, randomArray(B, next));
    const w = mem.f32(B, randomArray(B, next, 0, 2)), dY = mem.f32(B);
    mem.k.squaredError(dY.ptr, yHat.ptr, y.ptr, w.ptr, B, scale);
    const loss = (yv: Float64Array) => scale * squaredErrorTwin(yv, y.view, w.view, B, scale).loss;
    const expected = finiteDifferences(Float64Array.from(yHat.view), loss);
    assertClose(dY.view, expected, "dL/dy", { rtol: 1e-5, atol: 1e-7 });
  });

  test(`taskSpaceWeights ${variant}: no sample weight and no indicator gives the tower weight`, () => {
    const mem = new TestMemory(variant, 1);
    const w = mem.f32(5);
    mem.k.taskSpaceWeights(w.ptr, 0, 0, 5, 1, 1, 0.5);
    assert.deepEqual(Array.from(w.view), [0.5, 0.5, 0.5, 0.5, 0.5]);
  });

  test(`taskSpaceWeights ${variant}: in = 1, out = 0 makes the weighted mean the mean over clicked rows`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 17;
    const next = rng(5);
    const clicked = randomLabels(B, next, 0.4);
    clicked[0] = 1;
    const z = mem.f32(B, randomArray(B, next, -4, 4)), buy = mem.f32(B, randomLabels(B, next));
    const indicator = mem.f32(B, clicked), w = mem.f32(B);
    mem.k.taskSpaceWeights(w.ptr, 0, indicator.ptr, B, 1, 0, 1);
    const clicks = clicked.reduce((s, v) => s + v, 0);
    const expectedW = Array.from(clicked, (c) => (c ? B / clicks : 0));
    assertClose(w.view, expectedW, "w", { rtol: 1e-7, atol: 0 });
    const towerLoss = mem.k.sigmoidBinaryCrossEntropy(0, 0, z.ptr, buy.ptr, w.ptr, B, 0, 1) / B;
    let clickedLoss = 0;
    for (let i = 0; i < B; i++) if (clicked[i]) clickedLoss += bceRowTwin(z.view[i], buy.view[i]);
    clickedLoss /= clicks;
    assert.ok(Math.abs(towerLoss - clickedLoss) < 1e-6, `${towerLoss} vs ${clickedLoss}`);
  });

  test(`taskSpaceWeights ${variant}: a batch with no row in the task space gets zeros, not NaN`, () => {
    const mem = new TestMemory(variant, 1);
    const B = 9;
    const indicator = mem.f32(B, new Array(B).fill(0)), w = mem.f32(B);
    const sample = mem.f32(B, randomArray(B, rng(6), 0.5, 2));
    mem.k.taskSpaceWeights(w.ptr, sample.ptr, indicator.ptr, B, 1, 0, 2);
    assert.deepEqual(Array.from(w.view), new Array(B).fill(0));
    const z = mem.f32(B, randomArray(B, rng(7))), y = mem.f32(B, randomLabels(B, rng(8)));
    const dLogits = mem.f32(B);
    const loss = mem.k.sigmoidBinaryCrossEntropy(dLogits.ptr, 0, z.ptr, y.ptr, w.ptr, B, 0, 1 / B);
    assert.equal(loss, 0);
    assert.ok(dLogits.view.every((v) => v === 0), "zero gradients");
  });

  test(`taskSpaceWeights ${variant}: sample weights, task space and tower weight match the twin`, () => {
    const mem = new TestMemory(variant, 1);
    const next = rng(9);
    for (const B of SIZES) {
      const cases = [
        { sample: true, indicator: false, inW: 1, outW: 1, tower: 1 },
        { sample: true, indicator: false, inW: 1, outW: 1, tower: 0.3 },
        { sample: false, indicator: true, inW: 2, outW: 0.5, tower: 1 },
        { sample: true, indicator: true, inW: 1, outW: 0, tower: 1.5 },
        { sample: true, indicator: true, inW: 3, outW: 0.25, tower: 0.7 },
      ];
      for (const c of cases) {
        const sw = mem.f32(B, randomArray(B, next, 0, 4));
        const ind = mem.f32(B, randomLabels(B, next, 0.5)), w = mem.f32(B);
        const swPtr = c.sample ? sw.ptr : 0, indPtr = c.indicator ? ind.ptr : 0;
        mem.k.taskSpaceWeights(w.ptr, swPtr, indPtr, B, c.inW, c.outW, c.tower);
        const expected = taskSpaceWeightsTwin(
          c.sample ? sw.view : undefined,
          c.indicator ? ind.view : undefined,
          B,
          c.inW,
          c.outW,
          c.tower,
        );
        assertClose(w.view, expected, `B=${B} ${JSON.stringify(c)}`, { rtol: 1e-6, atol: 1e-7 });
        // Same result written over the sample weights themselves.
        mem.k.taskSpaceWeights(swPtr || w.ptr, swPtr, indPtr, B, c.inW, c.outW, c.tower);
        if (c.sample) assertClose(sw.view, expected, `B=${B} in place`, { rtol: 1e-6, atol: 1e-7 });
      }
    }
  });
}

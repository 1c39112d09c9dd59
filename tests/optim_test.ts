import { test } from "node:test";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import type { KernelVariant } from "../src/kernels/kernels.ts";
import {
  adagradRowsTwin,
  adagradStepTwin,
  type AdamOptions,
  adamRowsTwin,
  type AdamState,
  adamStepTwin,
  sgdMomentumStepTwin,
  sgdRowsTwin,
  sgdStepTwin,
} from "./twins/optim.ts";
import { assertClose, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

/** f32x4 edges and a long odd block. */
const SIZES = [1, 3, 4, 5, 7, 8, 9, 16, 17, 1001];
/** Embedding widths for the row optimizers. */
const DIMS = [1, 3, 4, 5, 8, 16, 17];
const ADAM: AdamOptions = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
/** Touched rows per step: overlapping sets, first and last row, one row twice in a row. */
const ROW_STEPS = [[5, 0, 36, 17], [17, 3, 5], [36], [17, 20, 1]];
const ROWS = 37;

const bits = (v: Float32Array) => new Uint32Array(v.buffer, v.byteOffset, v.length).slice();

/** Asserts every row not in `touched` kept its exact bits. */
function assertRowsUntouched(
  before: Uint32Array,
  after: Float32Array,
  touched: number[],
  dim: number,
  label: string,
): void {
  const now = bits(after);
  for (let r = 0; r < ROWS; r++) {
    if (touched.includes(r)) continue;
    for (let d = 0; d < dim; d++) {
      if (now[r * dim + d] !== before[r * dim + d]) assert.fail(`${label}: row ${r} changed`);
    }
  }
}

function adamState(mem: TestMemory, n: number, next: () => number) {
  const p = mem.f32(n, randomArray(n, next)), m = mem.f32(n), v = mem.f32(n);
  const twin: AdamState = {
    p: Float64Array.from(p.view),
    m: new Float64Array(n),
    v: new Float64Array(n),
  };
  return { p, m, v, twin };
}

for (const variant of VARIANTS) {
  test(`adamStep ${variant}: steps 1..5 with weight decay match the f64 twin at every size`, () => {
    const mem = new TestMemory(variant, 2);
    const next = rng(1);
    for (const n of SIZES) {
      const { p, m, v, twin } = adamState(mem, n, next);
      const grad = mem.f32(n);
      for (let step = 1; step <= 5; step++) {
        grad.view.set(randomArray(n, next));
        const gradBefore = bits(grad.view);
        const o = ADAM;
        mem.k.adamStep(
          p.ptr,
          grad.ptr,
          m.ptr,
          v.ptr,
          n,
          o.lr,
          o.beta1,
          o.beta2,
          o.eps,
          o.weightDecay,
          step,
        );
        adamStepTwin(twin, grad.view, ADAM, step);
        const label = `n=${n} step ${step}`;
        assertClose(p.view, twin.p, `${label} p`, { rtol: 1e-6, atol: 1e-7 });
        assertClose(m.view, twin.m, `${label} m`, { rtol: 1e-5, atol: 1e-7 });
        assertClose(v.view, twin.v, `${label} v`, { rtol: 1e-5, atol: 1e-9 });
        assert.deepEqual(bits(grad.view), gradBefore, `${label}: grad is read only`);
      }
    }
  });

  // With a constant gradient the bias-corrected moments are exactly g and g^2
  // at every step, so each step moves p by lr * g / (|g| + eps) = lr sign(g).
  test(`adamStep ${variant}: a constant gradient moves each parameter lr per step against its sign`, () => {
    const mem = new TestMemory(variant, 1);
    const n = 11;
    const next = rng(2);
    const p0 = randomArray(n, next);
    const g = randomArray(n, next).map((x) => (x < 0 ? x - 0.1 : x + 0.1));
    const p = mem.f32(n, p0), grad = mem.f32(n, g), m = mem.f32(n), v = mem.f32(n);
    for (let step = 1; step <= 5; step++) {
      mem.k.adamStep(p.ptr, grad.ptr, m.ptr, v.ptr, n, 0.01, 0.9, 0.999, 1e-8, 0, step);
      const expected = Array.from(p0, (x, i) => Math.fround(x) - 0.01 * step * Math.sign(g[i]));
      assertClose(p.view, expected, `step ${step}`, { rtol: 0, atol: 5e-7 });
    }
  });

  test(`adagradStep ${variant}: steps with weight decay match the twin at every size`, () => {
    const mem = new TestMemory(variant, 2);
    const next = rng(3);
    for (const n of SIZES) {
      const p = mem.f32(n, randomArray(n, next)), accum = mem.f32(n, new Array(n).fill(0.1));
      const grad = mem.f32(n);
      const twinP = Float64Array.from(p.view), twinG = Float64Array.from(accum.view);
      for (let step = 1; step <= 4; step++) {
        grad.view.set(randomArray(n, next));
        mem.k.adagradStep(p.ptr, grad.ptr, accum.ptr, n, 0.05, 1e-10, 0.02);
        adagradStepTwin(twinP, twinG, grad.view, 0.05, 1e-10, 0.02);
        assertClose(p.view, twinP, `n=${n} step ${step} p`, { rtol: 1e-6, atol: 1e-7 });
        assertClose(accum.view, twinG, `n=${n} step ${step} G`, { rtol: 1e-6, atol: 1e-7 });
      }
    }
  });

  // Constant g from G = 0: after k steps G = k g^2 and step k moves lr / sqrt(k).
  test(`adagradStep ${variant}: a constant gradient moves lr / sqrt(k) at step k`, () => {
    const mem = new TestMemory(variant, 1);
    const n = 6;
    const g = [0.5, -0.25, 2, -3, 0.125, 1];
    const p = mem.f32(n), grad = mem.f32(n, g), accum = mem.f32(n);
    let moved = 0;
    for (let k = 1; k <= 4; k++) {
      mem.k.adagradStep(p.ptr, grad.ptr, accum.ptr, n, 0.1, 0, 0);
      moved += 0.1 / Math.sqrt(k);
      assertClose(p.view, g.map((x) => -Math.sign(x) * moved), `step ${k} p`, { rtol: 1e-6 });
      assertClose(accum.view, g.map((x) => k * x * x), `step ${k} G`, { rtol: 1e-6 });
    }
  });

  test(`sgdStep ${variant}: p -= lr (g + wd p) at every size`, () => {
    const mem = new TestMemory(variant, 1);
    const next = rng(4);
    for (const n of SIZES) {
      const p0 = randomArray(n, next), g = randomArray(n, next);
      const p = mem.f32(n, p0), grad = mem.f32(n, g);
      mem.k.sgdStep(p.ptr, grad.ptr, n, 0.1, 0.01);
      const expected = Float64Array.from(Float32Array.from(p0));
      sgdStepTwin(expected, grad.view, 0.1, 0.01);
      assertClose(p.view, expected, `n=${n}`, { rtol: 1e-6, atol: 1e-7 });
      mem.k.sgdStep(p.ptr, grad.ptr, n, 0.1, 0);
      sgdStepTwin(expected, grad.view, 0.1, 0);
      assertClose(p.view, expected, `n=${n} no decay`, { rtol: 1e-6, atol: 1e-7 });
    }
  });

  test(`sgdMomentumStep ${variant}: torch SGD momentum, dampening, Nesterov over 4 steps; first step ignores the buffer`, () => {
    const mem = new TestMemory(variant, 1);
    const next = rng(14);
    for (const [dampening, nesterov] of [[0, false], [0.3, false], [0, true]] as const) {
      for (const n of SIZES) {
        const p0 = randomArray(n, next);
        const p = mem.f32(n, p0), grad = mem.f32(n), buf = mem.f32(n);
        buf.view.fill(NaN); // garbage before the first step must not leak in
        const expected = Float64Array.from(Float32Array.from(p0));
        const expectedBuf = new Float64Array(n);
        for (let step = 0; step < 4; step++) {
          const first = step === 0;
          grad.view.set(randomArray(n, next));
          mem.k.sgdMomentumStep(
            p.ptr,
            grad.ptr,
            buf.ptr,
            n,
            0.1,
            0.9,
            dampening,
            nesterov,
            0.01,
            first,
          );
          sgdMomentumStepTwin(
            expected,
            expectedBuf,
            grad.view,
            0.1,
            0.9,
            dampening,
            nesterov,
            0.01,
            first,
          );
          const label = `dampening ${dampening} nesterov ${nesterov} n=${n} step ${step}`;
          assertClose(p.view, expected, label, { rtol: 1e-5, atol: 1e-6 });
          assertClose(buf.view, expectedBuf, `${label} buf`, { rtol: 1e-5, atol: 1e-6 });
        }
      }
    }
  });

  test(`adagradRows ${variant}: only listed rows change and G accumulates across steps`, () => {
    const mem = new TestMemory(variant, 2);
    const next = rng(5);
    for (const dim of DIMS) {
      const table = mem.f32(ROWS * dim, randomArray(ROWS * dim, next));
      // Any starting G (initial_accumulator_value, or earlier steps) is kept.
      const accum = mem.f32(ROWS * dim, randomArray(ROWS * dim, next, 0, 0.5));
      const twinW = Float64Array.from(table.view), twinG = Float64Array.from(accum.view);
      const G0 = accum.view[17 * dim];
      const row17: number[] = [];
      for (const [s, rows] of ROW_STEPS.entries()) {
        const unique = mem.i32(rows.length, rows);
        const grads = mem.f32(rows.length * dim, randomArray(rows.length * dim, next, -2, 2));
        if (rows.includes(17)) row17.push(grads.view[rows.indexOf(17) * dim]);
        const [tableBefore, accumBefore] = [bits(table.view), bits(accum.view)];
        mem.k.adagradRows(
          table.ptr,
          accum.ptr,
          unique.ptr,
          grads.ptr,
          rows.length,
          dim,
          0.05,
          1e-8,
        );
        adagradRowsTwin(twinW, twinG, rows, grads.view, dim, 0.05, 1e-8);
        const label = `dim=${dim} step ${s + 1}`;
        assertRowsUntouched(tableBefore, table.view, rows, dim, `${label} table`);
        assertRowsUntouched(accumBefore, accum.view, rows, dim, `${label} accum`);
        assertClose(table.view, twinW, `${label} table`, { rtol: 1e-6, atol: 1e-7 });
        assertClose(accum.view, twinG, `${label} accum`, { rtol: 1e-6, atol: 1e-7 });
      }
      // Row 17 was touched at steps 1, 2 and 4: G = G0 + g1^2 + g2^2 + g4^2.
      const G = row17.reduce((s, g) => s + g * g, G0);
      assertClose([accum.view[17 * dim]], [G], `dim=${dim} G of row 17`, { rtol: 1e-6 });
    }
  });

  test(`adamRows ${variant}: only listed rows change, bias-corrected by the global step, L2 decay`, () => {
    const mem = new TestMemory(variant, 2);
    const next = rng(6);
    const o = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
    for (const dim of DIMS) {
      const { p: table, m, v, twin } = adamState(mem, ROWS * dim, next);
      for (const [s, rows] of ROW_STEPS.entries()) {
        const step = 7 + s;
        const unique = mem.i32(rows.length, rows);
        const grads = mem.f32(rows.length * dim, randomArray(rows.length * dim, next));
        const before = [bits(table.view), bits(m.view), bits(v.view)];
        mem.k.adamRows(
          table.ptr,
          m.ptr,
          v.ptr,
          unique.ptr,
          grads.ptr,
          rows.length,
          dim,
          o.lr,
          o.beta1,
          o.beta2,
          o.eps,
          o.weightDecay,
          step,
        );
        adamRowsTwin(twin, rows, grads.view, dim, o, step);
        const label = `dim=${dim} step ${step}`;
        assertRowsUntouched(before[0], table.view, rows, dim, `${label} table`);
        assertRowsUntouched(before[1], m.view, rows, dim, `${label} m`);
        assertRowsUntouched(before[2], v.view, rows, dim, `${label} v`);
        assertClose(table.view, twin.p, `${label} table`, { rtol: 1e-6, atol: 1e-7 });
        assertClose(m.view, twin.m, `${label} m`, { rtol: 1e-5, atol: 1e-7 });
        assertClose(v.view, twin.v, `${label} v`, { rtol: 1e-5, atol: 1e-9 });
      }
    }
  });

  test(`sgdRows ${variant}: only listed rows change by -lr * gradRows`, () => {
    const mem = new TestMemory(variant, 1);
    const next = rng(7);
    for (const dim of DIMS) {
      const table = mem.f32(ROWS * dim, randomArray(ROWS * dim, next));
      const twin = Float64Array.from(table.view);
      for (const rows of ROW_STEPS) {
        const unique = mem.i32(rows.length, rows);
        const grads = mem.f32(rows.length * dim, randomArray(rows.length * dim, next));
        const before = bits(table.view);
        mem.k.sgdRows(table.ptr, unique.ptr, grads.ptr, rows.length, dim, 0.5);
        sgdRowsTwin(twin, rows, grads.view, dim, 0.5);
        assertRowsUntouched(before, table.view, rows, dim, `dim=${dim}`);
        assertClose(table.view, twin, `dim=${dim}`, { rtol: 1e-6, atol: 1e-7 });
      }
    }
  });
}

// The optimizers use plain mul + add (no relaxed madd), so both builds must
// agree to the bit; a run on one build reproduces on the other.
if (VARIANTS.length === 2) {
  test("adamStep and adagradRows: relaxed-simd and simd builds give bit-identical results", () => {
    const run = (variant: KernelVariant) => {
      const mem = new TestMemory(variant, 1);
      const next = rng(8);
      const n = 1001;
      const p = mem.f32(n, randomArray(n, next)), m = mem.f32(n), v = mem.f32(n);
      const grad = mem.f32(n);
      const table = mem.f32(ROWS * 16, randomArray(ROWS * 16, next)), accum = mem.f32(ROWS * 16);
      for (let step = 1; step <= 3; step++) {
        grad.view.set(randomArray(n, next));
        mem.k.adamStep(p.ptr, grad.ptr, m.ptr, v.ptr, n, 1e-3, 0.9, 0.999, 1e-8, 0.01, step);
        const rows = ROW_STEPS[step];
        const grads = mem.f32(rows.length * 16, randomArray(rows.length * 16, next));
        const unique = mem.i32(rows.length, rows);
        mem.k.adagradRows(table.ptr, accum.ptr, unique.ptr, grads.ptr, rows.length, 16, 0.1, 1e-8);
      }
      return [...bits(p.view), ...bits(table.view)];
    };
    assert.deepEqual(run("relaxed-simd"), run("simd"));
  });
}

/** tests/fixtures/optimizer_steps.json (tools/make_training_curve.py): torch.optim runs. */
interface OptimizerSteps {
  param: number[];
  grads: number[][];
  sgd: { dampening: number; nesterov: boolean; params: number[][]; momentum_buffer: number[][] }[];
  adagrad: { params: number[][]; sum: number[][] };
  rows: {
    table: number[];
    dim: number;
    rows_per_step: number[][];
    grads: number[][];
    adagrad: { tables: number[][]; states: { sum: number[] }[] };
    adam: { tables: number[][]; states: { exp_avg: number[]; exp_avg_sq: number[] }[] };
  };
}

const torchSteps: OptimizerSteps = JSON.parse(
  readFileSync(new URL("./fixtures/optimizer_steps.json", import.meta.url), "utf8"),
);

// torch computes in f32 with its own operation order (and fused multiply-adds
// where its vector kernels use them): a few ulps per step.
const TORCH = { rtol: 2e-6, atol: 1e-7 };

for (const variant of VARIANTS) {
  test(`sgdMomentumStep ${variant}: torch.optim.SGD with dampening and Nesterov, 4 steps`, () => {
    const mem = new TestMemory(variant, 1);
    const n = torchSteps.param.length;
    for (const run of torchSteps.sgd) {
      const p = mem.f32(n, torchSteps.param), grad = mem.f32(n), buf = mem.f32(n);
      torchSteps.grads.forEach((g, step) => {
        grad.view.set(g);
        const { dampening, nesterov } = run;
        mem.k.sgdMomentumStep(
          p.ptr,
          grad.ptr,
          buf.ptr,
          n,
          0.1,
          0.9,
          dampening,
          nesterov,
          0.01,
          step === 0,
        );
        const label = `dampening ${dampening} nesterov ${nesterov} step ${step + 1}`;
        assertClose(p.view, run.params[step], label, TORCH);
        assertClose(buf.view, run.momentum_buffer[step], `${label} buffer`, TORCH);
      });
    }
  });

  test(`adagradStep ${variant}: torch.optim.Adagrad from initial_accumulator_value 0.1, 4 steps`, () => {
    const mem = new TestMemory(variant, 1);
    const n = torchSteps.param.length;
    const p = mem.f32(n, torchSteps.param), grad = mem.f32(n);
    const accum = mem.f32(n, new Array(n).fill(0.1));
    torchSteps.grads.forEach((g, step) => {
      grad.view.set(g);
      mem.k.adagradStep(p.ptr, grad.ptr, accum.ptr, n, 0.05, 1e-10, 0.02);
      assertClose(p.view, torchSteps.adagrad.params[step], `step ${step + 1}`, TORCH);
      assertClose(accum.view, torchSteps.adagrad.sum[step], `step ${step + 1} sum`, TORCH);
    });
  });

  test(`adagradRows and adamRows ${variant}: torch.optim on the touched rows, 4 steps`, () => {
    const { table, dim, rows_per_step: steps, grads } = torchSteps.rows;
    const mem = new TestMemory(variant, 1);
    const n = table.length;
    const adagrad = mem.f32(n, table), sum = mem.f32(n, new Array(n).fill(0.1));
    const adam = mem.f32(n, table), m = mem.f32(n), v = mem.f32(n);
    steps.forEach((rows, s) => {
      const unique = mem.i32(rows.length, rows), g = mem.f32(rows.length * dim, grads[s]);
      mem.k.adagradRows(adagrad.ptr, sum.ptr, unique.ptr, g.ptr, rows.length, dim, 0.05, 1e-8);
      mem.k.adamRows(
        adam.ptr,
        m.ptr,
        v.ptr,
        unique.ptr,
        g.ptr,
        rows.length,
        dim,
        0.01,
        0.9,
        0.999,
        1e-8,
        0.05,
        s + 1,
      );
      const expected = torchSteps.rows;
      assertClose(adagrad.view, expected.adagrad.tables[s], `adagrad step ${s + 1}`, TORCH);
      assertClose(sum.view, expected.adagrad.states[s].sum, `adagrad sum step ${s + 1}`, TORCH);
      assertClose(adam.view, expected.adam.tables[s], `adam step ${s + 1}`, TORCH);
      assertClose(m.view, expected.adam.states[s].exp_avg, `adam exp_avg step ${s + 1}`, TORCH);
      assertClose(
        v.view,
        expected.adam.states[s].exp_avg_sq,
        `adam exp_avg_sq step ${s + 1}`,
        TORCH,
      );
    });
  });
}

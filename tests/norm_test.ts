import { test } from "node:test";
import assert from "node:assert/strict";
import {
  batchNormBackwardTwin,
  batchNormForwardTwin,
  dropoutForwardTwin,
  dropoutUniform,
  layerNormBackwardTwin,
  layerNormForwardTwin,
  multiplyTwin,
} from "./twins/norm.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

// Rows around the BatchNorm statistics chunk (16 rows, 2 per step; the
// backward's row pairs) and widths around the 4-column groups and their tails.
const BS = [1, 2, 3, 7, 16, 17, 33, 257];
const HS = [1, 3, 4, 5, 8, 16, 17, 35, 128];
const MOMENTUM = 0.1;
const EPS = 1e-5;

type Variant = (typeof VARIANTS)[number];

const f32 = (x: ArrayLike<number>) => Float64Array.from(Float32Array.from(x));

/** A test memory with room for `floats` f32 plus alignment gaps. */
function memoryFor(variant: Variant, floats: number): TestMemory {
  return new TestMemory(variant, Math.ceil((floats * 4) / 2 ** 20) + 1);
}

/**
 * B x H inputs whose columns have their own offset in [-4, 4] and spread in
 * [0.2, 2], so per-column statistics differ and are not centred at 0.
 */
function columnData(B: number, H: number, next: () => number): Float64Array {
  const offset = randomArray(H, next, -4, 4), spread = randomArray(H, next, 0.2, 2);
  const x = new Float64Array(B * H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) x[b * H + h] = offset[h] + spread[h] * (2 * next() - 1);
  }
  return f32(x);
}

/** The transpose of columnData(H, B): each row has its own offset and spread. */
function rowData(B: number, H: number, next: () => number): Float64Array {
  const t = columnData(H, B, next);
  const x = new Float64Array(B * H);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) x[b * H + h] = t[h * B + b];
  }
  return x;
}

/** Largest |gamma[h] * invStd[h]|: the scale of dx for unit dy. */
function gradientScale(gamma: ArrayLike<number>, invStd: ArrayLike<number>): number {
  let s = 0;
  for (let h = 0; h < gamma.length; h++) s = Math.max(s, Math.abs(gamma[h] * invStd[h]));
  return s;
}

/**
 * Absolute tolerance of a normalised output: 1e-5, plus what rounding the
 * statistic's mean to f32 alone causes, a few ulp of |mean| amplified by
 * |gamma * invStd| (large when a B = 2 column holds two nearly equal values).
 * `gammaOf(i)` bounds |gamma| over the outputs that statistic i normalises.
 */
function normTolerance(
  mean: ArrayLike<number>,
  invStd: ArrayLike<number>,
  gammaOf: (i: number) => number,
): number {
  let t = 0;
  for (let i = 0; i < mean.length; i++) {
    t = Math.max(t, Math.abs(gammaOf(i) * invStd[i]) * (Math.abs(mean[i]) + 1));
  }
  return 1e-5 + 4 * 2 ** -24 * t;
}

/** Pointers of one BatchNorm forward. */
interface BatchNormCall {
  y: number;
  mean: number;
  invStd: number;
  runningMean: number;
  runningVar: number;
  x: number;
  gamma: number;
  beta: number;
  B: number;
  H: number;
  training: boolean;
}

/**
 * torch's train-mode BatchNorm1d forward as the model runs it: batchNormForward
 * (batch statistics, the unbiased variance staged in a buffer), then
 * batchNormRunningUpdate (the running statistics); eval mode is the forward alone.
 */
function batchNorm(mem: TestMemory, c: BatchNormCall): void {
  const variance = mem.f32(c.H, new Float32Array(c.H).fill(NaN)).ptr;
  const [RM, RV] = [c.runningMean, c.runningVar];
  mem.k.batchNormForward(
    c.y,
    c.mean,
    c.invStd,
    variance,
    RM,
    RV,
    c.x,
    c.gamma,
    c.beta,
    c.B,
    c.H,
    c.H,
    EPS,
    c.training,
  );
  if (c.training) mem.k.batchNormRunningUpdate(RM, RV, c.mean, variance, c.H, MOMENTUM);
}

/** BatchNorm forward (one mode) and, in training, backward vs the twins at one size. */
function checkBatchNorm(variant: Variant, B: number, H: number, training: boolean, seed: number) {
  const next = rng(seed);
  const mem = memoryFor(variant, 4 * B * H + 12 * H);
  const x = columnData(B, H, next);
  const gamma = f32(randomArray(H, next, 0.5, 1.5)), beta = f32(randomArray(H, next));
  const rm0 = f32(randomArray(H, next)), rv0 = f32(randomArray(H, next, 0.5, 2));
  const X = mem.f32(B * H, x), Y = mem.f32(B * H, new Float32Array(B * H).fill(NaN));
  const Gamma = mem.f32(H, gamma), Beta = mem.f32(H, beta);
  const Mean = mem.f32(H, new Float32Array(H).fill(NaN));
  const InvStd = mem.f32(H, new Float32Array(H).fill(NaN));
  const RM = mem.f32(H, rm0), RV = mem.f32(H, rv0);
  const label = `${variant} B=${B} H=${H} ${training ? "training" : "eval"}`;

  batchNorm(mem, {
    y: Y.ptr,
    mean: Mean.ptr,
    invStd: InvStd.ptr,
    runningMean: RM.ptr,
    runningVar: RV.ptr,
    x: X.ptr,
    gamma: Gamma.ptr,
    beta: Beta.ptr,
    B: B,
    H: H,
    training: training,
  });
  const fwd = batchNormForwardTwin(x, gamma, beta, rm0, rv0, B, H, {
    momentum: MOMENTUM,
    eps: EPS,
    training,
  });
  assertClose(Mean.view, fwd.mean, `${label} mean`, { rtol: 1e-6, atol: 2e-6 });
  assertClose(InvStd.view, fwd.invStd, `${label} invStd`, { rtol: 2e-6, atol: 0 });
  assertClose(RM.view, fwd.runningMean, `${label} runningMean`, { rtol: 1e-6, atol: 1e-6 });
  assertClose(RV.view, fwd.runningVar, `${label} runningVar`, { rtol: 2e-6, atol: 1e-7 });
  const yTol = normTolerance(fwd.mean, fwd.invStd, (h) => gamma[h]);
  assertClose(Y.view, fwd.y, `${label} y`, { rtol: 1e-5, atol: yTol });
  if (!training) return;

  const dy = f32(randomArray(B * H, next));
  const dGamma0 = f32(randomArray(H, next)), dBeta0 = f32(randomArray(H, next));
  const DY = mem.f32(B * H, dy), DX = mem.f32(B * H, new Float32Array(B * H).fill(NaN));
  const DGamma = mem.f32(H, dGamma0), DBeta = mem.f32(H, dBeta0);
  mem.k.batchNormBackward(
    DX.ptr,
    DGamma.ptr,
    DBeta.ptr,
    DY.ptr,
    X.ptr,
    Gamma.ptr,
    Mean.ptr,
    InvStd.ptr,
    B,
    H,
    H,
  );
  // The twin on the kernel's own (f32) statistics: isolates the backward.
  const bwd = batchNormBackwardTwin(dy, x, gamma, Mean.view, InvStd.view, B, H, dGamma0, dBeta0);
  // Sums over B rows of values up to ~|dy| (dBeta) and |dy xhat| (dGamma).
  const sumTol = { rtol: 1e-5, atol: 1e-6 * Math.sqrt(B) * 4 };
  assertClose(DBeta.view, bwd.dBeta, `${label} dBeta`, sumTol);
  assertClose(DGamma.view, bwd.dGamma, `${label} dGamma`, sumTol);
  const scale = gradientScale(gamma, InvStd.view);
  assertClose(DX.view, bwd.dx, `${label} dx`, { rtol: 1e-5, atol: 2e-6 * scale });
}

/**
 * LayerNorm forward and backward vs the twins at one size: G groups of H
 * columns per row (G LayerNorms side by side, each with its own gamma, beta).
 */
function checkLayerNorm(variant: Variant, B: number, G: number, H: number, seed: number) {
  const next = rng(seed);
  const W = G * H;
  const mem = memoryFor(variant, 4 * B * W + 6 * W + 2 * B * G);
  const x = rowData(B, W, next);
  const gamma = f32(randomArray(W, next, 0.5, 1.5)), beta = f32(randomArray(W, next));
  const X = mem.f32(B * W, x), Y = mem.f32(B * W, new Float32Array(B * W).fill(NaN));
  const Gamma = mem.f32(W, gamma), Beta = mem.f32(W, beta);
  const Mean = mem.f32(B * G, new Float32Array(B * G).fill(NaN));
  const InvStd = mem.f32(B * G, new Float32Array(B * G).fill(NaN));
  const label = `${variant} B=${B} G=${G} H=${H}`;

  mem.k.layerNormForward(Y.ptr, Mean.ptr, InvStd.ptr, X.ptr, Gamma.ptr, Beta.ptr, B, G, H, EPS);
  const fwd = layerNormForwardTwin(x, gamma, beta, B, G, H, EPS);
  assertClose(Mean.view, fwd.mean, `${label} mean`, { rtol: 1e-6, atol: 2e-6 });
  assertClose(InvStd.view, fwd.invStd, `${label} invStd`, { rtol: 2e-6, atol: 0 });
  const gammaMax = Math.max(...Array.from(gamma, Math.abs));
  const yTol = normTolerance(fwd.mean, fwd.invStd, () => gammaMax);
  assertClose(Y.view, fwd.y, `${label} y`, { rtol: 1e-5, atol: yTol });

  const dy = f32(randomArray(B * W, next));
  const dGamma0 = f32(randomArray(W, next)), dBeta0 = f32(randomArray(W, next));
  const DY = mem.f32(B * W, dy), DX = mem.f32(B * W, new Float32Array(B * W).fill(NaN));
  const DGamma = mem.f32(W, dGamma0), DBeta = mem.f32(W, dBeta0);
  mem.k.layerNormBackward(
    DX.ptr,
    DGamma.ptr,
    DBeta.ptr,
    DY.ptr,
    X.ptr,
    Gamma.ptr,
    Mean.ptr,
    InvStd.ptr,
    B,
    G,
    H,
  );
  const { view: mean } = Mean, { view: invStd } = InvStd;
  const bwd = layerNormBackwardTwin(dy, x, gamma, mean, invStd, B, G, H, dGamma0, dBeta0);
  const sumTol = { rtol: 1e-5, atol: 1e-6 * Math.sqrt(B) * 4 };
  assertClose(DBeta.view, bwd.dBeta, `${label} dBeta`, sumTol);
  assertClose(DGamma.view, bwd.dGamma, `${label} dGamma`, sumTol);
  let maxInvStd = 0;
  for (const s of InvStd.view) maxInvStd = Math.max(maxInvStd, s);
  assertClose(DX.view, bwd.dx, `${label} dx`, { rtol: 1e-5, atol: 4e-6 * maxInvStd });
}

for (const variant of VARIANTS) {
  for (const B of BS) {
    test(`batchNorm ${variant} B=${B}: forward (train, eval) and backward match the f64 twin`, () => {
      let seed = 100 * B;
      for (const H of HS) {
        // torch rejects B = 1 in training (no variance); see the dedicated test.
        if (B > 1) checkBatchNorm(variant, B, H, true, seed++);
        checkBatchNorm(variant, B, H, false, seed++);
      }
    });

    test(`layerNorm ${variant} B=${B}: forward and backward match the f64 twin (1 and 3 groups)`, () => {
      let seed = 100 * B + 7;
      for (const G of [1, 3]) {
        for (const H of HS) checkLayerNorm(variant, B, G, H, seed++);
      }
    });
  }

  test(`batchNorm ${variant}: running statistics after three training steps`, () => {
    for (const [B, H] of [[33, 17], [2, 5], [257, 35]]) {
      const next = rng(B + H);
      const mem = memoryFor(variant, 2 * B * H + 8 * H);
      const gamma = f32(randomArray(H, next, 0.5, 1.5)), beta = f32(randomArray(H, next));
      const Gamma = mem.f32(H, gamma), Beta = mem.f32(H, beta);
      const X = mem.f32(B * H), Y = mem.f32(B * H), Mean = mem.f32(H), InvStd = mem.f32(H);
      // nn.BatchNorm1d initial buffers: running_mean 0, running_var 1.
      const RM = mem.f32(H), RV = mem.f32(H, new Float32Array(H).fill(1));
      let rm: ArrayLike<number> = new Float64Array(H);
      let rv: ArrayLike<number> = new Float64Array(H).fill(1);
      for (let step = 0; step < 3; step++) {
        const x = columnData(B, H, next);
        X.view.set(x);
        batchNorm(mem, {
          y: Y.ptr,
          mean: Mean.ptr,
          invStd: InvStd.ptr,
          runningMean: RM.ptr,
          runningVar: RV.ptr,
          x: X.ptr,
          gamma: Gamma.ptr,
          beta: Beta.ptr,
          B: B,
          H: H,
          training: true,
        });
        const twin = batchNormForwardTwin(x, gamma, beta, rm, rv, B, H, {
          momentum: MOMENTUM,
          eps: EPS,
          training: true,
        });
        ({ runningMean: rm, runningVar: rv } = twin);
      }
      const label = `B=${B} H=${H}`;
      assertClose(RM.view, rm, `${label} runningMean`, { rtol: 1e-6, atol: 1e-6 });
      assertClose(RV.view, rv, `${label} runningVar`, { rtol: 2e-6, atol: 1e-7 });
      // Unbiased: with the biased variance runningVar would differ by a factor
      // (B-1)/B in the batch part, far beyond the tolerance above.
    }
  });

  test(`batchNorm ${variant}: a train-mode forward leaves the running statistics to the commit`, () => {
    const [B, H] = [33, 17];
    const next = rng(71);
    const mem = memoryFor(variant, 2 * B * H + 10 * H);
    const x = columnData(B, H, next);
    const X = mem.f32(B * H, x), Y = mem.f32(B * H), Mean = mem.f32(H), InvStd = mem.f32(H);
    const Variance = mem.f32(H), Gamma = mem.f32(H, new Float32Array(H).fill(1)), Beta = mem.f32(H);
    const rm0 = f32(randomArray(H, next)), rv0 = f32(randomArray(H, next, 0.5, 2));
    const RM = mem.f32(H, rm0), RV = mem.f32(H, rv0);
    const [rm, rv] = [RM.ptr, RV.ptr];
    mem.k.batchNormForward(
      Y.ptr,
      Mean.ptr,
      InvStd.ptr,
      Variance.ptr,
      rm,
      rv,
      X.ptr,
      Gamma.ptr,
      Beta.ptr,
      B,
      H,
      H,
      EPS,
      true,
    );
    assert.deepEqual(Array.from(RM.view), Array.from(rm0), "runningMean before the commit");
    assert.deepEqual(Array.from(RV.view), Array.from(rv0), "runningVar before the commit");
    const twin = batchNormForwardTwin(
      x,
      new Array(H).fill(1),
      new Array(H).fill(0),
      rm0,
      rv0,
      B,
      H,
      {
        momentum: MOMENTUM,
        eps: EPS,
        training: true,
      },
    );
    // The staged variance is the unbiased one: (runningVar' - 0.9 runningVar) / 0.1.
    const unbiased = twin.runningVar.map((v, h) => (v - (1 - MOMENTUM) * rv0[h]) / MOMENTUM);
    assertClose(Variance.view, unbiased, "staged variance", { rtol: 1e-5, atol: 1e-6 });
    mem.k.batchNormRunningUpdate(rm, rv, Mean.ptr, Variance.ptr, H, MOMENTUM);
    assertClose(RM.view, twin.runningMean, "runningMean", { rtol: 1e-6, atol: 1e-6 });
    assertClose(RV.view, twin.runningVar, "runningVar", { rtol: 2e-6, atol: 1e-7 });
  });

  test(`batchNorm ${variant}: column blocks of a wider batch (ldx) equal one call bit for bit`, () => {
    const [B, H] = [37, 23];
    const next = rng(72);
    const mem = memoryFor(variant, 8 * B * H + 20 * H);
    const x = columnData(B, H, next), dy = f32(randomArray(B * H, next));
    const gamma = f32(randomArray(H, next, 0.5, 1.5)), beta = f32(randomArray(H, next));
    const X = mem.f32(B * H, x), DY = mem.f32(B * H, dy);
    const Gamma = mem.f32(H, gamma), Beta = mem.f32(H, beta);
    const RM = mem.f32(H), RV = mem.f32(H, new Float32Array(H).fill(1));
    /** Forward (train mode) and backward over columns [h0, h0 + width) of every buffer. */
    const run = (splits: number[]) => {
      const out = {
        y: mem.f32(B * H),
        mean: mem.f32(H),
        invStd: mem.f32(H),
        variance: mem.f32(H),
        dx: mem.f32(B * H),
        dGamma: mem.f32(H),
        dBeta: mem.f32(H),
      };
      const edges = [0, ...splits, H];
      for (let i = 0; i + 1 < edges.length; i++) {
        const h0 = edges[i], w = edges[i + 1] - h0, at = 4 * h0;
        mem.k.batchNormForward(
          out.y.ptr + at,
          out.mean.ptr + at,
          out.invStd.ptr + at,
          out.variance.ptr + at,
          RM.ptr + at,
          RV.ptr + at,
          X.ptr + at,
          Gamma.ptr + at,
          Beta.ptr + at,
          B,
          w,
          H,
          EPS,
          true,
        );
        mem.k.batchNormBackward(
          out.dx.ptr + at,
          out.dGamma.ptr + at,
          out.dBeta.ptr + at,
          DY.ptr + at,
          X.ptr + at,
          Gamma.ptr + at,
          out.mean.ptr + at,
          out.invStd.ptr + at,
          B,
          w,
          H,
        );
      }
      return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(v.view)]));
    };
    const whole = run([]);
    for (const splits of [[1], [4], [5, 16], [8, 9, 22]]) {
      assert.deepEqual(run(splits), whole, `columns split at ${splits}`);
    }
  });

  test(`batchNorm ${variant}: B = 1 training gives y = beta and moves runningVar toward 0`, () => {
    const H = 9;
    const next = rng(3);
    const mem = memoryFor(variant, 16 * H);
    const x = f32(randomArray(H, next, -3, 3)), beta = f32(randomArray(H, next));
    const X = mem.f32(H, x), Y = mem.f32(H), Gamma = mem.f32(H, randomArray(H, next));
    const Beta = mem.f32(H, beta), Mean = mem.f32(H), InvStd = mem.f32(H);
    const RM = mem.f32(H), RV = mem.f32(H, new Float32Array(H).fill(1));
    batchNorm(mem, {
      y: Y.ptr,
      mean: Mean.ptr,
      invStd: InvStd.ptr,
      runningMean: RM.ptr,
      runningVar: RV.ptr,
      x: X.ptr,
      gamma: Gamma.ptr,
      beta: Beta.ptr,
      B: 1,
      H: H,
      training: true,
    });
    assertClose(Y.view, beta, "y", { rtol: 0, atol: 0 });
    assertClose(Mean.view, x, "mean", { rtol: 0, atol: 0 });
    assertClose(InvStd.view, new Array(H).fill(1 / Math.sqrt(EPS)), "invStd", { rtol: 1e-6 });
    assertClose(RM.view, x.map((v) => MOMENTUM * v), "runningMean", { rtol: 1e-6, atol: 1e-7 });
    assertClose(RV.view, new Array(H).fill(1 - MOMENTUM), "runningVar", { rtol: 1e-6 });
  });

  // Columns with |mean| up to 1.2e4 and std 0.58: E[x^2] - E[x]^2 in f32 would
  // lose all precision (x^2 ~ 1e8, ulp 8), and merges that round at the
  // mean's scale would cost ~1e-5 in invStd; the chunked Welford does neither.
  test(`batchNorm ${variant}: variance is accurate when |mean| >> std`, () => {
    const [B, H] = [4099, 6];
    const next = rng(17);
    const mem = memoryFor(variant, 2 * B * H + 8 * H);
    const means = [1000, 1100, -3000, 1e4, 1.2e4, 0.5];
    const x = new Float64Array(B * H);
    for (let i = 0; i < B * H; i++) x[i] = means[i % H] + (2 * next() - 1);
    const xf = f32(x);
    const gamma = new Float64Array(H).fill(1), beta = new Float64Array(H);
    const X = mem.f32(B * H, xf), Y = mem.f32(B * H), Mean = mem.f32(H), InvStd = mem.f32(H);
    const RM = mem.f32(H), RV = mem.f32(H, new Float32Array(H).fill(1));
    batchNorm(mem, {
      y: Y.ptr,
      mean: Mean.ptr,
      invStd: InvStd.ptr,
      runningMean: RM.ptr,
      runningVar: RV.ptr,
      x: X.ptr,
      gamma: mem.f32(H, gamma).ptr,
      beta: mem.f32(H, beta).ptr,
      B: B,
      H: H,
      training: true,
    });
    const twin = batchNormForwardTwin(
      xf,
      gamma,
      beta,
      new Float64Array(H),
      new Float64Array(H),
      B,
      H,
      {
        momentum: MOMENTUM,
        eps: EPS,
        training: true,
      },
    );
    // Within an ulp or two of |mean|, plus summation error at the spread's scale.
    assertClose(Mean.view, twin.mean, "mean", { rtol: 2 ** -23, atol: 1e-6 });
    assertClose(InvStd.view, twin.invStd, "invStd", { rtol: 2e-6, atol: 0 });
    const yTol = normTolerance(twin.mean, twin.invStd, () => 1);
    assertClose(Y.view, twin.y, "y", { rtol: 1e-5, atol: yTol });
  });

  test(`batchNorm and layerNorm ${variant}: y may alias x; layerNorm dx may alias dy`, () => {
    const [B, H] = [37, 21];
    const next = rng(23);
    const mem = memoryFor(variant, 4 * B * H + 8 * H + 2 * B);
    const x = columnData(B, H, next), dy = f32(randomArray(B * H, next));
    const gamma = f32(randomArray(H, next, 0.5, 1.5)), beta = f32(randomArray(H, next));
    const rm = f32(randomArray(H, next)), rv = f32(randomArray(H, next, 0.5, 2));
    const Gamma = mem.f32(H, gamma), Beta = mem.f32(H, beta);
    const X = mem.f32(B * H), DY = mem.f32(B * H);
    const Mean = mem.f32(Math.max(B, H)), InvStd = mem.f32(Math.max(B, H));
    const DGamma = mem.f32(H), DBeta = mem.f32(H), RM = mem.f32(H), RV = mem.f32(H);
    const opts = { momentum: MOMENTUM, eps: EPS };
    for (const training of [true, false]) {
      X.view.set(x);
      RM.view.set(rm);
      RV.view.set(rv);
      batchNorm(mem, {
        y: X.ptr,
        mean: Mean.ptr,
        invStd: InvStd.ptr,
        runningMean: RM.ptr,
        runningVar: RV.ptr,
        x: X.ptr,
        gamma: Gamma.ptr,
        beta: Beta.ptr,
        B: B,
        H: H,
        training: training,
      });
      const twin = batchNormForwardTwin(x, gamma, beta, rm, rv, B, H, { ...opts, training });
      assertClose(X.view, twin.y, `batchNorm in place, training=${training}`, { atol: 1e-5 });
    }

    X.view.set(x);
    mem.k.layerNormForward(X.ptr, Mean.ptr, InvStd.ptr, X.ptr, Gamma.ptr, Beta.ptr, B, 1, H, EPS);
    const ln = layerNormForwardTwin(x, gamma, beta, B, 1, H, EPS);
    assertClose(X.view, ln.y, "layerNorm in place", { atol: 1e-5 });

    X.view.set(x);
    DY.view.set(dy);
    mem.k.layerNormBackward(
      DY.ptr,
      DGamma.ptr,
      DBeta.ptr,
      DY.ptr,
      X.ptr,
      Gamma.ptr,
      Mean.ptr,
      InvStd.ptr,
      B,
      1,
      H,
    );
    const zeros = new Float64Array(H);
    const lnBack = layerNormBackwardTwin(
      dy,
      x,
      gamma,
      Mean.view,
      InvStd.view,
      B,
      1,
      H,
      zeros,
      zeros,
    );
    assertClose(DY.view, lnBack.dx, "layerNorm dx in place", { atol: 1e-5 });
  });

  // L = sum(G * y(x, gamma, beta)); the backward must be its gradient, checked
  // by central differences of the f64 twin forward (batch statistics
  // recomputed for every perturbed x), with dGamma/dBeta accumulated onto
  // nonzero starting values.
  test(`batchNorm ${variant}: backward gives the finite-difference gradient of the forward`, () => {
    for (const [B, H] of [[1, 6], [2, 3], [3, 5], [7, 17], [5, 4], [34, 2], [35, 9]]) {
      const next = rng(41 + B * H);
      const mem = memoryFor(variant, 4 * B * H + 10 * H);
      const x = columnData(B, H, next);
      const gamma = f32(randomArray(H, next, 0.5, 1.5)), beta = f32(randomArray(H, next));
      const g = f32(randomArray(B * H, next));
      const dGamma0 = f32(randomArray(H, next)), dBeta0 = f32(randomArray(H, next));
      const stats = new Float64Array(H);
      const opts = { momentum: MOMENTUM, eps: EPS, training: true };
      const loss = (xs: ArrayLike<number>, ga: ArrayLike<number>, be: ArrayLike<number>) =>
        batchNormForwardTwin(xs, ga, be, stats, stats, B, H, opts).y.reduce(
          (s, y, i) => s + y * g[i],
          0,
        );
      const X = mem.f32(B * H, x), Y = mem.f32(B * H), Mean = mem.f32(H), InvStd = mem.f32(H);
      const Gamma = mem.f32(H, gamma), Beta = mem.f32(H, beta);
      const RM = mem.f32(H), RV = mem.f32(H, new Float32Array(H).fill(1));
      const DY = mem.f32(B * H, g), DX = mem.f32(B * H);
      const DGamma = mem.f32(H, dGamma0), DBeta = mem.f32(H, dBeta0);
      batchNorm(mem, {
        y: Y.ptr,
        mean: Mean.ptr,
        invStd: InvStd.ptr,
        runningMean: RM.ptr,
        runningVar: RV.ptr,
        x: X.ptr,
        gamma: Gamma.ptr,
        beta: Beta.ptr,
        B: B,
        H: H,
        training: true,
      });
      mem.k.batchNormBackward(
        DX.ptr,
        DGamma.ptr,
        DBeta.ptr,
        DY.ptr,
        X.ptr,
        Gamma.ptr,
        Mean.ptr,
        InvStd.ptr,
        B,
        H,
        H,
      );
      const dxRef = finiteDifferences(x, (xs) => loss(xs, gamma, beta));
      const dGammaRef = finiteDifferences(gamma, (ga) => loss(x, ga, beta))
        .map((v, h) => v + dGamma0[h]);
      const dBetaRef = finiteDifferences(beta, (be) => loss(x, gamma, be))
        .map((v, h) => v + dBeta0[h]);
      const label = `B=${B} H=${H}`;
      const scale = gradientScale(gamma, InvStd.view);
      assertClose(DX.view, dxRef, `${label} dx`, { rtol: 1e-4, atol: 1e-5 * scale });
      assertClose(DGamma.view, dGammaRef, `${label} dGamma`, { rtol: 1e-4, atol: 1e-5 });
      assertClose(DBeta.view, dBetaRef, `${label} dBeta`, { rtol: 1e-4, atol: 1e-5 });
    }
  });

  test(`layerNorm ${variant}: backward gives the finite-difference gradient of the forward`, () => {
    for (const [B, G, H] of [[1, 1, 3], [3, 2, 5], [4, 1, 17], [2, 3, 8], [3, 1, 35]]) {
      const next = rng(43 + B * G * H);
      const W = G * H;
      const mem = memoryFor(variant, 4 * B * W + 6 * W + 2 * B * G);
      const x = f32(randomArray(B * W, next, -2, 2));
      const gamma = f32(randomArray(W, next, 0.5, 1.5)), beta = f32(randomArray(W, next));
      const g = f32(randomArray(B * W, next));
      const dGamma0 = f32(randomArray(W, next)), dBeta0 = f32(randomArray(W, next));
      const loss = (xs: ArrayLike<number>, ga: ArrayLike<number>, be: ArrayLike<number>) =>
        layerNormForwardTwin(xs, ga, be, B, G, H, EPS).y.reduce((s, y, i) => s + y * g[i], 0);
      const X = mem.f32(B * W, x), Y = mem.f32(B * W), Mean = mem.f32(B * G);
      const InvStd = mem.f32(B * G);
      const Gamma = mem.f32(W, gamma), Beta = mem.f32(W, beta);
      const DY = mem.f32(B * W, g), DX = mem.f32(B * W);
      const DGamma = mem.f32(W, dGamma0), DBeta = mem.f32(W, dBeta0);
      mem.k.layerNormForward(Y.ptr, Mean.ptr, InvStd.ptr, X.ptr, Gamma.ptr, Beta.ptr, B, G, H, EPS);
      mem.k.layerNormBackward(
        DX.ptr,
        DGamma.ptr,
        DBeta.ptr,
        DY.ptr,
        X.ptr,
        Gamma.ptr,
        Mean.ptr,
        InvStd.ptr,
        B,
        G,
        H,
      );
      const dxRef = finiteDifferences(x, (xs) => loss(xs, gamma, beta));
      const dGammaRef = finiteDifferences(gamma, (ga) => loss(x, ga, beta))
        .map((v, h) => v + dGamma0[h]);
      const dBetaRef = finiteDifferences(beta, (be) => loss(x, gamma, be))
        .map((v, h) => v + dBeta0[h]);
      const label = `B=${B} G=${G} H=${H}`;
      assertClose(DX.view, dxRef, `${label} dx`, { rtol: 1e-4, atol: 1e-5 });
      assertClose(DGamma.view, dGammaRef, `${label} dGamma`, { rtol: 1e-4, atol: 1e-5 });
      assertClose(DBeta.view, dBetaRef, `${label} dBeta`, { rtol: 1e-4, atol: 1e-5 });
    }
  });

  test(`dropout ${variant}: mask and y equal the twin's bit for bit at every length`, () => {
    for (const n of [0, 1, 3, 4, 5, 17, 1001]) {
      for (const [ratio, seed] of [[0.1, 0], [0.5, 7], [0.9, 0xffffffff]]) {
        const next = rng(n + seed);
        const mem = memoryFor(variant, 3 * n);
        const x = f32(randomArray(n, next, -3, 3));
        const X = mem.f32(n, x), Y = mem.f32(n), Mask = mem.f32(n);
        mem.k.dropoutForward(Y.ptr, Mask.ptr, X.ptr, n, 0, ratio, seed);
        const twin = dropoutForwardTwin(x, n, ratio, seed);
        const label = `n=${n} ratio=${ratio} seed=${seed}`;
        assert.deepEqual(Array.from(Mask.view), Array.from(twin.mask), `${label} mask`);
        assert.deepEqual(Array.from(Y.view), Array.from(twin.y), `${label} y`);
      }
    }
  });

  test(`dropout ${variant}: mask statistics, seeds, ratio 0, in place`, () => {
    const n = 100_003;
    const next = rng(5);
    const mem = memoryFor(variant, 5 * n);
    const x = f32(randomArray(n, next, -3, 3));
    const X = mem.f32(n, x), Y = mem.f32(n), Mask = mem.f32(n), Other = mem.f32(n);
    for (const ratio of [0.1, 0.3, 0.5, 0.9]) {
      const scale = Math.fround(1 / Math.fround(1 - Math.fround(ratio)));
      mem.k.dropoutForward(Y.ptr, Mask.ptr, X.ptr, n, 0, ratio, 42);
      let kept = 0, keptPairs = 0;
      for (let i = 0; i < n; i++) {
        const m = Mask.view[i];
        assert.ok(m === 0 || m === scale, `ratio ${ratio}: mask[${i}] = ${m}`);
        assert.equal(Y.view[i], Math.fround(x[i] * m), `ratio ${ratio}: y[${i}]`);
        if (m !== 0) kept++;
        if (i > 0 && m !== 0 && Mask.view[i - 1] !== 0) keptPairs++;
      }
      // Binomial(n, 1-p): within 5 standard errors; neighbours independent.
      const p = 1 - ratio;
      const se = Math.sqrt((p * (1 - p)) / n);
      assert.ok(Math.abs(kept / n - p) < 5 * se, `ratio ${ratio}: kept ${kept / n}, want ${p}`);
      const pairSe = Math.sqrt((p * p * (1 - p * p)) / (n - 1)) * 2;
      assert.ok(
        Math.abs(keptPairs / (n - 1) - p * p) < 5 * pairSe,
        `ratio ${ratio}: adjacent kept pairs ${keptPairs / (n - 1)}, want ${p * p}`,
      );

      // Same seed: same mask. Another seed: an independent mask (agreement
      // p^2 + (1-p)^2, not 1).
      mem.k.dropoutForward(Y.ptr, Other.ptr, X.ptr, n, 0, ratio, 42);
      assert.deepEqual(Other.view, Mask.view, `ratio ${ratio}: same seed`);
      mem.k.dropoutForward(Y.ptr, Other.ptr, X.ptr, n, 0, ratio, 43);
      let agree = 0;
      for (let i = 0; i < n; i++) if ((Other.view[i] === 0) === (Mask.view[i] === 0)) agree++;
      const q = p * p + (1 - p) * (1 - p);
      const agreeSe = Math.sqrt((q * (1 - q)) / n);
      assert.ok(
        Math.abs(agree / n - q) < 5 * agreeSe,
        `ratio ${ratio}: seeds 42/43 agree on ${agree / n}, want ${q}`,
      );
    }

    mem.k.dropoutForward(Y.ptr, Mask.ptr, X.ptr, n, 0, 0, 9);
    assert.ok(Mask.view.every((m) => m === 1), "ratio 0 keeps everything with mask 1");
    assert.deepEqual(Y.view, X.view, "ratio 0: y = x");

    mem.k.dropoutForward(Y.ptr, Mask.ptr, X.ptr, n, 0, 0.25, 11);
    X.view.set(x);
    mem.k.dropoutForward(X.ptr, Other.ptr, X.ptr, n, 0, 0.25, 11);
    assert.deepEqual(X.view, Y.view, "y may alias x");
  });

  test(`dropout ${variant}: draws are uniform on [0, 1) (deciles of 100k draws)`, () => {
    const counts = new Array(10).fill(0);
    const n = 100_000;
    for (let i = 0; i < n; i++) counts[Math.floor(dropoutUniform(i, 1234) * 10)]++;
    // Chi-square with 9 degrees of freedom: 27.9 is the 0.999 quantile.
    const chi2 = counts.reduce((s, c) => s + (c - n / 10) ** 2 / (n / 10), 0);
    assert.ok(chi2 < 27.9, `chi-square ${chi2} over deciles ${counts}`);
    // The kernel draws the same u: kept iff u >= ratio.
    const mem = memoryFor(variant, 3 * 1000);
    const X = mem.f32(1000, new Float32Array(1000).fill(1)), Y = mem.f32(1000);
    const Mask = mem.f32(1000);
    mem.k.dropoutForward(Y.ptr, Mask.ptr, X.ptr, 1000, 0, 0.5, 1234);
    for (let i = 0; i < 1000; i++) {
      assert.equal(Mask.view[i] !== 0, dropoutUniform(i, 1234) >= 0.5, `draw ${i}`);
    }
  });

  test(`dropout ${variant}: a tensor split into ranges (first) draws the mask of one call`, () => {
    const n = 1001;
    const mem = memoryFor(variant, 5 * n);
    const x = f32(randomArray(n, rng(8), -3, 3));
    const X = mem.f32(n, x), Y = mem.f32(n), Mask = mem.f32(n);
    const Y2 = mem.f32(n), Mask2 = mem.f32(n);
    mem.k.dropoutForward(Y.ptr, Mask.ptr, X.ptr, n, 0, 0.4, 99);
    for (const cut of [1, 3, 4, 5, 500, 1000]) {
      Mask2.view.fill(NaN);
      mem.k.dropoutForward(Y2.ptr, Mask2.ptr, X.ptr, cut, 0, 0.4, 99);
      const at = 4 * cut;
      mem.k.dropoutForward(Y2.ptr + at, Mask2.ptr + at, X.ptr + at, n - cut, cut, 0.4, 99);
      assert.deepEqual(Mask2.view, Mask.view, `cut at ${cut}`);
      assert.deepEqual(Y2.view, Y.view, `cut at ${cut}`);
    }
  });

  test(`fill ${variant}: writes n values, nothing past them`, () => {
    for (const n of [0, 1, 15, 16, 17, 33]) {
      const mem = memoryFor(variant, n + 16);
      const Out = mem.f32(n + 1, new Float32Array(n + 1).fill(7));
      mem.k.fill(Out.ptr, -0.5, n);
      assert.deepEqual(Array.from(Out.view), [...new Array(n).fill(-0.5), 7], `n=${n}`);
    }
  });

  test(`multiply ${variant}: matches the twin exactly, out may alias a or b`, () => {
    for (const n of [0, 1, 3, 4, 5, 15, 16, 17, 33, 1001]) {
      const next = rng(n);
      const mem = memoryFor(variant, 4 * n);
      const a = f32(randomArray(n, next, -4, 4)), b = f32(randomArray(n, next, -4, 4));
      const A = mem.f32(n, a), B = mem.f32(n, b), Out = mem.f32(n, new Float32Array(n).fill(NaN));
      const expected = Array.from(multiplyTwin(a, b, n));
      mem.k.multiply(Out.ptr, A.ptr, B.ptr, n);
      assert.deepEqual(Array.from(Out.view), expected, `n=${n}`);
      mem.k.multiply(A.ptr, A.ptr, B.ptr, n);
      assert.deepEqual(Array.from(A.view), expected, `n=${n} out = a`);
      A.view.set(a);
      mem.k.multiply(B.ptr, A.ptr, B.ptr, n);
      assert.deepEqual(Array.from(B.view), expected, `n=${n} out = b`);
      mem.k.multiply(A.ptr, A.ptr, A.ptr, n);
      assert.deepEqual(Array.from(A.view), Array.from(multiplyTwin(a, a, n)), `n=${n} a * a`);
    }
  });
}

test("dropout: both kernel builds draw the same mask", () => {
  const n = 4099;
  const masks = VARIANTS.map((variant) => {
    const mem = memoryFor(variant, 3 * n);
    const X = mem.f32(n, randomArray(n, rng(1))), Y = mem.f32(n), Mask = mem.f32(n);
    mem.k.dropoutForward(Y.ptr, Mask.ptr, X.ptr, n, 0, 0.3, 77);
    return Array.from(Mask.view);
  });
  for (const mask of masks) assert.deepEqual(mask, masks[0]);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { type PipelineConfig, resolveConfig, type TaskTower } from "../src/config/config.ts";
import { type EncodedBatch, learningRate, MMoEModel } from "../src/model/mmoe.ts";
import { rng, VARIANTS } from "./_util.ts";

/** A tiny config: two id features sharing nothing, one dense feature, 2 experts, 2 towers. */
function tinyConfig(
  options: {
    useBn?: boolean;
    useLn?: boolean;
    gateMlp?: boolean;
    activation?: string;
    /** ctr as a 3-class softmax tower with smoothing, cvr as a weighted l2 tower. */
    otherLosses?: boolean;
  } = {},
): PipelineConfig {
  const towers: TaskTower[] = options.otherLosses
    ? [
      {
        towerName: "ctr",
        labelName: "clk",
        numClass: 3,
        mlp: { hiddenUnits: [4], activation: options.activation ?? "nn.Tanh" },
        losses: [{ softmaxCrossEntropy: { labelSmoothing: 0.1 } }],
      },
      {
        towerName: "cvr",
        labelName: "buy",
        losses: [{ l2Loss: {} }],
        sampleWeightName: "clk",
        weight: 0.5,
      },
    ]
    : [
      {
        towerName: "ctr",
        labelName: "clk",
        mlp: { hiddenUnits: [4], activation: options.activation ?? "nn.Tanh" },
        losses: [{ binaryCrossEntropy: {} }],
      },
      {
        towerName: "cvr",
        labelName: "buy",
        losses: [{ binaryCrossEntropy: {} }],
        taskSpaceIndicatorLabel: "clk",
        inTaskSpaceWeight: 1,
        outTaskSpaceWeight: 0,
      },
    ];
  return {
    featureConfigs: [
      {
        idFeature: { featureName: "user", expression: "user:user", numBuckets: 6, embeddingDim: 4 },
      },
      {
        idFeature: {
          featureName: "tags",
          expression: "item:tags",
          numBuckets: 5,
          embeddingDim: 4,
          pooling: "mean",
        },
      },
      { rawFeature: { featureName: "price", expression: "item:price" } },
    ],
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: ["user", "tags", "price"] }],
      mmoe: {
        expertMlp: {
          hiddenUnits: [6, 5],
          activation: options.activation ?? "nn.Tanh",
          useBn: options.useBn,
          useLn: options.useLn,
        },
        gateMlp: options.gateMlp
          ? { hiddenUnits: [3], activation: options.activation ?? "nn.Tanh" }
          : undefined,
        numExpert: 2,
        taskTowers: towers,
      },
    },
  };
}

function tinyBatch(seed: number, B = 7): EncodedBatch {
  const next = rng(seed);
  const tagIds: number[] = [], tagOffsets = [0];
  for (let b = 0; b < B; b++) {
    const count = b === 2 ? 0 : 1 + Math.floor(next() * 3); // row 2: missing -> zero vector
    for (let j = 0; j < count; j++) tagIds.push(Math.floor(next() * 5));
    tagOffsets.push(tagIds.length);
  }
  const clk = Float32Array.from({ length: B }, () => (next() < 0.5 ? 1 : 0));
  clk[0] = 1;
  const buy = Float32Array.from(clk, (c) => (c > 0 && next() < 0.5 ? 1 : 0));
  return {
    size: B,
    features: [
      {
        ids: Int32Array.from({ length: B }, (_, b) => (b * 5) % 6),
        offsets: Int32Array.from({ length: B + 1 }, (_, b) => b),
      },
      { ids: Int32Array.from(tagIds), offsets: Int32Array.from(tagOffsets) },
      { values: Float32Array.from({ length: B }, () => next() * 2 - 1) },
    ],
    columns: { clk, buy },
  };
}

/** Central differences in f32 of the train-mode loss w.r.t. every element of `view`. */
function checkGradient(
  model: MMoEModel,
  batch: EncodedBatch,
  name: string,
  view: Float32Array,
  analytic: Float32Array,
) {
  const h = 1e-2;
  for (let i = 0; i < view.length; i++) {
    const saved = view[i];
    view[i] = saved + h;
    const plus = model.forwardBackward(batch).total;
    view[i] = saved - h;
    const minus = model.forwardBackward(batch).total;
    view[i] = saved;
    const numeric = (plus - minus) / (2 * h);
    const tol = 2e-3 + 2e-2 * Math.abs(numeric);
    if (!(Math.abs(analytic[i] - numeric) <= tol)) {
      assert.fail(`${name}[${i}]: analytic ${analytic[i]}, finite difference ${numeric}`);
    }
  }
}

function gradientCheck(
  options: Parameters<typeof tinyConfig>[0],
  variant: (typeof VARIANTS)[number],
) {
  const config = resolveConfig(tinyConfig(options));
  const model = new MMoEModel(config, { maxBatch: 8, seed: 3, variant });
  const batch = tinyBatch(11);
  model.forwardBackward(batch);
  const dense = model.parameters.filter((p) => p.kind === "dense").map((p) => ({
    name: p.name,
    grad: model.gradient(p.name).slice(),
  }));
  const tables = config.tables.map((_, t) => model.embeddingGradient(t));
  assert.ok(dense.length > 10);
  for (const { name, grad } of dense) {
    checkGradient(model, batch, name, model.parameter(name), grad);
  }
  config.tables.forEach((table, t) => {
    const weight = model.parameter(`embedding_group.${table.name}.weight`);
    const dense = new Float32Array(weight.length);
    const { rows, grads } = tables[t];
    rows.forEach((row, u) =>
      dense.set(grads.subarray(u * table.dim, (u + 1) * table.dim), row * table.dim)
    );
    checkGradient(model, batch, table.name, weight, dense);
  });
}

for (const variant of VARIANTS) {
  test(`mmoe ${variant}: whole-model gradient matches finite differences (tanh, no gate MLP)`, () => {
    gradientCheck({}, variant);
  });
  test(`mmoe ${variant}: whole-model gradient matches finite differences (gate MLP)`, () => {
    gradientCheck({ gateMlp: true }, variant);
  });
  test(`mmoe ${variant}: whole-model gradient matches finite differences (BatchNorm experts)`, () => {
    gradientCheck({ useBn: true, gateMlp: true }, variant);
  });
  test(`mmoe ${variant}: gradient check with LayerNorm + GELU, softmax CE and weighted l2 towers`, () => {
    gradientCheck({ useLn: true, activation: "nn.GELU", otherLosses: true }, variant);
  });
  test(`mmoe ${variant}: gradient check with SiLU and LeakyReLU layers`, () => {
    gradientCheck({ activation: "nn.SiLU", gateMlp: true }, variant);
    gradientCheck({ activation: "nn.LeakyReLU(negative_slope=0.2)", otherLosses: true }, variant);
  });
}

test("mmoe: softmax towers give probs rows summing to 1 and probs1 only for 2 classes; l2 gives y_", () => {
  const model = new MMoEModel(resolveConfig(tinyConfig({ otherLosses: true })), { maxBatch: 8 });
  const batch = tinyBatch(5);
  model.evalStep(batch);
  const out = model.outputs(batch.size);
  assert.deepEqual(Object.keys(out).sort(), ["logits_ctr", "probs_ctr", "y_cvr"]);
  for (let b = 0; b < batch.size; b++) {
    const row = out.probs_ctr.subarray(3 * b, 3 * b + 3);
    assert.ok(Math.abs(row[0] + row[1] + row[2] - 1) < 1e-6);
  }
});

test("mmoe: exponential decay learning rate follows tzrec's staircase/continuous schedule", () => {
  const base = {
    kind: "adam" as const,
    lr: 0.1,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: 0,
    momentum: 0,
    dampening: 0,
    nesterov: false,
    initialAccumulatorValue: 0,
  };
  const staircase = {
    ...base,
    schedule: {
      kind: "exponential_decay" as const,
      decaySize: 10,
      decayFactor: 0.5,
      staircase: true,
      minLearningRate: 0.02,
    },
  };
  assert.equal(learningRate(staircase, 1), 0.1);
  assert.equal(learningRate(staircase, 10), 0.1);
  assert.equal(learningRate(staircase, 11), 0.05);
  assert.equal(learningRate(staircase, 31), 0.02); // 0.0125 floored at min_learning_rate
  const smooth = { ...staircase, schedule: { ...staircase.schedule, staircase: false } };
  assert.ok(Math.abs(learningRate(smooth, 6) - 0.1 * Math.pow(0.5, 0.5)) < 1e-12);
  assert.equal(learningRate({ ...base, schedule: { kind: "constant" } }, 1000), 0.1);
});

test("mmoe: gates are softmax rows and a missing multi-value row embeds to zero", () => {
  const config = resolveConfig(tinyConfig());
  const model = new MMoEModel(config, { maxBatch: 8, seed: 1 });
  const batch = tinyBatch(5);
  model.evalStep(batch);
  for (let t = 0; t < 2; t++) {
    const gate = model.gateWeights(t, batch.size);
    for (let b = 0; b < batch.size; b++) {
      assert.ok(Math.abs(gate[2 * b] + gate[2 * b + 1] - 1) < 1e-6);
    }
  }
  const x = model.groupInput(batch.size);
  const F = config.inputWidth;
  assert.deepEqual(Array.from(x.subarray(2 * F + 4, 2 * F + 8)), [0, 0, 0, 0]);
  assert.equal(x[3 * F + 8], (batch.features[2] as { values: Float32Array }).values[3]);
});

test("mmoe: cvr trained in click space: a batch without clicks gives cvr loss 0, not NaN", () => {
  const config = resolveConfig(tinyConfig());
  const model = new MMoEModel(config, { maxBatch: 8, seed: 1 });
  const batch = tinyBatch(5);
  batch.columns.clk.fill(0);
  batch.columns.buy.fill(0);
  const { losses } = model.trainStep(batch);
  assert.equal(losses.binary_cross_entropy_cvr, 0);
  assert.ok(losses.binary_cross_entropy_ctr > 0);
});

test("mmoe: a fixed seed gives the same loss sequence, and training lowers the loss", () => {
  const run = () => {
    const config = tinyConfig({ activation: "nn.ReLU" });
    config.trainConfig = {
      denseOptimizer: { adamOptimizer: { lr: 0.02 } },
      sparseOptimizer: { adagradOptimizer: { lr: 0.1 } },
    };
    const model = new MMoEModel(resolveConfig(config), { maxBatch: 8, seed: 9 });
    const batches = [tinyBatch(1), tinyBatch(2), tinyBatch(3)];
    const totals: number[] = [];
    for (let epoch = 0; epoch < 30; epoch++) {
      for (const batch of batches) totals.push(model.trainStep(batch).total);
    }
    return totals;
  };
  const first = run(), second = run();
  assert.deepEqual(first, second);
  const head = first.slice(0, 3).reduce((a, b) => a + b);
  const tail = first.slice(-3).reduce((a, b) => a + b);
  assert.ok(tail < head * 0.8, `loss went from ${head} to ${tail}`);
});

test("mmoe: bad batches are refused with the feature named", () => {
  const model = new MMoEModel(resolveConfig(tinyConfig()), { maxBatch: 8, seed: 1 });
  const batch = tinyBatch(5);
  (batch.features[0] as { ids: Int32Array }).ids[3] = 6;
  assert.throws(() => model.trainStep(batch), /feature user: id 6 is outside \[0, 6\)/);
  assert.throws(() => model.trainStep(tinyBatch(5, 9)), /batch size 9 is outside \[1, 8\]/);
  const noLabel = tinyBatch(5);
  delete (noLabel.columns as Record<string, Float32Array>).buy;
  assert.throws(() => model.trainStep(noLabel), /no column "buy"/);
});

test("mmoe: dense SGD with tzrec's default momentum 0.9 follows torch's update over two steps", () => {
  const config = tinyConfig();
  config.trainConfig = { denseOptimizer: { sgdOptimizer: { lr: 0.1 } } };
  const model = new MMoEModel(resolveConfig(config), { maxBatch: 8, seed: 2 });
  const name = "_task_tower.0.linear.weight";
  const p0 = Float64Array.from(model.parameter(name));
  model.forwardBackward(tinyBatch(1));
  const g1 = Float64Array.from(model.gradient(name));
  model.applyGradients();
  model.forwardBackward(tinyBatch(2));
  const g2 = Float64Array.from(model.gradient(name));
  model.applyGradients();
  // buf1 = g1, p1 = p0 - lr g1; buf2 = 0.9 buf1 + g2, p2 = p1 - lr buf2.
  const expected = p0.map((p, i) => p - 0.1 * g1[i] - 0.1 * (Math.fround(0.9) * g1[i] + g2[i]));
  const actual = model.parameter(name);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) < 1e-6,
      `${name}[${i}]: ${actual[i]} vs ${expected[i]}`,
    );
  }
});

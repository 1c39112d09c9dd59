import { test } from "node:test";
import assert from "node:assert/strict";
import { type PipelineConfig, resolveConfig, type TaskTower } from "../src/config/config.ts";
import { type EncodedBatch, learningRate, MMoEModel } from "../src/model/mmoe.ts";
import { Activation } from "../src/kernels/kernels.ts";
import { loadCheckpoint, modelCheckpoint } from "../src/io/checkpoint.ts";
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
    /** cvr with binary cross-entropy and l2 losses on its one logit. */
    twoLosses?: boolean;
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
        losses: options.twoLosses
          ? [{ binaryCrossEntropy: {} }, { l2Loss: {} }]
          : [{ binaryCrossEntropy: {} }],
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

/**
 * Central differences in f32 of the train-mode loss w.r.t. every element of
 * `view`; returns how many were skipped because their steps straddle a kink.
 */
function checkGradient(
  model: MMoEModel,
  batch: EncodedBatch,
  name: string,
  view: Float32Array,
  analytic: Float32Array,
): number {
  const h = 1e-2;
  model.forwardBackward(batch);
  const sides = kinkSides(model, batch.size);
  let skipped = 0;
  for (let i = 0; i < view.length; i++) {
    const saved = view[i];
    view[i] = saved + h;
    const plus = model.forwardBackward(batch).total;
    const plusSides = kinkSides(model, batch.size);
    view[i] = saved - h;
    const minus = model.forwardBackward(batch).total;
    const minusSides = kinkSides(model, batch.size);
    view[i] = saved;
    if (plusSides !== sides || minusSides !== sides) {
      skipped++;
      continue;
    }
    const numeric = (plus - minus) / (2 * h);
    const tol = 2e-3 + 2e-2 * Math.abs(numeric);
    if (!(Math.abs(analytic[i] - numeric) <= tol)) {
      assert.fail(`${name}[${i}]: analytic ${analytic[i]}, finite difference ${numeric}`);
    }
  }
  return skipped;
}

/**
 * Which side of the kink every ReLU-family pre-activation of the last forward
 * lies on: a central difference whose +-h steps change this pattern straddles
 * a kink and says nothing about the derivative.
 */
function kinkSides(model: MMoEModel, B: number): string {
  const p = model.plan;
  let sides = "";
  for (const stack of [p.experts, p.gates, ...p.towers.map((t) => t.stack)]) {
    for (const l of stack.layers) {
      if (l.activation !== Activation.relu && l.activation !== Activation.leakyRelu) continue;
      for (const v of model.view(l.a.offset, B * l.S * l.outWidth)) sides += v > 0 ? "+" : "-";
    }
  }
  return sides;
}

/** The tiny config with `user` read as a weighted feature (tzrec id_feature.weighted). */
function weightedUser(config: ReturnType<typeof resolveConfig>) {
  config.features[0].weighted = true;
  return config;
}

/** The tiny batch with a weight per `user` id. */
function withUserWeights(batch: EncodedBatch, seed: number): EncodedBatch {
  const next = rng(seed);
  const user = batch.features[0] as { ids: Int32Array; offsets: Int32Array };
  const weights = Float32Array.from(user.ids, () => 2 * next() - 0.5);
  return { ...batch, features: [{ ...user, weights }, ...batch.features.slice(1)] };
}

function gradientCheck(
  options: Parameters<typeof tinyConfig>[0] & { weighted?: boolean },
  variant: (typeof VARIANTS)[number],
) {
  const resolved = resolveConfig(tinyConfig(options));
  const config = options.weighted ? weightedUser(resolved) : resolved;
  const model = new MMoEModel(config, { maxBatch: 8, seed: 3, variant });
  const batch = options.weighted ? withUserWeights(tinyBatch(11), 12) : tinyBatch(11);
  model.forwardBackward(batch);
  const dense = model.parameters.filter((p) => p.kind === "dense").map((p) => ({
    name: p.name,
    grad: model.gradient(p.name).slice(),
  }));
  const tables = config.tables.map((_, t) => model.embeddingGradient(t));
  assert.ok(dense.length > 10);
  let checked = 0, skipped = 0;
  for (const { name, grad } of dense) {
    checked += grad.length;
    skipped += checkGradient(model, batch, name, model.parameter(name), grad);
  }
  config.tables.forEach((table, t) => {
    const weight = model.parameter(
      `embedding_group.emb_impls.__BASE__.ebc.embedding_bags.${table.name}.weight`,
    );
    const dense = new Float32Array(weight.length);
    const { rows, grads } = tables[t];
    rows.forEach((row, u) =>
      dense.set(grads.subarray(u * table.dim, (u + 1) * table.dim), row * table.dim)
    );
    checked += dense.length;
    skipped += checkGradient(model, batch, table.name, weight, dense);
  });
  assert.ok(skipped <= checked / 10, `${skipped} of ${checked} differences straddle a kink`);
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
  test(`mmoe ${variant}: gradient check with a weighted feature and two losses on one tower`, () => {
    gradientCheck({ weighted: true, twoLosses: true, gateMlp: true }, variant);
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

test("mmoe: bad batches are refused with the feature, row or column named", () => {
  const model = new MMoEModel(resolveConfig(tinyConfig()), { maxBatch: 8, seed: 1 });
  const bad = (edit: (batch: EncodedBatch) => void) => {
    const batch = tinyBatch(5);
    edit(batch);
    return () => model.trainStep(batch);
  };
  type Sparse = { ids: Int32Array; offsets: Int32Array; weights?: Float32Array };
  const user = (b: EncodedBatch) => b.features[0] as Sparse;
  const tags = (b: EncodedBatch) => b.features[1] as Sparse;
  assert.throws(bad((b) => user(b).ids[3] = 6), /feature user: id 6 is outside \[0, 6\)/);
  assert.throws(() => model.trainStep(tinyBatch(5, 9)), /batch size 9 is outside \[1, 8\]/);
  assert.throws(
    bad((b) => {
      const o = tags(b).offsets;
      [o[3], o[4]] = [o[4], o[3]]; // a row that ends before it starts
    }),
    /feature tags: row \d: offsets\[\d\] = \d+ is below offsets\[\d\] = \d+/,
  );
  assert.throws(
    bad((b) => tags(b).offsets[7] = 0),
    /feature tags: offsets must have 8 entries from 0 to ids.length/,
  );
  assert.throws(bad((b) => b.features.pop()), /batch has 2 features, the model's group has 3/);
  assert.throws(
    bad((b) => (b.features[2] as { values: Float32Array }).values[3] = NaN),
    /feature price: row 3 is NaN, not a finite number/,
  );
  assert.throws(
    bad((b) => (b.features[0] as unknown as { ids: number[] }).ids = [0, 1, 2, 3, 4, 5, 0]),
    TypeError,
  );
  assert.throws(
    bad((b) => user(b).weights = new Float32Array(7)),
    /feature user: weights given, but the feature is not weighted/,
  );
  assert.throws(bad((b) => b.columns.clk[2] = Infinity), /column "clk": row 2 is Infinity/);
  assert.throws(bad((b) => delete (b.columns as Record<string, unknown>).buy), /no column "buy"/);
  // A weighted feature needs its weights, finite, one per id.
  const weighted = new MMoEModel(weightedUser(resolveConfig(tinyConfig())), { maxBatch: 8 });
  assert.throws(() => weighted.trainStep(tinyBatch(5)), /feature user: a weighted feature needs/);
  const batch = withUserWeights(tinyBatch(5), 1);
  user(batch).weights![1] = NaN;
  assert.throws(() => weighted.trainStep(batch), /feature user weights: value 1 is NaN/);
  // Nothing was trained by any refused batch.
  assert.equal(model.step, 0);
});

test("mmoe: weighted ids with mean pooling are refused (torch's EmbeddingBag refuses them)", () => {
  const config = resolveConfig(tinyConfig());
  config.features[1].weighted = true; // tags: mean pooling
  assert.throws(
    () => new MMoEModel(config, { maxBatch: 8 }),
    /feature tags: weighted ids with mean pooling are not supported/,
  );
});

test("mmoe: a model too large for a wasm32 memory fails before allocating, naming the bytes", () => {
  // resolveConfig caps num_expert (LIMITS.experts); the model checks its own arena too.
  const config = { ...resolveConfig(tinyConfig()), numExpert: 1_000_000 };
  assert.throws(
    () => new MMoEModel(config, { maxBatch: 1024 }),
    /the model needs \d+ bytes \(\d+\.\d\d GiB\) of arena, more than the 4 GiB a wasm32 memory holds \(largest: mmoe\.expert_mlps\.\*\./,
  );
});

test("mmoe: state_dict names and order are tzrec's, BatchNorm counters included and counted", () => {
  const model = new MMoEModel(resolveConfig(tinyConfig({ useBn: true, gateMlp: true })), {
    maxBatch: 8,
  });
  const bags = "embedding_group.emb_impls.__BASE__.ebc.embedding_bags";
  const perceptron = (p: string, bn: boolean) =>
    bn
      ? [
        `${p}.0.weight`,
        `${p}.1.weight`,
        `${p}.1.bias`,
        `${p}.1.running_mean`,
        `${p}.1.running_var`,
        `${p}.1.num_batches_tracked`,
      ]
      : [`${p}.0.weight`, `${p}.0.bias`];
  const expected = [
    `${bags}.user_emb.weight`,
    `${bags}.tags_emb.weight`,
    ...[0, 1].flatMap((e) =>
      [0, 1].flatMap((l) => perceptron(`mmoe.expert_mlps.${e}.mlp.${l}.perceptron`, true))
    ),
    ...[0, 1].flatMap((t) => perceptron(`mmoe.gate_mlps.${t}.mlp.0.perceptron`, false)),
    ...[0, 1].flatMap((t) => [`mmoe.gate_finals.${t}.weight`, `mmoe.gate_finals.${t}.bias`]),
    ...perceptron("_task_tower.0.tower_mlp.mlp.0.perceptron", false),
    "_task_tower.0.linear.weight",
    "_task_tower.0.linear.bias",
    "_task_tower.1.linear.weight",
    "_task_tower.1.linear.bias",
  ];
  assert.deepEqual(model.parameters.map((p) => p.name), expected);
  const counters = model.parameters.filter((p) => p.kind === "counter");
  assert.equal(counters.length, 4);
  for (const c of counters) assert.deepEqual([c.dtype, c.shape], ["i64", []]);
  // torch counts train-mode forwards; here a step counts when it is applied (a refused step
  // leaves every buffer alone), and eval and predict leave the counters alone.
  const count = (n: bigint, when: string) => {
    for (const c of counters) {
      assert.deepEqual(model.int64View(c.offset, 1), BigInt64Array.of(n), when);
    }
  };
  model.trainStep(tinyBatch(1));
  count(1n, "after a train step");
  model.forwardBackward(tinyBatch(2));
  model.evalStep(tinyBatch(3));
  model.predict(tinyBatch(4));
  count(1n, "before the second step is applied");
  model.applyGradients();
  count(2n, "after it");
});

test("mmoe: optimizer settings reach the update: SGD Nesterov with dampening 0, Adagrad initial accumulator, sparse Adam L2 decay", () => {
  const sgd = tinyConfig();
  sgd.trainConfig = {
    denseOptimizer: { sgdOptimizer: { lr: 0.1 } },
    sparseOptimizer: { adagradOptimizer: { lr: 0.2 } },
  };
  const resolved = resolveConfig(sgd);
  resolved.denseOptimizer.nesterov = true;
  resolved.sparseOptimizer.initialAccumulatorValue = 0.1;
  const model = new MMoEModel(resolved, { maxBatch: 8, seed: 2 });
  const table = `embedding_group.emb_impls.__BASE__.ebc.embedding_bags.user_emb.weight`;
  const sum = model.optimizerState().find((s) => s.name === `${table}.sum`)!;
  assert.ok(model.view(sum.offset, 24).every((v) => v === Math.fround(0.1)), "G starts at 0.1");
  const name = "_task_tower.0.linear.weight";
  const p0 = Float64Array.from(model.parameter(name)),
    w0 = Float64Array.from(model.parameter(table));
  model.forwardBackward(tinyBatch(1));
  const g1 = Float64Array.from(model.gradient(name));
  const { rows, grads } = model.embeddingGradient(0);
  model.applyGradients();
  model.forwardBackward(tinyBatch(2));
  const g2 = Float64Array.from(model.gradient(name));
  model.applyGradients();
  // torch SGD, Nesterov: buf1 = g1, p1 = p0 - lr (g1 + mu buf1); buf2 = mu buf1 + g2, p2 = p1 - lr (g2 + mu buf2).
  const mu = Math.fround(0.9);
  const nesterov = p0.map((p, i) => {
    const buf2 = mu * g1[i] + g2[i];
    return p - 0.1 * (g1[i] + mu * g1[i]) - 0.1 * (g2[i] + mu * buf2);
  });
  assertNear(model.parameter(name), nesterov, name);
  // Exact Adagrad from G = 0.1 on the rows batch 1 touched (batch 2's update is not undone:
  // compare after the first step only, from a fresh model).
  const first = new MMoEModel(resolved, { maxBatch: 8, seed: 2 });
  first.trainStep(tinyBatch(1));
  const after = first.parameter(table);
  rows.forEach((row, u) => {
    for (let d = 0; d < 4; d++) {
      const g = grads[u * 4 + d], i = row * 4 + d;
      const expected = w0[i] - 0.2 * g / (Math.sqrt(Math.fround(0.1) + g * g) + 1e-8);
      assertNear([after[i]], [expected], `${table}[${i}]`);
    }
  });

  const adam = tinyConfig();
  adam.trainConfig = { sparseOptimizer: { adamOptimizer: { lr: 0.01, weightDecay: 0.5 } } };
  const sparseAdam = new MMoEModel(resolveConfig(adam), { maxBatch: 8, seed: 2 });
  const before = Float64Array.from(sparseAdam.parameter(table));
  sparseAdam.forwardBackward(tinyBatch(1));
  const touched = sparseAdam.embeddingGradient(0);
  sparseAdam.applyGradients();
  const updated = sparseAdam.parameter(table);
  touched.rows.forEach((row, u) => {
    for (let d = 0; d < 4; d++) {
      const i = row * 4 + d, g = touched.grads[u * 4 + d] + 0.5 * before[i];
      // Step 1: m = (1 - b1) g, v = (1 - b2) g^2; p -= lr/(1 - b1) m / (sqrt(v)/sqrt(1 - b2) + eps).
      const expected = before[i] - 0.01 * g / (Math.abs(g) + 1e-8);
      assertNear([updated[i]], [expected], `adam ${table}[${i}]`);
    }
  });
});

/** |actual - expected| <= 1e-6 (f32 updates of values around 1). */
function assertNear(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string) {
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Math.abs(actual[i] - expected[i]) < 1e-6,
      `${label}[${i}]: ${actual[i]} vs ${expected[i]}`,
    );
  }
}

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

/**
 * PyTorch's default init of the module a state_dict tensor belongs to, read from
 * tzrec's module structure (an oracle independent of the model's own table):
 * nn.Linear weight and bias U(+-1/sqrt(fan_in)), BatchNorm1d/LayerNorm gamma 1 and
 * beta 0, BN running_mean 0, running_var 1, num_batches_tracked 0, torchrec
 * embedding tables U(+-sqrt(1/rows)).
 */
function torchInit(
  name: string,
  shape: number[],
  shapes: Map<string, number[]>,
): { uniform: number } | { constant: number } {
  if (name.startsWith("embedding_group.")) return { uniform: Math.sqrt(1 / shape[0]) };
  if (/\.perceptron\.1\.(weight)$/.test(name)) return { constant: 1 };
  if (/\.perceptron\.1\.(bias|running_mean|num_batches_tracked)$/.test(name)) {
    return { constant: 0 };
  }
  if (name.endsWith(".perceptron.1.running_var")) return { constant: 1 };
  const linear =
    /(\.perceptron\.0|^mmoe\.gate_finals\.\d+|^_task_tower\.\d+\.linear)\.(weight|bias)$/
      .exec(name);
  assert.ok(linear, `${name}: not a tzrec module tensor`);
  const weight = shapes.get(name.replace(/bias$/, "weight"))!;
  return { uniform: 1 / Math.sqrt(weight[1]) };
}

test("mmoe: every parameter starts as PyTorch initialises its module (3 tasks, gate MLPs, BN experts)", () => {
  const config = tinyConfig({ useBn: true, gateMlp: true, activation: "nn.ReLU" });
  const mmoe = config.modelConfig.mmoe!;
  mmoe.numExpert = 4;
  mmoe.expertMlp.hiddenUnits = [32, 16];
  mmoe.gateMlp!.hiddenUnits = [16, 12];
  mmoe.taskTowers.push({
    towerName: "stay",
    labelName: "stay",
    mlp: { hiddenUnits: [8] },
    losses: [{ l2Loss: {} }],
  });
  (config.featureConfigs[0].idFeature!).numBuckets = 1000;
  const model = new MMoEModel(resolveConfig(config), { maxBatch: 8, seed: 4 });
  const shapes = new Map(model.parameters.map((p) => [p.name, p.shape]));
  assert.ok(shapes.has("mmoe.gate_finals.2.weight"), "three gates");
  for (const p of model.parameters) {
    const values = model.view(p.offset, p.shape.reduce((a, b) => a * b, 1));
    const rule = torchInit(p.name, p.shape, shapes);
    if ("constant" in rule) {
      assert.ok(
        values.every((v) => v === rule.constant),
        `${p.name}: expected all ${rule.constant}`,
      );
      continue;
    }
    const bound = rule.uniform;
    let largest = 0;
    for (const v of values) {
      assert.ok(Math.abs(v) <= Math.fround(bound), `${p.name}: ${v} outside +-${bound}`);
      largest = Math.max(largest, Math.abs(v));
    }
    // Uniform draws fill the range: P(max |w| < 0.9 bound) = 0.9^n, under 1e-3 for n >= 64.
    if (values.length >= 64) {
      assert.ok(largest > 0.9 * bound, `${p.name}: max |w| ${largest} of bound ${bound}`);
    }
    if (values.length >= 2) {
      assert.ok(new Set(values).size > values.length / 2, `${p.name}: draws repeat`);
    }
  }
});

/** Every parameter, buffer, counter and optimizer-state value of `model`, as bits. */
function snapshot(model: MMoEModel): number[] {
  const bits: number[] = [model.step];
  for (const p of model.parameters) {
    const count = p.shape.reduce((a, b) => a * b, 1);
    if (p.dtype === "i64") bits.push(...Array.from(model.int64View(p.offset, count), Number));
    else bits.push(...new Uint32Array(Float32Array.from(model.view(p.offset, count)).buffer));
  }
  for (const s of model.optimizerState()) {
    const count = s.shape.reduce((a, b) => a * b, 1);
    bits.push(...new Uint32Array(Float32Array.from(model.view(s.offset, count)).buffer));
  }
  return bits;
}

test("mmoe: a step refused for a non-finite loss leaves parameters, BatchNorm buffers and counters, optimizer state unchanged", () => {
  const model = new MMoEModel(resolveConfig(tinyConfig({ useBn: true })), { maxBatch: 8, seed: 4 });
  model.trainStep(tinyBatch(1));
  const mean = model.parameter("mmoe.expert_mlps.0.mlp.0.perceptron.1.running_mean");
  const bias = model.parameter("_task_tower.1.linear.bias");
  bias[0] = Infinity; // cvr logits infinite: its loss is NaN or infinite
  const before = snapshot(model);
  const meanBefore = Array.from(mean);
  assert.throws(() => model.trainStep(tinyBatch(2)), /step 2: the loss is NaN.*not updated/);
  assert.deepEqual(snapshot(model), before, "nothing moved");
  // The same batch with a finite loss does move the running statistics.
  bias[0] = 0;
  model.trainStep(tinyBatch(2));
  assert.notDeepEqual(Array.from(mean), meanBefore);
});

test("mmoe: BatchNorm running statistics move when the step is applied, not in forwardBackward", () => {
  const config = resolveConfig(tinyConfig({ useBn: true }));
  const stepped = new MMoEModel(config, { maxBatch: 8, seed: 4 });
  const probed = new MMoEModel(config, { maxBatch: 8, seed: 4 });
  stepped.trainStep(tinyBatch(1));
  // A loop that checks gradients before it steps: forwards, an eval in between, then the step.
  probed.forwardBackward(tinyBatch(3));
  probed.forwardBackward(tinyBatch(1));
  const buffers = (m: MMoEModel) =>
    m.parameters.filter((p) => p.kind === "buffer" || p.kind === "counter")
      .map((p) =>
        p.dtype === "i64" ? m.int64View(p.offset, 1)[0] : Array.from(m.parameter(p.name))
      );
  assert.notDeepEqual(buffers(probed), buffers(stepped), "forwardBackward alone moves nothing");
  probed.evalStep(tinyBatch(2));
  probed.applyGradients();
  assert.deepEqual(snapshot(probed), snapshot(stepped));
});

/** A fresh model of `config` with `source`'s parameters, loaded from a checkpoint (packs at load). */
function loaded(config: ReturnType<typeof resolveConfig>, source: MMoEModel): MMoEModel {
  const model = new MMoEModel(config, { maxBatch: 8, inference: true, initialize: false });
  loadCheckpoint(model, modelCheckpoint(source));
  return model;
}

test("mmoe: packed weights are never stale: after a step, view writes, parametersChanged and loads", () => {
  const config = resolveConfig(tinyConfig({ activation: "nn.ReLU", gateMlp: true }));
  const model = new MMoEModel(config, { maxBatch: 8, seed: 1 });
  const other = new MMoEModel(config, { maxBatch: 8, seed: 2 });
  const batch = tinyBatch(6);
  // Predict first: building the reference reads the model through views, which marks its panels.
  const same = (m: MMoEModel, reference: () => MMoEModel, when: string) => {
    const got = m.predict(batch);
    assert.deepEqual(got, reference().predict(batch), when);
  };
  const before = model.predict(batch);
  assert.notDeepEqual(before, other.predict(batch), "the two models differ");

  // The optimizer step changes the weights: the next eval forward sees them.
  model.trainStep(tinyBatch(1));
  same(model, () => loaded(config, model), "after a train step");

  // Writes through views taken after the last forward.
  for (const p of model.parameters) {
    if (p.dtype === "f32") model.parameter(p.name).set(other.parameter(p.name));
  }
  same(model, () => other, "after writing every parameter through parameter()");

  // A view kept across a forward: parametersChanged() repacks.
  const kept = model.parameter("mmoe.expert_mlps.1.mlp.1.perceptron.0.weight");
  model.predict(batch);
  kept.fill(0.25);
  model.parametersChanged();
  same(model, () => loaded(config, model), "after parametersChanged()");

  // loadCheckpoint into a model that has already packed its own weights.
  loadCheckpoint(model, modelCheckpoint(other));
  same(model, () => other, "after loadCheckpoint");
});

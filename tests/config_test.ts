import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, DEFAULTS, type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { Activation } from "../src/kernels/kernels.ts";

/** Two id features (one vocab), a bucketized and a dense raw feature, 2 experts, 2 towers. */
function base(): PipelineConfig {
  return {
    featureConfigs: [
      {
        idFeature: {
          featureName: "user",
          expression: "user:user_id",
          numBuckets: 10,
          embeddingDim: 4,
        },
      },
      {
        idFeature: {
          featureName: "cate",
          expression: "item:cate",
          vocabList: ["a", "b"],
          embeddingDim: 4,
        },
      },
      {
        rawFeature: {
          featureName: "price",
          expression: "item:price",
          boundaries: [1, 2, 5],
          embeddingDim: 4,
        },
      },
      { rawFeature: { featureName: "ctr", expression: "item:ctr" } },
    ],
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: ["user", "cate", "price", "ctr"] }],
      mmoe: {
        expertMlp: { hiddenUnits: [8, 4] },
        numExpert: 2,
        taskTowers: [
          {
            towerName: "ctr",
            labelName: "clk",
            losses: [{ binaryCrossEntropy: {} }],
            metrics: [{ auc: {} }],
          },
          {
            towerName: "cvr",
            labelName: "buy",
            mlp: { hiddenUnits: [4] },
            losses: [{ binaryCrossEntropy: {} }],
          },
        ],
      },
    },
  };
}

/** `base()` changed by `edit`, expected to fail at `path` with a message matching `detail`. */
function rejects(edit: (c: PipelineConfig) => void, path: string, detail: RegExp): void {
  const config = base();
  edit(config);
  assert.throws(
    () => resolveConfig(config),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.path, path, e.message);
      assert.match(e.message, detail);
      assert.ok(e.message.startsWith(`${path}: `), e.message);
      return true;
    },
  );
}

const mmoe = (c: PipelineConfig) => c.modelConfig.mmoe;
const feature = (c: PipelineConfig, i: number) => c.featureConfigs[i];

test("the base config resolves with tzrec's defaults", () => {
  const r = resolveConfig(base());
  assert.deepEqual(r.features.map((f) => [f.name, f.kind, f.width, f.offset, f.rows]), [
    ["user", "num_buckets", 4, 0, 10],
    ["cate", "vocab", 4, 4, 4],
    ["price", "boundaries", 4, 8, 4],
    ["ctr", "dense", 1, 12, 0],
  ]);
  assert.equal(r.inputWidth, 13);
  assert.deepEqual(r.tables.map((t) => t.name), ["user_emb", "cate_emb", "price_emb"]);
  assert.equal(r.features[1].vocab.get("a"), 2);
  assert.equal(r.features[3].table, -1);
  assert.deepEqual(r.expertMlp, {
    hiddenUnits: [8, 4],
    dropoutRatio: [0, 0],
    activation: Activation.relu,
    slope: 0,
    useBn: false,
    bias: true,
    useLn: false,
  });
  assert.equal(r.towers[0].numClass, 1);
  assert.equal(r.towers[0].hasWeight, false);
  assert.deepEqual(r.towers[0].metrics, [{ kind: "auc", name: "auc_ctr", thresholds: 200 }]);
  assert.equal(r.towers[1].losses[0].name, "binary_cross_entropy_cvr");
  assert.equal(r.sparseOptimizer.kind, "adagrad");
  assert.equal(r.sparseOptimizer.lr, 0.002);
  assert.equal(r.sparseOptimizer.eps, DEFAULTS.sparseAdagradEps);
  assert.equal(r.denseOptimizer.kind, "adam");
  assert.equal(r.data.batchSize, 1024);
  assert.equal(r.train.logStepCountSteps, 100);
});

test("activations: LeakyReLU slope, empty string = identity, use_bn drops the bias", () => {
  const config = base();
  mmoe(config).expertMlp = {
    hiddenUnits: [4],
    activation: "nn.LeakyReLU(negative_slope=0.2)",
    useBn: true,
  };
  mmoe(config).gateMlp = { hiddenUnits: [3], activation: "" };
  const r = resolveConfig(config);
  assert.equal(r.expertMlp.activation, Activation.leakyRelu);
  assert.equal(r.expertMlp.slope, 0.2);
  assert.equal(r.expertMlp.bias, false);
  assert.equal(r.gateMlp?.activation, Activation.identity);
  const plain = base();
  mmoe(plain).expertMlp.activation = "nn.LeakyReLU";
  assert.equal(resolveConfig(plain).expertMlp.slope, 0.01);
});

test("MLP errors", () => {
  rejects(
    (c) => mmoe(c).taskTowers[1].mlp!.hiddenUnits = [],
    "model_config.mmoe.task_towers[1].mlp.hidden_units",
    /must be non-empty/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.hiddenUnits = [8, 0],
    "model_config.mmoe.expert_mlp.hidden_units[1]",
    /must be a positive integer, got 0/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.dropoutRatio = [0.1, 0.2, 0.3],
    "model_config.mmoe.expert_mlp.dropout_ratio",
    /has 3 values for 2 layers \(give 0, 1 or 2\)/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.dropoutRatio = [1],
    "model_config.mmoe.expert_mlp.dropout_ratio[0]",
    /must be in \[0, 1\)/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.activation = "nn.Swish",
    "model_config.mmoe.expert_mlp.activation",
    /activation "nn\.Swish" is not supported yet \(supported: nn\.ReLU/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.activation = "nn.ReLU(inplace=True)",
    "model_config.mmoe.expert_mlp.activation",
    /cannot read the arguments/,
  );
  rejects(
    (c) => Object.assign(mmoe(c).expertMlp, { useBn: true, useLn: true }),
    "model_config.mmoe.expert_mlp",
    /use_bn and use_ln cannot both be set/,
  );
  rejects(
    (c) => mmoe(c).gateMlp = { hiddenUnits: [] },
    "model_config.mmoe.gate_mlp.hidden_units",
    /must be non-empty/,
  );
});

test("feature errors", () => {
  rejects(
    (c) => feature(c, 1).idFeature!.featureName = "user",
    "feature_configs[1].id_feature.feature_name",
    /duplicate feature "user"/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].featureNames.push("brand"),
    "model_config.feature_groups[0].feature_names[4]",
    /no feature_configs entry named "brand"/,
  );
  rejects(
    (c) => c.featureConfigs.push({}),
    "feature_configs[4]",
    /must set one of id_feature, raw_feature/,
  );
  rejects(
    (c) => Object.assign(feature(c, 0), { comboFeature: { featureName: "x" } }),
    "feature_configs[0]",
    /sets idFeature and comboFeature; exactly one of id_feature, raw_feature is allowed/,
  );
  rejects(
    (c) => c.featureConfigs[0] = { comboFeature: { featureName: "x" } } as never,
    "feature_configs[0].combo_feature",
    /is not supported yet/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.hashBucketSize = 5,
    "feature_configs[0].id_feature",
    /must set exactly one of num_buckets, hash_bucket_size, vocab_list/,
  );
  rejects(
    (c) => feature(c, 1).idFeature!.vocabList = [],
    "feature_configs[1].id_feature.vocab_list",
    /must be non-empty/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.embeddingDim = 0,
    "feature_configs[0].id_feature.embedding_dim",
    /must be a positive integer/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.expression = "user_id",
    "feature_configs[0].id_feature.expression",
    /must look like "user:column"/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.pooling = "max" as never,
    "feature_configs[0].id_feature.pooling",
    /must be "sum" or "mean", got "max"/,
  );
  rejects(
    (c) => feature(c, 2).rawFeature!.boundaries = [1, 5, 2],
    "feature_configs[2].raw_feature.boundaries[2]",
    /strictly ascending/,
  );
  rejects(
    (c) => delete feature(c, 2).rawFeature!.embeddingDim,
    "feature_configs[2].raw_feature.embedding_dim",
    /must be a positive integer, got undefined/,
  );
  rejects(
    (c) => feature(c, 3).rawFeature!.valueDim = 0,
    "feature_configs[3].raw_feature.value_dim",
    /must be a positive integer/,
  );
});

test("shared embeddings: same table when the shapes agree, an error when they do not", () => {
  const shared = base();
  feature(shared, 0).idFeature!.embeddingName = "ids";
  shared.featureConfigs.push({
    idFeature: {
      featureName: "owner",
      expression: "item:owner",
      numBuckets: 10,
      embeddingDim: 4,
      embeddingName: "ids",
    },
  });
  shared.modelConfig.featureGroups[0].featureNames.push("owner");
  const r = resolveConfig(shared);
  assert.equal(r.tables.length, 3);
  assert.deepEqual(r.tables[0].features, ["user", "owner"]);
  assert.equal(r.features[4].table, 0);

  rejects(
    (c) => {
      feature(c, 0).idFeature!.embeddingName = "ids";
      c.featureConfigs.push({
        idFeature: {
          featureName: "owner",
          expression: "item:owner",
          numBuckets: 10,
          embeddingDim: 8,
          embeddingName: "ids",
        },
      });
      c.modelConfig.featureGroups[0].featureNames.push("owner");
    },
    "feature_configs[4]",
    /shares embedding "ids" \(10 x 4\) but needs 10 x 8/,
  );
});

test("feature group errors", () => {
  rejects(
    (c) => c.modelConfig.featureGroups = [],
    "model_config.feature_groups",
    /must be non-empty/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups.push({ groupName: "wide", featureNames: ["user"] }),
    "model_config.feature_groups[1]",
    /more groups are not supported yet/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].groupType = "SEQUENCE",
    "model_config.feature_groups[0].group_type",
    /SEQUENCE groups are not supported yet/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].featureNames = [],
    "model_config.feature_groups[0].feature_names",
    /must be non-empty/,
  );
});

test("model and tower errors", () => {
  rejects(
    (c) => delete (c.modelConfig as Partial<typeof c.modelConfig>).mmoe,
    "model_config.mmoe",
    /is required/,
  );
  rejects((c) => mmoe(c).numExpert = 0, "model_config.mmoe.num_expert", /positive integer/);
  rejects((c) => mmoe(c).taskTowers = [], "model_config.mmoe.task_towers", /must be non-empty/);
  rejects(
    (c) => mmoe(c).taskTowers[1].towerName = "ctr",
    "model_config.mmoe.task_towers[1].tower_name",
    /duplicate tower "ctr"/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].labelName = "",
    "model_config.mmoe.task_towers[0].label_name",
    /must be a non-empty string/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [],
    "model_config.mmoe.task_towers[0].losses",
    /must set one loss/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [{ softmaxCrossEntropy: {} }],
    "model_config.mmoe.task_towers[0].num_class",
    /softmax_cross_entropy needs num_class > 1/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].numClass = 2,
    "model_config.mmoe.task_towers[0].num_class",
    /binary_cross_entropy needs num_class 1, got 2/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [{ binaryCrossEntropy: { labelSmoothing: 1.5 } }],
    "model_config.mmoe.task_towers[0].losses[0].binary_cross_entropy.label_smoothing",
    /must be in \[0, 1\], got 1\.5/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [{ jrcLoss: {} } as never],
    "model_config.mmoe.task_towers[0].losses[0].jrc_loss",
    /is not supported yet/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ groupedAuc: { groupingKey: "" } }],
    "model_config.mmoe.task_towers[0].metrics[0].grouped_auc.grouping_key",
    /must be a non-empty string/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ auc: { thresholds: 0 } }],
    "model_config.mmoe.task_towers[0].metrics[0].auc.thresholds",
    /positive integer/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].weight = Number.NaN,
    "model_config.mmoe.task_towers[0].weight",
    /must be a finite number/,
  );
});

test("softmax towers with num_class > 1 resolve", () => {
  const config = base();
  Object.assign(mmoe(config).taskTowers[0], {
    numClass: 3,
    losses: [{ softmaxCrossEntropy: { labelSmoothing: 0.1 } }],
  });
  const tower = resolveConfig(config).towers[0];
  assert.equal(tower.numClass, 3);
  assert.deepEqual(tower.losses[0], {
    kind: "softmax_cross_entropy",
    name: "softmax_cross_entropy_ctr",
    labelSmoothing: 0.1,
  });
});

test("dense SGD momentum defaults to tzrec's 0.9", () => {
  const config = resolveConfig({
    ...base(),
    trainConfig: { denseOptimizer: { sgdOptimizer: { lr: 0.1 } } },
  });
  assert.equal(config.denseOptimizer.momentum, 0.9);
  assert.equal(config.sparseOptimizer.momentum, 0);
});

test("optimizer errors", () => {
  rejects(
    (c) => c.trainConfig = { denseOptimizer: { sgdOptimizer: { lr: 0.1, momentum: 1 } } },
    "train_config.dense_optimizer.sgd_optimizer.momentum",
    /must be in \[0, 1\), got 1/,
  );
  rejects(
    (c) => c.trainConfig = { sparseOptimizer: { sgdOptimizer: { lr: 0.1, momentum: 0.5 } } },
    "train_config.sparse_optimizer.sgd_optimizer.momentum",
    /the sparse \(embedding\) SGD has no momentum in tzrec/,
  );
  rejects(
    (c) => c.trainConfig = { sparseOptimizer: {} },
    "train_config.sparse_optimizer",
    /must set one of adam_optimizer, adagrad_optimizer, sgd_optimizer/,
  );
  rejects(
    (c) =>
      c.trainConfig = {
        denseOptimizer: { adamOptimizer: { lr: 0.1 }, adagradOptimizer: { lr: 0.1 } },
      },
    "train_config.dense_optimizer",
    /exactly one of/,
  );
  rejects(
    (c) => c.trainConfig = { denseOptimizer: { adamOptimizer: { lr: Number.POSITIVE_INFINITY } } },
    "train_config.dense_optimizer.adam_optimizer.lr",
    /must be a finite number/,
  );
  rejects(
    (c) =>
      c.trainConfig = {
        denseOptimizer: {
          adamOptimizer: { lr: 0.1 },
          constantLearningRate: {},
          exponentialDecayLearningRate: { decaySize: 10 },
        },
      },
    "train_config.dense_optimizer",
    /sets two learning-rate schedules/,
  );
  rejects(
    (c) =>
      c.trainConfig = {
        sparseOptimizer: { adagradOptimizer: { lr: 0.1 }, exponentialDecayLearningRate: {} },
      },
    "train_config.sparse_optimizer.exponential_decay_learning_rate.decay_size",
    /must be a positive integer, got undefined/,
  );
});

test("train and data errors", () => {
  rejects((c) => c.dataConfig = { batchSize: 0 }, "data_config.batch_size", /positive integer/);
  rejects((c) => c.trainConfig = { numEpochs: 0 }, "train_config.num_epochs", /positive integer/);
  rejects(
    (c) => c.trainConfig = { logStepCountSteps: 1.5 },
    "train_config.log_step_count_steps",
    /positive integer/,
  );
  const steps = base();
  steps.trainConfig = { numSteps: 0 };
  assert.equal(resolveConfig(steps).train.numSteps, 0);
});

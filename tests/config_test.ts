import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ConfigError,
  DEFAULTS,
  LIMITS,
  type MMoE,
  type PipelineConfig,
  resolveConfig,
} from "../src/config/config.ts";
import { Activation } from "../src/kernels/kernels.ts";

/**
 * FG_DAG: two id features (one vocab), a bucketized and a dense raw feature,
 * 2 experts, 2 towers.
 */
function base(): PipelineConfig {
  return {
    dataConfig: { fgMode: "FG_DAG" },
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
      assert.match(e.detail, detail, e.message);
      assert.equal(e.message, `${path}: ${e.detail}`);
      assert.ok(!e.message.includes("\n"), e.message);
      return true;
    },
  );
}

const mmoe = (c: PipelineConfig): MMoE => c.modelConfig.mmoe!;
const feature = (c: PipelineConfig, i: number) => c.featureConfigs[i];

test("the base config resolves with tzrec's defaults", () => {
  const r = resolveConfig(base());
  assert.deepEqual(r.features.map((f) => [f.name, f.column, f.kind, f.width, f.offset, f.rows]), [
    ["user", "user_id", "num_buckets", 4, 0, 10],
    ["cate", "cate", "vocab", 4, 4, 4],
    ["price", "price", "boundaries", 4, 8, 4],
    ["ctr", "ctr", "dense", 1, 12, 0],
  ]);
  assert.ok(r.features.every((f) => !f.encoded && f.separator === "\x1d" && !f.weighted));
  assert.equal(r.inputWidth, 13);
  assert.deepEqual(r.tables.map((t) => t.name), ["user_emb", "cate_emb", "price_emb"]);
  assert.equal(r.features[1].vocab.get("a"), 2);
  assert.equal(r.features[3].table, -1);
  assert.deepEqual(r.groupingFeatures, []);
  assert.deepEqual(r.expertMlp, {
    hiddenUnits: [8, 4],
    dropoutRatio: [0, 0],
    activation: Activation.relu,
    slope: 0,
    useBn: false,
    bias: true,
    useLn: false,
  });
  assert.equal(r.numExpert, 2);
  assert.equal(r.towers[0].numClass, 1);
  assert.equal(r.towers[0].hasWeight, false);
  assert.deepEqual(r.towers[0].metrics, [{ kind: "auc", name: "auc_ctr", thresholds: 200 }]);
  assert.equal(r.towers[1].losses[0].name, "binary_cross_entropy_cvr");
  // tzrec's defaults are float32 (its Python protobuf reads float fields as float32).
  assert.deepEqual(r.sparseOptimizer, {
    kind: "adagrad",
    lr: Math.fround(0.002),
    beta1: 0,
    beta2: 0,
    eps: 1e-8,
    weightDecay: 0,
    momentum: 0,
    dampening: 0,
    nesterov: false,
    initialAccumulatorValue: 0,
    schedule: { kind: "constant" },
  });
  assert.equal(r.denseOptimizer.kind, "adam");
  assert.equal(r.denseOptimizer.beta1, Math.fround(0.9));
  assert.equal(r.denseOptimizer.beta2, Math.fround(0.999));
  assert.equal(r.denseOptimizer.eps, Math.fround(1e-8));
  assert.deepEqual(r.data, {
    batchSize: 1024,
    evalBatchSize: 1024,
    labelFields: [],
    sampleWeightFields: [],
    delimiter: ",",
    shuffle: false,
    shuffleBufferSize: 32,
    dropRemainder: false,
    datasetType: "OdpsDataset",
    fgMode: "FG_DAG",
    csvColumns: null,
  });
  assert.deepEqual(r.train, {
    numEpochs: 1,
    numSteps: 0,
    logStepCountSteps: 100,
    saveCheckpointsSteps: 1000,
    saveCheckpointsEpochs: 0,
    keepCheckpointMax: 0,
  });
  assert.equal(DEFAULTS.MMoE.numExpert, 3);
  delete mmoe(base()).numExpert;
  const unset = base();
  delete mmoe(unset).numExpert;
  assert.equal(resolveConfig(unset).numExpert, 3);
});

test("FG_NONE (tzrec's default): columns named by feature_name, tzrec's \\x03 separator", () => {
  const config = base();
  delete config.dataConfig;
  for (const fc of config.featureConfigs) delete (fc.idFeature ?? fc.rawFeature)!.expression;
  feature(config, 0).idFeature!.fgEncodedDefaultValue = "3";
  feature(config, 3).rawFeature!.fgEncodedDefaultValue = "0.5";
  const r = resolveConfig(config);
  assert.equal(r.data.fgMode, "FG_NONE");
  assert.deepEqual(r.features.map((f) => [f.column, f.encoded, f.separator]), [
    ["user", true, "\x03"],
    ["cate", true, "\x03"],
    ["price", true, "\x03"],
    ["ctr", true, "\x03"],
  ]);
  assert.deepEqual(r.features.map((f) => f.encodedDefault), [[3], null, null, [0.5]]);
  // Encoded ids stay below the table's rows: vocab_list has tzrec's 2 extra rows.
  assert.deepEqual(r.features.map((f) => f.rows), [10, 4, 4, 0]);

  config.dataConfig = { fgEncodedMultivalSep: "|" };
  feature(config, 0).idFeature!.fgEncodedDefaultValue = "3|4";
  const piped = resolveConfig(config);
  assert.equal(piped.features[0].separator, "|");
  assert.deepEqual(piped.features[0].encodedDefault, [3, 4]);
  rejects(
    (c) => {
      c.dataConfig = {};
      feature(c, 0).idFeature!.fgEncodedDefaultValue = "x";
    },
    "feature_configs[0].id_feature.fg_encoded_default_value",
    /"x" is not an integer id/,
  );
  rejects(
    (c) => {
      c.dataConfig = {};
      feature(c, 3).rawFeature!.fgEncodedDefaultValue = "1\x032";
    },
    "feature_configs[3].raw_feature.fg_encoded_default_value",
    /has 2 values, value_dim is 1/,
  );
});

test("fg_encoded (deprecated in tzrec) overrides fg_mode as tzrec's config_util does", () => {
  const mode = (data: PipelineConfig["dataConfig"]) => {
    const config = base();
    config.dataConfig = data;
    return resolveConfig(config).data.fgMode;
  };
  assert.equal(mode({ fgEncoded: false }), "FG_DAG");
  assert.equal(mode({ fgEncoded: false, fgThreads: 0 }), "FG_NORMAL");
  assert.equal(mode({ fgEncoded: false, fgMode: "FG_NONE" }), "FG_DAG");
  assert.equal(mode({ fgMode: "FG_NORMAL" }), "FG_NORMAL");
  const encoded = base();
  encoded.dataConfig = { fgEncoded: true, fgMode: "FG_DAG" };
  assert.equal(resolveConfig(encoded).data.fgMode, "FG_NONE");
  rejects(
    (c) => c.dataConfig = { fgMode: "FG_BUCKETIZE" as never },
    "data_config.fg_mode",
    /^FG_BUCKETIZE is not supported yet \(supported: FG_NONE, FG_NORMAL, FG_DAG\)$/,
  );
});

test("FG_DAG / FG_NORMAL need an expression naming a user, item or context column", () => {
  rejects(
    (c) => delete feature(c, 0).idFeature!.expression,
    "feature_configs[0].id_feature.expression",
    /is required with fg_mode FG_DAG/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.expression = "user_id",
    "feature_configs[0].id_feature.expression",
    /must look like "user:column"/,
  );
  rejects(
    (c) => feature(c, 3).rawFeature!.expression = "feature:price",
    "feature_configs[3].raw_feature.expression",
    /feature: inputs .* are not supported yet/,
  );
});

test("dataset_type: CSV, Parquet and ODPS (local exports) run; Kafka does not", () => {
  for (const datasetType of ["CsvDataset", "ParquetDataset", "OdpsDataset"] as const) {
    const config = base();
    config.dataConfig!.datasetType = datasetType;
    assert.equal(resolveConfig(config).data.datasetType, datasetType);
  }
  rejects(
    (c) => c.dataConfig!.datasetType = "KafkaDataset" as never,
    "data_config.dataset_type",
    /^KafkaDataset is not supported yet \(supported: CsvDataset, ParquetDataset, OdpsDataset\)$/,
  );
});

test("data_config: eval batch size, CSV without a header, shuffle buffer, ignored reader options", () => {
  const config = base();
  config.dataConfig = {
    fgMode: "FG_DAG",
    batchSize: 64,
    evalBatchSize: 256,
    withHeader: false,
    inputFields: [{ inputName: "clk" }, { inputName: "user_id" }],
    shuffle: true,
    shuffleBufferSize: 1000,
    numWorkers: 16,
    pinMemory: false,
    odpsDataQuotaName: "",
  };
  const r = resolveConfig(config);
  assert.equal(r.data.batchSize, 64);
  assert.equal(r.data.evalBatchSize, 256);
  assert.deepEqual(r.data.csvColumns, ["clk", "user_id"]);
  assert.equal(r.data.shuffleBufferSize, 1000);
  config.dataConfig.withHeader = true;
  assert.equal(resolveConfig(config).data.csvColumns, null);
  rejects(
    (c) => c.dataConfig!.evalBatchSize = 0,
    "data_config.eval_batch_size",
    /must be an integer >= 1, got 0/,
  );
  rejects(
    (c) => Object.assign(c.dataConfig!, { sampleMaskProb: 0.1 }),
    "data_config.sample_mask_prob",
    /^not supported yet$/,
  );
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
    /is required \(an empty list\)/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.hiddenUnits = [8, 0],
    "model_config.mmoe.expert_mlp.hidden_units[1]",
    /must be an integer >= 1, got 0/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.dropoutRatio = [0.1, 0.2, 0.3],
    "model_config.mmoe.expert_mlp.dropout_ratio",
    /has 3 values for 2 layers \(give 0, 1 or 2\)/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.dropoutRatio = [Number.NaN],
    "model_config.mmoe.expert_mlp.dropout_ratio[0]",
    /must be in \[0, 1\), got NaN/,
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
    /is required/,
  );
});

test("feature errors", () => {
  rejects(
    (c) => feature(c, 1).idFeature!.featureName = "user",
    "feature_configs[1].id_feature.feature_name",
    /duplicate feature "user" \(also feature_configs\[0\]\)/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].featureNames.push("brand"),
    "model_config.feature_groups[0].feature_names[4]",
    /no feature_configs entry named "brand"/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].featureNames.push("user"),
    "model_config.feature_groups[0].feature_names[4]",
    /"user" is listed twice/,
  );
  rejects(
    (c) => c.featureConfigs.push({}),
    "feature_configs[4]",
    /must set id_feature or raw_feature/,
  );
  rejects(
    (c) => Object.assign(feature(c, 0), { rawFeature: { featureName: "x" } }),
    "feature_configs[0].raw_feature",
    /^id_feature is set too; oneof feature holds only one field$/,
  );
  rejects(
    (c) => c.featureConfigs[0] = { comboFeature: { featureName: "x" } } as never,
    "feature_configs[0].combo_feature",
    /^not supported yet \(this library runs id_feature and raw_feature\)$/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.hashBucketSize = 5,
    "feature_configs[0].id_feature.hash_bucket_size",
    /num_buckets is set too; set one of num_buckets, hash_bucket_size, vocab_list/,
  );
  rejects(
    (c) => delete feature(c, 0).idFeature!.numBuckets,
    "feature_configs[0].id_feature",
    /must set one of num_buckets, hash_bucket_size, vocab_list/,
  );
  rejects(
    (c) => feature(c, 1).idFeature!.vocabList = ["a", "b", "a"],
    "feature_configs[1].id_feature.vocab_list[2]",
    /duplicate entry "a"/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.embeddingDim = 0,
    "feature_configs[0].id_feature.embedding_dim",
    /must be an integer >= 1, got 0/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.pooling = "max",
    "feature_configs[0].id_feature.pooling",
    /must be "sum" or "mean", got "max"/,
  );
  rejects(
    (c) => feature(c, 2).rawFeature!.boundaries = [1, 5, 2],
    "feature_configs[2].raw_feature.boundaries[2]",
    /strictly ascending/,
  );
  rejects(
    (c) => feature(c, 2).rawFeature!.boundaries = [1, Number.POSITIVE_INFINITY],
    "feature_configs[2].raw_feature.boundaries[1]",
    /must be a finite number/,
  );
  rejects(
    (c) => delete feature(c, 2).rawFeature!.embeddingDim,
    "feature_configs[2].raw_feature.embedding_dim",
    /is required with boundaries/,
  );
  rejects(
    (c) => feature(c, 3).rawFeature!.valueDim = 0,
    "feature_configs[3].raw_feature.value_dim",
    /must be an integer >= 1, got 0/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.separator = "",
    "feature_configs[0].id_feature.separator",
    /must be a non-empty string/,
  );
});

test("weighted id features and mean pooling of bucketized raw features", () => {
  const config = base();
  feature(config, 0).idFeature!.weighted = true;
  feature(config, 2).rawFeature!.pooling = "mean";
  const r = resolveConfig(config);
  assert.equal(r.features[0].weighted, true);
  assert.equal(r.features[1].weighted, false);
  assert.equal(r.features[2].mean, true);
});

test("the schema walk: unknown fields, fields not run, defaults, types, required fields", () => {
  rejects(
    (c) => Object.assign(mmoe(c), { numExperts: 3 }),
    "model_config.mmoe.numExperts",
    /^unknown field for tzrec\.protos\.MMoE$/,
  );
  rejects(
    (c) => Object.assign(feature(c, 0).idFeature!, { zch: { zchSize: 10 } }),
    "feature_configs[0].id_feature.zch",
    /^not supported yet$/,
  );
  rejects(
    (c) => Object.assign(feature(c, 0).idFeature!, { trainable: false }),
    "feature_configs[0].id_feature.trainable",
    /^not supported yet$/,
  );
  // tzrec fields this library does not run are accepted at tzrec's default.
  const defaults = base();
  Object.assign(feature(defaults, 0).idFeature!, {
    trainable: true,
    dataType: "FP32",
    defaultValue: "",
    sequenceFields: [],
    fgValueType: "int64",
  });
  Object.assign(mmoe(defaults).taskTowers[0], { trainMetrics: [], paretoMinLossWeight: 0 });
  defaults.trainConfig = {
    useTensorboard: false,
    cudnnAllowTf32: false,
    saveCheckpointsSteps: 500,
    numEpochs: 1,
  };
  Object.assign(defaults.trainConfig, { gradientAccumulationSteps: 0 });
  assert.equal(resolveConfig(defaults).features.length, 4);
  rejects(
    (c) => mmoe(c).numExpert = "3" as never,
    "model_config.mmoe.num_expert",
    /^expected a uint32 integer, got "3"$/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].groupType = "WIDE" as never,
    "model_config.feature_groups[0].group_type",
    /^WIDE is not supported yet \(supported: DEEP\)$/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].groupType = "deep" as never,
    "model_config.feature_groups[0].group_type",
    /^expected one of DEEP, WIDE, SEQUENCE, JAGGED_SEQUENCE, got "deep"$/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].featureNames = "user" as never,
    "model_config.feature_groups[0].feature_names",
    /^expected a list, got "user"$/,
  );
  rejects(
    (c) => delete (mmoe(c).taskTowers[0] as { towerName?: string }).towerName,
    "model_config.mmoe.task_towers[0].tower_name",
    /^is required$/,
  );
  rejects(
    (c) => delete (c.modelConfig as { mmoe?: MMoE }).mmoe,
    "model_config.mmoe",
    /is required/,
  );
  rejects(
    (c) => Object.assign(c.modelConfig, { dbmtl: {} }),
    "model_config.dbmtl",
    /^mmoe is set too; oneof model holds only one field$/,
  );
});

test("feature groups: MMoE reads one DEEP group", () => {
  rejects(
    (c) => c.modelConfig.featureGroups = [],
    "model_config.feature_groups",
    /is required/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups.push({ groupName: "wide", featureNames: ["user"] }),
    "model_config.feature_groups[1]",
    /not supported yet: MMoE reads only the first feature group/,
  );
  rejects(
    (c) => c.modelConfig.featureGroups[0].featureNames = [],
    "model_config.feature_groups[0].feature_names",
    /is required/,
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

test("several losses per tower: any mix tzrec allows, each kind once", () => {
  const config = base();
  mmoe(config).taskTowers[0].losses = [{ binaryCrossEntropy: { labelSmoothing: 0.1 } }, {
    l2Loss: {},
  }];
  mmoe(config).taskTowers[0].metrics = [{ auc: {} }, { meanSquaredError: {} }];
  const tower = resolveConfig(config).towers[0];
  assert.deepEqual(tower.losses, [
    {
      kind: "binary_cross_entropy",
      name: "binary_cross_entropy_ctr",
      labelSmoothing: 0.1,
    },
    { kind: "l2_loss", name: "l2_loss_ctr", labelSmoothing: 0 },
  ]);
  rejects(
    (c) => mmoe(c).taskTowers[0].losses.push({ binaryCrossEntropy: {} }),
    "model_config.mmoe.task_towers[0].losses[1].binary_cross_entropy",
    /is set twice in this tower/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [],
    "model_config.mmoe.task_towers[0].losses",
    /is required/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [{}],
    "model_config.mmoe.task_towers[0].losses[0]",
    /must set one of binary_cross_entropy, softmax_cross_entropy, l2_loss/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [{ softmaxCrossEntropy: {} }],
    "model_config.mmoe.task_towers[0].num_class",
    /softmax_cross_entropy needs num_class > 1, got 1/,
  );
  rejects(
    (c) => {
      mmoe(c).taskTowers[0].numClass = 2;
      mmoe(c).taskTowers[0].losses = [{ softmaxCrossEntropy: {} }, { l2Loss: {} }];
      mmoe(c).taskTowers[0].metrics = [];
    },
    "model_config.mmoe.task_towers[0].num_class",
    /l2_loss needs num_class 1, got 2/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [{ binaryCrossEntropy: { labelSmoothing: 1.5 } }],
    "model_config.mmoe.task_towers[0].losses[0].binary_cross_entropy.label_smoothing",
    /must be in \[0, 1\], got 1\.5/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].losses = [{ jrcLoss: { sessionName: "s" } } as never],
    "model_config.mmoe.task_towers[0].losses[0].jrc_loss",
    /^not supported yet$/,
  );
});

test("tower errors and range checks", () => {
  rejects(
    (c) => mmoe(c).taskTowers = [],
    "model_config.mmoe.task_towers",
    /is required \(an empty list\)/,
  );
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
    (c) => mmoe(c).taskTowers[0].weight = Number.NaN,
    "model_config.mmoe.task_towers[0].weight",
    /must be a finite number in \[0, inf\), got NaN/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].weight = -1,
    "model_config.mmoe.task_towers[0].weight",
    /got -1/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[1].outTaskSpaceWeight = Number.POSITIVE_INFINITY,
    "model_config.mmoe.task_towers[1].out_task_space_weight",
    /must be a finite number/,
  );
  rejects(
    (c) => {
      c.dataConfig!.labelFields = ["clk"];
    },
    "model_config.mmoe.task_towers[1].label_name",
    /"buy" is not in data_config\.label_fields \(tzrec reads it from there\)/,
  );
  rejects(
    (c) => {
      c.dataConfig!.labelFields = ["clk", "buy"];
      mmoe(c).taskTowers[1].taskSpaceIndicatorLabel = "click";
    },
    "model_config.mmoe.task_towers[1].task_space_indicator_label",
    /"click" is not in data_config\.label_fields/,
  );
  rejects(
    (c) => {
      c.dataConfig!.sampleWeightFields = ["w"];
      mmoe(c).taskTowers[1].sampleWeightName = "weight";
    },
    "model_config.mmoe.task_towers[1].sample_weight_name",
    /"weight" is not in data_config\.sample_weight_fields/,
  );
});

test("metrics: what each needs from the tower, as tzrec asserts or reads it", () => {
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ groupedAuc: { groupingKey: "" } }],
    "model_config.mmoe.task_towers[0].metrics[0].grouped_auc.grouping_key",
    /must be a non-empty string/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ groupedAuc: { groupingKey: "ctr" } }],
    "model_config.mmoe.task_towers[0].metrics[0].grouped_auc.grouping_key",
    /"ctr" is not an id_feature or bucketized raw_feature of feature_configs/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ auc: { thresholds: 1 } }],
    "model_config.mmoe.task_towers[0].metrics[0].auc.thresholds",
    /must be an integer >= 2, got 1/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ auc: { thresholds: 2_000_000 } }],
    "model_config.mmoe.task_towers[0].metrics[0].auc.thresholds",
    /must be at most 1000000 \(LIMITS\.thresholds\)/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ auc: {} }, { auc: { thresholds: 10 } }],
    "model_config.mmoe.task_towers[0].metrics[1].auc",
    /is set twice in this tower/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ meanAbsoluteError: {} }],
    "model_config.mmoe.task_towers[0].metrics[0].mean_absolute_error",
    /reads y, which needs an l2_loss/,
  );
  rejects(
    (c) => {
      mmoe(c).taskTowers[0].losses = [{ l2Loss: {} }];
      mmoe(c).taskTowers[0].metrics = [{ auc: {} }];
    },
    "model_config.mmoe.task_towers[0].metrics[0].auc",
    /reads probs, which needs a binary_cross_entropy or softmax_cross_entropy loss/,
  );
  // tzrec rank_model.py: `assert num_class <= 2` for auc and grouped_auc.
  rejects(
    (c) => {
      mmoe(c).taskTowers[0].numClass = 3;
      mmoe(c).taskTowers[0].losses = [{ softmaxCrossEntropy: {} }];
    },
    "model_config.mmoe.task_towers[0].metrics[0].auc",
    /needs num_class <= 2 \(tzrec asserts it\), got 3/,
  );
  rejects(
    (c) => {
      mmoe(c).taskTowers[0].numClass = 3;
      mmoe(c).taskTowers[0].losses = [{ softmaxCrossEntropy: {} }];
      mmoe(c).taskTowers[0].metrics = [{ accuracy: { topK: 2 } }];
    },
    "model_config.mmoe.task_towers[0].metrics[0].accuracy.top_k",
    /top_k 2 is not supported yet/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ accuracy: { threshold: 2 } }],
    "model_config.mmoe.task_towers[0].metrics[0].accuracy.threshold",
    /must be a finite number in \[0, 1\], got 2/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].metrics = [{ xauc: {} } as never],
    "model_config.mmoe.task_towers[0].metrics[0].xauc",
    /^not supported yet$/,
  );
  const two = base();
  Object.assign(mmoe(two).taskTowers[0], {
    numClass: 2,
    losses: [{ softmaxCrossEntropy: {} }],
    metrics: [{ auc: {} }, { accuracy: {} }],
  });
  assert.deepEqual(resolveConfig(two).towers[0].metrics[1], {
    kind: "accuracy",
    name: "accuracy_ctr",
    threshold: 0.5,
    numClass: 2,
  });
});

test("grouped_auc groups by any sparse feature; those outside the group are keys only", () => {
  const config = base();
  config.featureConfigs.push({
    idFeature: {
      featureName: "session",
      expression: "context:sid",
      hashBucketSize: 1000,
      embeddingDim: 4,
    },
  });
  mmoe(config).taskTowers[0].metrics = [
    { groupedAuc: { groupingKey: "session" } },
    { exactAuc: {} },
  ];
  mmoe(config).taskTowers[1].metrics = [
    { groupedAuc: { groupingKey: "user" } },
    { accuracy: {} },
  ];
  const r = resolveConfig(config);
  assert.deepEqual(r.towers[0].metrics, [
    { kind: "grouped_auc", name: "grouped_auc_ctr", groupingKey: "session" },
    { kind: "exact_auc", name: "exact_auc_ctr" },
  ]);
  assert.deepEqual(r.groupingFeatures.map((f) => [f.name, f.column, f.kind, f.table, f.width]), [
    ["session", "sid", "hash_bucket", -1, 0],
  ]);
  assert.equal(r.tables.length, 3); // no table for the key
});

test("optimizers: tzrec's fields passed to torch / fbgemm", () => {
  const config = base();
  config.trainConfig = {
    sparseOptimizer: { adagradOptimizer: { lr: 0.05, initialAccumulatorValue: 0.1 } },
    denseOptimizer: {
      sgdOptimizer: { lr: 0.1, momentum: 0.5, dampening: 0.1, weightDecay: 1e-4 },
      exponentialDecayLearningRate: { decaySize: 100, decayFactor: 0.5, staircase: false },
    },
    numEpochs: 1,
  };
  const r = resolveConfig(config);
  assert.equal(r.sparseOptimizer.initialAccumulatorValue, 0.1);
  assert.deepEqual(
    [r.denseOptimizer.kind, r.denseOptimizer.momentum, r.denseOptimizer.dampening],
    ["sgd", 0.5, 0.1],
  );
  assert.equal(r.denseOptimizer.weightDecay, 1e-4);
  assert.deepEqual(r.denseOptimizer.schedule, {
    kind: "exponential_decay",
    decaySize: 100,
    decayFactor: 0.5,
    staircase: false,
    minLearningRate: 0,
  });
  config.trainConfig.sparseOptimizer = { adamOptimizer: { weightDecay: 0.01, beta1: 0.8 } };
  config.trainConfig.denseOptimizer = {
    adagradOptimizer: { eps: 1e-6, initialAccumulatorValue: 0.2, lr: 0 },
  };
  const adam = resolveConfig(config);
  assert.deepEqual(
    [adam.sparseOptimizer.kind, adam.sparseOptimizer.weightDecay, adam.sparseOptimizer.beta1],
    ["adam", 0.01, 0.8],
  );
  assert.deepEqual(
    [adam.denseOptimizer.kind, adam.denseOptimizer.eps, adam.denseOptimizer.lr],
    ["adagrad", 1e-6, 0],
  );
  assert.equal(adam.denseOptimizer.initialAccumulatorValue, 0.2);
  config.trainConfig.denseOptimizer = { adamOptimizer: { eps: 1e-7, lr: 0.01 } };
  assert.equal(resolveConfig(config).denseOptimizer.eps, 1e-7);
  config.trainConfig.denseOptimizer = { sgdOptimizer: { lr: 0.1, nesterov: true } };
  const nesterov = resolveConfig(config).denseOptimizer;
  // tzrec's momentum default, a float32 0.9.
  assert.deepEqual([nesterov.momentum, nesterov.nesterov], [Math.fround(0.9), true]);
  // Fields read only with gradient_clipping (not supported) are accepted.
  config.trainConfig.sparseOptimizer = { sgdOptimizer: { lr: 0.1, maxGradient: 5 } };
  assert.equal(resolveConfig(config).sparseOptimizer.momentum, 0);
});

test("optimizer errors", () => {
  const train = (t: PipelineConfig["trainConfig"]) => (c: PipelineConfig) => c.trainConfig = t;
  rejects(
    train({ denseOptimizer: { sgdOptimizer: { lr: 0.1, momentum: 1 } } }),
    "train_config.dense_optimizer.sgd_optimizer.momentum",
    /must be in \[0, 1\), got 1/,
  );
  rejects(
    train({ denseOptimizer: { sgdOptimizer: { lr: 0.1, dampening: 0.5, nesterov: true } } }),
    "train_config.dense_optimizer.sgd_optimizer.nesterov",
    /Nesterov momentum needs momentum > 0 and dampening 0/,
  );
  rejects(
    train({ sparseOptimizer: { sgdOptimizer: { lr: 0.1, momentum: 0.5 } as never } }),
    "train_config.sparse_optimizer.sgd_optimizer.momentum",
    /^unknown field for tzrec\.protos\.FusedSGDOptimizer$/,
  );
  rejects(
    train({ sparseOptimizer: {} }),
    "train_config.sparse_optimizer",
    /must set one of sgd_optimizer, adagrad_optimizer, adam_optimizer/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: { lr: 0.1 }, adagradOptimizer: { lr: 0.1 } } }),
    "train_config.dense_optimizer.adagrad_optimizer",
    /^adam_optimizer is set too; oneof optimizer holds only one field$/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: { lr: Number.POSITIVE_INFINITY } } }),
    "train_config.dense_optimizer.adam_optimizer.lr",
    /must be a finite number in \[0, inf\), got Infinity/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: { lr: Number.NaN } } }),
    "train_config.dense_optimizer.adam_optimizer.lr",
    /got NaN$/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: { lr: -0.1 } } }),
    "train_config.dense_optimizer.adam_optimizer.lr",
    /got -0\.1$/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: { eps: -1 } } }),
    "train_config.dense_optimizer.adam_optimizer.eps",
    /got -1$/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: { beta2: 1 } } }),
    "train_config.dense_optimizer.adam_optimizer.beta2",
    /must be in \[0, 1\), got 1/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: { amsgrad: true } as never } }),
    "train_config.dense_optimizer.adam_optimizer.amsgrad",
    /^not supported yet$/,
  );
  rejects(
    train({ sparseOptimizer: { adagradOptimizer: { gradientClipping: true } as never } }),
    "train_config.sparse_optimizer.adagrad_optimizer.gradient_clipping",
    /^not supported yet$/,
  );
  rejects(
    train({ denseOptimizer: { adamwOptimizer: { lr: 0.1 } } as never }),
    "train_config.dense_optimizer.adamw_optimizer",
    /^not supported yet$/,
  );
  rejects(
    train({ denseOptimizer: { adamOptimizer: {}, ema: {} } as never }),
    "train_config.dense_optimizer.ema",
    /^not supported yet$/,
  );
  rejects(
    train({
      denseOptimizer: {
        adamOptimizer: { lr: 0.1 },
        constantLearningRate: {},
        exponentialDecayLearningRate: { decaySize: 10 },
      },
    }),
    "train_config.dense_optimizer.exponential_decay_learning_rate",
    /constant_learning_rate is set too; oneof learning_rate holds only one field/,
  );
  rejects(
    train({
      denseOptimizer: { adamOptimizer: {}, cosineAnnealingLearningRate: { TMax: 10 } } as never,
    }),
    "train_config.dense_optimizer.cosine_annealing_learning_rate",
    /^not supported yet$/,
  );
  rejects(
    train({
      sparseOptimizer: {
        adagradOptimizer: {},
        exponentialDecayLearningRate: { decaySize: 10, warmupSize: 5 } as never,
      },
    }),
    "train_config.sparse_optimizer.exponential_decay_learning_rate.warmup_size",
    /^not supported yet$/,
  );
  rejects(
    train({
      sparseOptimizer: {
        adagradOptimizer: { lr: 0.1 },
        exponentialDecayLearningRate: {} as never,
      },
    }),
    "train_config.sparse_optimizer.exponential_decay_learning_rate.decay_size",
    /^is required$/,
  );
  rejects(
    train({
      sparseOptimizer: {
        adagradOptimizer: { initialAccumulatorValue: -1 },
      },
    }),
    "train_config.sparse_optimizer.adagrad_optimizer.initial_accumulator_value",
    /got -1$/,
  );
});

test("num_epochs / num_steps as tzrec's `assert num_steps ^ num_epochs`", () => {
  const train = (t: PipelineConfig["trainConfig"]) => {
    const config = base();
    config.trainConfig = t;
    const { numEpochs, numSteps, logStepCountSteps } = resolveConfig(config).train;
    return { numEpochs, numSteps, logStepCountSteps };
  };
  assert.deepEqual(train({ numEpochs: 3 }), { numEpochs: 3, numSteps: 0, logStepCountSteps: 100 });
  // Only num_steps: tzrec cycles the data until num_steps.
  assert.deepEqual(train({ numSteps: 50 }), {
    numEpochs: Infinity,
    numSteps: 50,
    logStepCountSteps: 100,
  });
  // Both, different: tzrec's XOR passes and both limits apply.
  assert.deepEqual(train({ numSteps: 50, numEpochs: 2 }).numEpochs, 2);
  // Neither: one epoch (tzrec refuses to train; evaluation does not need either).
  assert.equal(train({}).numEpochs, 1);
  assert.equal(train({ numEpochs: 0, numSteps: 0 }).numEpochs, 1);
  rejects(
    (c) => c.trainConfig = { numSteps: 2, numEpochs: 2 },
    "train_config.num_steps",
    /both set, to the same value \(tzrec asserts num_steps \^ num_epochs/,
  );
  rejects(
    (c) => c.trainConfig = { logStepCountSteps: 1.5 },
    "train_config.log_step_count_steps",
    /expected a uint32 integer, got 1\.5/,
  );
  rejects(
    (c) => c.trainConfig = { numEpochs: -1 },
    "train_config.num_epochs",
    /expected a uint32 integer, got -1/,
  );
});

test("limits that keep a model in one Wasm memory are named", () => {
  rejects(
    (c) => mmoe(c).numExpert = LIMITS.experts + 1,
    "model_config.mmoe.num_expert",
    /must be at most 256 \(LIMITS\.experts\), got 257/,
  );
  rejects(
    (c) => mmoe(c).expertMlp.hiddenUnits = [8, 100_000],
    "model_config.mmoe.expert_mlp.hidden_units[1]",
    /must be at most 65536 \(LIMITS\.units, units per layer\)/,
  );
  rejects(
    (c) => c.dataConfig!.batchSize = 2 ** 21,
    "data_config.batch_size",
    /must be at most 1048576 \(LIMITS\.batchSize\)/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.embeddingDim = 5000,
    "feature_configs[0].id_feature.embedding_dim",
    /must be at most 4096 \(LIMITS\.dim\)/,
  );
  rejects(
    (c) => feature(c, 0).idFeature!.numBuckets = 2 ** 31,
    "feature_configs[0].id_feature.num_buckets",
    /must be at most 2147483647 \(LIMITS\.rows: ids are int32 table rows\)/,
  );
  rejects(
    (c) => mmoe(c).taskTowers[0].numClass = 70_000,
    "model_config.mmoe.task_towers[0].num_class",
    /must be at most 65536 \(LIMITS\.numClass\)/,
  );
  // 100M x 16 floats with Adam's two moments: 19 GiB.
  rejects(
    (c) => {
      feature(c, 0).idFeature!.numBuckets = 100_000_000;
      feature(c, 0).idFeature!.embeddingDim = 16;
      c.trainConfig = { sparseOptimizer: { adamOptimizer: {} } };
    },
    "feature_configs[0]",
    /the model needs 17\.9 GiB of .* one Wasm memory holds 4 GiB \(LIMITS\.memoryBytes\); the largest table is user_emb \(100000000 x 16\)/,
  );
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { ConfigError, resolveConfig } from "../src/config/config.ts";
import {
  ConfigTextError,
  loadPipelineConfig,
  parsePipelineConfig,
  toPipelineConfigText,
} from "../src/config/config_text.ts";

const TAOBAO = "configs/mmoe_taobao.config";

/** A small valid config; `extra` is spliced into the mmoe block, `top` at the top level. */
function tiny(parts: { mmoe?: string; top?: string; feature?: string; tower?: string } = {}) {
  return `train_input_path: "train.csv"
eval_input_path: "eval.csv"
model_dir: "out"
feature_configs {
  id_feature {
    feature_name: "user_id"
    expression: "user:user_id"
    num_buckets: 100
    embedding_dim: 8
  }
}
${parts.feature ?? ""}
model_config {
  feature_groups {
    group_name: "all"
    feature_names: "user_id"
    group_type: DEEP
  }
  mmoe {
    expert_mlp {
      hidden_units: [16, 8]
    }
    num_expert: 2
    task_towers {
      tower_name: "ctr"
      label_name: "clk"
      losses {
        binary_cross_entropy {}
      }
      ${parts.tower ?? ""}
    }
    ${parts.mmoe ?? ""}
  }
}
${parts.top ?? ""}
`;
}

/** The line (1-based) of the first occurrence of `needle` in `text`. */
function lineOf(text: string, needle: string): number {
  const at = text.indexOf(needle);
  assert.ok(at >= 0, `${needle} not in text`);
  return text.slice(0, at).split("\n").length;
}

/** Parses `text` expecting a ConfigTextError; checks `source:line` and the path. */
function parseError(
  text: string,
  expected: { line: number; path: string; detail: RegExp; column?: number },
): ConfigTextError {
  try {
    parsePipelineConfig(text, "t.config");
  } catch (e) {
    assert.ok(e instanceof ConfigTextError, `not a ConfigTextError: ${e}`);
    assert.ok(e instanceof ConfigError);
    assert.equal(e.path, expected.path, e.message);
    assert.equal(e.line, expected.line, e.message);
    if (expected.column !== undefined) assert.equal(e.column, expected.column, e.message);
    assert.match(e.detail, expected.detail, e.message);
    assert.ok(
      e.message.startsWith(`t.config:${expected.line}:${e.column}: ${expected.path}`),
      e.message,
    );
    return e;
  }
  assert.fail("expected a ConfigTextError");
}

/** Parses and resolves `text`, expecting resolveConfig's ConfigTextError at `source:line`. */
function resolveError(
  text: string,
  expected: { line: number; path: string; detail: RegExp; column?: number },
): ConfigTextError {
  const config = parsePipelineConfig(text, "t.config");
  try {
    resolveConfig(config);
  } catch (e) {
    assert.ok(e instanceof ConfigTextError, `not a ConfigTextError: ${e}`);
    assert.equal(e.path, expected.path, e.message);
    assert.equal(e.line, expected.line, e.message);
    if (expected.column !== undefined) assert.equal(e.column, expected.column, e.message);
    assert.match(e.detail, expected.detail, e.message);
    assert.equal(e.message, `t.config:${e.line}:${e.column}: ${expected.path}: ${e.detail}`);
    assert.ok(!e.message.includes("\n"), e.message);
    return e;
  }
  assert.fail("expected a ConfigTextError from resolveConfig");
}

// ------------------------------------------------------------------ the example

test("mmoe_taobao.config parses unchanged and resolves to the Taobao model", async () => {
  const config = await loadPipelineConfig(TAOBAO);
  const resolved = resolveConfig(config);
  assert.deepEqual(resolved.features.map((f) => f.name), [
    "user_id",
    "cms_segid",
    "cms_group_id",
    "final_gender_code",
    "age_level",
    "pvalue_level",
    "shopping_level",
    "occupation",
    "new_user_class_level",
    "pid",
    "adgroup_id",
    "cate_id",
    "campaign_id",
    "customer",
    "brand",
    "price",
  ]);
  assert.equal(resolved.inputWidth, 256);
  assert.ok(resolved.features.every((f) => f.width === 16));
  const price = resolved.features.find((f) => f.name === "price")!;
  assert.equal(price.kind, "boundaries");
  assert.equal(price.boundaries.length, 98);
  assert.equal(price.rows, 99);
  assert.equal(price.boundaries[0], Math.fround(1.1)); // float field: float32 as in tzrec
  assert.equal(price.boundaries[97], 8720);
  const pid = resolved.features.find((f) => f.name === "pid")!;
  assert.equal(pid.kind, "hash_bucket");
  assert.equal(pid.rows, 20);
  assert.equal(pid.column, "pid");
  const user = resolved.features[0];
  assert.equal(user.kind, "num_buckets");
  assert.equal(user.rows, 1141730);
  assert.equal(resolved.tables.length, 16);

  assert.deepEqual(resolved.expertMlp.hiddenUnits, [512, 256, 128]);
  assert.equal(resolved.numExpert, 3);
  assert.equal(resolved.gateMlp, null);
  assert.deepEqual(resolved.towers.map((t) => [t.name, t.label]), [["ctr", "clk"], ["cvr", "buy"]]);
  for (const tower of resolved.towers) {
    assert.deepEqual(tower.mlp?.hiddenUnits, [256, 128, 64]);
    assert.equal(tower.losses[0].kind, "binary_cross_entropy");
    assert.equal(tower.hasWeight, false);
  }
  assert.deepEqual(resolved.towers[0].metrics, [{ kind: "auc", name: "auc_ctr", thresholds: 200 }]);
  assert.deepEqual(resolved.towers[1].metrics, [
    { kind: "auc", name: "auc_cvr", thresholds: 1000 },
  ]);

  assert.equal(resolved.sparseOptimizer.kind, "adagrad");
  assert.equal(resolved.sparseOptimizer.lr, Math.fround(0.001));
  assert.equal(resolved.sparseOptimizer.schedule.kind, "constant");
  assert.equal(resolved.denseOptimizer.kind, "adam");
  assert.equal(resolved.denseOptimizer.lr, Math.fround(0.001));
  assert.equal(resolved.denseOptimizer.beta1, Math.fround(0.9)); // tzrec's float default
  assert.equal(resolved.denseOptimizer.beta2, Math.fround(0.999));

  assert.equal(resolved.data.batchSize, 8192);
  assert.equal(resolved.data.fgMode, "FG_DAG"); // as tzrec's example
  assert.equal(resolved.data.datasetType, "CsvDataset");
  assert.deepEqual(resolved.data.labelFields, ["clk", "buy"]);
  assert.equal(resolved.train.numEpochs, 1);
  assert.deepEqual(resolved.paths, {
    trainInputPath: "data/taobao_train.csv",
    evalInputPath: "data/taobao_eval.csv",
    modelDir: "experiments/mmoe_taobao",
  });
});

test("only fields that are set are copied (resolveConfig applies the defaults)", async () => {
  const config = await loadPipelineConfig(TAOBAO);
  const mmoe = config.modelConfig.mmoe!;
  assert.deepEqual(mmoe.expertMlp, { hiddenUnits: [512, 256, 128] });
  assert.equal(mmoe.numExpert, 3);
  assert.deepEqual(mmoe.taskTowers[0].metrics, [{ auc: {} }]);
  assert.deepEqual(mmoe.taskTowers[1].losses, [{ binaryCrossEntropy: {} }]);
  assert.deepEqual(config.featureConfigs[15], {
    idFeature: {
      featureName: "pid",
      expression: "context:pid",
      hashBucketSize: 20,
      embeddingDim: 16,
    },
  });
  assert.deepEqual(config.modelConfig.featureGroups[0].groupType, "DEEP");
  assert.deepEqual(config.evalConfig, {});
  assert.deepEqual(config.dataConfig, {
    batchSize: 8192,
    datasetType: "CsvDataset",
    fgMode: "FG_DAG",
    labelFields: ["clk", "buy"],
    numWorkers: 8,
  });
  assert.deepEqual(config.trainConfig, {
    sparseOptimizer: { adagradOptimizer: { lr: Math.fround(0.001) }, constantLearningRate: {} },
    denseOptimizer: { adamOptimizer: { lr: Math.fround(0.001) }, constantLearningRate: {} },
    numEpochs: 1,
  });
});

test("parsePipelineConfig names the source; the default source is pipeline.config", () => {
  assert.throws(() => parsePipelineConfig("oops: 1"), /^ConfigTextError: pipeline\.config:1:1: /);
});

// --------------------------------------------------------------- text syntax

test("comments, [a, b] lists and repeated fields written out parse alike", () => {
  const listed = parsePipelineConfig(tiny({
    top: `data_config {
  # labels as a list
  label_fields: ["clk", "buy"]  # trailing comment
  sample_weight_fields: []
}`,
  }));
  const written = parsePipelineConfig(tiny({
    top: `data_config {
  label_fields: "clk"
  label_fields: "buy"
}`,
  }));
  assert.deepEqual(listed, written);
  assert.deepEqual(listed.dataConfig?.labelFields, ["clk", "buy"]);

  const units = (mlp: string) =>
    parsePipelineConfig(tiny({ tower: `mlp { ${mlp} }` })).modelConfig.mmoe!.taskTowers[0].mlp;
  assert.deepEqual(units("hidden_units: [4, 2]"), { hiddenUnits: [4, 2] });
  assert.deepEqual(units("hidden_units: 4 hidden_units: 2"), { hiddenUnits: [4, 2] });
  assert.deepEqual(units("hidden_units: 4; hidden_units: 2;"), { hiddenUnits: [4, 2] });
  assert.deepEqual(units("hidden_units: [4] hidden_units: [2]"), { hiddenUnits: [4, 2] });
});

test("message syntax variants: optional colon, angle brackets, message lists", () => {
  const a = parsePipelineConfig(tiny({ tower: "metrics: { auc: < thresholds: 50 > }" }));
  const b = parsePipelineConfig(tiny({ tower: "metrics [{ auc { thresholds: 50 } }]" }));
  assert.deepEqual(a, b);
  assert.deepEqual(a.modelConfig.mmoe!.taskTowers[0].metrics, [{ auc: { thresholds: 50 } }]);
});

test("strings: single quotes, escapes and adjacent literals", () => {
  const config = parsePipelineConfig(tiny({
    feature: `feature_configs { id_feature {
      feature_name: 'tags' expression: "item:" "tags" hash_bucket_size: 10 embedding_dim: 4
      separator: "|" } }`,
  }));
  assert.deepEqual(config.featureConfigs[1].idFeature, {
    featureName: "tags",
    expression: "item:tags",
    hashBucketSize: 10,
    embeddingDim: 4,
    separator: "|",
  });
  const escaped = parsePipelineConfig('train_input_path: "a\\"b\\x41"');
  assert.equal(escaped.trainInputPath, 'a"bA');
});

test("enums, oneofs and the rest of the typed shape", () => {
  const config = parsePipelineConfig(tiny({
    feature:
      `feature_configs { raw_feature { feature_name: "price" expression: "item:price" value_dim: 2 } }`,
    mmoe:
      `gate_mlp { hidden_units: 4 activation: "nn.Tanh" dropout_ratio: 0.5 use_bn: true bias: false }`,
    tower: `num_class: 1 weight: 2 sample_weight_name: "w" task_space_indicator_label: "clk"
      in_task_space_weight: 1 out_task_space_weight: 0
      metrics { grouped_auc { grouping_key: "user_id" } }
      metrics { exact_auc {} }
      metrics { accuracy { threshold: 0.25 } }
      metrics { mean_squared_error {} }
      losses { l2_loss {} }`,
    top: `train_config {
      sparse_optimizer { sgd_optimizer { lr: 0.5 } exponential_decay_learning_rate { decay_size: 10 decay_factor: 0.5 staircase: false } }
      dense_optimizer { adagrad_optimizer { lr: 0.25 weight_decay: 0 } }
      num_steps: 7 log_step_count_steps: 3
    }
    data_config { dataset_type: CsvDataset delimiter: "\\t" shuffle: true drop_remainder: true sample_weight_fields: "w" }`,
  }));
  assert.deepEqual(config.featureConfigs[1], {
    rawFeature: { featureName: "price", expression: "item:price", valueDim: 2 },
  });
  assert.deepEqual(config.modelConfig.mmoe!.gateMlp, {
    hiddenUnits: [4],
    activation: "nn.Tanh",
    dropoutRatio: [0.5],
    useBn: true,
    bias: false,
  });
  const tower = config.modelConfig.mmoe!.taskTowers[0];
  assert.deepEqual(tower.metrics, [
    { groupedAuc: { groupingKey: "user_id" } },
    { exactAuc: {} },
    { accuracy: { threshold: 0.25 } },
    { meanSquaredError: {} },
  ]);
  assert.equal(tower.weight, 2);
  assert.equal(tower.outTaskSpaceWeight, 0);
  assert.deepEqual(config.trainConfig, {
    sparseOptimizer: {
      sgdOptimizer: { lr: 0.5 },
      exponentialDecayLearningRate: { decaySize: 10, decayFactor: 0.5, staircase: false },
    },
    denseOptimizer: { adagradOptimizer: { lr: 0.25, weightDecay: 0 } },
    numSteps: 7,
    logStepCountSteps: 3,
  });
  assert.deepEqual(config.dataConfig, {
    datasetType: "CsvDataset",
    delimiter: "\t",
    shuffle: true,
    dropRemainder: true,
    sampleWeightFields: ["w"],
  });
  const resolved = resolveConfig(config);
  assert.equal(resolved.inputWidth, 8); // the group reads user_id only
  assert.equal(resolved.towers[0].hasWeight, true);
  assert.equal(resolved.sparseOptimizer.schedule.kind, "exponential_decay");
});

test("unset fields stay unset; resolveConfig applies tzrec's defaults (dense SGD momentum 0.9)", () => {
  const config = parsePipelineConfig(
    tiny({
      top: `train_config {
      sparse_optimizer { adagrad_optimizer {} }
      dense_optimizer { sgd_optimizer { lr: 0.5 } }
    }`,
    }).replace("num_expert: 2", ""),
  );
  assert.equal(config.modelConfig.mmoe!.numExpert, undefined);
  assert.deepEqual(config.trainConfig?.denseOptimizer, { sgdOptimizer: { lr: 0.5 } });
  const resolved = resolveConfig(config);
  assert.equal(resolved.numExpert, 3);
  assert.equal(resolved.sparseOptimizer.lr, Math.fround(0.002));
  assert.equal(resolved.denseOptimizer.momentum, Math.fround(0.9));
  const zero = parsePipelineConfig(tiny({
    top: "train_config { dense_optimizer { sgd_optimizer { lr: 0.5 momentum: 0 } } }",
  }));
  assert.equal(resolveConfig(zero).denseOptimizer.momentum, 0);
});

test("tzrec fields not run that hold tzrec's default, and GPU/logging options, are accepted", () => {
  const config = parsePipelineConfig(tiny({
    feature: `feature_configs { id_feature {
      feature_name: "a" expression: "user:a" num_buckets: 3 embedding_dim: 4
      trainable: true data_type: "FP32" weighted: false value_dim: 0 } }`,
    tower: "metrics { auc { thresholds: 10 } }",
    top:
      `data_config { dataset_type: CsvDataset num_workers: 4 pin_memory: false with_header: false }
train_config { use_tensorboard: false cudnn_allow_tf32: false save_checkpoints_steps: 10 }
eval_config { log_step_count_steps: 5 }`,
  }));
  // The typed config holds what the text says; resolveConfig decides what it means.
  assert.deepEqual(config.featureConfigs[1].idFeature, {
    featureName: "a",
    expression: "user:a",
    embeddingDim: 4,
    numBuckets: 3,
    valueDim: 0,
    weighted: false,
    trainable: true,
    dataType: "FP32",
  });
  assert.equal(resolveConfig(config).features.length, 1);
});

test("toPipelineConfigText round-trips the Taobao config", async () => {
  const config = await loadPipelineConfig(TAOBAO);
  const text = toPipelineConfigText(config);
  assert.deepEqual(parsePipelineConfig(text), config);
  assert.match(text, /^train_input_path: "data\/taobao_train\.csv"$/m);
  assert.match(text, /group_type: DEEP/);
});

// ---------------------------------------------------------------- error paths

test("unknown field: line, column, path and field name", () => {
  const text = tiny({ tower: 'lable_name: "x"' });
  const e = parseError(text, {
    line: lineOf(text, "lable_name"),
    path: "model_config.mmoe.task_towers[0].lable_name",
    detail: /^unknown field "lable_name" for tzrec\.protos\.TaskTower$/,
    column: 7,
  });
  assert.match(e.message, /^t\.config:\d+:7: model_config\.mmoe\.task_towers\[0\]\.lable_name: /);
});

test("unknown field at the top level and inside a list of messages", () => {
  parseError('model_dir: "x"\nmodel_dri: "y"\n', {
    line: 2,
    path: "model_dri",
    detail: /unknown field "model_dri" for tzrec\.protos\.EasyRecConfig/,
    column: 1,
  });
  const text = tiny({ feature: 'feature_configs { id_feature { feature_name: "b" bucket: 3 } }' });
  parseError(text, {
    line: lineOf(text, "bucket: 3"),
    path: "feature_configs[1].id_feature.bucket",
    detail: /unknown field "bucket"/,
  });
});

test("wrong value types name the field and point at the value", () => {
  const cases: [string, string, RegExp][] = [
    ['num_expert: "two"', "model_config.mmoe.num_expert", /expected an integer, got a string/],
    ["num_expert: 2.5", "model_config.mmoe.num_expert", /expected an integer, got "2\.5"/],
    ["num_expert: -2", "model_config.mmoe.num_expert", /does not accept a negative value/],
    ["num_expert: 99999999999", "model_config.mmoe.num_expert", /out of range/],
    ["num_expert 2", "model_config.mmoe.num_expert", /expected ":" after field name/],
    ["gate_mlp: 4", "model_config.mmoe.gate_mlp", /expected "\{" or "<", got "4"/],
    ["gate_mlp { use_bn: yes }", "model_config.mmoe.gate_mlp.use_bn", /expected a bool, got "yes"/],
    [
      "gate_mlp { hidden_units: [4, x] }",
      "model_config.mmoe.gate_mlp.hidden_units[1]",
      /expected an integer, got "x"/,
    ],
    [
      "gate_mlp { hidden_units: [4 2] }",
      "model_config.mmoe.gate_mlp.hidden_units",
      /expected "," or "\]" in list, got "2"/,
    ],
    [
      "gate_mlp { activation: nn.ReLU }",
      "model_config.mmoe.gate_mlp.activation",
      /expected a string/,
    ],
  ];
  for (const [snippet, path, detail] of cases) {
    const text = tiny({ mmoe: snippet }).replace("num_expert: 2\n", "");
    parseError(text, { line: lineOf(text, snippet), path, detail });
  }
  const enumText = tiny().replace("group_type: DEEP", "group_type: DEPE");
  parseError(enumText, {
    line: lineOf(enumText, "DEPE"),
    path: "model_config.feature_groups[0].group_type",
    detail: /unknown enum value "DEPE" for enum tzrec\.protos\.FeatureGroupType/,
  });
});

test("a field set twice, or two members of a oneof", () => {
  const twice = tiny({ mmoe: "num_expert: 3" });
  parseError(twice, {
    line: lineOf(twice, "num_expert: 3"),
    path: "model_config.mmoe.num_expert",
    detail: /non-repeated field "num_expert" is repeated/,
  });
  const both = tiny({
    feature: `feature_configs {
  id_feature { feature_name: "a" expression: "user:a" num_buckets: 3 embedding_dim: 4 }
  raw_feature { feature_name: "b" expression: "user:b" }
}`,
  });
  parseError(both, {
    line: lineOf(both, "raw_feature"),
    path: "feature_configs[1].raw_feature",
    detail: /another field of oneof "feature" is already set/,
  });
});

test("missing fields that resolveConfig needs are reported at their message", () => {
  const text = tiny().replace('      label_name: "clk"\n', "");
  resolveError(text, {
    line: lineOf(text, "task_towers {"),
    path: "model_config.mmoe.task_towers[0].label_name",
    detail: /^is required$/,
  });
  const noDim = tiny().replace("    embedding_dim: 8\n", "");
  resolveError(noDim, {
    line: lineOf(noDim, "id_feature {"),
    path: "feature_configs[0].id_feature.embedding_dim",
    detail: /^is required$/,
  });
  const noExpert = tiny().replace(/expert_mlp \{\s+hidden_units: \[16, 8\]\s+\}/, "");
  resolveError(noExpert, {
    line: lineOf(noExpert, "mmoe {"),
    path: "model_config.mmoe.expert_mlp",
    detail: /^is required$/,
  });
  // As tzrec's text_format.Merge, required fields may be missing in the text:
  // FG_NONE configs have no expression, and the paths may come from flags.
  const bare = parsePipelineConfig(
    tiny().replace(/^(train_input_path|eval_input_path|model_dir).*\n/gm, "")
      .replace('    expression: "user:user_id"\n', ""),
  );
  assert.equal(bare.trainInputPath, undefined);
  assert.equal(resolveConfig(bare).features[0].column, "user_id");
});

test("syntax errors: unclosed brace, stray token, unterminated string, bad character", () => {
  const unclosed = tiny().replace(/}\s*$/, "");
  parseError(unclosed, {
    line: lineOf(unclosed, "model_config {"),
    path: "model_config",
    detail: /"\{" is never closed/,
  });
  parseError('model_dir: "x"\n}\n', {
    line: 2,
    path: "",
    detail: /expected a field name, got "\}"/,
  });
  parseError('model_dir: "x\ntrain_input_path: "y"\n', {
    line: 1,
    path: "model_dir",
    detail: /unterminated string/,
    column: 12,
  });
  parseError('model_dir: "x"\n  @\n', { line: 2, path: "", detail: /unexpected "@"/, column: 3 });
  parseError('model_dir: "a\\qb"', { line: 1, path: "model_dir", detail: /invalid escape/ });
  // One "," or ";" may follow a field; a second one is an error.
  const e = parseError("\n\nmodel_config { mmoe { num_expert: 2,, } }", {
    line: 3,
    path: "model_config.mmoe",
    detail: /expected a field name, got ","/,
    column: 37,
  });
  assert.match(e.message, /^t\.config:3:37: model_config\.mmoe: /);
});

test("an unsupported model is 'not supported yet' with its path and line", () => {
  const models = [
    tiny().replace("mmoe {", "dbmtl {").replace("num_expert: 2", ""),
    tiny().replace(
      / {2}mmoe \{[\s\S]*\n {2}\}\n\}/,
      '  ple { task_towers { tower_name: "a" label_name: "b" } }\n}',
    ),
    tiny().replace(/ {2}mmoe \{[\s\S]*\n {2}\}\n\}/, "  deepfm { deep { hidden_units: 1 } }\n}"),
  ];
  for (const [text, model] of models.map((t, i) => [t, ["dbmtl", "ple", "deepfm"][i]])) {
    resolveError(text, {
      line: lineOf(text, `${model} {`),
      path: `model_config.${model}`,
      detail: /^not supported yet \(the only model this library runs is mmoe\)$/,
    });
  }
});

test("unsupported features, groups, losses, metrics and options are 'not supported yet'", () => {
  const cases: { text: string; at: string; path: string; detail?: RegExp }[] = [
    {
      text: tiny({ feature: 'feature_configs { combo_feature { feature_name: "c" } }' }),
      at: "combo_feature",
      path: "feature_configs[1].combo_feature",
    },
    {
      text: tiny({
        feature:
          'feature_configs { sequence_feature { sequence_name: "click_seq" features { id_feature { feature_name: "s" } } } }',
      }),
      at: "sequence_feature",
      path: "feature_configs[1].sequence_feature",
    },
    {
      text: tiny({
        feature:
          'feature_configs { sequence_id_feature { feature_name: "s" expression: "user:s" embedding_dim: 4 } }',
      }),
      at: "sequence_id_feature",
      path: "feature_configs[1].sequence_id_feature",
    },
    {
      text: tiny().replace("group_type: DEEP", "group_type: SEQUENCE"),
      at: "group_type: SEQUENCE",
      path: "model_config.feature_groups[0].group_type",
      detail: /^SEQUENCE is not supported yet \(supported: DEEP\)$/,
    },
    {
      text: tiny().replace("binary_cross_entropy {}", 'jrc_loss { session_name: "u" }'),
      at: "jrc_loss",
      path: "model_config.mmoe.task_towers[0].losses[0].jrc_loss",
    },
    {
      text: tiny({ tower: "losses { binary_focal_loss { gamma: 1 } }" }),
      at: "binary_focal_loss",
      path: "model_config.mmoe.task_towers[0].losses[1].binary_focal_loss",
    },
    {
      text: tiny({ tower: "metrics { recall_at_k {} }" }),
      at: "recall_at_k",
      path: "model_config.mmoe.task_towers[0].metrics[0].recall_at_k",
    },
    {
      text: tiny({ tower: "train_metrics { auc {} }" }),
      at: "train_metrics",
      path: "model_config.mmoe.task_towers[0].train_metrics",
    },
    {
      text: tiny().replace("num_buckets: 100", "num_buckets: 100\n    zch { zch_size: 10 }"),
      at: "zch",
      path: "feature_configs[0].id_feature.zch",
    },
    {
      text: tiny().replace("num_buckets: 100", 'num_buckets: 100\n    init_fn: "nn.init.zeros_"'),
      at: "init_fn",
      path: "feature_configs[0].id_feature.init_fn",
    },
    {
      text: tiny({ top: "data_config { dataset_type: KafkaDataset }" }),
      at: "dataset_type",
      path: "data_config.dataset_type",
      detail:
        /^KafkaDataset is not supported yet \(supported: CsvDataset, ParquetDataset, OdpsDataset\)$/,
    },
    {
      text: tiny({ top: "data_config { fg_mode: FG_BUCKETIZE }" }),
      at: "fg_mode",
      path: "data_config.fg_mode",
      detail: /^FG_BUCKETIZE is not supported yet/,
    },
    {
      text: tiny({ top: 'train_config { mixed_precision: "BF16" }' }),
      at: "mixed_precision",
      path: "train_config.mixed_precision",
    },
    {
      text: tiny({ top: "train_config { dense_optimizer { adamw_optimizer { lr: 0.1 } } }" }),
      at: "adamw_optimizer",
      path: "train_config.dense_optimizer.adamw_optimizer",
    },
    {
      text: tiny({
        top:
          "train_config { sparse_optimizer { adagrad_optimizer { lr: 0.1 gradient_clipping: true } } }",
      }),
      at: "gradient_clipping",
      path: "train_config.sparse_optimizer.adagrad_optimizer.gradient_clipping",
    },
    {
      text: tiny({ top: 'train_config { grad_clipping { clipping_type: "norm" } }' }),
      at: "grad_clipping",
      path: "train_config.grad_clipping",
    },
    {
      text: tiny({ top: "export_config { }" }),
      at: "export_config",
      path: "export_config",
    },
    {
      text: tiny({ top: "eval_config { num_steps: 5 }" }),
      at: "num_steps: 5",
      path: "eval_config.num_steps",
    },
    {
      text: tiny().replace(
        "num_buckets: 100",
        'num_buckets: 100\n    vocab_dict { key: "a" value: 2 }',
      ),
      at: "vocab_dict",
      path: "feature_configs[0].id_feature.vocab_dict",
    },
  ];
  for (const { text, at, path, detail } of cases) {
    resolveError(text, { line: lineOf(text, at), path, detail: detail ?? /^not supported yet/ });
  }
});

test("semantic errors name the line of the field: lr nan, a negative weight, a zero size", () => {
  const nan = tiny({ top: "train_config { dense_optimizer { adam_optimizer { lr: nan } } }" });
  resolveError(nan, {
    line: lineOf(nan, "lr: nan"),
    path: "train_config.dense_optimizer.adam_optimizer.lr",
    detail: /^must be a finite number in \[0, inf\), got NaN$/,
  });
  const weight = tiny({ tower: "weight: -2" });
  resolveError(weight, {
    line: lineOf(weight, "weight: -2"),
    path: "model_config.mmoe.task_towers[0].weight",
    detail: /got -2$/,
  });
  // The column of the list element itself.
  const units = tiny().replace("hidden_units: [16, 8]", "hidden_units: [16, 0]");
  const unitsLine = lineOf(units, "hidden_units: [16, 0]");
  resolveError(units, {
    line: unitsLine,
    path: "model_config.mmoe.expert_mlp.hidden_units[1]",
    detail: /must be an integer >= 1, got 0/,
    column: units.split("\n")[unitsLine - 1].indexOf("0]") + 1,
  });
  const group = tiny().replace('feature_names: "user_id"', 'feature_names: "user"');
  resolveError(group, {
    line: lineOf(group, 'feature_names: "user"'),
    path: "model_config.feature_groups[0].feature_names[0]",
    detail: /no feature_configs entry named "user"/,
  });
});

test("64-bit sizes beyond 2^53 are refused with their path", () => {
  const text = tiny().replace("num_buckets: 100", "num_buckets: 18446744073709551615");
  parseError(text, {
    line: lineOf(text, "num_buckets"),
    path: "feature_configs[0].id_feature.num_buckets",
    detail: /is too large/,
  });
});

test("every error path shows source:line", async () => {
  const base = await readFile(TAOBAO, "utf8");
  const broken = [
    base.replace("num_expert: 3", "num_expert: three"),
    base.replace('tower_name: "cvr"', "tower_name: cvr"),
    base.replace("adagrad_optimizer {", "adagrad_optimiser {"),
    base.replace(/}\s*$/, ""),
    base + "\n]",
    base.replace("thresholds: 1000", "thresholds: 1000 thresholds: 10"),
    base.replace("mmoe {", "ple {").replace("num_expert: 3", ""),
    base.replace("dataset_type: CsvDataset", "dataset_type: KafkaDataset"),
    base.replace("embedding_dim: 16", "embedding_dim: 0"),
    base.replace("lr: 0.001", "lr: -1"),
    base.replace("num_epochs: 1", 'num_epochs: 1\n    mixed_precision: "BF16"'),
  ];
  for (const text of broken) {
    assert.throws(
      () => resolveConfig(parsePipelineConfig(text, "configs/x.config")),
      (e: unknown) =>
        e instanceof ConfigTextError && /^configs\/x\.config:\d+:\d+: /.test(e.message) &&
        e.line > 1,
    );
  }
});

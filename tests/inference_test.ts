import { test } from "node:test";
import assert from "node:assert/strict";
import { loadCheckpoint, modelCheckpoint } from "../src/io/checkpoint.ts";
import { resolveConfig } from "../src/config/config.ts";
import { ConfigTextError, parsePipelineConfig } from "../src/config/config_text.ts";
import { FeatureEncoder } from "../src/data/features.ts";
import { PredictError, Predictor } from "../src/serve/inference.ts";
import { loadPredictor } from "../src/serve/load.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import type { RawRecord } from "../src/core/records.ts";
import { rng, VARIANTS } from "./_util.ts";

/**
 * Every feature kind (num_buckets, hash, vocab, multi-value mean pooling,
 * bucketized raw, 2-wide dense raw), expert dropout, a BatchNorm tower MLP,
 * and one tower of each loss: BCE, BCE in click space, 2-class softmax, l2.
 */
const CONFIG_TEXT = `
train_config {
  sparse_optimizer { adagrad_optimizer { lr: 0.05 } constant_learning_rate {} }
  dense_optimizer { adam_optimizer { lr: 0.01 } constant_learning_rate {} }
}
data_config { batch_size: 32 label_fields: ["clk", "buy", "grade", "dwell"] fg_mode: FG_DAG }
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 50 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item" expression: "item:item" hash_bucket_size: 40 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "cate" expression: "item:cate" vocab_list: ["a", "b", "c"] embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "tags" expression: "item:tags" num_buckets: 10 embedding_dim: 4 separator: "|" pooling: "mean" } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" boundaries: [1, 5, 10] embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "score" expression: "item:score" value_dim: 2 separator: "|" } }
model_config {
  feature_groups {
    group_name: "all"
    feature_names: ["user_id", "item", "cate", "tags", "price", "score"]
    group_type: DEEP
  }
  mmoe {
    expert_mlp { hidden_units: [8, 6] dropout_ratio: 0.1 }
    num_expert: 3
    task_towers {
      tower_name: "ctr" label_name: "clk"
      mlp { hidden_units: [5] use_bn: true activation: "nn.Tanh" }
      losses { binary_cross_entropy {} }
    }
    task_towers {
      tower_name: "cvr" label_name: "buy"
      task_space_indicator_label: "clk" in_task_space_weight: 1 out_task_space_weight: 0
      losses { binary_cross_entropy {} }
    }
    task_towers { tower_name: "grade" label_name: "grade" num_class: 2 losses { softmax_cross_entropy {} } }
    task_towers { tower_name: "dwell" label_name: "dwell" losses { l2_loss {} } }
  }
}
`;

const PIPELINE = parsePipelineConfig(CONFIG_TEXT);
const CONFIG = resolveConfig(PIPELINE);
const OUTPUTS = [
  "logits_ctr",
  "probs_ctr",
  "logits_cvr",
  "probs_cvr",
  "logits_grade",
  "probs_grade",
  "probs1_grade",
  "y_dwell",
];

/** Request-like records: JSON-typed values, some strings as in CSV, some missing. */
function records(count: number, seed: number, labels = false): RawRecord[] {
  const next = rng(seed);
  return Array.from({ length: count }, (_, i) => {
    const tags = Array.from({ length: Math.floor(next() * 4) }, () => Math.floor(next() * 10));
    const record: RawRecord = {
      user_id: i % 3 === 0 ? String(Math.floor(next() * 50)) : Math.floor(next() * 50),
      item: `item-${Math.floor(next() * 1000)}`,
      cate: ["a", "b", "c", "zzz"][Math.floor(next() * 4)],
      tags: i % 2 === 0 ? tags.join("|") : tags,
      price: i % 5 === 4 ? null : Math.round(next() * 1500) / 100,
      score: i % 7 === 6 ? "" : [next(), next() * 2 - 1],
    };
    if (labels) {
      const clk = next() < 0.4 ? 1 : 0;
      Object.assign(record, {
        clk,
        buy: clk && next() < 0.5 ? 1 : 0,
        grade: next() < 0.5 ? 1 : 0,
        dwell: next() * 3,
      });
    }
    return record;
  });
}

const located = (rows: RawRecord[]) =>
  rows.map((record, i) => ({ record, location: `train row ${i}` }));

/** A model trained a few steps on labelled records, and its checkpoint with optimizer state (as examples/train.ts saves it). */
function trainedModel(variant?: (typeof VARIANTS)[number]) {
  const model = new MMoEModel(CONFIG, { maxBatch: 32, seed: 7, variant });
  const encoder = new FeatureEncoder(CONFIG);
  for (let step = 0; step < 6; step++) {
    model.trainStep(encoder.encode(located(records(32, 100 + step, true))));
  }
  return { model, bytes: modelCheckpoint(model, { withOptimizer: true }) };
}

/** The training model's eval outputs for rows (labels attached so evalStep runs). */
function evalOutputs(model: MMoEModel, rows: RawRecord[]): Record<string, Float32Array> {
  const labelled = rows.map((r) => ({ ...r, clk: 0, buy: 0, grade: 0, dwell: 0 }));
  const batch: EncodedBatch = new FeatureEncoder(CONFIG).encode(located(labelled));
  model.evalStep(batch);
  return model.outputs(batch.size);
}

for (const variant of VARIANTS) {
  test(`predictor ${variant}: predictions equal the trained model's evalStep outputs bit for bit`, () => {
    const { model, bytes } = trainedModel(variant);
    const predictor = new Predictor(PIPELINE, bytes, { maxBatch: 32, variant });
    assert.deepEqual(predictor.outputs, OUTPUTS);
    const rows = records(29, 5);
    const expected = evalOutputs(model, rows);
    const actual = predictor.predict(rows);
    assert.deepEqual(Object.keys(actual), OUTPUTS);
    for (const name of OUTPUTS) assert.deepEqual(actual[name], expected[name], name);
    assert.equal(actual.probs_grade.length, 2 * 29);
    assert.equal(actual.probs1_grade.length, 29);
    for (let i = 0; i < 29; i++) {
      assert.equal(actual.probs1_grade[i], actual.probs_grade[2 * i + 1]);
    }
    // Probabilities are the sigmoid of the logits, not a constant of an untrained model.
    assert.ok(new Set(actual.probs_ctr).size > 20);
  });
}

test("loadPredictor: the config text gives the same predictions as the typed config", async () => {
  const { bytes } = trainedModel();
  const rows = records(10, 9);
  const fromText = (await loadPredictor(CONFIG_TEXT, bytes)).predict(rows);
  const fromObject = new Predictor(PIPELINE, bytes).predict(rows);
  assert.deepEqual(fromText, fromObject);
  assert.deepEqual((await loadPredictor(PIPELINE, bytes)).predict(rows), fromObject);
});

test("predictor: requests larger than maxBatch are scored in maxBatch chunks; maxRows refuses", () => {
  const { model, bytes } = trainedModel();
  const predictor = new Predictor(PIPELINE, bytes, { maxBatch: 16, maxRows: 40 });
  const rows = records(37, 11);
  const all = predictor.predict(rows);
  // Chunks [0, 16), [16, 32), [32, 37), each equal to the model's eval of that chunk.
  for (const [start, end] of [[0, 16], [16, 32], [32, 37]]) {
    const expected = evalOutputs(model, rows.slice(start, end));
    for (const name of OUTPUTS) {
      const width = name === "logits_grade" || name === "probs_grade" ? 2 : 1;
      assert.deepEqual(
        all[name].subarray(start * width, end * width),
        expected[name],
        `${name} rows ${start}..${end}`,
      );
    }
  }
  assert.equal(predictor.predict(records(40, 12)).y_dwell.length, 40);
  assert.throws(
    () => predictor.predict(records(41, 12)),
    (e) =>
      e instanceof PredictError && e.code === "tooManyRows" && e.row === -1 &&
      e.message === "too many rows: 41, the limit is 40 per request",
  );
  const empty = predictor.predict([]);
  assert.deepEqual(Object.keys(empty), OUTPUTS);
  for (const name of OUTPUTS) assert.equal(empty[name].length, 0);
});

test("predictor: bad records throw a PredictError naming the row and column", () => {
  const { bytes } = trainedModel();
  const predictor = new Predictor(PIPELINE, bytes, { maxBatch: 8, idsPerRow: 3 });
  const good = records(30, 13);
  const cases: [unknown, string, string, string][] = [
    [{ user_id: "abc" }, "badValue", "user_id", `column 'user_id': "abc" is not an integer id`],
    [{ user_id: 50 }, "badValue", "user_id", "column 'user_id': id 50 is out of range [0, 50)"],
    [{ user_id: 1.5 }, "badValue", "user_id", "column 'user_id': 1.5 is not an integer id"],
    [
      { userid: 3 },
      "unknownColumn",
      "userid",
      "unknown column 'userid' (the model reads user_id, item, cate, tags, price, score; " +
      "label and weight columns clk, buy, grade, dwell are accepted and ignored)",
    ],
    [null, "notAnObject", "", "expected an object of column values, got null"],
    [[1, 2], "notAnObject", "", "expected an object of column values, got an array"],
    ["user_id=3", "notAnObject", "", "expected an object of column values, got a string"],
    [
      { item: { id: 3 } },
      "badValue",
      "item",
      "column 'item': expected a string, number, boolean, null or an array of strings and " +
      "numbers, got an object",
    ],
    [
      { tags: [1, [2]] },
      "badValue",
      "tags",
      "column 'tags': item 1: expected a string or a finite number, got an array",
    ],
    [
      { tags: [1, true] },
      "badValue",
      "tags",
      "column 'tags': item 1: expected a string or a finite number, got a boolean",
    ],
    [{ price: Infinity }, "badValue", "price", "column 'price': Infinity is not a finite number"],
    [{ price: NaN }, "badValue", "price", "column 'price': NaN is not a finite number"],
    [{ price: "cheap" }, "badValue", "price", `column 'price': "cheap" is not a number`],
    [
      { score: "1e999|0" },
      "badValue",
      "score",
      "column 'score': value is not a finite float32",
    ],
    [{ score: [1e39, 0] }, "badValue", "score", "column 'score': value is not a finite float32"],
    [
      { score: "0.5" },
      "badValue",
      "score",
      `column 'score': expected 2 values separated by "|", got 1`,
    ],
    [{ score: [1, 2, 3] }, "badValue", "score", "column 'score': expected 2 values, got 3"],
  ];
  // Row 3 of the first chunk and row 21 of the third (maxBatch 8): the index is the request's.
  for (const row of [3, 21]) {
    for (const [bad, code, column, detail] of cases) {
      const rows: unknown[] = good.slice();
      rows[row] = bad;
      assert.throws(
        () => predictor.predict(rows as RawRecord[]),
        (e) => {
          assert.ok(e instanceof PredictError, String(e));
          assert.equal(e.message, `row ${row}: ${detail}`);
          assert.equal(e.code, code);
          assert.equal(e.row, row);
          assert.equal(e.column, column);
          return true;
        },
      );
    }
  }
  // 8 rows x 3 ids per row of capacity; 9 rows of 3 tags fit once split, 8 rows of 4 do not.
  const many = good.slice(0, 8).map((r) => ({ ...r, tags: "1|2|3|4" }));
  assert.throws(() => predictor.predict(many), {
    name: "PredictError",
    message: "column 'tags': 32 ids in 8 rows (row 0 to row 7) exceed the 24 the predictor " +
      "holds per call " +
      "(maxBatch 8 x idsPerRow 3)",
  });
  assert.equal(
    predictor.predict(good.slice(0, 9).map((r) => ({ ...r, tags: [1, 2, 3] }))).probs_ctr.length,
    9,
  );
  assert.throws(() => predictor.predict("rows" as unknown as RawRecord[]), {
    name: "TypeError",
    message: "records must be an array of records, got a string",
  });
  // Labels are accepted and ignored; unknown columns can be allowed; absent features are missing values.
  const plain = records(4, 14);
  const labelled = plain.map((r, i) => ({ ...r, clk: i % 2, buy: 0, grade: 1, dwell: 2.5 }));
  assert.deepEqual(predictor.predict(labelled), predictor.predict(plain));
  const lenient = new Predictor(PIPELINE, bytes, { unknownColumns: "ignore" });
  assert.deepEqual(
    lenient.predict([{ user_id: 3, request_id: "r-1" }]),
    lenient.predict([{ user_id: 3 }]),
  );
  assert.equal(predictor.predict([{}]).probs_ctr.length, 1);
  // outOfRange "clamp" scores an unseen id as the last row.
  const clamping = new Predictor(PIPELINE, bytes, { outOfRange: "clamp" });
  assert.deepEqual(clamping.predict([{ user_id: 1000 }]), clamping.predict([{ user_id: 49 }]));
});

test("predictor: the arena is reused: one WebAssembly.Memory of one size over 100 calls", () => {
  const { bytes } = trainedModel();
  const predictor = new Predictor(PIPELINE, bytes, { maxBatch: 16 });
  const memory = predictor.model.memory;
  const size = memory.buffer.byteLength;
  const buffer = memory.buffer;
  const rows = records(40, 15); // 3 chunks per call
  const first = predictor.predict(rows);
  for (let call = 0; call < 100; call++) {
    const result = predictor.predict(call % 2 === 0 ? rows : rows.slice(0, 1 + (call % 16)));
    assert.equal(predictor.model.memory, memory);
    assert.equal(memory.buffer, buffer); // never grown (growth replaces the buffer)
    assert.equal(memory.buffer.byteLength, size);
    if (call % 2 === 0) assert.deepEqual(result, first);
    // Results are copies, not views of the arena.
    for (const name of OUTPUTS) assert.notEqual(result[name].buffer, memory.buffer);
  }
});

test("predictor: checkpoint and config errors are clear", async () => {
  const { bytes } = trainedModel();
  const wider = CONFIG_TEXT.replace("hidden_units: [8, 6]", "hidden_units: [8, 7]");
  await assert.rejects(
    loadPredictor(wider, bytes),
    (e) =>
      e instanceof RangeError &&
      /checkpoint does not match the model:[\s\S]*mmoe\.expert_mlps\.0\.mlp\.1\.perceptron\.0\.weight: checkpoint shape \[6, 8\], model \[7, 8\]/
        .test(e.message),
  );
  assert.throws(() => new Predictor(PIPELINE, bytes.subarray(0, 5)), /safetensors: truncated/);
  await assert.rejects(
    loadPredictor(CONFIG_TEXT.replace("num_expert: 3", "num_experts: 3"), bytes),
    (e) =>
      e instanceof ConfigTextError &&
      /^pipeline\.config:\d+:\d+: model_config\.mmoe\.num_experts: unknown field/.test(e.message),
  );
  assert.throws(() => new Predictor(CONFIG_TEXT as never, bytes), {
    name: "TypeError",
    message: "config must be a typed PipelineConfig (use loadPredictor for pipeline.config text)",
  });
  assert.throws(() => new Predictor(PIPELINE, bytes, { maxBatch: 0 }), {
    message: "maxBatch must be a positive integer, got 0",
  });
});

test("inference model: no gradients or optimizer state; training methods throw; eval equals training model", () => {
  // A 100k-row table: training adds its Adagrad accumulator (6.4 MB) and backward buffers.
  const text = CONFIG_TEXT.replace("num_buckets: 50", "num_buckets: 100000");
  const config = resolveConfig(parsePipelineConfig(text));
  const training = new MMoEModel(config, { maxBatch: 256, seed: 3 });
  const inference = new MMoEModel(config, { maxBatch: 256, inference: true, initialize: false });
  const tableBytes = 100000 * 4 * 4;
  assert.ok(
    inference.memory.buffer.byteLength + tableBytes <= training.memory.buffer.byteLength,
    `inference ${inference.memory.buffer.byteLength} B, training ${training.memory.buffer.byteLength} B`,
  );
  assert.equal(inference.inference, true);
  assert.equal(training.inference, false);
  // initialize: false leaves parameters zero until a checkpoint arrives.
  assert.ok(inference.parameter("_task_tower.0.linear.weight").every((v) => v === 0));

  const encoder = new FeatureEncoder(config);
  const batch = encoder.encode(located(records(20, 16, true)));
  training.trainStep(batch);
  const loaded = new MMoEModel(config, { maxBatch: 256, inference: true, initialize: false });
  loadCheckpoint(loaded, modelCheckpoint(training));
  assert.deepEqual(loaded.evalStep(batch), training.evalStep(batch));
  assert.deepEqual(loaded.outputs(20), training.outputs(20));
  assert.deepEqual(loaded.predict(batch), training.outputs(20));

  const refused =
    /MMoEModel\.(\w+): this model was built with inference: true and has no gradients/;
  for (
    const call of [
      () => inference.trainStep(batch),
      () => inference.forwardBackward(batch),
      () => inference.applyGradients(),
      () => inference.gradient("_task_tower.0.linear.weight"),
      () => inference.embeddingGradient(0),
      () => inference.optimizerState(),
    ]
  ) {
    assert.throws(call, (e) => e instanceof TypeError && refused.test(e.message));
  }
  assert.throws(() => modelCheckpoint(inference, { withOptimizer: true }), refused);
  assert.equal(inference.step, 0);
});

test("mmoe predict: label columns are not needed and outputs equal evalStep's", () => {
  const model = new MMoEModel(CONFIG, { maxBatch: 32, seed: 2 });
  const rows = records(12, 17);
  const expected = evalOutputs(model, rows);
  const batch = new FeatureEncoder(CONFIG, { labels: false }).encode(located(rows));
  assert.deepEqual(batch.columns, {});
  assert.deepEqual(model.predict(batch), expected);
  assert.throws(() => model.evalStep(batch), /batch has no column "clk"/);
});

test("predictor: only plain objects are rows; null is a missing value; values name their type", () => {
  const { bytes } = trainedModel();
  const predictor = new Predictor(PIPELINE, bytes);
  const missing = predictor.predict([{}]);
  class Row {
    user_id = 3;
  }
  const rows: [unknown, string][] = [
    [new Date(0), "a Date"],
    [/user_id/, "a RegExp"],
    [new Map([["user_id", 3]]), "a Map"],
    [new Row(), "an instance of a class"],
    [Uint8Array.of(1), "a Uint8Array"],
  ];
  for (const [row, kind] of rows) {
    assert.throws(() => predictor.predict([{ user_id: 1 }, row as RawRecord]), {
      name: "PredictError",
      message: `row 1: expected an object of column values, got ${kind}`,
    });
  }
  // Object.create(null) (no prototype) is a plain object.
  const bare = Object.assign(Object.create(null), { user_id: 3 });
  assert.deepEqual(predictor.predict([bare]), predictor.predict([{ user_id: 3 }]));
  // null (JSON's missing value) in every feature kind scores as an absent column.
  const nulls = { user_id: null, item: null, cate: null, tags: null, price: null, score: null };
  assert.deepEqual(predictor.predict([nulls]), missing);
  assert.deepEqual(
    predictor.predict([{ tags: [3, null] as never }]),
    predictor.predict([{ tags: [3] }]),
  );
  for (const [value, kind] of [[new Date(0), "a Date"], [/x/, "a RegExp"], [{}, "an object"]]) {
    assert.throws(() => predictor.predict([{ item: value } as unknown as RawRecord]), {
      message: "row 0: column 'item': expected a string, number, boolean, null or an array of " +
        `strings and numbers, got ${kind}`,
    });
  }
  assert.throws(() => predictor.predict([{ tags: [new Date(0)] } as unknown as RawRecord]), {
    message: "row 0: column 'tags': item 0: expected a string or a finite number, got a Date",
  });
});

test("predictor: locations name bad records in place of their index", () => {
  const { bytes } = trainedModel();
  const predictor = new Predictor(PIPELINE, bytes, { maxBatch: 4 });
  const rows = records(10, 18);
  const locations = rows.map((_, i) => `data.csv:${i + 2}`);
  assert.deepEqual(predictor.predict(rows, locations), predictor.predict(rows));
  // Errors of the type check, of the encoder (in the third chunk) and of the batch check.
  const cases: [RawRecord, string][] = [
    [{ userid: 1 }, "data.csv:9: unknown column 'userid'"],
    [{ user_id: "abc" }, `data.csv:9: column 'user_id': "abc" is not an integer id`],
    [{ score: "1e999|0" }, "data.csv:9: column 'score': value is not a finite float32"],
  ];
  for (const [bad, message] of cases) {
    const copy = rows.slice();
    copy[7] = bad;
    assert.throws(
      () => predictor.predict(copy, locations),
      (e) => e instanceof PredictError && e.row === 7 && e.message.startsWith(message),
    );
  }
  assert.throws(() => predictor.predict(rows, locations.slice(1)), {
    name: "TypeError",
    message: "locations must be an array of 10 strings, one per record",
  });
});

test("predictor: outputs are finite: overflowing rows and non-finite parameters are refused", () => {
  const { bytes } = trainedModel();
  const predictor = new Predictor(PIPELINE, bytes, { maxBatch: 4 });
  // Finite weights large enough that a large finite dense value overflows float32.
  for (let e = 0; e < 3; e++) {
    predictor.model.parameter(`mmoe.expert_mlps.${e}.mlp.0.perceptron.0.weight`).fill(1e30);
  }
  const rows = records(6, 19).map((r) => ({ ...r, score: [0, 0], price: 1 }));
  const finite = predictor.predict(rows);
  for (const name of OUTPUTS) assert.ok(finite[name].every(Number.isFinite), name);
  rows[5] = { ...rows[5], score: [1e20, -1e20] };
  assert.throws(
    () => predictor.predict(rows),
    (e) =>
      e instanceof PredictError && e.code === "nonFiniteOutput" && e.row === 5 &&
      /^row 5: output \w+ is (-?Infinity|NaN): the row's values overflow the model/.test(e.message),
  );
  // A NaN parameter (a diverged checkpoint) is the model's fault: a RangeError naming it.
  const broken = new Predictor(PIPELINE, bytes);
  broken.model.parameter("_task_tower.1.linear.bias")[0] = NaN;
  assert.throws(() => broken.predict(records(2, 20)), {
    name: "RangeError",
    message: "the model cannot score: parameter _task_tower.1.linear.bias has non-finite values " +
      "(load a checkpoint saved before training diverged)",
  });
});

test("predictor: clampCounts counts clamped ids with outOfRange clamp", () => {
  const { bytes } = trainedModel();
  const clamping = new Predictor(PIPELINE, bytes, { outOfRange: "clamp" });
  assert.deepEqual(clamping.clampCounts, { user_id: 0, tags: 0 });
  clamping.predict([{ user_id: 1000 }, { user_id: -1, tags: [3, 99] }, { user_id: 4 }]);
  assert.deepEqual(clamping.clampCounts, { user_id: 2, tags: 1 });
});

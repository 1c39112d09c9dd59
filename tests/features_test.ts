import { test } from "node:test";
import assert from "node:assert/strict";
import { type FeatureConfig, type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import {
  batchRecords,
  type EncoderOptions,
  FeatureEncoder,
  FeatureError,
  hashBucket,
  stringHash64,
} from "../src/data/features.ts";
import { type EncodedBatch, MMoEModel, type SparseInput } from "../src/model/mmoe.ts";
import type { LocatedRecord, RawRecord } from "../src/core/records.ts";

/**
 * A one-tower config over the given features (all in the group, in order),
 * FG_DAG (raw values) unless `fgMode` says otherwise.
 */
function pipeline(
  features: FeatureConfig[],
  tower: Record<string, unknown> = {},
  fgMode: "FG_NONE" | "FG_DAG" = "FG_DAG",
): PipelineConfig {
  const names = features.map((f) => (f.idFeature ?? f.rawFeature)!.featureName);
  return {
    dataConfig: { fgMode },
    featureConfigs: features,
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: names }],
      mmoe: {
        expertMlp: { hiddenUnits: [4] },
        numExpert: 2,
        taskTowers: [{
          towerName: "ctr",
          labelName: "clk",
          losses: [{ binaryCrossEntropy: {} }],
          ...tower,
        }],
      },
    },
  };
}

/** An encoder for one feature, without labels. */
function encoderFor(feature: FeatureConfig, options: EncoderOptions = {}): FeatureEncoder {
  return new FeatureEncoder(resolveConfig(pipeline([feature])), { labels: false, ...options });
}

/** Rows of one column at `data.csv:2`, `data.csv:3`, ... */
function rows(column: string, values: unknown[]): LocatedRecord[] {
  return values.map((value, i) => ({
    record: { [column]: value } as RawRecord,
    location: `data.csv:${i + 2}`,
  }));
}

function sparse(batch: EncodedBatch, i = 0): { ids: number[]; offsets: number[] } {
  const { ids, offsets } = batch.features[i] as SparseInput;
  assert.ok(ids instanceof Int32Array && offsets instanceof Int32Array);
  return { ids: Array.from(ids), offsets: Array.from(offsets) };
}

function dense(batch: EncodedBatch, i = 0): number[] {
  const { values } = batch.features[i] as { values: Float32Array };
  assert.ok(values instanceof Float32Array);
  return Array.from(values);
}

function throwsMessage(fn: () => unknown, message: string) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FeatureError, `expected a FeatureError, got ${e}`);
    assert.equal(e.message, message);
    return true;
  });
}

const idFeature = (extra: Record<string, unknown>) => ({
  idFeature: { featureName: "f", expression: "item:col", embeddingDim: 4, ...extra },
});
const rawFeature = (extra: Record<string, unknown>) => ({
  rawFeature: { featureName: "f", expression: "item:col", ...extra },
});

// ------------------------------------------------------------------- hash

test("features: hash buckets equal tzrec's own test vectors (hash_bucket_size 100)", () => {
  // tzrec/features/id_feature_test.py test_id_feature_with_hash_bucket_size and
  // combo_feature_test.py (combo values are joined with "_").
  const expected: Record<string, number> = {
    abc: 33,
    efg: 44,
    hij: 66,
    xyz: 13,
    "1": 95,
    "2": 70,
    "3": 13,
    "4": 56,
    ua_ia: 37,
    ua_ib: 90,
    ub_ia: 5,
    ub_ib: 97,
    uc_ic: 60,
    ud_ic: 56,
    ug_id: 40,
    ug_ie: 57,
    uh_if: 55,
  };
  for (const [text, bucket] of Object.entries(expected)) {
    assert.equal(hashBucket(text, 100), bucket, text);
  }
});

test("features: stringHash64 is libstdc++ std::hash<std::string> at every tail length", () => {
  // Reference values printed by `std::hash<std::string>{}(s)` built with g++ (libstdc++, x86-64).
  const expected: [string, bigint][] = [
    ["", 6142509188972423790n],
    ["a", 4993892634952068459n],
    ["abc", 3663726644998027833n],
    ["abcd", 16030370620903852840n],
    ["abcdefg", 16063891478991045295n],
    ["abcdefgh", 8664279048047335611n],
    ["abcdefghi", 13036955925923793583n],
    ["hello world!", 6594337730806245023n],
    ["pid_123456789", 8240985428391047474n],
    ["430548_1007", 14218369489889390229n],
    ["中文", 9854956157463167294n], // hashed as UTF-8 bytes
  ];
  for (const [text, hash] of expected) assert.equal(stringHash64(text), hash, text);
});

test("features: hashBucket equals the 64-bit hash mod size for small and large sizes", () => {
  const texts = ["", "abc", "430548_1007", "pid_123456789", "é😀"];
  for (let i = 0; i < 300; i++) texts.push(`item_${i * 7919}`);
  for (
    const size of [1, 7, 20, 1000, 2097151, 2097152, 2097153, 1_000_003, 123_456_789, 2 ** 31 - 1]
  ) {
    for (const text of texts) {
      assert.equal(
        BigInt(hashBucket(text, size)),
        stringHash64(text) % BigInt(size),
        `${text} % ${size}`,
      );
    }
  }
});

test("features: hashBucket rejects sizes that are not int32 row counts", () => {
  for (const size of [0, -1, 2.5, 2 ** 31, NaN]) {
    assert.throws(() => hashBucket("abc", size), RangeError, String(size));
  }
});

test("features: hash_bucket_size encodes strings, numbers, bigints and arrays by their string", () => {
  const encoder = encoderFor(idFeature({ hashBucketSize: 100 }));
  const batch = encoder.encode(rows("col", ["abc\x1defg", 1, 2n, ["hij", 3], "", null, undefined]));
  assert.deepEqual(sparse(batch), {
    ids: [33, 44, 95, 70, 66, 13],
    offsets: [0, 2, 3, 4, 6, 6, 6, 6],
  });
});

// ------------------------------------------------------------ num_buckets

test("features: num_buckets uses the id as the row at both ends of the range", () => {
  const encoder = encoderFor(idFeature({ numBuckets: 100 }));
  const batch = encoder.encode(rows("col", ["0", "99", 17, 42n, "+5", "-0", true]));
  assert.deepEqual(sparse(batch), {
    ids: [0, 99, 17, 42, 5, 0, 1],
    offsets: [0, 1, 2, 3, 4, 5, 6, 7],
  });
});

test("features: num_buckets out of range is an error naming location, column and id", () => {
  const config = resolveConfig(pipeline([{
    idFeature: {
      featureName: "user_id",
      expression: "user:user_id",
      numBuckets: 1141730,
      embeddingDim: 4,
    },
  }]));
  const encoder = new FeatureEncoder(config, { labels: false });
  const records = [
    { record: { user_id: "5" }, location: "data/train.csv:16" },
    { record: { user_id: "1200000" }, location: "data/train.csv:17" },
  ];
  throwsMessage(
    () => encoder.encode(records),
    "data/train.csv:17: column 'user_id': id 1200000 is out of range [0, 1141730)",
  );
  throwsMessage(
    () => encoder.encode(rows("user_id", ["1141730"])),
    "data.csv:2: column 'user_id': id 1141730 is out of range [0, 1141730)",
  );
  throwsMessage(
    () => encoder.encode(rows("user_id", ["-1"])),
    "data.csv:2: column 'user_id': id -1 is out of range [0, 1141730)",
  );
  throwsMessage(
    () => encoder.encode(rows("user_id", [1141730])),
    "data.csv:2: column 'user_id': id 1141730 is out of range [0, 1141730)",
  );
  throwsMessage(
    () => encoder.encode(rows("user_id", ["7\x1d99999999999999999999"])),
    "data.csv:2: column 'user_id': id 99999999999999999999 is out of range [0, 1141730)",
  );
  assert.deepEqual(encoder.clampCounts, { user_id: 0 });
});

test("features: num_buckets non-integers are errors naming location, column and value", () => {
  const encoder = encoderFor(idFeature({ numBuckets: 10 }));
  throwsMessage(
    () => encoder.encode(rows("col", ["1", "1.5"])),
    `data.csv:3: column 'col': "1.5" is not an integer id`,
  );
  throwsMessage(
    () => encoder.encode(rows("col", ["abc"])),
    `data.csv:2: column 'col': "abc" is not an integer id`,
  );
  throwsMessage(
    () => encoder.encode(rows("col", ["2\x1d 3"])),
    `data.csv:2: column 'col': " 3" is not an integer id`,
  );
  throwsMessage(
    () => encoder.encode(rows("col", ["-"])),
    `data.csv:2: column 'col': "-" is not an integer id`,
  );
  throwsMessage(
    () => encoder.encode(rows("col", [2.5])),
    "data.csv:2: column 'col': 2.5 is not an integer id",
  );
  throwsMessage(
    () => encoder.encode(rows("col", [NaN])),
    "data.csv:2: column 'col': NaN is not an integer id",
  );
});

test("features: clamp moves out-of-range ids to the nearest row and counts them per feature", () => {
  const config = resolveConfig(pipeline([
    { idFeature: { featureName: "a", expression: "user:a", numBuckets: 10, embeddingDim: 4 } },
    { idFeature: { featureName: "b", expression: "user:b", numBuckets: 3, embeddingDim: 4 } },
    { idFeature: { featureName: "h", expression: "user:h", hashBucketSize: 3, embeddingDim: 4 } },
  ]));
  const encoder = new FeatureEncoder(config, { outOfRange: "clamp", labels: false });
  const records: LocatedRecord[] = [
    { record: { a: "12", b: "2", h: "x" }, location: "r1" },
    { record: { a: "-4", b: 3n, h: "y" }, location: "r2" },
    { record: { a: "5\x1d10", b: "1", h: "z" }, location: "r3" },
  ];
  const batch = encoder.encode(records);
  assert.deepEqual(sparse(batch, 0), { ids: [9, 0, 5, 9], offsets: [0, 1, 2, 4] });
  assert.deepEqual(sparse(batch, 1), { ids: [2, 2, 1], offsets: [0, 1, 2, 3] });
  assert.deepEqual(encoder.clampCounts, { a: 3, b: 1 });
  encoder.encode(records);
  assert.deepEqual(encoder.clampCounts, { a: 6, b: 2 }, "counts accumulate over batches");
  assert.throws(
    () => new FeatureEncoder(config, { outOfRange: "wrap" as "clamp" }),
    TypeError,
  );
});

// -------------------------------------------------------------- vocab_list

test("features: vocab_list maps value i to row i + 2 and unknowns to row 1, as tzrec does", () => {
  // tzrec id_feature_test.py test_id_feature_with_vocab_list (default_value ""):
  // ["abc\x1defg", "", "hij"] with vocab ["abc", "efg"] -> values [2, 3, 1], lengths [2, 0, 1].
  const encoder = encoderFor(idFeature({ vocabList: ["abc", "efg"] }));
  assert.deepEqual(sparse(encoder.encode(rows("col", ["abc\x1defg", "", "hij"]))), {
    ids: [2, 3, 1],
    offsets: [0, 2, 2, 3],
  });
  const numeric = encoderFor(idFeature({ vocabList: ["1", "2", "3"] }));
  assert.deepEqual(sparse(numeric.encode(rows("col", [3, 1n, ["2", 9], "<OOV>"]))), {
    ids: [4, 2, 3, 1, 1],
    offsets: [0, 1, 2, 4, 5],
  });
});

// -------------------------------------------------------------- boundaries

test("features: boundaries bucket = number of boundaries <= x; on a boundary goes up", () => {
  // tzrec raw_feature_test.py test_raw_feature_with_boundaries: [0.2, 0.1, 0.3] -> [2, 1, 3].
  const encoder = encoderFor(rawFeature({ boundaries: [0.05, 0.15, 0.25], embeddingDim: 4 }));
  const values = ["0.2", "0.1", "0.3", "0.15", "0.05", "0.25", "-7", "0.0499", "1e9", 0.15, 0.2];
  assert.deepEqual(sparse(encoder.encode(rows("col", values))).ids, [
    2,
    1,
    3,
    2,
    1,
    3,
    0,
    0,
    3,
    2,
    2,
  ]);
});

test("features: boundaries compare in f32 like tzrec's `repeated float boundaries`", () => {
  // 7.39 is not an f32; both the boundary and the value round to the same f32,
  // so the value sits on the boundary and goes up.
  const encoder = encoderFor(rawFeature({ boundaries: [5.2, 7.39, 9.5], embeddingDim: 4 }));
  const boundary = Math.fround(7.39); // 7.389999866485596
  const f32Below = boundary - 2 ** -21; // the f32 just below it
  const nearBelow = boundary - 2 ** -23; // a double that rounds to the boundary in f32
  assert.deepEqual(
    sparse(encoder.encode(rows("col", ["7.39", 7.39, f32Below, nearBelow, "7.3899999"]))).ids,
    [2, 2, 1, 2, 2],
  );
});

test("features: boundaries: missing values are tzrec's default_value 0, bucketized", () => {
  const positive = encoderFor(rawFeature({ boundaries: [1, 2], embeddingDim: 4 }));
  assert.deepEqual(sparse(positive.encode(rows("col", ["", null, undefined, []]))), {
    ids: [0, 0, 0, 0],
    offsets: [0, 1, 2, 3, 4],
  });
  const straddling = encoderFor(rawFeature({ boundaries: [-1, 0, 1], embeddingDim: 4 }));
  assert.deepEqual(sparse(straddling.encode(rows("col", ["", "0.5"]))).ids, [2, 2]);
});

test("features: boundaries: multi-value strings and arrays bucketize each value", () => {
  const encoder = encoderFor(
    rawFeature({ boundaries: [0.05, 0.15, 0.25], embeddingDim: 4, separator: "|" }),
  );
  assert.deepEqual(sparse(encoder.encode(rows("col", ["0.2|0.5", ["0.3", 0.1]]))), {
    ids: [2, 3, 3, 1],
    offsets: [0, 2, 4],
  });
});

test("features: boundaries: a value that is not a number is an error", () => {
  const encoder = encoderFor(rawFeature({ boundaries: [1, 2], embeddingDim: 4 }));
  throwsMessage(
    () => encoder.encode(rows("col", ["1", "cheap"])),
    `data.csv:3: column 'col': "cheap" is not a number`,
  );
  throwsMessage(
    () => encoder.encode(rows("col", [" "])),
    `data.csv:2: column 'col': " " is not a number`,
  );
});

// ------------------------------------------------------------------- dense

test('features: dense raw_feature: floats, missing -> 0 (tzrec default_value "0")', () => {
  const encoder = encoderFor(rawFeature({}));
  const batch = encoder.encode(rows("col", ["1.5", "", null, undefined, -2, 3n, "1e-3", []]));
  assert.deepEqual(dense(batch), [1.5, 0, 0, 0, -2, 3, Math.fround(1e-3), 0]);
});

test("features: dense raw_feature of value_dim 3 from separated strings and arrays", () => {
  const encoder = encoderFor(rawFeature({ valueDim: 3, separator: "|" }));
  const batch = encoder.encode(rows("col", ["1|2|3", [4, "5", 6], "", null]));
  assert.deepEqual(dense(batch), [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0]);
  throwsMessage(
    () => encoder.encode(rows("col", ["1|2"])),
    `data.csv:2: column 'col': expected 3 values separated by "|", got 2`,
  );
  throwsMessage(
    () => encoder.encode(rows("col", ["1|2|3|4"])),
    `data.csv:2: column 'col': expected 3 values separated by "|", got 4`,
  );
  throwsMessage(
    () => encoder.encode(rows("col", [[1, 2]])),
    "data.csv:2: column 'col': expected 3 values, got 2",
  );
  throwsMessage(
    () => encoder.encode(rows("col", [7])),
    "data.csv:2: column 'col': expected 3 values, got 1",
  );
  throwsMessage(
    () => encoder.encode(rows("col", ["1|x|3"])),
    `data.csv:2: column 'col': "x" is not a number`,
  );
});

// ------------------------------------------------------------- multi-value

test("features: multi-value ids with the default \\x1d separator, '|' and arrays", () => {
  const byDefault = encoderFor(idFeature({ numBuckets: 10 }));
  assert.deepEqual(sparse(byDefault.encode(rows("col", ["1\x1d2\x1d3", "4"]))), {
    ids: [1, 2, 3, 4],
    offsets: [0, 3, 4],
  });
  throwsMessage(
    () => byDefault.encode(rows("col", ["4|5"])),
    `data.csv:2: column 'col': "4|5" is not an integer id`,
  );
  const piped = encoderFor(idFeature({ numBuckets: 10, separator: "|" }));
  assert.deepEqual(
    sparse(piped.encode(rows("col", ["4|5", "6", [7, "8", 9n], [], "1||2|"]))),
    { ids: [4, 5, 6, 7, 8, 9, 1, 2], offsets: [0, 2, 3, 6, 6, 8] },
  );
  const multiChar = encoderFor(idFeature({ numBuckets: 10, separator: "::" }));
  assert.deepEqual(sparse(multiChar.encode(rows("col", ["1::2", "3"]))).ids, [1, 2, 3]);
});

test("features: a missing value gives no id: empty string, null, undefined, [], absent column", () => {
  const encoder = encoderFor(idFeature({ hashBucketSize: 50 }));
  const records: LocatedRecord[] = [
    ...rows("col", ["", null, undefined, [], [null, ""]]),
    { record: {}, location: "data.csv:9" },
  ];
  assert.deepEqual(sparse(encoder.encode(records)), { ids: [], offsets: [0, 0, 0, 0, 0, 0, 0] });
});

// ------------------------------------------------------------------ FG_NONE

/** An FG_NONE encoder over `features` (all in the group), without labels. */
function encodedEncoder(features: FeatureConfig[], options: EncoderOptions = {}): FeatureEncoder {
  return new FeatureEncoder(resolveConfig(pipeline(features, {}, "FG_NONE")), {
    labels: false,
    ...options,
  });
}

test("features: FG_NONE reads every sparse kind as encoded rows from the feature_name column", () => {
  const encoder = encodedEncoder([
    { idFeature: { featureName: "n", numBuckets: 10, embeddingDim: 4 } },
    { idFeature: { featureName: "h", hashBucketSize: 20, embeddingDim: 4 } },
    { idFeature: { featureName: "v", vocabList: ["a", "b"], embeddingDim: 4 } },
    { rawFeature: { featureName: "b", boundaries: [1, 10, 100], embeddingDim: 4 } },
    { rawFeature: { featureName: "d", valueDim: 2 } },
  ]);
  assert.deepEqual(encoder.requiredColumns.map((c) => c.column), ["n", "h", "v", "b", "d"]);
  // tzrec's multi-value separator of encoded data is \x03 (data_config.fg_encoded_multival_sep).
  const batch = encoder.encode([
    { record: { n: "9\x030", h: "19", v: 3, b: "3", d: "1.5\x03-2" }, location: "r1" },
    { record: { n: "", h: null, v: [0, 1], b: "", d: [4, 5] }, location: "r2" },
  ]);
  assert.deepEqual(sparse(batch, 0), { ids: [9, 0], offsets: [0, 2, 2] });
  assert.deepEqual(sparse(batch, 1), { ids: [19], offsets: [0, 1, 1] });
  assert.deepEqual(sparse(batch, 2), { ids: [3, 0, 1], offsets: [0, 1, 3] });
  // A missing bucketized value is no id (FG_DAG would bucketize tzrec's default "0").
  assert.deepEqual(sparse(batch, 3), { ids: [3], offsets: [0, 1, 1] });
  assert.deepEqual(dense(batch, 4), [1.5, -2, 4, 5]);
  const at = (record: RawRecord) => () => encoder.encode([{ record, location: "t.csv:4" }]);
  const base = { n: "1", h: "1", v: "1", b: "1", d: "1\x031" };
  throwsMessage(at({ ...base, h: "20" }), "t.csv:4: column 'h': id 20 is out of range [0, 20)");
  throwsMessage(at({ ...base, v: "4" }), "t.csv:4: column 'v': id 4 is out of range [0, 4)");
  throwsMessage(at({ ...base, b: "4" }), "t.csv:4: column 'b': id 4 is out of range [0, 4)");
  throwsMessage(at({ ...base, h: "abc" }), `t.csv:4: column 'h': "abc" is not an integer id`);
  throwsMessage(
    at({ ...base, n: "1\x1d2" }),
    `t.csv:4: column 'n': "1\\u001d2" is not an integer id`,
  );
  throwsMessage(
    at({ ...base, d: "" }),
    "t.csv:4: column 'd': value is missing (FG_NONE reads encoded values; " +
      "set fg_encoded_default_value for missing ones)",
  );
});

test("features: FG_NONE fg_encoded_default_value fills missing values", () => {
  const encoder = encodedEncoder([
    {
      idFeature: {
        featureName: "n",
        numBuckets: 10,
        embeddingDim: 4,
        fgEncodedDefaultValue: "7\x038",
      },
    },
    { rawFeature: { featureName: "d", valueDim: 2, fgEncodedDefaultValue: "0.5\x03-1" } },
  ]);
  const batch = encoder.encode([
    { record: { n: null, d: "" }, location: "r1" },
    { record: { n: "1", d: "2\x033" }, location: "r2" },
  ]);
  assert.deepEqual(sparse(batch, 0), { ids: [7, 8, 1], offsets: [0, 2, 3] });
  assert.deepEqual(dense(batch, 1), [0.5, -1, 2, 3]);
});

// ----------------------------------------------------------------- weighted

function weighted(batch: EncodedBatch, i = 0) {
  const { ids, offsets, weights } = batch.features[i] as SparseInput;
  assert.ok(weights instanceof Float32Array);
  return {
    ids: Array.from(ids),
    lengths: Array.from(offsets.slice(1), (o, b) => o - offsets[b]),
    weights: Array.from(weights),
  };
}

test("features: weighted ids, FG_NONE: tzrec data_parser_test test_fg_encoded_id_with_weight", () => {
  // tzrec/datasets/data_parser_test.py: tag_b "4:2.3\x035:2.4", "", "6:2.5" with
  // num_buckets 1000, without and with fg_encoded_default_value "0".
  const encoder = encodedEncoder([
    { idFeature: { featureName: "tag_b", numBuckets: 1000, embeddingDim: 8, weighted: true } },
    {
      idFeature: {
        featureName: "tag_b1",
        numBuckets: 1000,
        embeddingDim: 8,
        weighted: true,
        fgEncodedDefaultValue: "0",
      },
    },
  ]);
  const values = ["4:2.3\x035:2.4", "", "6:2.5"];
  const batch = encoder.encode(values.map((v, i) => ({
    record: { tag_b: v, tag_b1: v },
    location: `r${i}`,
  })));
  assert.deepEqual(weighted(batch, 0), {
    ids: [4, 5, 6],
    lengths: [2, 0, 1],
    weights: [2.3, 2.4, 2.5].map(Math.fround),
  });
  assert.deepEqual(weighted(batch, 1), {
    ids: [4, 5, 0, 6],
    lengths: [2, 1, 1],
    weights: [2.3, 2.4, 1, 2.5].map(Math.fround),
  });
});

test("features: weighted ids, FG_DAG: tzrec data_parser_test test_fg (weighted), hashing and lists", () => {
  // tzrec/datasets/data_parser_test.py test_fg: tag_b "4:0.1\x1d5:0.2", "", "6:0.3", num_buckets 1000.
  const encoder = encoderFor(idFeature({ numBuckets: 1000, weighted: true }));
  const batch = encoder.encode(rows("col", ["4:0.1\x1d5:0.2", "", "6:0.3", ["7:1.5"], null]));
  assert.deepEqual(weighted(batch), {
    ids: [4, 5, 6, 7],
    lengths: [2, 0, 1, 1, 0],
    weights: [0.1, 0.2, 0.3, 1.5].map(Math.fround),
  });
  // With hash_bucket_size the key is hashed as pyfg hashes it (the text before the last ':').
  const hashed = encoderFor(idFeature({ hashBucketSize: 100, weighted: true }));
  assert.deepEqual(weighted(hashed.encode(rows("col", ["abc:2\x1defg:0.5"]))), {
    ids: [hashBucket("abc", 100), hashBucket("efg", 100)],
    lengths: [2],
    weights: [2, 0.5],
  });
  const at = (value: unknown) => () => encoder.encode(rows("col", [value]));
  throwsMessage(at("4"), `data.csv:2: column 'col': "4" is not id:weight (weighted feature)`);
  throwsMessage(at("4:"), `data.csv:2: column 'col': "4:" is not id:weight (weighted feature)`);
  throwsMessage(at("4:x"), `data.csv:2: column 'col': "x" is not a number`);
  throwsMessage(at("4:nan"), "data.csv:2: column 'col': weight is not a finite float32");
  throwsMessage(at(4), "data.csv:2: column 'col': 4 is not id:weight (weighted feature)");
  throwsMessage(at("1001:1"), "data.csv:2: column 'col': id 1001 is out of range [0, 1000)");
});

// --------------------------------------------------------------- non-finite

test("features: non-finite raw values are errors naming the location, or 0 with nonFinite: zero", () => {
  const dense1 = encoderFor(rawFeature({}));
  for (const text of ["inf", "-Infinity", "NaN", "nan", "1e39"]) {
    throwsMessage(
      () => dense1.encode(rows("col", ["1", text])),
      "data.csv:3: column 'col': value is not a finite float32",
    );
  }
  throwsMessage(
    () => dense1.encode(rows("col", [Number.NaN])),
    "data.csv:2: column 'col': value is not a finite float32",
  );
  const bucketed = encoderFor(rawFeature({ boundaries: [1, 2], embeddingDim: 4 }));
  throwsMessage(
    () => bucketed.encode(rows("col", ["Infinity"])),
    "data.csv:2: column 'col': value is not a finite float32",
  );
  const zeroing = encoderFor(rawFeature({}), { nonFinite: "zero" });
  assert.deepEqual(dense(zeroing.encode(rows("col", ["inf", "2", Number.NaN]))), [0, 2, 0]);
  assert.deepEqual(zeroing.nonFiniteCounts, { f: 2 });
  assert.throws(
    () => encoderFor(rawFeature({}), { nonFinite: "clamp" as never }),
    /nonFinite must be "error" or "zero"/,
  );
});

// ------------------------------------------------------------------ labels

test("features: batches carry every label, indicator and sample-weight column once", () => {
  const base = pipeline([idFeature({ numBuckets: 4 })]);
  const bce = [{ binaryCrossEntropy: {} }];
  base.modelConfig.mmoe!.taskTowers = [
    { towerName: "ctr", labelName: "clk", sampleWeightName: "w", losses: bce },
    { towerName: "cvr", labelName: "buy", taskSpaceIndicatorLabel: "clk", losses: bce },
  ];
  base.dataConfig = {
    fgMode: "FG_DAG",
    labelFields: ["clk", "buy", "extra"],
    sampleWeightFields: ["w", "w2"],
  };
  const encoder = new FeatureEncoder(resolveConfig(base));
  assert.deepEqual(encoder.columns, ["clk", "w", "buy", "extra", "w2"]);
  const batch = encoder.encode([
    {
      record: { col: "1", clk: "1", buy: 0, w: "0.5", extra: true, w2: 2n },
      location: "r1",
    },
    { record: { col: "2", clk: "0", buy: "1", w: "2", extra: "-3.25", w2: "1" }, location: "r2" },
  ]);
  assert.deepEqual(Object.keys(batch.columns), ["clk", "w", "buy", "extra", "w2"]);
  assert.deepEqual(batch.columns.clk, Float32Array.of(1, 0));
  assert.deepEqual(batch.columns.w, Float32Array.of(0.5, 2));
  assert.deepEqual(batch.columns.buy, Float32Array.of(0, 1));
  assert.deepEqual(batch.columns.extra, Float32Array.of(1, -3.25));
  assert.deepEqual(batch.columns.w2, Float32Array.of(2, 1));
  assert.equal(batch.size, 2);
});

test("features: a missing or non-numeric label is an error naming location and column", () => {
  const encoder = new FeatureEncoder(resolveConfig(pipeline([idFeature({ numBuckets: 4 })])));
  const at = (record: RawRecord) => () => encoder.encode([{ record, location: "train.csv:5" }]);
  throwsMessage(at({ col: "1", clk: "" }), "train.csv:5: column 'clk': value is missing");
  throwsMessage(at({ col: "1" }), "train.csv:5: column 'clk': value is missing");
  throwsMessage(at({ col: "1", clk: null }), "train.csv:5: column 'clk': value is missing");
  throwsMessage(at({ col: "1", clk: "yes" }), `train.csv:5: column 'clk': "yes" is not a number`);
  throwsMessage(
    at({ col: "1", clk: [1, 0] }),
    "train.csv:5: column 'clk': expected one number, got a list of 2",
  );
  const inference = new FeatureEncoder(resolveConfig(pipeline([idFeature({ numBuckets: 4 })])), {
    labels: false,
  });
  assert.deepEqual(
    inference.encode([{ record: { col: "1" }, location: "request row 0" }]).columns,
    {},
  );
});

test("features: labels are checked against the tower's losses and metrics, with the file line", () => {
  const config = pipeline([idFeature({ numBuckets: 4 })]);
  config.modelConfig.mmoe!.taskTowers = [
    { towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] },
    {
      towerName: "auc",
      labelName: "buy",
      losses: [{ binaryCrossEntropy: {} }],
      metrics: [{ auc: {} }],
    },
    { towerName: "grade", labelName: "grade", numClass: 3, losses: [{ softmaxCrossEntropy: {} }] },
    { towerName: "dwell", labelName: "dwell", losses: [{ l2Loss: {} }] },
    {
      towerName: "weighted",
      labelName: "clk",
      sampleWeightName: "w",
      losses: [{ binaryCrossEntropy: {} }],
    },
  ];
  const encoder = new FeatureEncoder(resolveConfig(config));
  const good = { col: "1", clk: "0.25", buy: "1", grade: "2", dwell: "-7.5", w: "0" };
  const batch = encoder.encode([{ record: good, location: "train.csv:2" }]);
  assert.deepEqual(batch.columns.clk, Float32Array.of(0.25)); // soft BCE labels are fine
  const at = (record: RawRecord) => () =>
    encoder.encode([
      { record: good, location: "train.csv:4000" },
      { record: { ...good, ...record }, location: "train.csv:4001" },
    ]);
  throwsMessage(
    at({ clk: "2" }),
    "train.csv:4001: column 'clk': label 2 is outside [0, 1] (binary_cross_entropy_ctr)",
  );
  throwsMessage(
    at({ clk: "-1" }),
    "train.csv:4001: column 'clk': label -1 is outside [0, 1] (binary_cross_entropy_ctr)",
  );
  throwsMessage(
    at({ buy: "0.5" }),
    "train.csv:4001: column 'buy': label 0.5 is not 0 or 1 (auc_auc)",
  );
  throwsMessage(
    at({ grade: "3" }),
    "train.csv:4001: column 'grade': label 3 is not a class id in [0, 3) (softmax_cross_entropy_grade)",
  );
  throwsMessage(
    at({ grade: "0.5" }),
    "train.csv:4001: column 'grade': label 0.5 is not a class id in [0, 3) (softmax_cross_entropy_grade)",
  );
  throwsMessage(
    at({ dwell: "inf" }),
    `train.csv:4001: column 'dwell': value "inf" is not a finite float32`,
  );
  throwsMessage(
    at({ w: "-1" }),
    "train.csv:4001: column 'w': sample weight -1 is negative (sample_weight_name of tower weighted)",
  );
});

test("features: grouped_auc keys are each row's first id of the grouping feature, in or out of the group", () => {
  const config = pipeline([idFeature({ numBuckets: 10 })], {
    metrics: [{ groupedAuc: { groupingKey: "session" } }],
  });
  config.featureConfigs.push({
    idFeature: {
      featureName: "session",
      expression: "context:sid",
      hashBucketSize: 50,
      embeddingDim: 4,
    },
  });
  config.modelConfig.mmoe!.taskTowers.push({
    towerName: "cvr",
    labelName: "buy",
    losses: [{ binaryCrossEntropy: {} }],
    metrics: [{ groupedAuc: { groupingKey: "f" } }],
  });
  const resolved = resolveConfig(config);
  const encoder = new FeatureEncoder(resolved);
  assert.deepEqual(encoder.requiredColumns.map((c) => c.column), ["col", "sid", "clk", "buy"]);
  const batch = encoder.encode([
    { record: { col: "3\x1d4", sid: "s1", clk: 1, buy: 0 }, location: "r1" },
    { record: { col: "", sid: "", clk: 0, buy: 1 }, location: "r2" },
  ]);
  assert.equal(batch.features.length, 1, "the key feature is not a model input");
  assert.deepEqual(batch.groups, {
    session: Int32Array.of(hashBucket("s1", 50), 0),
    f: Int32Array.of(3, 0),
  });
  // Inference encoders read no labels and no keys.
  const inference = new FeatureEncoder(resolved, { labels: false });
  assert.deepEqual(inference.requiredColumns.map((c) => c.column), ["col"]);
  assert.equal(inference.encode([{ record: { col: "1" }, location: "r" }]).groups, undefined);
});

// ------------------------------------------------------------ checkColumns

test("features: checkColumns names every column a header lacks and what needs it", () => {
  const config = resolveConfig({
    ...pipeline([
      {
        idFeature: {
          featureName: "brand",
          expression: "item:brand",
          numBuckets: 4,
          embeddingDim: 4,
        },
      },
      { rawFeature: { featureName: "price", expression: "item:price" } },
    ], { sampleWeightName: "w" }),
    dataConfig: { labelFields: ["clk", "buy"] },
  });
  const encoder = new FeatureEncoder(config);
  encoder.checkColumns(["price", "brand", "w", "buy", "clk", "unused"], "train.csv");
  assert.throws(
    () => encoder.checkColumns(["price", "clk", "w", "buy"], "train.csv"),
    (e: unknown) =>
      e instanceof FeatureError && e.location === "train.csv" && e.column === "brand" &&
      e.message === "train.csv: missing column 'brand' (needed by feature brand)",
  );
  assert.throws(() => encoder.checkColumns(["brand"], "eval.csv"), {
    message: "eval.csv: missing 4 columns: 'price', 'clk', 'w', 'buy' (the first needed by " +
      "feature price)",
  });
  new FeatureEncoder(config, { labels: false }).checkColumns(["brand", "price"], "request");
});

// ------------------------------------------------------------ batchRecords

const indexConfig = resolveConfig(pipeline([
  { idFeature: { featureName: "i", expression: "item:i", numBuckets: 1000, embeddingDim: 4 } },
]));

function indexed(n: number): LocatedRecord[] {
  return Array.from({ length: n }, (_, i) => ({ record: { i, clk: i % 2 }, location: `row ${i}` }));
}

async function collect(
  source: Iterable<LocatedRecord> | AsyncIterable<LocatedRecord>,
  options: Parameters<typeof batchRecords>[2],
): Promise<number[][]> {
  const out: number[][] = [];
  for await (const batch of batchRecords(source, new FeatureEncoder(indexConfig), options)) {
    const { ids, offsets } = sparse(batch);
    assert.equal(offsets.length, batch.size + 1);
    assert.deepEqual(Array.from(batch.columns.clk), ids.map((i) => i % 2));
    out.push(ids);
  }
  return out;
}

test("features: batchRecords keeps the last partial batch unless dropRemainder", async () => {
  const sizes = (batches: number[][]) => batches.map((b) => b.length);
  assert.deepEqual(sizes(await collect(indexed(10), { batchSize: 4 })), [4, 4, 2]);
  assert.deepEqual(sizes(await collect(indexed(10), { batchSize: 4, dropRemainder: true })), [
    4,
    4,
  ]);
  assert.deepEqual(sizes(await collect(indexed(8), { batchSize: 4 })), [4, 4]);
  assert.deepEqual(sizes(await collect(indexed(8), { batchSize: 4, dropRemainder: true })), [4, 4]);
  assert.deepEqual(sizes(await collect(indexed(3), { batchSize: 1 })), [1, 1, 1]);
  assert.deepEqual(sizes(await collect(indexed(3), { batchSize: 5 })), [3]);
  assert.deepEqual(sizes(await collect(indexed(3), { batchSize: 5, dropRemainder: true })), []);
  assert.deepEqual(sizes(await collect(indexed(0), { batchSize: 5 })), []);
  assert.deepEqual((await collect(indexed(5), { batchSize: 2 })).flat(), [0, 1, 2, 3, 4]);
});

test("features: batchRecords reads async sources", async () => {
  async function* source() {
    for (const record of indexed(7)) {
      await Promise.resolve();
      yield record;
    }
  }
  assert.deepEqual(await collect(source(), { batchSize: 3 }), [[0, 1, 2], [3, 4, 5], [6]]);
});

test("features: batchRecords rejects bad sizes", async () => {
  for (
    const options of [{ batchSize: 0 }, { batchSize: 1.5 }, { batchSize: 2, shuffleBufferSize: -1 }]
  ) {
    await assert.rejects(() => collect(indexed(3), options), RangeError);
  }
});

test("features: the shuffle is a seeded permutation with a bounded buffer", async () => {
  const n = 200, S = 16;
  const run = (seed: number, shuffleBufferSize = S) =>
    collect(indexed(n), { batchSize: 7, shuffleBufferSize, seed }).then((b) => b.flat());
  const first = await run(3), again = await run(3), other = await run(4);
  assert.deepEqual(first, again, "same seed, same order");
  assert.notDeepEqual(first, other, "another seed, another order");
  assert.notDeepEqual(first, Array.from({ length: n }, (_, i) => i), "actually shuffled");
  assert.deepEqual([...first].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  // A record can leave only once it is in the buffer: output k comes from input <= k + S.
  first.forEach((index, k) => assert.ok(index <= k + S, `output ${k} is input ${index}`));
  // A buffer larger than the input is a full shuffle; a buffer of 1 keeps the order.
  const full = await run(5, 1000);
  assert.deepEqual([...full].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  assert.deepEqual(await run(5, 1), Array.from({ length: n }, (_, i) => i));
  const sizes = (await collect(indexed(n), { batchSize: 7, shuffleBufferSize: S, seed: 1 }))
    .map((b) => b.length);
  assert.deepEqual(sizes, [...Array(28).fill(7), 4]);
});

// -------------------------------------------------------------- end to end

test("features: encoded records train MMoEModel end to end", () => {
  const config = resolveConfig({
    dataConfig: { fgMode: "FG_DAG" },
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
          separator: "|",
        },
      },
      {
        idFeature: {
          featureName: "pid",
          expression: "context:pid",
          hashBucketSize: 20,
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
          featureName: "price_bucket",
          expression: "item:price",
          boundaries: [1, 10, 100],
          embeddingDim: 4,
        },
      },
      { rawFeature: { featureName: "price", expression: "item:price" } },
    ],
    modelConfig: {
      featureGroups: [{
        groupName: "all",
        featureNames: ["user", "tags", "pid", "cate", "price_bucket", "price"],
      }],
      mmoe: {
        expertMlp: { hiddenUnits: [8] },
        numExpert: 2,
        taskTowers: [
          { towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] },
          {
            towerName: "cvr",
            labelName: "buy",
            losses: [{ binaryCrossEntropy: {} }],
            taskSpaceIndicatorLabel: "clk",
            inTaskSpaceWeight: 1,
            outTaskSpaceWeight: 0,
          },
        ],
      },
    },
    trainConfig: {
      denseOptimizer: { adamOptimizer: { lr: 0.05 } },
      sparseOptimizer: { adagradOptimizer: { lr: 0.3 } },
    },
  });
  const raw: RawRecord[] = [
    { user: "0", tags: "1|2", pid: "430548_1007", cate: "a", price: "0.5", clk: "1", buy: "1" },
    { user: "1", tags: "", pid: "430539_1007", cate: "zzz", price: "12", clk: "0", buy: "0" },
    { user: "2", tags: "3", pid: "430548_1007", cate: "b", price: "", clk: "1", buy: "0" },
    { user: "5", tags: [4, 0], pid: null, cate: "", price: 150, clk: "0", buy: "0" },
  ];
  const encoder = new FeatureEncoder(config);
  encoder.checkColumns(Object.keys(raw[0]), "train.csv");
  const batch = encoder.encode(
    raw.map((record, i) => ({ record, location: `train.csv:${i + 2}` })),
  );
  assert.deepEqual(sparse(batch, 1), { ids: [1, 2, 3, 4, 0], offsets: [0, 2, 2, 3, 5] });
  assert.deepEqual(sparse(batch, 3), { ids: [2, 1, 3], offsets: [0, 1, 2, 3, 3] });
  assert.deepEqual(sparse(batch, 4).ids, [0, 2, 0, 3]);
  assert.deepEqual(dense(batch, 5), [0.5, 12, 0, 150]);
  const model = new MMoEModel(config, { maxBatch: 4, seed: 1 });
  model.evalStep(batch);
  const F = config.inputWidth, tags = config.features[1].offset;
  assert.deepEqual(
    Array.from(model.groupInput(4).subarray(F + tags, F + tags + 4)),
    [0, 0, 0, 0],
    "the row without tags embeds to the zero vector",
  );
  const first = model.trainStep(batch);
  assert.ok(Number.isFinite(first.losses.binary_cross_entropy_ctr));
  assert.ok(Number.isFinite(first.losses.binary_cross_entropy_cvr));
  let last = first.total;
  for (let step = 0; step < 30; step++) last = model.trainStep(batch).total;
  assert.ok(last < first.total * 0.5, `loss went from ${first.total} to ${last}`);
});

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { FeatureEncoder } from "../src/data/features.ts";
import { generateRows, writeGeneratedData } from "../src/data/generate.ts";
import { csvReadOptions, readRecords } from "../src/data/readers.ts";
import type { LocatedRecord, RawRecord } from "../src/core/records.ts";
import type { SparseInput } from "../src/core/batch.ts";

/** Every feature kind, three kinds of tower, a sample weight and a grouping key outside the group. */
function everything(fgMode: "FG_NONE" | "FG_DAG"): PipelineConfig {
  return {
    dataConfig: { fgMode, labelFields: ["clk", "grade", "dwell"], sampleWeightFields: ["w"] },
    featureConfigs: [
      {
        idFeature: {
          featureName: "user",
          expression: "user:uid",
          numBuckets: 1_000_000,
          embeddingDim: 4,
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
          vocabList: ["a", "b", "c"],
          embeddingDim: 4,
        },
      },
      {
        idFeature: {
          featureName: "tags",
          expression: "item:tags",
          hashBucketSize: 500,
          embeddingDim: 4,
          weighted: true,
          separator: "|",
        },
      },
      {
        rawFeature: {
          featureName: "price",
          expression: "item:price",
          boundaries: [1, 10, 100],
          embeddingDim: 4,
        },
      },
      { rawFeature: { featureName: "score", expression: "item:score", valueDim: 2 } },
      {
        idFeature: {
          featureName: "session",
          expression: "context:sid",
          hashBucketSize: 1000,
          embeddingDim: 4,
        },
      },
    ],
    modelConfig: {
      featureGroups: [{
        groupName: "all",
        featureNames: ["user", "pid", "cate", "tags", "price", "score"],
      }],
      mmoe: {
        expertMlp: { hiddenUnits: [8] },
        taskTowers: [
          {
            towerName: "ctr",
            labelName: "clk",
            sampleWeightName: "w",
            losses: [{ binaryCrossEntropy: {} }],
            metrics: [{ auc: {} }, { groupedAuc: { groupingKey: "session" } }],
          },
          {
            towerName: "grade",
            labelName: "grade",
            numClass: 3,
            losses: [{ softmaxCrossEntropy: {} }],
          },
          { towerName: "dwell", labelName: "dwell", losses: [{ l2Loss: {} }] },
        ],
      },
    },
  };
}

const located = (rows: Iterable<RawRecord>): LocatedRecord[] =>
  [...rows].map((record, i) => ({ record, location: `row ${i}` }));

test("generate: FG_NONE rows are encoded values the encoder takes, within every table", () => {
  const config = resolveConfig(everything("FG_NONE"));
  const { columns, rows, stats } = generateRows(config, { rows: 3000, seed: 1 });
  assert.deepEqual(columns, [
    "user",
    "pid",
    "cate",
    "tags",
    "price",
    "score",
    "session",
    "clk",
    "w",
    "grade",
    "dwell",
  ]);
  const records = located(rows);
  const batch = new FeatureEncoder(config).encode(records);
  config.features.forEach((f, i) => {
    if (f.kind === "dense") return;
    const { ids } = batch.features[i] as SparseInput;
    assert.ok(ids.every((id) => id >= 0 && id < f.rows), f.name);
    assert.ok(new Set(ids).size > 1, `${f.name} varies`);
  });
  // Ids spread over a large table, 100 distinct values by default.
  const users = new Set((batch.features[0] as SparseInput).ids);
  assert.equal(users.size, 100);
  assert.ok(Math.max(...users) > 900_000);
  // Weighted pairs joined by fg_encoded_multival_sep; two dense values by it too.
  const tags = records.map((r) => r.record.tags).find((v) =>
    typeof v === "string" && v.includes("\x03")
  );
  for (const pair of String(tags).split("\x03")) assert.match(pair, /^\d+:[\d.]+$/);
  const score = String(records[0].record.score).split("\x03");
  assert.equal(score.length, 2);
  for (const x of score) assert.match(x, /^-?[\d.]+$/);
  assert.ok((batch.features[3] as SparseInput).weights!.every((w) => w >= 0.5 && w <= 2));
  assert.ok(batch.columns.grade.every((y) => [0, 1, 2].includes(y)));
  assert.ok(batch.columns.w.every((w) => w >= 0.5 && w <= 1.5));
  assert.equal(batch.groups?.session.length, 3000);
  const s = stats();
  assert.equal(s.rows, 3000);
  assert.equal(s.towers.ctr.positives, batch.columns.clk.reduce((a, b) => a + b, 0));
  assert.ok(s.towers.ctr.oracleAuc > 0.8, String(s.towers.ctr.oracleAuc));
  assert.ok(Number.isNaN(s.towers.grade.oracleAuc));
});

test("generate: FG_DAG rows are raw values: hashed strings, vocabulary, bucket middles, pairs", () => {
  const config = resolveConfig(everything("FG_DAG"));
  const { columns, rows } = generateRows(config, { rows: 3000, seed: 2, vocabulary: 5 });
  assert.deepEqual(columns.slice(0, 7), ["uid", "pid", "cate", "tags", "price", "score", "sid"]);
  const records = located(rows);
  const values = (column: string) => new Set(records.map((r) => r.record[column]));
  assert.deepEqual(
    [...values("pid")].filter((v) => v !== null).sort(),
    ["pid_0", "pid_1", "pid_2", "pid_3", "pid_4"],
  );
  assert.deepEqual(
    [...values("cate")].filter((v) => v !== null).sort(),
    ["a", "b", "c", "cate_unknown"],
  );
  // One value per bucket of boundaries [1, 10, 100]: below, between, above.
  assert.deepEqual(
    [...values("price")].filter((v) => v !== null).map(Number).sort((a, b) => a - b),
    [
      0,
      5.5,
      55,
      150.5,
    ],
  );
  assert.ok(records.some((r) => /^tags_\d:[\d.]+\|tags_\d:[\d.]+/.test(String(r.record.tags))));
  // The encoder takes every row: buckets 0..3, vocab rows 1..4, no errors.
  const batch = new FeatureEncoder(config).encode(records);
  assert.deepEqual([...new Set((batch.features[4] as SparseInput).ids)].sort(), [0, 1, 2, 3]);
  assert.deepEqual([...new Set((batch.features[2] as SparseInput).ids)].sort(), [1, 2, 3, 4]);
  // About one sparse value in 20 is missing.
  const missing = records.filter((r) => r.record.pid === null).length / records.length;
  assert.ok(missing > 0.03 && missing < 0.07, String(missing));
});

test("generate: seeds: the same rows again, another row stream, one planted model", () => {
  const config = resolveConfig(everything("FG_NONE"));
  const rows = (
    seed: number,
    world = 0,
  ) => [...generateRows(config, { rows: 50, seed, world }).rows];
  assert.deepEqual(rows(1), rows(1));
  assert.notDeepEqual(rows(1), rows(2));
  assert.notDeepEqual(rows(1, 0), rows(1, 1));
  // Train and eval sets share the world: the same 100 users.
  const users = (seed: number) =>
    new Set(
      [...generateRows(config, { rows: 2000, seed }).rows].map((r) => r.user).filter((u) =>
        u !== null
      ),
    );
  assert.deepEqual([...users(1)].sort(), [...users(2)].sort());
});

test("generate: CSV and Parquet files encode to the same batch; headerless CSV for input_fields", async () => {
  const dir = await mkdtemp(join(tmpdir(), "denorec-generate-"));
  try {
    for (const fgMode of ["FG_NONE", "FG_DAG"] as const) {
      const config = resolveConfig(everything(fgMode));
      const encoder = new FeatureEncoder(config);
      const batches = [];
      for (const name of ["data.csv", "data.parquet"]) {
        const path = join(dir, name);
        const stats = await writeGeneratedData(path, config, { rows: 500, seed: 3 });
        assert.equal(stats.rows, 500);
        const records: LocatedRecord[] = [];
        for await (const record of readRecords(path, csvReadOptions(config))) records.push(record);
        batches.push(encoder.encode(records));
      }
      assert.deepEqual(batches[0], batches[1], fgMode);
    }
    const headerless = everything("FG_NONE");
    const names = generateRows(resolveConfig(headerless), { rows: 0 }).columns;
    headerless.dataConfig!.inputFields = names.map((inputName) => ({ inputName }));
    const config = resolveConfig(headerless);
    const path = join(dir, "headerless.csv");
    await writeGeneratedData(path, config, { rows: 20, seed: 4 });
    assert.doesNotMatch(await readFile(path, "utf8"), /user/);
    const records: LocatedRecord[] = [];
    for await (const record of readRecords(path, csvReadOptions(config))) records.push(record);
    assert.equal(new FeatureEncoder(config).encode(records).size, 20);
    headerless.dataConfig!.inputFields = [{ inputName: "user" }];
    await assert.rejects(
      writeGeneratedData(path, resolveConfig(headerless), { rows: 1 }),
      /generate: data_config\.input_fields lacks pid, cate,/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("generate: bad options and columns one value cannot serve are errors", () => {
  const config = resolveConfig(everything("FG_NONE"));
  assert.throws(() => generateRows(config, { rows: -1 }), /rows must be a non-negative integer/);
  assert.throws(() => generateRows(config, { rows: 1, vocabulary: 0 }), /vocabulary must be/);
  assert.throws(() => generateRows(config, { rows: 1, signal: Number.NaN }), /signal must be/);
  const clash = everything("FG_DAG");
  clash.featureConfigs[1].idFeature!.expression = "user:uid";
  assert.throws(
    () => generateRows(resolveConfig(clash), { rows: 1 }),
    /generate: column "uid" is read by features user and pid/,
  );
});

/**
 * TorchEasyRec's own MMoE configs (tests/fixtures/tzrec/, copied unchanged
 * from tzrec commit 54cac31) load as they are, and train end to end on data
 * from the generator: the FG_NONE benchmark config (encoded ids, Parquet),
 * the FG_DAG example (raw values, CSV) and the FG_DAG taobao_ccp config with
 * weighted ids (CSV).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigTextError, resolveConfig, type ResolvedConfig } from "../src/config/config.ts";
import { loadPipelineConfig } from "../src/config/config_text.ts";
import { batchRecords, FeatureEncoder } from "../src/data/features.ts";
import { writeGeneratedData } from "../src/data/generate.ts";
import { csvReadOptions, inputColumns, readRecords } from "../src/data/readers.ts";
import type { SparseInput } from "../src/core/batch.ts";
import { MMoEModel } from "../src/model/mmoe.ts";
import { evaluate, train } from "../src/train/trainer.ts";

const DIR = "tests/fixtures/tzrec";
const EXAMPLE = `${DIR}/examples_mmoe_taobao.config`;
const BENCHMARK = `${DIR}/benchmark_taobao_mmoe.config`;
const CCP = `${DIR}/benchmark_taobao_ccp_mmoe.config`;
const SEQUENCE = `${DIR}/benchmark_taobao_mmoe_has_sequence.config`;

const load = async (path: string) => resolveConfig(await loadPipelineConfig(path));

test("tzrec configs: examples/mmoe_taobao.config loads as it is (FG_DAG, OdpsDataset)", async () => {
  const config = await load(EXAMPLE);
  assert.equal(config.data.fgMode, "FG_DAG");
  assert.equal(config.data.datasetType, "OdpsDataset");
  assert.equal(config.data.batchSize, 8192);
  assert.deepEqual(config.data.labelFields, ["clk", "buy"]);
  assert.equal(config.features.length, 16);
  assert.ok(config.features.every((f) => !f.encoded));
  assert.equal(config.features.find((f) => f.name === "pid")?.kind, "hash_bucket");
  assert.equal(config.features.find((f) => f.name === "price")?.kind, "boundaries");
  assert.equal(config.numExpert, 3);
  assert.deepEqual(config.towers.map((t) => t.metrics), [
    [{ kind: "auc", name: "auc_ctr", thresholds: 200 }],
    [{ kind: "auc", name: "auc_cvr", thresholds: 1000 }],
  ]);
  // The MaxCompute paths are kept; using one says how to get the data here.
  assert.match(config.paths.trainInputPath, /^odps:\/\//);
  assert.throws(() => readRecords(config.paths.trainInputPath), {
    message: `${config.paths.trainInputPath}: a MaxCompute (ODPS) table cannot be read here; ` +
      "export it to Parquet or CSV and pass the files with --train_input_path / --eval_input_path",
  });
});

test("tzrec configs: benchmark taobao/mmoe.config loads as it is (FG_NONE: no expressions)", async () => {
  const config = await load(BENCHMARK);
  assert.equal(config.data.fgMode, "FG_NONE");
  assert.ok(config.features.every((f) => f.encoded && f.column === f.name));
  assert.ok(config.features.every((f) => f.kind === "num_buckets" && f.separator === "\x03"));
  assert.equal(config.numExpert, 6);
  const cvr = config.towers[1];
  assert.equal(cvr.taskSpaceIndicatorLabel, "clk");
  assert.deepEqual([cvr.inTaskSpaceWeight, cvr.outTaskSpaceWeight], [1, 0]);
  assert.equal(cvr.metrics[0].kind === "auc" && cvr.metrics[0].thresholds, 10000);
});

test("tzrec configs: benchmark taobao_ccp/mmoe.config loads as it is (FG_DAG, weighted ids)", async () => {
  const config = await load(CCP);
  assert.equal(config.data.fgMode, "FG_DAG");
  assert.deepEqual(config.data.labelFields, ["click_label", "conversion_label"]);
  assert.equal(config.features.length, 27);
  assert.deepEqual(
    config.features.filter((f) => f.weighted).map((f) => f.name),
    [
      "user_shop",
      "user_brand",
      "user_intent",
      "user_cate",
      "item_user_intentid",
      "cross_user_shop_item_shopid",
      "cross_user_brand_item_brandid",
      "cross_user_intent_item_user_intentid",
      "cross_user_cate_item_cateid",
    ],
  );
  assert.equal(config.features.filter((f) => f.kind === "dense").length, 4);
  assert.deepEqual(config.expertMlp.dropoutRatio, [Math.fround(0.1), Math.fround(0.1)]);
  assert.equal(config.towers[1].weight, 10);
  assert.equal(config.towers[1].hasWeight, true);
});

test("tzrec configs: mmoe_has_sequence.config fails with one line at the sequence feature", async () => {
  const text = await readFile(SEQUENCE, "utf8");
  const line = text.split("\n").findIndex((l) => l.includes("sequence_feature {")) + 1;
  assert.equal(line, 144);
  await assert.rejects(load(SEQUENCE), (e: unknown) => {
    assert.ok(e instanceof ConfigTextError);
    assert.equal(
      e.message,
      `${SEQUENCE}:144:5: feature_configs[16].sequence_feature: not supported yet ` +
        "(this library runs id_feature and raw_feature)",
    );
    return true;
  });
});

/**
 * The AUC of a model that learned nothing is about N(0.5, s^2) with
 * s^2 = (n1 + n0 + 1) / (12 n1 n0) (Hanley & McNeil's variance under the
 * null): 4 s is 0.04-0.05 for these 3000 eval rows, and a chance pass of
 * 0.5 + 4 s has probability ~3e-5.
 */
function chanceMargin(positives: number, rows: number): number {
  const negatives = rows - positives;
  return 4 * Math.sqrt((rows + 1) / (12 * positives * negatives));
}

/**
 * Generates train and eval files for `config`, reads them back as a CLI
 * would (readRecords, the config's CSV options, the header check), trains
 * `steps` batches of `batchSize` rows and evaluates. The configs' batch of
 * 8192 is replaced by `batchSize` (the model's maxBatch and the reader's
 * batch), so that a run takes seconds; the config is used as it is
 * otherwise, tables, MLPs, losses and optimizers included.
 */
async function trainOnGenerated(
  config: ResolvedConfig,
  format: "csv" | "parquet",
  steps: number,
  batchSize = 128,
) {
  const dir = await mkdtemp(join(tmpdir(), "denorec-tzrec-"));
  const model = new MMoEModel(config, { maxBatch: batchSize, seed: 1, threads: 1 });
  try {
    const trainPath = join(dir, `train.${format}`), evalPath = join(dir, `eval.${format}`);
    // A strong planted signal on 20 values per feature: a short run can learn it.
    const generate = { vocabulary: 20, signal: 3 };
    await writeGeneratedData(trainPath, config, { rows: steps * batchSize, seed: 1, ...generate });
    const evalStats = await writeGeneratedData(evalPath, config, {
      rows: 3000,
      seed: 2,
      ...generate,
    });
    const encoder = new FeatureEncoder(config);
    const options = csvReadOptions(config);
    for (const path of [trainPath, evalPath]) {
      encoder.checkColumns(await inputColumns(path, options), path);
    }
    const batches = (path: string) =>
      batchRecords(readRecords(path, options), encoder, { batchSize });
    let weighted = 0;
    const summary = await train(model, () => batches(trainPath), { numEpochs: 1 });
    assert.equal(summary.steps, steps);
    const metrics = await evaluate(model, batches(evalPath), {
      onBatch: (_, batch) => {
        weighted += batch.features.filter((f) => (f as SparseInput).weights !== undefined).length;
      },
    });
    return { metrics, evalStats, weightedInputs: weighted, losses: summary.logs };
  } finally {
    model.close();
    await rm(dir, { recursive: true, force: true });
  }
}

function assertLearned(
  metrics: Record<string, number>,
  stats: { rows: number; towers: Record<string, { positives: number; oracleAuc: number }> },
) {
  for (const [tower, { positives, oracleAuc }] of Object.entries(stats.towers)) {
    const auc = metrics[`auc_${tower}`];
    const floor = 0.5 + chanceMargin(positives, stats.rows);
    assert.ok(auc > floor, `auc_${tower} ${auc} <= ${floor} (oracle ${oracleAuc})`);
    assert.ok(auc < oracleAuc + 0.02, `auc_${tower} ${auc} above the oracle ${oracleAuc}`);
  }
}

test("tzrec configs: the FG_NONE benchmark config trains on generated Parquet", async () => {
  const config = await load(BENCHMARK);
  const { metrics, evalStats, weightedInputs } = await trainOnGenerated(config, "parquet", 20);
  assert.equal(weightedInputs, 0);
  assertLearned(metrics, evalStats);
});

test("tzrec configs: the FG_DAG example config trains on generated CSV", async () => {
  const config = await load(EXAMPLE);
  const { metrics, evalStats } = await trainOnGenerated(config, "csv", 80);
  assertLearned(metrics, evalStats);
});

test("tzrec configs: the FG_DAG taobao_ccp config trains on generated CSV with weighted ids", async () => {
  const config = await load(CCP);
  const { metrics, evalStats, weightedInputs } = await trainOnGenerated(config, "csv", 200);
  assert.equal(weightedInputs, 9 * Math.ceil(3000 / 128), "every batch carries 9 weighted inputs");
  assertLearned(metrics, evalStats);
});

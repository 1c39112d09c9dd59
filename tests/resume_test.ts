// Resuming and stopping: a run interrupted after a checkpoint and resumed
// reproduces the uninterrupted run bit for bit (shuffle and dropout
// included), num_steps is a total across resumes, and a NaN or infinite loss
// stops training with the last good checkpoint intact.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  latestCheckpoint,
  readCheckpointState,
  restoreCheckpoint,
  saveTrainingCheckpoint,
} from "../src/io/checkpoint.ts";
import { type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { batchRecords, FeatureEncoder } from "../src/data/features.ts";
import { MMoEModel } from "../src/model/mmoe.ts";
import type { LocatedRecord } from "../src/core/records.ts";
import { DivergedError, train, type TrainLog, type TrainOptions } from "../src/train/trainer.ts";
import { rng } from "./_util.ts";

const ROWS = 200, BATCH = 16; // 13 batches an epoch, the last one of 8 rows

/** Two id features and a price; dropout in the experts; optionally a huge learning rate. */
function pipeline(lr = 0.01): PipelineConfig {
  return {
    featureConfigs: [
      {
        idFeature: {
          featureName: "user",
          expression: "user:user",
          numBuckets: 30,
          embeddingDim: 4,
        },
      },
      {
        idFeature: {
          featureName: "item",
          expression: "item:item",
          numBuckets: 20,
          embeddingDim: 4,
        },
      },
      { rawFeature: { featureName: "price", expression: "item:price" } },
    ],
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: ["user", "item", "price"] }],
      mmoe: {
        expertMlp: { hiddenUnits: [8, 6], dropoutRatio: [0.2] },
        numExpert: 2,
        taskTowers: [
          { towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] },
          { towerName: "cvr", labelName: "buy", losses: [{ binaryCrossEntropy: {} }] },
        ],
      },
    },
    trainConfig: {
      denseOptimizer: { adamOptimizer: { lr } },
      sparseOptimizer: { adagradOptimizer: { lr: 0.05 } },
      logStepCountSteps: 1,
    },
    dataConfig: { batchSize: BATCH, shuffle: true, labelFields: ["clk", "buy"] },
  };
}

const CONFIG = resolveConfig(pipeline());

/** ROWS records with a planted signal; row i is located as `rows:i`. */
function records(): LocatedRecord[] {
  const next = rng(11);
  return Array.from({ length: ROWS }, (_, i) => {
    const user = Math.floor(next() * 30), item = Math.floor(next() * 20);
    const price = next() * 4 - 2;
    const clk = next() < 1 / (1 + Math.exp(-(user % 3 - 1 + price))) ? 1 : 0;
    const buy = clk && next() < 0.4 ? 1 : 0;
    return { record: { user, item, price, clk, buy }, location: `rows:${i}` };
  });
}

const ROWS_DATA = records();

/** The shuffled batches of epoch e, seeded from (seed, e) as examples/train.ts does. */
const epochBatches = (seed: number, data = ROWS_DATA) => (epoch: number) =>
  batchRecords(data, new FeatureEncoder(CONFIG), {
    batchSize: BATCH,
    shuffleBufferSize: 64,
    seed: seed + epoch,
  });

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Every parameter, buffer and optimizer state value, and the step. */
function snapshot(model: MMoEModel): { step: number; values: number[] } {
  const values: number[] = [];
  for (const t of [...model.parameters, ...model.optimizerState()]) {
    values.push(...model.view(t.offset, sizeOf(t.shape)));
  }
  return { step: model.step, values };
}

/** What a log record must reproduce: step, epoch and the losses. */
const trace = (logs: TrainLog[]) =>
  logs.map(({ step, epoch, total, losses }) => ({ step, epoch, total, losses }));

async function withTempDir(body: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "denorec-resume-"));
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Train options that save into `dir` as examples/train.ts does. */
function savingInto(dir: string, model: MMoEModel, seed: number): TrainOptions {
  return {
    onCheckpoint: async (position) => {
      await saveTrainingCheckpoint(dir, model, { position, seed });
    },
  };
}

/** A fresh model restored from the latest checkpoint of `dir`, and where to start. */
async function resume(dir: string, config = CONFIG) {
  const latest = await latestCheckpoint(dir);
  assert.ok(latest, "a checkpoint to resume");
  const { training } = await readCheckpointState(latest);
  assert.ok(training);
  const model = new MMoEModel(config, { maxBatch: BATCH, seed: training.seed });
  await restoreCheckpoint(model, latest);
  return { model, start: training.position, latest };
}

test("resume: a run killed after a checkpoint and resumed is the uninterrupted run, bit for bit", async () => {
  const seed = 3;
  const whole = new MMoEModel(CONFIG, { maxBatch: BATCH, seed });
  const uninterrupted = await train(whole, epochBatches(seed), { numSteps: 40 });
  assert.equal(whole.step, 40);
  assert.deepEqual(
    [...new Set(uninterrupted.logs.map((l) => l.epoch))],
    [1, 2, 3, 4],
    "40 steps of 13-batch epochs",
  );

  await withTempDir(async (dir) => {
    // Saves at tzrec's steps 5, 10, 15, 20 (after 6, 11, 16, 21 updates), then dies at step 23.
    const first = new MMoEModel(CONFIG, { maxBatch: BATCH, seed });
    const crash = new Error("killed");
    await assert.rejects(
      train(first, epochBatches(seed), {
        numSteps: 40,
        saveCheckpointsSteps: 5,
        ...savingInto(dir, first, seed),
        onLog: (log) => {
          if (log.step === 23) throw crash;
        },
      }),
      crash,
    );
    const { model, start, latest } = await resume(dir);
    assert.equal(latest, join(dir, "model.ckpt-20"));
    assert.equal(model.step, 21);
    assert.deepEqual(start, { epoch: 2, batchesInEpoch: 8 }); // 21 = 13 + 8
    const resumed = await train(model, epochBatches(seed), {
      numSteps: 40,
      start,
      ...savingInto(dir, model, seed),
    });
    assert.equal(resumed.steps, 19);
    assert.deepEqual(trace(resumed.logs), trace(uninterrupted.logs.slice(21)));
    assert.deepEqual(snapshot(model), snapshot(whole));
    assert.deepEqual(resumed.position, uninterrupted.position);

    // The seed matters (dropout masks): restored into a model of another seed,
    // the next step differs.
    const other = new MMoEModel(CONFIG, { maxBatch: BATCH, seed: seed + 1 });
    await restoreCheckpoint(other, latest);
    const step = await train(other, epochBatches(seed), { numSteps: 22, start });
    assert.notEqual(step.logs[0].total, uninterrupted.logs[21].total);
  });
});

test("resume: num_steps is a total, and the epoch counter continues", async () => {
  const seed = 4;
  await withTempDir(async (dir) => {
    const first = new MMoEModel(CONFIG, { maxBatch: BATCH, seed });
    await train(first, epochBatches(seed), { numSteps: 30, ...savingInto(dir, first, seed) });
    assert.deepEqual(await readdir(dir), ["model.ckpt-29"]);

    const { model, start } = await resume(dir);
    assert.deepEqual(start, { epoch: 3, batchesInEpoch: 4 }); // 30 = 2 x 13 + 4
    const more = await train(model, epochBatches(seed), {
      numSteps: 40,
      start,
      ...savingInto(dir, model, seed),
    });
    assert.equal(more.steps, 10);
    assert.equal(model.step, 40);
    assert.deepEqual(more.logs.map((l) => [l.step, l.epoch]), [
      ...Array.from({ length: 9 }, (_, i) => [31 + i, 3]),
      [40, 4],
    ]);
    assert.deepEqual((await readdir(dir)).sort(), ["model.ckpt-29", "model.ckpt-39"]);

    // At its total already: nothing to train and nothing saved again.
    const again = await resume(dir);
    let saves = 0;
    const none = await train(again.model, epochBatches(seed), {
      numSteps: 40,
      start: again.start,
      onCheckpoint: () => void saves++,
    });
    assert.deepEqual([none.steps, saves, again.model.step], [0, 0, 40]);
  });
});

test("resume: epochs too: a checkpoint at an epoch end resumes at the next epoch", async () => {
  const seed = 5;
  const whole = new MMoEModel(CONFIG, { maxBatch: BATCH, seed });
  const uninterrupted = await train(whole, epochBatches(seed), { numEpochs: 3 });
  await withTempDir(async (dir) => {
    const first = new MMoEModel(CONFIG, { maxBatch: BATCH, seed });
    const ended: number[] = [];
    await train(first, epochBatches(seed), {
      numEpochs: 2,
      saveCheckpointsEpochs: 1,
      onEpochEnd: (epoch) => void ended.push(epoch),
      ...savingInto(dir, first, seed),
    });
    assert.deepEqual(ended, [1, 2]);
    assert.deepEqual((await readdir(dir)).sort(), ["model.ckpt-12", "model.ckpt-25"]);
    const { model, start } = await resume(dir);
    assert.deepEqual(start, { epoch: 3, batchesInEpoch: 0 });
    const third = await train(model, epochBatches(seed), { numEpochs: 3, start });
    assert.equal(third.steps, 13);
    assert.deepEqual(trace(third.logs), trace(uninterrupted.logs.slice(26)));
    assert.deepEqual(snapshot(model), snapshot(whole));
  });
});

test("resume: a position past the end of the data is refused", async () => {
  const model = new MMoEModel(CONFIG, { maxBatch: BATCH, seed: 1 });
  await assert.rejects(
    train(model, epochBatches(1, ROWS_DATA.slice(0, 40)), {
      numSteps: 10,
      start: { epoch: 2, batchesInEpoch: 5 },
    }),
    /resuming at batch 5 of epoch 2, but that epoch of the training data has only 3 batches/,
  );
  await assert.rejects(
    train(model, () => [], { numSteps: 10 }),
    /epoch 1 of the training data is empty/,
  );
  assert.equal(model.step, 0);
});

// ------------------------------------------------------------------ NaN stop

/** Parameters (not BatchNorm statistics) and optimizer state. */
function trained(model: MMoEModel): number[] {
  const values: number[] = [];
  for (
    const t of [...model.parameters.filter((p) => p.kind !== "buffer"), ...model.optimizerState()]
  ) {
    values.push(...model.view(t.offset, sizeOf(t.shape)));
  }
  return values;
}

test("NaN stop: lr 1e30 stops at the first non-finite step before updating", async () => {
  const model = new MMoEModel(resolveConfig(pipeline(1e30)), { maxBatch: BATCH, seed: 2 });
  const logs: TrainLog[] = [];
  let lastGood: number[] = [];
  const error = await train(model, epochBatches(2), {
    numSteps: 20,
    onLog: (log) => {
      logs.push(log);
      lastGood = trained(model);
    },
  }).catch((e) => e);
  assert.ok(error instanceof DivergedError, String(error));
  assert.ok(logs.length > 0 && logs.every((l) => Number.isFinite(l.total)));
  assert.equal(error.step, logs.length + 1); // the first step whose loss is not finite
  assert.equal(model.step, logs.length);
  assert.match(
    error.message,
    new RegExp(
      `^step ${error.step} \\(epoch 1\\): training diverged: the loss is NaN \\(binary_cross_entropy_ctr NaN, ` +
        "binary_cross_entropy_cvr NaN\\), so the parameters were not updated; lower the learning " +
        "rate \\(dense adam lr 1e\\+30, sparse adagrad lr 0\\.05\\) or check the inputs",
    ),
  );
  assert.deepEqual(trained(model), lastGood);
});

test("NaN stop: a diverging resumed run saves nothing, the last good checkpoint stays the latest", async () => {
  const seed = 6;
  await withTempDir(async (dir) => {
    const good = new MMoEModel(CONFIG, { maxBatch: BATCH, seed });
    await train(good, epochBatches(seed), {
      numSteps: 8,
      saveCheckpointsSteps: 2,
      ...savingInto(dir, good, seed),
    });
    const before = (await readdir(dir)).sort();
    assert.deepEqual(before, ["model.ckpt-2", "model.ckpt-4", "model.ckpt-6", "model.ckpt-7"]);

    // The same run continued with lr 1e30: step 9's update gives finite but
    // huge weights; the model after it is checked before its save is written.
    const diverging = resolveConfig(pipeline(1e30));
    const { model, start } = await resume(dir, diverging);
    const error = await train(model, epochBatches(seed), {
      numSteps: 20,
      saveCheckpointsSteps: 2,
      start,
      ...savingInto(dir, model, seed),
    }).catch((e) => e);
    assert.ok(error instanceof DivergedError, String(error));
    assert.ok(error.step === 9 || error.step === 10, error.message);
    assert.match(
      error.message,
      /training diverged: (after its update .* so it was not saved|the loss is NaN)/,
    );
    assert.deepEqual((await readdir(dir)).sort(), before); // no new directory, no temporary
    const restored = new MMoEModel(CONFIG, { maxBatch: BATCH, seed });
    await restoreCheckpoint(restored, (await latestCheckpoint(dir))!);
    assert.deepEqual(snapshot(restored), snapshot(good));
  });
});

test("NaN inputs never reach the parameters: labels and dense values are refused at the model, raw values at the encoder", async () => {
  const model = new MMoEModel(CONFIG, { maxBatch: BATCH, seed: 7 });
  const encoder = new FeatureEncoder(CONFIG);
  const batch = encoder.encode(ROWS_DATA.slice(0, BATCH));
  model.trainStep(batch);
  const before = snapshot(model);

  const nanLabel = {
    ...batch,
    columns: { ...batch.columns, clk: batch.columns.clk.map((v, i) => i === 3 ? NaN : v) },
  };
  assert.throws(() => model.trainStep(nanLabel), /^RangeError: column "clk": row 3 is NaN/);
  const poisoned = encoder.encode(ROWS_DATA.slice(0, BATCH));
  for (const f of poisoned.features) if ("values" in f) f.values[2] = Infinity;
  assert.throws(() => model.trainStep(poisoned), /^RangeError: .*row \d+ .*Infinity/);
  assert.deepEqual(snapshot(model), before);

  const infinite = ROWS_DATA.map((r, i) =>
    i === 20 ? { ...r, record: { ...r.record, price: "Infinity" } } : r
  );
  await assert.rejects(
    train(model, () => batchRecords(infinite, encoder, { batchSize: BATCH }), { numSteps: 5 }),
    /rows:20: column 'price': value is not a finite float32/,
  );
});

test("config: save_checkpoints_steps, save_checkpoints_epochs and keep_checkpoint_max are read with tzrec's defaults", () => {
  const text = (train: string) => `
    train_config { ${train} }
    feature_configs { raw_feature { feature_name: "x" expression: "item:x" } }
    model_config {
      feature_groups { group_name: "all" feature_names: "x" group_type: DEEP }
      mmoe {
        expert_mlp { hidden_units: [4] }
        num_expert: 2
        task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
      }
    }`;
  const defaults = resolveConfig(parsePipelineConfig(text("num_steps: 5"))).train;
  assert.deepEqual(
    [defaults.saveCheckpointsSteps, defaults.saveCheckpointsEpochs, defaults.keepCheckpointMax],
    [1000, 0, 0],
  );
  const set = resolveConfig(parsePipelineConfig(
    text(
      "num_steps: 5 save_checkpoints_steps: 50 save_checkpoints_epochs: 2 keep_checkpoint_max: 3",
    ),
  )).train;
  assert.deepEqual(
    [set.saveCheckpointsSteps, set.saveCheckpointsEpochs, set.keepCheckpointMax],
    [50, 2, 3],
  );
});

// -------------------------------------------------------------- examples/train.ts

const ROOT = new URL("..", import.meta.url).pathname;
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

/** Runs examples/train.ts with `args`; returns its exit status and output. */
function runTrain(args: string[]) {
  const script = join(ROOT, "examples/train.ts");
  const result = spawnSync(
    process.execPath,
    isDeno ? ["run", "-A", script, ...args] : [script, ...args],
    {
      encoding: "utf8",
      cwd: ROOT,
      timeout: 240_000,
    },
  );
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/**
 * The small Taobao test config with 1000-row tables (ids clamped), shuffled
 * input, `train` as its train_config counters and the dense learning rate `lr`.
 */
function cliConfig(dir: string, name: string, train: string, lr = "0.003"): string {
  const text = readFileSync(join(ROOT, "configs/mmoe_taobao_small.config"), "utf8")
    .replace(/num_buckets: \d{4,}/g, "num_buckets: 1000")
    .replace("    num_epochs: 1\n", `    ${train}\n`)
    .replace("lr: 0.003", `lr: ${lr}`)
    .replace('    label_fields: "clk"', '    shuffle: true\n    label_fields: "clk"');
  assert.ok(text.includes(train) && text.includes("shuffle: true") && text.includes(`lr: ${lr}`));
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test("train.ts: a run resumed with --continue_train writes the uninterrupted run's model, byte for byte", async () => {
  await withTempDir((dir) => {
    const data = [
      "--train_input_path",
      join(dir, "train.csv"),
      "--eval_input_path",
      join(dir, "eval.csv"),
      "--train_rows",
      "3000",
      "--eval_rows",
      "500",
      "--batch_size",
      "128", // 24 batches an epoch
      "--clamp_out_of_range",
    ];
    const steps30 = cliConfig(dir, "30.config", "num_steps: 30\n    save_checkpoints_steps: 10");
    const steps50 = cliConfig(dir, "50.config", "num_steps: 50\n    save_checkpoints_steps: 10");
    const resumed = join(dir, "resumed"), whole = join(dir, "whole");
    const run = (config: string, modelDir: string, ...more: string[]) => {
      const result = runTrain([
        "--pipeline_config_path",
        config,
        "--model_dir",
        modelDir,
        ...data,
        ...more,
      ]);
      assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
      return result.stdout;
    };
    run(steps30, resumed);
    assert.deepEqual(
      readdirSync(resumed).filter((e) => e.startsWith("model.ckpt")).sort(),
      ["model.ckpt-10", "model.ckpt-20", "model.ckpt-29"],
    );
    const second = run(steps50, resumed, "--continue_train");
    assert.match(second, /continuing from .*model\.ckpt-29 at step 30 \(epoch 2, batch 6\)/);
    assert.match(second, /trained 2488 samples in 20 steps/); // 18 batches of epoch 2 (one of 56 rows), 2 of epoch 3
    run(steps50, whole);
    assert.deepEqual(
      readFileSync(join(resumed, "model.safetensors")),
      readFileSync(join(whole, "model.safetensors")),
    );
    assert.equal(
      readFileSync(join(resumed, "train_eval_result.txt"), "utf8"),
      readFileSync(join(whole, "train_eval_result.txt"), "utf8"),
    );

    // Without --continue_train a model_dir with a checkpoint is refused (tzrec), and a
    // resumed run keeps its seed.
    const again = runTrain(["--pipeline_config_path", steps50, "--model_dir", resumed, ...data]);
    assert.notEqual(again.status, 0);
    assert.match(
      again.stderr,
      /--model_dir .*resumed already holds a checkpoint \(.*model\.ckpt-49\): pass --continue_train/,
    );
    const reseeded = runTrain([
      "--pipeline_config_path",
      steps50,
      "--model_dir",
      resumed,
      "--continue_train",
      "--seed",
      "9",
      ...data,
    ]);
    assert.notEqual(reseeded.status, 0);
    assert.match(
      reseeded.stderr,
      /--seed 9: .*model\.ckpt-49 was trained with seed 1; a resumed run keeps its seed/,
    );
  });
});

test("train.ts: --model_dir naming a file fails before any data is read or generated", async () => {
  await withTempDir((dir) => {
    const file = join(dir, "not_a_dir");
    writeFileSync(file, "");
    const result = runTrain([
      "--pipeline_config_path",
      cliConfig(dir, "c.config", "num_steps: 5"),
      "--model_dir",
      file,
      "--train_input_path",
      join(dir, "train.csv"),
      "--eval_input_path",
      join(dir, "eval.csv"),
    ]);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, new RegExp(`--model_dir ${file} is a file, not a directory`));
    assert.ok(!existsSync(join(dir, "train.csv")), "no data generated");
  });
});

test("train.ts: a diverging run exits 1 naming the step, and the latest checkpoint stays", async () => {
  await withTempDir((dir) => {
    const modelDir = join(dir, "model");
    const data = [
      "--model_dir",
      modelDir,
      "--train_input_path",
      join(dir, "train.csv"),
      "--eval_input_path",
      join(dir, "eval.csv"),
      "--train_rows",
      "2000",
      "--eval_rows",
      "300",
      "--batch_size",
      "128",
      "--clamp_out_of_range",
    ];
    const good = runTrain([
      "--pipeline_config_path",
      cliConfig(dir, "good.config", "num_steps: 12\n    save_checkpoints_steps: 5"),
      ...data,
    ]);
    assert.equal(good.status, 0, good.stderr);
    const before = readdirSync(modelDir).sort();
    const exported = readFileSync(join(modelDir, "model.safetensors"));
    const diverging = runTrain([
      "--pipeline_config_path",
      cliConfig(dir, "bad.config", "num_steps: 30\n    save_checkpoints_steps: 5", "1e30"),
      "--continue_train",
      ...data,
    ]);
    assert.equal(diverging.status, 1, diverging.stdout);
    assert.match(
      diverging.stderr,
      /step 1[34] \(epoch 1\): training diverged: .*lower the learning rate \(dense adam lr 1e\+30, sparse adagrad lr 0\.05\)/,
    );
    assert.match(diverging.stderr, /The latest checkpoint is .*model\.ckpt-11/);
    assert.deepEqual(readdirSync(modelDir).sort(), before);
    assert.deepEqual(readFileSync(join(modelDir, "model.safetensors")), exported);
  });
});

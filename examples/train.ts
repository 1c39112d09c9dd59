/**
 * Train and evaluate an MMoE from a tzrec pipeline config, like
 * `python -m tzrec.train_eval`:
 *
 *   deno run -A examples/train.ts \
 *     [--pipeline_config_path configs/mmoe_taobao.config] \
 *     [--train_input_path data/taobao_train.csv] [--eval_input_path data/taobao_eval.csv] \
 *     [--model_dir experiments/mmoe_taobao] [--continue_train] [--num_epochs N]
 *
 * Flags override the config, as in tzrec (plus `--batch_size`,
 * `--skip_bad_rows` (count and skip malformed CSV rows instead of stopping),
 * `--clamp_out_of_range` (clamp num_buckets ids into range and report counts),
 * and `--train_rows`/`--eval_rows`/`--seed` for generated data). Inputs are
 * CSV, or Parquet when the path ends in `.parquet`. When neither
 * input file exists, Taobao-schema data is generated into those paths first
 * (src/synthetic.ts) and each task's AUC is printed next to the oracle AUC of
 * the generator's true probabilities. With no arguments at all it trains the
 * example config that way with batches of 1024 (the config says 8192: a
 * minute of training would be only ~25 steps).
 *
 * Runs under Deno (`deno run -A examples/train.ts`) and Bun
 * (`bun examples/train.ts`).
 *
 * Checkpoints follow tzrec: `<model_dir>/model.ckpt-<step>/` (model and
 * optimizer state, the position in the data and the seed) every
 * `save_checkpoints_steps` steps (or `save_checkpoints_epochs` epochs) and at
 * the end of training, the newest `keep_checkpoint_max` kept. `--continue_train`
 * resumes the latest one exactly where it stopped (shuffle included, and
 * `num_steps` counted as a total); without it a `<model_dir>` holding a
 * checkpoint is refused, as tzrec does (the no-argument demo instead replaces
 * an earlier demo run). A NaN or infinite loss stops training
 * with exit code 1 and saves nothing after the last good step.
 *
 * When training ends, before evaluating, `<model_dir>/model.safetensors` (the
 * trained parameters, read by eval.ts), `<model_dir>/pipeline.config` (the
 * config used) and `<model_dir>/serving_model.bin` (what serving needs: the
 * config as JSON and the parameters, f32; read by predict.ts and serve.ts;
 * `examples/export.ts --embeddings int8` rewrites it with int8 tables) are
 * written; then, like
 * tzrec, `<model_dir>/train_eval_result.txt` holds one JSON line with every
 * eval metric, and the report is `<model_dir>/report.html`.
 */
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  BinnedAuc,
  DivergedError,
  evaluate,
  latestCheckpoint,
  MMoEModel,
  modelCheckpoint,
  readCheckpointState,
  renderReport,
  resolveConfig,
  restoreCheckpoint,
  saveCheckpoint,
  saveTrainingCheckpoint,
  train,
  type TrainLog,
} from "@denorec/mmoe";
import {
  batchRecords,
  checkLocalPaths,
  csvReadOptions,
  FeatureEncoder,
  loadPipelineConfig,
  SERVING_FILE_NAME,
  servingArtifact,
  TAOBAO_COLUMNS,
  type TaobaoStats,
  toPipelineConfigText,
  writeTaobaoCsv,
} from "@denorec/mmoe";
import { checkColumns, exitOnErrors, parseFlags, records, status } from "./_cli.ts";

exitOnErrors();
const args = process.argv.slice(2);
const { flags } = parseFlags(args, {
  pipeline_config_path: { type: "string" },
  train_input_path: { type: "string" },
  eval_input_path: { type: "string" },
  model_dir: { type: "string" },
  continue_train: { type: "boolean" },
  num_epochs: { type: "integer" },
  batch_size: { type: "integer" },
  train_rows: { type: "integer", default: 300000 },
  eval_rows: { type: "integer", default: 50000 },
  seed: { type: "integer", min: 0 },
  skip_bad_rows: { type: "boolean" },
  clamp_out_of_range: { type: "boolean" },
});

const EXAMPLE_CONFIG = new URL("../configs/mmoe_taobao.config", import.meta.url).pathname;
/** What a run writes to its model_dir. */
const DEMO_OUTPUTS =
  /^(model\.ckpt-\d+|model\.safetensors|serving_model\.bin|pipeline\.config|train_eval_result\.txt|report\.html)$/;
const configPath = flags.pipeline_config_path ?? EXAMPLE_CONFIG;
const pipeline = await loadPipelineConfig(configPath);
if (flags.train_input_path) pipeline.trainInputPath = flags.train_input_path;
if (flags.eval_input_path) pipeline.evalInputPath = flags.eval_input_path;
if (flags.model_dir) pipeline.modelDir = flags.model_dir;
// With no arguments at all (the demo), train with batches of 1024 so that a
// minute of training is ~200 steps; the config's 8192 would give ~25.
const batchSizeFlag = flags.batch_size ?? (args.length === 0 ? 1024 : undefined);
if (batchSizeFlag) {
  pipeline.dataConfig = { ...pipeline.dataConfig, batchSize: batchSizeFlag };
}
if (flags.num_epochs) {
  pipeline.trainConfig = { ...pipeline.trainConfig, numEpochs: flags.num_epochs };
}
const config = resolveConfig(pipeline);
const { trainInputPath, evalInputPath, modelDir } = config.paths;
// An odps:// table stops the run here, before anything is generated or written.
checkLocalPaths([trainInputPath, evalInputPath]);

// model_dir is checked before anything else runs: a finished training must
// never fail on a directory it cannot write.
if (modelDir === "") {
  throw new Error("no model_dir: give --model_dir or set model_dir in the config");
}
if (existsSync(modelDir) && !statSync(modelDir).isDirectory()) {
  throw new Error(`--model_dir ${modelDir} is a file, not a directory`);
}
try {
  mkdirSync(modelDir, { recursive: true });
  accessSync(modelDir, constants.W_OK);
} catch (error) {
  throw new Error(`--model_dir ${modelDir} cannot be written: ${(error as Error).message}`);
}
// The demo (no arguments) starts over each time: it replaces what an earlier
// demo run wrote to its model_dir instead of refusing to overwrite it.
if (args.length === 0) {
  const earlier = readdirSync(modelDir).filter((name) => DEMO_OUTPUTS.test(name));
  for (const name of earlier) rmSync(join(modelDir, name), { recursive: true, force: true });
  if (earlier.length > 0) console.log(`replacing the earlier demo run in ${modelDir}`);
}
const latest = await latestCheckpoint(modelDir);
if (latest !== null && !flags.continue_train) {
  throw new Error(
    `--model_dir ${modelDir} already holds a checkpoint (${latest}): pass --continue_train to ` +
      "continue it, or give another --model_dir",
  );
}
// A resumed run keeps the seed it started with (model init, dropout, shuffle).
const saved = latest === null ? null : (await readCheckpointState(latest)).training;
const seed = saved?.seed ?? flags.seed ?? 1;
if (saved && flags.seed !== undefined && flags.seed !== saved.seed) {
  throw new Error(
    `--seed ${flags.seed}: ${latest} was trained with seed ${saved.seed}; ` +
      "a resumed run keeps its seed (drop --seed)",
  );
}

// Generated Taobao-schema data when neither input exists yet (the example
// config's columns; any config reading only those columns works).
let oracle: { train: TaobaoStats; eval: TaobaoStats } | null = null;
if (!existsSync(trainInputPath) && !existsSync(evalInputPath)) {
  const missing = new FeatureEncoder(config).requiredColumns.filter((c) =>
    !TAOBAO_COLUMNS.includes(c.column)
  );
  if (missing.length > 0) {
    throw new Error(
      `${trainInputPath} and ${evalInputPath} do not exist, and generated Taobao-schema data cannot stand in: ` +
        `no column ${missing.map((c) => `'${c.column}' (${c.neededBy})`).join(", ")}`,
    );
  }
  console.log(`${trainInputPath} and ${evalInputPath} do not exist: generating Taobao-schema data`);
  const started = performance.now();
  const train = writeTaobaoCsv(trainInputPath, { rows: flags.train_rows, seed: 1 });
  const evalStats = writeTaobaoCsv(evalInputPath, { rows: flags.eval_rows, seed: 2 });
  oracle = { train, eval: evalStats };
  console.log(
    `generated ${train.rows} train rows (${train.clicks} clicks, ${train.buys} buys) -> ${trainInputPath}, ` +
      `${evalStats.rows} eval rows -> ${evalInputPath} in ${
        ((performance.now() - started) / 1000).toFixed(1)
      } s`,
  );
}

// Check every needed column before training starts.
const encoder = new FeatureEncoder(config, {
  outOfRange: flags.clamp_out_of_range ? "clamp" : "error",
});
const csv = csvReadOptions(config);
await checkColumns([trainInputPath, evalInputPath], encoder, csv);
const input = (path: string) => records(path, csv, flags.skip_bad_rows);

const batchSize = config.data.batchSize;
const model = new MMoEModel(config, { maxBatch: batchSize, seed });
const start = saved?.position;
if (latest !== null) {
  await restoreCheckpoint(model, latest);
  console.log(
    `continuing from ${latest} at step ${model.step}` +
      (start ? ` (epoch ${start.epoch}, batch ${start.batchesInEpoch})` : ""),
  );
}

const logs: TrainLog[] = [];
// Rows to train when known (num_steps, or data generated here) give an ETA.
const totalSamples = config.train.numSteps > 0
  ? Math.max(0, config.train.numSteps - model.step) * batchSize
  : oracle
  ? oracle.train.rows * config.train.numEpochs
  : 0;
const onLog = (log: TrainLog) => {
  logs.push(log);
  const losses = Object.entries(log.losses).map(([k, v]) => `${k} ${v.toFixed(5)}`).join(", ");
  const eta = totalSamples > 0
    ? `, ETA ${
      Math.max(0, (totalSamples - log.samples) / (log.samples / log.elapsed)).toFixed(0)
    } s`
    : "";
  const line = `epoch ${log.epoch} step ${log.step}: ${losses}, ` +
    `${Math.round(log.samplesPerSecond)} samples/s, ${log.elapsed.toFixed(1)} s${eta}`;
  status(line);
};

let summary;
try {
  summary = await train(
    model,
    (epoch) =>
      batchRecords(input(trainInputPath), encoder, {
        batchSize,
        dropRemainder: config.data.dropRemainder,
        shuffleBufferSize: config.data.shuffle ? config.data.shuffleBufferSize * batchSize : 0,
        seed: seed + epoch, // the shuffle of epoch e: the same on a resumed run
      }),
    {
      onLog: (log) => onLog(log),
      logStepCountSteps: Math.min(config.train.logStepCountSteps, 10),
      start,
      onCheckpoint: async (position) => {
        const path = await saveTrainingCheckpoint(modelDir, model, {
          position,
          seed,
          keepCheckpointMax: config.train.keepCheckpointMax,
        });
        status(`saved ${path} (step ${model.step})`, true);
      },
    },
  );
} catch (error) {
  if (!(error instanceof DivergedError)) throw error;
  status("", true);
  const kept = await latestCheckpoint(modelDir);
  throw new Error(
    `${error.message}. ${kept ? `The latest checkpoint is ${kept}` : "No checkpoint was saved"}`,
    { cause: error },
  );
}
status("", true);
console.log(
  `trained ${summary.samples} samples in ${summary.steps} steps, ${summary.seconds.toFixed(1)} s ` +
    `(${Math.round(summary.samples / summary.seconds)} samples/s)`,
);

// The trained model for eval.ts, predict.ts and serve.ts, written before
// evaluating so that no evaluation error can lose it.
const exportPath = join(modelDir, "model.safetensors");
await saveCheckpoint(exportPath, modelCheckpoint(model));
writeFileSync(join(modelDir, "pipeline.config"), toPipelineConfigText(pipeline));
await saveCheckpoint(join(modelDir, SERVING_FILE_NAME), servingArtifact(model, pipeline));

// Evaluate: metrics, plus ROC curves and mean gate weights for the report.
const towers = config.towers;
const rocs = towers.map(() => new BinnedAuc(1000));
const gateSums = towers.map(() => new Float64Array(config.numExpert));
let evalRows = 0;
const evalStarted = performance.now();
const metrics = await evaluate(
  model,
  batchRecords(input(evalInputPath), encoder, { batchSize: config.data.evalBatchSize }),
  {
    onBatch: (outputs, batch) => {
      towers.forEach((t, i) => {
        if (t.losses[0].kind === "binary_cross_entropy") {
          rocs[i].update(
            outputs[`probs_${t.name}`],
            batch.columns[t.label].subarray(0, batch.size),
          );
        }
        const gate = model.gateWeights(i, batch.size);
        for (let j = 0; j < gate.length; j++) gateSums[i][j % config.numExpert] += gate[j];
      });
      evalRows += batch.size;
    },
  },
);
const evalSeconds = (performance.now() - evalStarted) / 1000;
console.log(`evaluated ${evalRows} rows in ${evalSeconds.toFixed(1)} s`);
for (const [name, value] of Object.entries(metrics)) {
  const task = name.replace(/^auc_/, "");
  const oracleAuc = oracle && name.startsWith("auc_")
    ? (task === "ctr" ? oracle.eval.aucCtr : task === "cvr" ? oracle.eval.aucCvr : NaN)
    : NaN;
  console.log(
    `  ${name.padEnd(28)} ${value.toFixed(6)}` +
      (Number.isFinite(oracleAuc)
        ? `   (oracle AUC of the true probabilities: ${oracleAuc.toFixed(4)})`
        : ""),
  );
}

writeFileSync(join(modelDir, "train_eval_result.txt"), JSON.stringify(metrics) + "\n");
const clamped = Object.entries(encoder.clampCounts).filter(([, n]) => n > 0);
if (clamped.length > 0) {
  console.log(`clamped out-of-range ids: ${clamped.map(([f, n]) => `${f} ${n}`).join(", ")}`);
}
const notes: Record<string, string> = {
  "train samples/s": String(Math.round(summary.samples / summary.seconds)),
  "steps": String(model.step),
};
if (oracle) {
  notes["oracle auc_ctr (eval)"] = oracle.eval.aucCtr.toFixed(4);
  notes["oracle auc_cvr (eval)"] = oracle.eval.aucCvr.toFixed(4);
}
writeFileSync(
  join(modelDir, "report.html"),
  renderReport({
    title: `MMoE ${modelDir}`,
    logs,
    evals: [{ step: model.step, metrics }],
    rocs: Object.fromEntries(towers.map((t, i) => [t.name, rocs[i].roc()])),
    gates: {
      towers: towers.map((t) => t.name),
      experts: config.numExpert,
      mean: gateSums.map((sums) => Array.from(sums, (s) => s / Math.max(1, evalRows))),
    },
    notes,
  }),
);
console.log(
  `wrote ${join(modelDir, "train_eval_result.txt")}, ${exportPath}, ${
    join(modelDir, SERVING_FILE_NAME)
  }, ${join(modelDir, "report.html")}`,
);
model.close(); // frees the GEMM workers

/**
 * Evaluate a trained model, like `python -m tzrec.eval`:
 *
 *   deno run -A examples/eval.ts --model_dir experiments/mmoe_taobao \
 *     [--pipeline_config_path <model_dir>/pipeline.config] [--eval_input_path data/taobao_eval.csv] \
 *     [--batch_size N] [--skip_bad_rows] [--clamp_out_of_range] [--debug]
 *
 * Loads `<model_dir>/model.safetensors`, evaluates every configured metric and
 * loss on the eval input (CSV, or Parquet by extension) and writes them as one
 * JSON line to `<model_dir>/eval_result.txt`. The input must hold every
 * column the model and its towers read (checked before any work);
 * `--skip_bad_rows` and `--clamp_out_of_range` work as in train.ts, so data
 * trained with clamping evaluates the same way. Errors are one line with
 * their file and line, exit code 1; `--debug` prints the stack.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import {
  batchRecords,
  csvReadOptions,
  evaluate,
  FeatureEncoder,
  loadCheckpoint,
  loadPipelineConfig,
  MMoEModel,
  readCheckpoint,
  resolveConfig,
} from "@denorec/mmoe";
import {
  checkColumns,
  exitOnErrors,
  parseFlags,
  progress,
  records,
  reportClamped,
  type SkipCounter,
  status,
} from "./_cli.ts";

exitOnErrors();
const { flags } = parseFlags(process.argv.slice(2), {
  pipeline_config_path: { type: "string" },
  eval_input_path: { type: "string" },
  model_dir: { type: "string" },
  batch_size: { type: "integer" },
  skip_bad_rows: { type: "boolean" },
  clamp_out_of_range: { type: "boolean" },
});
if (flags.model_dir === undefined && flags.pipeline_config_path === undefined) {
  throw new TypeError(
    "give --model_dir (holding pipeline.config and model.safetensors) or --pipeline_config_path",
  );
}
const pipeline = await loadPipelineConfig(
  flags.pipeline_config_path ?? join(flags.model_dir!, "pipeline.config"),
);
if (flags.eval_input_path) pipeline.evalInputPath = flags.eval_input_path;
if (flags.model_dir) pipeline.modelDir = flags.model_dir;
if (flags.batch_size !== undefined) {
  pipeline.dataConfig = { ...pipeline.dataConfig, evalBatchSize: flags.batch_size };
}
const config = resolveConfig(pipeline);
const { evalInputPath, modelDir } = config.paths;

const encoder = new FeatureEncoder(config, {
  outOfRange: flags.clamp_out_of_range ? "clamp" : "error",
});
await checkColumns([evalInputPath], encoder, csvReadOptions(config));
const model = new MMoEModel(config, { maxBatch: config.data.evalBatchSize, inference: true });
loadCheckpoint(model, await readCheckpoint(join(modelDir, "model.safetensors")), {
  withOptimizer: false,
});

let rows = 0;
const started = performance.now();
const counter: SkipCounter = { skipped: 0 };
const input = records(evalInputPath, csvReadOptions(config), flags.skip_bad_rows, counter);
const metrics = await evaluate(
  model,
  batchRecords(input, encoder, { batchSize: config.data.evalBatchSize }),
  {
    onBatch: (_, batch) => {
      rows += batch.size;
      progress(`evaluated ${rows} rows`);
    },
  },
);
model.close(); // frees the GEMM workers
const seconds = (performance.now() - started) / 1000;
status(
  `evaluated ${rows} rows in ${seconds.toFixed(1)} s (${Math.round(rows / seconds)} rows/s)`,
  true,
);
if (counter.skipped > 0) console.log(`skipped ${counter.skipped} bad rows (--skip_bad_rows)`);
reportClamped(encoder.clampCounts);
for (const [name, value] of Object.entries(metrics)) {
  console.log(`  ${name.padEnd(28)} ${value.toFixed(6)}`);
}
writeFileSync(join(modelDir, "eval_result.txt"), JSON.stringify(metrics) + "\n");
console.log(`wrote ${join(modelDir, "eval_result.txt")}`);

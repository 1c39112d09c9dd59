/**
 * Score a file with a trained model, like `python -m tzrec.predict`:
 *
 *   deno run -A examples/predict.ts --model_dir experiments/mmoe_taobao \
 *     --predict_input_path data/taobao_eval.csv --predict_output_path predictions.csv \
 *     [--reserved_columns user_id,adgroup_id,clk] [--output_columns probs_ctr,probs_cvr]
 *
 * Reads `<model_dir>/pipeline.config` and `<model_dir>/model.safetensors`,
 * streams the input (CSV, or Parquet by extension) through the model in
 * batches and writes the reserved input columns followed by the outputs
 * (`probs_<t>`, `logits_<t>`, ...; default every output) as CSV or Parquet
 * (by the output path's extension).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { writeCsv, writeParquet } from "../src/data/readers.ts";
import { Predictor } from "../src/serve/inference.ts";
import type { RawRecord } from "../src/core/records.ts";
import { records, status } from "./_cli.ts";

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    model_dir: { type: "string" },
    predict_input_path: { type: "string" },
    predict_output_path: { type: "string" },
    reserved_columns: { type: "string", default: "" },
    output_columns: { type: "string" },
    batch_size: { type: "string", default: "1024" },
    skip_bad_rows: { type: "boolean", default: false },
  },
});
for (const name of ["model_dir", "predict_input_path", "predict_output_path"] as const) {
  if (!flags[name]) throw new Error(`--${name} is required`);
}
const modelDir = flags.model_dir!;
const configPath = join(modelDir, "pipeline.config");
const pipeline = parsePipelineConfig(readFileSync(configPath, "utf8"), configPath);
const batchSize = Number(flags.batch_size);
const predictor = new Predictor(pipeline, readFileSync(join(modelDir, "model.safetensors")), {
  maxBatch: batchSize,
  unknownColumns: "ignore",
});
const reserved = flags.reserved_columns.split(",").filter((c) => c.length > 0);
const outputs = flags.output_columns
  ? flags.output_columns.split(",").filter((c) => c.length > 0)
  : [...predictor.outputs];
for (const name of outputs) {
  if (!predictor.outputs.includes(name)) {
    throw new Error(
      `--output_columns: the model has no output ${name} (it has ${predictor.outputs.join(", ")})`,
    );
  }
}

let scored = 0;
const started = performance.now();
async function* scoredRows(): AsyncGenerator<RawRecord> {
  let chunk: RawRecord[] = [];
  const flush = function* () {
    const result = predictor.predict(chunk);
    for (let i = 0; i < chunk.length; i++) {
      const row: RawRecord = {};
      for (const column of reserved) row[column] = chunk[i][column];
      for (const name of outputs) row[name] = result[name][i];
      yield row;
    }
    scored += chunk.length;
    status(`scored ${scored} rows`);
    chunk = [];
  };
  const delimiter = predictor.config.data.delimiter;
  for await (
    const { record } of records(flags.predict_input_path!, delimiter, flags.skip_bad_rows)
  ) {
    chunk.push(record);
    if (chunk.length === batchSize) yield* flush();
  }
  if (chunk.length > 0) yield* flush();
}

const path = flags.predict_output_path!;
const header = [...reserved, ...outputs];
const written = /\.(parquet|pq)$/i.test(path)
  ? await writeParquet(path, header, scoredRows())
  : await writeCsv(path, header, scoredRows());
const seconds = (performance.now() - started) / 1000;
status(
  `wrote ${written} rows to ${path} in ${seconds.toFixed(1)} s (${
    Math.round(written / seconds)
  } rows/s)`,
  true,
);

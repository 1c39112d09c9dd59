/**
 * Score a file with a trained model, like `python -m tzrec.predict`:
 *
 *   deno run -A examples/predict.ts --model_dir experiments/mmoe_taobao \
 *     --predict_input_path data/taobao_eval.csv --predict_output_path predictions.csv \
 *     [--reserved_columns user_id,adgroup_id,clk] [--output_columns probs_ctr,probs_cvr] \
 *     [--batch_size 1024] [--skip_bad_rows] [--clamp_out_of_range] [--debug]
 *
 * Reads the model's serving artifact `<model_dir>/serving_model.bin` (as
 * `examples/train.ts` and `examples/export.ts` write it, f32 or int8), or
 * `<model_dir>/pipeline.config` and `<model_dir>/model.safetensors` when
 * there is none (errors name the file), streams the input (CSV with the config's delimiter, or Parquet by
 * extension) through the model in batches and writes the reserved input
 * columns followed by the outputs (`probs_<t>`, `logits_<t>`, ...; default
 * every output) as CSV or Parquet (by the output path's extension).
 *
 * Before scoring, the input's header must hold every column the model reads
 * and every reserved column: a missing or renamed column is an error naming
 * it (a file with another delimiter reads as one giant column, and the error
 * says so). Rows may leave feature values empty (missing values). Bad rows
 * stop the run with their file line (`data.csv:1501: column 'user_id': ...`);
 * `--skip_bad_rows` skips malformed CSV rows instead (counted at the end:
 * then the output has fewer rows than the input, so reserve a key column),
 * `--clamp_out_of_range` clamps `num_buckets` ids into range as train.ts
 * does (counts printed). Errors are one line and exit code 1; `--debug`
 * prints the stack.
 *
 * @module
 */
import process from "node:process";
import {
  csvReadOptions,
  FeatureEncoder,
  type Predictor,
  type RawRecord,
  readModelDir,
  writeCsv,
  writeParquet,
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

/** What {@link predictFile} scores and writes. */
export interface PredictFileOptions {
  /** The model. */
  predictor: Predictor;
  /** CSV (the config's delimiter) or Parquet (`.parquet`/`.pq`) input. */
  inputPath: string;
  /** CSV or Parquet output, by extension; written atomically. */
  outputPath: string;
  /** Input columns copied to the output first. */
  reservedColumns?: readonly string[];
  /** Outputs written (default every one of `predictor.outputs`). */
  outputColumns?: readonly string[];
  /** Rows per model call (default 1024). */
  batchSize?: number;
  /** Skip malformed CSV rows instead of stopping. */
  skipBadRows?: boolean;
  /** Called after each batch with the rows scored so far. */
  onProgress?: (scored: number) => void;
}

/**
 * Scores `inputPath` into `outputPath` after checking its columns; resolves
 * to the rows written and skipped. Errors name the file and line.
 */
export async function predictFile(
  options: PredictFileOptions,
): Promise<{ written: number; skipped: number }> {
  const { predictor, inputPath, outputPath, skipBadRows = false, onProgress } = options;
  const reserved = options.reservedColumns ?? [];
  const outputs = options.outputColumns ?? predictor.outputs;
  const batchSize = options.batchSize ?? 1024;
  for (const name of outputs) {
    if (!predictor.outputs.includes(name)) {
      throw new TypeError(
        `--output_columns: the model has no output ${name} (it has ${
          predictor.outputs.join(", ")
        })`,
      );
    }
  }
  const header = [...reserved, ...outputs];
  const twice = header.find((name, i) => header.indexOf(name) !== i);
  if (twice !== undefined) {
    throw new TypeError(`column ${twice} is both reserved and an output, or given twice`);
  }
  const csv = csvReadOptions(predictor.config);
  await checkColumns(
    [inputPath],
    new FeatureEncoder(predictor.config, { labels: false }),
    csv,
    reserved.map((column) => ({ column, neededBy: "--reserved_columns" })),
  );

  const counter: SkipCounter = { skipped: 0 };
  let scored = 0;
  // An error of the input (a bad row) reaches the writer, which reports it as a failure to
  // write the output; it is the input's error that names the file and line.
  let inputError: unknown;
  async function* scoredRows(): AsyncGenerator<RawRecord> {
    try {
      yield* scoredInput();
    } catch (error) {
      inputError = error;
      throw error;
    }
  }
  async function* scoredInput(): AsyncGenerator<RawRecord> {
    let chunk: RawRecord[] = [];
    let locations: string[] = [];
    const flush = function* () {
      const result = predictor.predict(chunk, locations);
      for (let i = 0; i < chunk.length; i++) {
        const row: RawRecord = {};
        for (const column of reserved) row[column] = chunk[i][column];
        for (const name of outputs) row[name] = result[name][i];
        yield row;
      }
      scored += chunk.length;
      onProgress?.(scored);
      chunk = [];
      locations = [];
    };
    for await (const { record, location } of records(inputPath, csv, skipBadRows, counter)) {
      chunk.push(record);
      locations.push(location);
      if (chunk.length === batchSize) yield* flush();
    }
    if (chunk.length > 0) yield* flush();
  }
  try {
    const written = /\.(parquet|pq)$/i.test(outputPath)
      ? await writeParquet(outputPath, header, scoredRows())
      : await writeCsv(outputPath, header, scoredRows());
    return { written, skipped: counter.skipped };
  } catch (error) {
    throw inputError ?? error;
  }
}

if (import.meta.main) {
  exitOnErrors();
  const { flags } = parseFlags(process.argv.slice(2), {
    model_dir: { type: "string", required: true },
    predict_input_path: { type: "string", required: true },
    predict_output_path: { type: "string", required: true },
    reserved_columns: { type: "string", default: "" },
    output_columns: { type: "string" },
    batch_size: { type: "integer", default: 1024 },
    skip_bad_rows: { type: "boolean" },
    clamp_out_of_range: { type: "boolean" },
  });
  const predictor = await readModelDir(flags.model_dir, {
    maxBatch: flags.batch_size,
    unknownColumns: "ignore",
    outOfRange: flags.clamp_out_of_range ? "clamp" : "error",
  });
  const list = (text: string) => text.split(",").map((c) => c.trim()).filter((c) => c !== "");
  const started = performance.now();
  const { written, skipped } = await predictFile({
    predictor,
    inputPath: flags.predict_input_path,
    outputPath: flags.predict_output_path,
    reservedColumns: list(flags.reserved_columns),
    outputColumns: flags.output_columns === undefined ? undefined : list(flags.output_columns),
    batchSize: flags.batch_size,
    skipBadRows: flags.skip_bad_rows,
    onProgress: (scored) => progress(`scored ${scored} rows`),
  });
  const seconds = (performance.now() - started) / 1000;
  status(
    `wrote ${written} rows to ${flags.predict_output_path} in ${seconds.toFixed(1)} s (${
      Math.round(written / seconds)
    } rows/s)`,
    true,
  );
  if (skipped > 0) console.log(`skipped ${skipped} bad rows (--skip_bad_rows)`);
  reportClamped(predictor.clampCounts);
}

/**
 * Writes generated rows for any `pipeline.config` (src/data/generate.ts): the
 * columns and encodings of its `fg_mode`, labels for its towers from a
 * planted model, to smoke-test a config before its real data is at hand.
 * CSV (the config's delimiter; no header row for `with_header: false` with
 * `input_fields`) or Parquet for a `.parquet` path. Prints the label counts
 * and the oracle AUC a model can at best reach on the rows.
 *
 * Usage:
 *   deno run -A scripts/generate_data.ts --pipeline_config_path my.config \
 *     --output data/train.parquet --rows 100000 [--seed 1] [--world 0] [--vocabulary 100]
 *
 * Train and eval files share `--world` and differ in `--seed`. Runs under Bun
 * too; errors are one line with exit code 1, as in the example CLIs.
 */
import process from "node:process";
import { resolveConfig } from "../src/config/config.ts";
import { loadPipelineConfig } from "../src/config/config_text.ts";
import { writeGeneratedData } from "../src/data/generate.ts";
import { exitOnErrors, parseFlags } from "../examples/_cli.ts";

// The CLIs' conventions: every failure one line `error: ...`, exit code 1 (`--debug`: the stack).
exitOnErrors();
const { flags } = parseFlags(process.argv.slice(2), {
  pipeline_config_path: { type: "string", required: true },
  output: { type: "string", required: true },
  rows: { type: "integer", default: 10000 },
  seed: { type: "integer", default: 1, min: 0 },
  world: { type: "integer", default: 0, min: 0 },
  vocabulary: { type: "integer", default: 100 },
});
const config = resolveConfig(await loadPipelineConfig(flags.pipeline_config_path));
const stats = await writeGeneratedData(flags.output, config, {
  rows: flags.rows,
  seed: flags.seed,
  world: flags.world,
  vocabulary: flags.vocabulary,
});
console.log(`${flags.output}: ${stats.rows} rows (${config.data.fgMode})`);
for (const [tower, { positives, oracleAuc }] of Object.entries(stats.towers)) {
  const auc = Number.isNaN(oracleAuc) ? "" : `, oracle AUC ${oracleAuc.toFixed(3)}`;
  console.log(`  ${tower}: ${positives} positives${auc}`);
}

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
 * Train and eval files share `--world` and differ in `--seed`.
 */
import { parseArgs } from "node:util";
import { resolveConfig } from "../src/config/config.ts";
import { loadPipelineConfig } from "../src/config/config_text.ts";
import { writeGeneratedData } from "../src/data/generate.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    pipeline_config_path: { type: "string" },
    output: { type: "string" },
    rows: { type: "string", default: "10000" },
    seed: { type: "string", default: "1" },
    world: { type: "string", default: "0" },
    vocabulary: { type: "string", default: "100" },
  },
});
if (flags.pipeline_config_path === undefined || flags.output === undefined) {
  console.error(
    "usage: generate_data.ts --pipeline_config_path <config> --output <file.csv|file.parquet> " +
      "[--rows N] [--seed N] [--world N] [--vocabulary N]",
  );
  Deno.exit(2);
}
try {
  const config = resolveConfig(await loadPipelineConfig(flags.pipeline_config_path));
  const stats = await writeGeneratedData(flags.output, config, {
    rows: Number(flags.rows),
    seed: Number(flags.seed),
    world: Number(flags.world),
    vocabulary: Number(flags.vocabulary),
  });
  console.log(`${flags.output}: ${stats.rows} rows (${config.data.fgMode})`);
  for (const [tower, { positives, oracleAuc }] of Object.entries(stats.towers)) {
    const auc = Number.isNaN(oracleAuc) ? "" : `, oracle AUC ${oracleAuc.toFixed(3)}`;
    console.log(`  ${tower}: ${positives} positives${auc}`);
  }
} catch (error) {
  console.error((error as Error).message);
  Deno.exit(1);
}

/**
 * Loads every `pipeline.config` of a TorchEasyRec checkout as it is
 * (`parsePipelineConfig` + `resolveConfig`) and prints, per config, its model
 * and whether it loads, or the one-line error that stops it, as a markdown
 * table; then the count per model family.
 *
 * Usage:
 *   deno run -A scripts/scan_tzrec_configs.ts [git dir] [--all]
 *
 * The git dir defaults to the mirror `/work/.mirror/alibaba+TorchEasyRec/repo`
 * (a bare repository: files are read with `git show HEAD:<path>`). Without
 * `--all` only ranking and multi-task configs are listed (tzrec's
 * `model_config` oneof fields 100-207 and 500), the models this library is
 * compared with.
 */
import { execFileSync } from "node:child_process";
import { resolveConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";

const RANK = [
  "dlrm",
  "deepfm",
  "multi_tower",
  "multi_tower_din",
  "mask_net",
  "wide_and_deep",
  "dcn_v1",
  "dcn_v2",
  "xdeepfm",
  "wukong",
  "rocket_launching",
];
const MULTI_TASK = [
  "simple_multi_task",
  "mmoe",
  "dbmtl",
  "ple",
  "dc2vr",
  "dlrm_hstu",
  "pepnet",
  "ultra_hstu",
];

const OTHER = [
  "dssm",
  "dssm_v2",
  "dat",
  "hstu_match",
  "mind",
  "tdm",
  "sid_rqvae",
  "sid_rqkmeans",
];
/** The model_config oneof member a config sets (the first at the start of a line). */
const MODEL = new RegExp(`^\\s+(${[...RANK, ...MULTI_TASK, ...OTHER].join("|")})\\s*\\{`, "m");

const args = Deno.args.filter((a) => !a.startsWith("--"));
const gitDir = args[0] ?? "/work/.mirror/alibaba+TorchEasyRec/repo";
const all = Deno.args.includes("--all");
const git = (...command: string[]) =>
  execFileSync("git", ["-C", gitDir, ...command], { encoding: "utf8", maxBuffer: 1 << 26 });

const commit = git("rev-parse", "HEAD").trim();
const paths = git("ls-tree", "-r", "--name-only", "HEAD").split("\n").filter((p) =>
  p.endsWith(".config")
);

interface Row {
  path: string;
  model: string;
  family: "rank" | "multi-task" | "other";
  result: string;
}

const rows: Row[] = [];
for (const path of paths) {
  const text = git("show", `HEAD:${path}`);
  const model = text.match(MODEL)?.[1] ?? "?";
  const family = RANK.includes(model)
    ? "rank"
    : MULTI_TASK.includes(model)
    ? "multi-task"
    : "other";
  if (!all && family === "other") continue;
  let result: string;
  try {
    resolveConfig(parsePipelineConfig(text, path));
    result = "loads";
  } catch (error) {
    result = (error as Error).message.split("\n")[0];
    if ((error as Error).message.includes("\n")) result += " (more lines!)";
  }
  rows.push({ path, model, family, result });
}

console.log(`tzrec ${commit}: ${rows.length} ${all ? "" : "ranking and multi-task "}configs\n`);
console.log("| config | model | result |");
console.log("| --- | --- | --- |");
for (const row of rows) {
  const result = row.result === "loads"
    ? "**loads**"
    : `\`${row.result.replace(`${row.path}:`, "")}\``;
  console.log(`| ${row.path} | ${row.model} | ${result} |`);
}
const loads = rows.filter((r) => r.result === "loads");
console.log(`\n${loads.length} of ${rows.length} load: ${loads.map((r) => r.path).join(", ")}`);
const reasons = new Map<string, number>();
for (const row of rows) {
  if (row.result === "loads") continue;
  const reason = row.result.replace(/^[^:]+:\d+:\d+: /, "").replace(/\[\d+\]/g, "[i]");
  reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
}
console.log("\nWhat stops the others (field path: reason, count):");
for (const [reason, count] of [...reasons].sort((a, b) => b[1] - a[1])) {
  console.log(`- ${count} x ${reason}`);
}

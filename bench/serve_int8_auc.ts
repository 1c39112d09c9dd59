/**
 * What int8 embedding tables cost in accuracy and buy in size and speed: a
 * trained model's f32 and int8 serving artifacts (`examples/export.ts`)
 * evaluated on the same eval rows, one after the other in one process.
 *
 *   deno task train    # the example config on generated data -> experiments/mmoe_taobao
 *   deno run -A bench/serve_int8_auc.ts [--model_dir experiments/mmoe_taobao]
 *       [--eval_input_path data/taobao_eval.csv] [--rounds 3]
 *
 * Prints, per artifact: its size, the config's eval metrics (`auc_ctr`,
 * `auc_cvr`, binned as tzrec's) and the exact rank AUCs, and the eval rows
 * scored per second (best of `--rounds`, the two alternating); then the
 * largest and mean |int8 - f32| of each probability and the AUC changes
 * (goal: |change| <= 0.0005).
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { loadPipelineConfig } from "../src/config/config_text.ts";
import { resolveConfig } from "../src/config/config.ts";
import { batchRecords, FeatureEncoder } from "../src/data/features.ts";
import { csvReadOptions, readRecords } from "../src/data/readers.ts";
import { loadCheckpoint, readCheckpoint } from "../src/io/checkpoint.ts";
import { servingArtifact, servingModel } from "../src/io/serving.ts";
import { MMoEModel } from "../src/model/mmoe.ts";
import { evaluate } from "../src/train/trainer.ts";
import { ExactAuc } from "../src/train/metrics.ts";
import type { EncodedBatch } from "../src/core/batch.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    model_dir: { type: "string", default: "experiments/mmoe_taobao" },
    eval_input_path: { type: "string", default: "data/taobao_eval.csv" },
    rounds: { type: "string", default: "3" },
  },
});
const rounds = Number(flags.rounds);

const pipeline = await loadPipelineConfig(join(flags.model_dir, "pipeline.config"));
const config = resolveConfig(pipeline);
const batchSize = config.data.evalBatchSize;
const trained = new MMoEModel(config, { maxBatch: 1, inference: true, initialize: false });
loadCheckpoint(trained, await readCheckpoint(join(flags.model_dir, "model.safetensors")));

const kinds = ["f32", "int8"] as const;
const artifacts = Object.fromEntries(
  kinds.map((embeddings) => [embeddings, servingArtifact(trained, pipeline, { embeddings })]),
) as Record<(typeof kinds)[number], Uint8Array>;
const models = Object.fromEntries(
  kinds.map((k) => [k, servingModel(artifacts[k], { maxBatch: batchSize, threads: 1 })]),
) as Record<(typeof kinds)[number], MMoEModel>;

// The eval rows, encoded once.
const encoder = new FeatureEncoder(config);
const batches: EncodedBatch[] = [];
for await (
  const batch of batchRecords(
    readRecords(flags.eval_input_path, csvReadOptions(config)),
    encoder,
    { batchSize },
  )
) batches.push(batch);
const rows = batches.reduce((n, b) => n + b.size, 0);
async function* replay() {
  yield* batches;
}

const towers = config.towers.map((t) => t.name);
const results: Record<string, { metrics: Record<string, number>; probs: Float32Array[] }> = {};
for (const kind of kinds) {
  const probs = towers.map(() => new Float32Array(rows));
  const exact = towers.map(() => new ExactAuc());
  let at = 0;
  const metrics = await evaluate(models[kind], replay(), {
    onBatch: (outputs, batch) => {
      towers.forEach((t, i) => {
        probs[i].set(outputs[`probs_${t}`], at);
        exact[i].update(
          outputs[`probs_${t}`],
          batch.columns[config.towers[i].label].subarray(0, batch.size),
        );
      });
      at += batch.size;
    },
  });
  towers.forEach((t, i) => metrics[`exact_auc_${t}`] = exact[i].compute());
  results[kind] = { metrics, probs };
}

// Throughput: forward passes over the encoded rows, alternating.
const seconds: Record<string, number> = { f32: Infinity, int8: Infinity };
for (let r = 0; r < rounds; r++) {
  for (const kind of r % 2 === 0 ? kinds : [...kinds].reverse()) {
    const started = performance.now();
    for (const batch of batches) models[kind].predict(batch);
    seconds[kind] = Math.min(seconds[kind], (performance.now() - started) / 1000);
  }
}

console.log(
  `model: ${flags.model_dir}, eval rows: ${rows} (${flags.eval_input_path}), batch ${batchSize}`,
);
const names = Object.keys(results.f32.metrics).filter((m) => /auc/.test(m));
console.log(`| tables | artifact MB | ${names.join(" | ")} | rows/s |`);
console.log(`|---|---:|${names.map(() => "---:").join("|")}|---:|`);
for (const kind of kinds) {
  console.log(
    `| ${kind} | ${(artifacts[kind].length / 1e6).toFixed(1)} | ${
      names.map((m) => results[kind].metrics[m].toFixed(6)).join(" | ")
    } | ${Math.round(rows / seconds[kind])} |`,
  );
}
console.log(
  `| int8 - f32 | ${((artifacts.int8.length - artifacts.f32.length) / 1e6).toFixed(1)} | ${
    names.map((m) => (results.int8.metrics[m] - results.f32.metrics[m]).toFixed(6)).join(" | ")
  } | ${(seconds.f32 / seconds.int8).toFixed(2)}x |`,
);
towers.forEach((t, i) => {
  const a = results.f32.probs[i], b = results.int8.probs[i];
  let max = 0, sum = 0;
  for (let j = 0; j < rows; j++) {
    const d = Math.abs(a[j] - b[j]);
    max = Math.max(max, d);
    sum += d;
  }
  console.log(
    `probs_${t}: |int8 - f32| max ${max.toExponential(2)}, mean ${(sum / rows).toExponential(2)}`,
  );
});
const worst = Math.max(
  ...names.map((m) => Math.abs(results.int8.metrics[m] - results.f32.metrics[m])),
);
console.log(
  `goal: |AUC change| <= 0.0005: ${worst <= 0.0005 ? "yes" : "no"} (largest ${worst.toFixed(6)})`,
);

// Child process of tests/kill_save_test.ts: resumes the latest checkpoint of
// <dir> if there is one, then trains a model with a large embedding table and
// saves a training checkpoint and the exported model.safetensors after every
// step, printing `saved <step> <ms>` after each, until it is killed (or once,
// with --once).
//
//   deno run -A tests/_kill_save_child.ts <dir> <rows> [--once]
import process from "node:process";
import { join } from "node:path";
import { resolveConfig } from "../src/config/config.ts";
import {
  latestCheckpoint,
  modelCheckpoint,
  readCheckpointState,
  restoreCheckpoint,
  saveCheckpoint,
  saveTrainingCheckpoint,
} from "../src/io/checkpoint.ts";
import { MMoEModel } from "../src/model/mmoe.ts";

const [dir, rowsText, once] = process.argv.slice(2);
const rows = Number(rowsText);
const config = resolveConfig({
  featureConfigs: [
    {
      idFeature: {
        featureName: "user",
        expression: "user:user",
        numBuckets: rows,
        embeddingDim: 16,
      },
    },
    { rawFeature: { featureName: "price", expression: "item:price" } },
  ],
  modelConfig: {
    featureGroups: [{ groupName: "all", featureNames: ["user", "price"] }],
    mmoe: {
      expertMlp: { hiddenUnits: [16] },
      numExpert: 2,
      taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
    },
  },
});
const model = new MMoEModel(config, { maxBatch: 4, seed: 1, threads: 1 });
const latest = await latestCheckpoint(dir);
let position = { epoch: 1, batchesInEpoch: 0 };
if (latest !== null) {
  const state = await restoreCheckpoint(model, latest);
  position = state.training?.position ?? position;
  const again = await readCheckpointState(latest);
  if (again.step !== model.step) {
    throw new Error(`${latest}: header step ${again.step}, loaded ${model.step}`);
  }
}
const batch = {
  size: 4,
  features: [
    { ids: Int32Array.of(1, rows - 1, 7, rows >> 1), offsets: Int32Array.of(0, 1, 2, 3, 4) },
    { values: Float32Array.of(-1, 0, 1, 2) },
  ],
  columns: { clk: Float32Array.of(1, 0, 0, 1) },
};
do {
  model.trainStep(batch);
  position = { epoch: position.epoch, batchesInEpoch: position.batchesInEpoch + 1 };
  const started = performance.now();
  await saveTrainingCheckpoint(dir, model, { position, seed: 1, keepCheckpointMax: 2 });
  await saveCheckpoint(join(dir, "model.safetensors"), modelCheckpoint(model));
  console.log(`saved ${model.step} ${Math.round(performance.now() - started)}`);
} while (once !== "--once");
model.close();

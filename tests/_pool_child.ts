// Child process of tests/threads_test.ts. `leak <models>`: builds that many
// 2-thread models in a row, each trained one step (so its workers start) and
// then dropped without close(), and prints the resident set size in MB before
// and after, as `rss <before> <after> <live workers>`. `exit`: trains one
// 2-thread model, closes it and exits (the test reads stderr, which must stay
// empty).
//
//   deno run -A --v8-flags=--expose-gc tests/_pool_child.ts leak 200  |  bun tests/_pool_child.ts exit
import process from "node:process";
import { resolveConfig } from "../src/config/config.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";

const config = resolveConfig({
  featureConfigs: [
    {
      idFeature: {
        featureName: "user",
        expression: "user:user",
        numBuckets: 100,
        embeddingDim: 16,
      },
    },
  ],
  modelConfig: {
    featureGroups: [{ groupName: "all", featureNames: ["user"] }],
    mmoe: {
      expertMlp: { hiddenUnits: [64] },
      numExpert: 2,
      taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
    },
  },
});
const B = 512;
const batch: EncodedBatch = {
  size: B,
  features: [{
    ids: Int32Array.from({ length: B }, (_, b) => b % 100),
    offsets: Int32Array.from({ length: B + 1 }, (_, b) => b),
  }],
  columns: { clk: Float32Array.from({ length: B }, (_, b) => b % 2) },
};
const rss = () => Math.round(process.memoryUsage().rss / 2 ** 20);

const [mode, countText] = process.argv.slice(2);
if (mode === "leak") {
  const before = rss();
  for (let i = 0; i < Number(countText); i++) {
    const model = new MMoEModel(config, { maxBatch: B, seed: i, threads: 2 });
    await model.ready();
    model.trainStep(batch);
  }
  // Collect, then let the finalizers run (they are tasks after a collection).
  // When V8 collects on its own is a heuristic (the pools' memory lies mostly
  // outside the JS heap): left to it, the same run ended 150-600 MB up on
  // different days; the test is about what a collection releases.
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  const collect = g.gc ?? (g.Bun ? () => g.Bun!.gc(true) : undefined);
  if (!collect) throw new Error("leak: run with --v8-flags=--expose-gc (Deno) or under Bun");
  for (let i = 0; i < 20; i++) {
    collect();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  console.log(`rss ${before} ${rss()}`);
} else if (mode === "exit") {
  const model = new MMoEModel(config, { maxBatch: B, seed: 1, threads: 2 });
  await model.ready();
  model.trainStep(batch);
  model.close();
  console.log("closed");
} else {
  throw new Error(`usage: _pool_child.ts leak <models> | exit`);
}

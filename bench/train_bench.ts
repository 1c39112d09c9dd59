// Train-step and inference throughput of the Taobao-schema MMoE (F = 256,
// experts [512, 256, 128] x 3, towers [256, 128, 64] x 2, full vocabularies:
// 3.14M embedding rows x 16) on 1 and 2 threads (GEMM rows split across a
// Worker pool, src/threads.ts). `deno task bench:report bench/train_bench.ts`
// prints samples/s.
import { resolveConfig } from "../src/config/config.ts";
import { MMoEModel } from "../src/model/mmoe.ts";
import { randomTaobaoBatch, taobaoConfig } from "./taobao.ts";

for (const threads of [1, 2]) {
  for (const batchSize of [1024, 8192]) {
    const model = new MMoEModel(resolveConfig(taobaoConfig(batchSize)), {
      maxBatch: batchSize,
      seed: 1,
      threads,
    });
    await model.ready();
    const batches = Array.from({ length: 4 }, (_, i) => randomTaobaoBatch(batchSize, i + 1));
    let i = 0;
    Deno.bench({
      name: `train step batch ${batchSize}, ${threads} thread(s) [${batchSize} samples]`,
      group: `train batch ${batchSize}`,
      baseline: threads === 1,
      n: batchSize >= 8192 ? 8 : 30,
      warmup: 2,
      fn: () => {
        model.trainStep(batches[i++ % batches.length]);
      },
    });
    Deno.bench({
      name: `inference batch ${batchSize}, ${threads} thread(s) [${batchSize} samples]`,
      group: `inference batch ${batchSize}`,
      baseline: threads === 1,
      n: batchSize >= 8192 ? 10 : 40,
      warmup: 2,
      fn: () => {
        model.evalStep(batches[i++ % batches.length]);
      },
    });
    // Deno.bench runs after module evaluation; close the pool once it exits.
    globalThis.addEventListener("unload", () => model.close());
  }
}

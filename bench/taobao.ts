// The Taobao-schema MMoE of configs/mmoe_taobao.config (read from the file)
// and random batches with its vocabularies, for benchmarks.
import { readFileSync } from "node:fs";
import type { PipelineConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import type { EncodedBatch } from "../src/model/mmoe.ts";
import { mulberry32 } from "../src/core/random.ts";

const CONFIG_PATH = new URL("../configs/mmoe_taobao.config", import.meta.url).pathname;

/** The example config's model at full vocabulary sizes (F = 256) with a given batch size. */
export function taobaoConfig(batchSize: number): PipelineConfig {
  const config = parsePipelineConfig(readFileSync(CONFIG_PATH, "utf8"), CONFIG_PATH);
  config.dataConfig = { ...config.dataConfig, batchSize };
  return config;
}

/** Uniformly random ids within each feature's rows (one per feature per row) and labels. */
export function randomTaobaoBatch(size: number, seed: number): EncodedBatch {
  const random = mulberry32(seed);
  const config = taobaoConfig(size);
  const features = new Map(config.featureConfigs.map((f) => {
    const id = f.idFeature, raw = f.rawFeature;
    const rows = id ? (id.numBuckets ?? id.hashBucketSize ?? 0) : (raw!.boundaries!.length + 1);
    return [(id ?? raw)!.featureName, rows];
  }));
  const offsets = Int32Array.from({ length: size + 1 }, (_, i) => i);
  return {
    size,
    features: config.modelConfig.featureGroups[0].featureNames.map((name) => ({
      ids: Int32Array.from({ length: size }, () => Math.floor(random() * features.get(name)!)),
      offsets,
    })),
    columns: {
      clk: Float32Array.from({ length: size }, () => (random() < 0.05 ? 1 : 0)),
      buy: Float32Array.from({ length: size }, () => (random() < 0.003 ? 1 : 0)),
    },
  };
}

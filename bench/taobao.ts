// The Taobao-schema MMoE of configs/mmoe_taobao.config (read from the file)
// and random batches with its vocabularies, for benchmarks.
import { readFileSync } from "node:fs";
import type { PipelineConfig, ResolvedConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import type { EncodedBatch, SparseInput } from "../src/model/mmoe.ts";
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

/** `config` with every table capped at `cap` rows (null: as it is). */
export function capConfig(config: ResolvedConfig, cap: number | null): ResolvedConfig {
  if (cap === null) return config;
  return {
    ...config,
    tables: config.tables.map((t) => ({ ...t, rows: Math.min(t.rows, cap) })),
    features: config.features.map((f) => ({ ...f, rows: Math.min(f.rows, cap) })),
  };
}

/** Three random batches of `size` rows; ids taken modulo the (possibly capped) table sizes. */
export function makeBatches(config: ResolvedConfig, size: number): EncodedBatch[] {
  return Array.from({ length: 3 }, (_, i) => {
    const batch = randomTaobaoBatch(size, 100 * size + i + 1);
    config.features.forEach((f, j) => {
      const ids = (batch.features[j] as SparseInput).ids;
      const rows = config.tables[f.table].rows;
      for (let k = 0; k < ids.length; k++) ids[k] %= rows;
    });
    return batch;
  });
}

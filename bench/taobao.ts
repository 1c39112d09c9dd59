// The Taobao-schema MMoE of ../shared/configs/mmoe_taobao.config as a typed
// config (the .config file itself is read by the config-file reader), and
// random batches with its vocabularies, for benchmarks.
import type { PipelineConfig } from "../src/config.ts";
import type { EncodedBatch } from "../src/mmoe.ts";

const ID_FEATURES: [string, string, number][] = [
  ["user_id", "user", 1141730],
  ["cms_segid", "user", 98],
  ["cms_group_id", "user", 14],
  ["final_gender_code", "user", 3],
  ["age_level", "user", 8],
  ["pvalue_level", "user", 5],
  ["shopping_level", "user", 5],
  ["occupation", "user", 3],
  ["new_user_class_level", "user", 6],
  ["adgroup_id", "item", 846812],
  ["cate_id", "item", 12961],
  ["campaign_id", "item", 423438],
  ["customer", "item", 255877],
  ["brand", "item", 461498],
];
const GROUP = [
  "user_id",
  "cms_segid",
  "cms_group_id",
  "final_gender_code",
  "age_level",
  "pvalue_level",
  "shopping_level",
  "occupation",
  "new_user_class_level",
  "pid",
  "adgroup_id",
  "cate_id",
  "campaign_id",
  "customer",
  "brand",
  "price",
];
const PRICE_BOUNDARIES = 98;

/** The example config's model at full vocabulary sizes (F = 256). */
export function taobaoConfig(batchSize: number): PipelineConfig {
  return {
    featureConfigs: [
      ...ID_FEATURES.map(([name, side, buckets]) => ({
        idFeature: {
          featureName: name,
          expression: `${side}:${name}`,
          numBuckets: buckets,
          embeddingDim: 16,
        },
      })),
      {
        rawFeature: {
          featureName: "price",
          expression: "item:price",
          boundaries: Array.from({ length: PRICE_BOUNDARIES }, (_, i) => 1 + i * 10),
          embeddingDim: 16,
        },
      },
      {
        idFeature: {
          featureName: "pid",
          expression: "context:pid",
          hashBucketSize: 20,
          embeddingDim: 16,
        },
      },
    ],
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: GROUP }],
      mmoe: {
        expertMlp: { hiddenUnits: [512, 256, 128] },
        numExpert: 3,
        taskTowers: ["ctr", "cvr"].map((name, i) => ({
          towerName: name,
          labelName: i === 0 ? "clk" : "buy",
          mlp: { hiddenUnits: [256, 128, 64] },
          metrics: [{ auc: { thresholds: i === 0 ? 200 : 1000 } }],
          losses: [{ binaryCrossEntropy: {} }],
        })),
      },
    },
    trainConfig: {
      sparseOptimizer: { adagradOptimizer: { lr: 0.001 } },
      denseOptimizer: { adamOptimizer: { lr: 0.001 } },
    },
    dataConfig: { batchSize, labelFields: ["clk", "buy"] },
  };
}

/** Uniformly random ids (one per feature per row) and labels. */
export function randomTaobaoBatch(size: number, seed: number): EncodedBatch {
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const rows = new Map(ID_FEATURES.map(([name, , buckets]) => [name, buckets]));
  rows.set("pid", 20);
  rows.set("price", PRICE_BOUNDARIES + 1);
  const offsets = Int32Array.from({ length: size + 1 }, (_, i) => i);
  return {
    size,
    features: GROUP.map((name) => ({
      ids: Int32Array.from({ length: size }, () => Math.floor(random() * rows.get(name)!)),
      offsets,
    })),
    columns: {
      clk: Float32Array.from({ length: size }, () => (random() < 0.05 ? 1 : 0)),
      buy: Float32Array.from({ length: size }, () => (random() < 0.003 ? 1 : 0)),
    },
  };
}

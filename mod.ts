/**
 * denorec: TorchEasyRec's MMoE multi-task recommendation model for Deno, Bun
 * and the edge, with its math in WebAssembly SIMD kernels compiled from
 * AssemblyScript. Bring a tzrec `pipeline.config` as it is; get tzrec's
 * outputs (`logits_<t>`, `probs_<t>`), losses and metrics (`auc_<t>`, binned
 * like torchmetrics) and checkpoints with tzrec's state_dict names.
 *
 * | to                 | use                                                                             |
 * | ------------------ | ------------------------------------------------------------------------------- |
 * | read a config      | {@link loadPipelineConfig}, {@link parsePipelineConfig}, {@link resolveConfig}  |
 * | read data          | {@link readRecords}, {@link csvReadOptions}, {@link FeatureEncoder}, {@link batchRecords} |
 * | make data          | {@link writeGeneratedData} (any config's schema, a planted signal), {@link writeTaobaoCsv} (Taobao-like, known oracle AUC) |
 * | train, evaluate    | {@link MMoEModel}, {@link train}, {@link evaluate}                              |
 * | checkpoint         | {@link saveTrainingCheckpoint}, {@link restoreCheckpoint}, {@link saveCheckpoint}, {@link loadCheckpoint} |
 * | serve              | {@link servingArtifact}, {@link readPredictor}, {@link Predictor}, {@link createHandler}, {@link loadPredictor} |
 * | export             | {@link exportOnnx}, {@link onnxFeeds}                                           |
 * | report             | {@link renderReport}                                                            |
 *
 * The kernels themselves (GEMM, activations, gating, losses, embeddings,
 * optimizers over byte offsets of a Wasm memory) are the `./kernels` export.
 *
 * @example Train a tiny MMoE from a tzrec config and evaluate it
 * ```ts
 * import assert from "node:assert/strict";
 * import {
 *   batchRecords,
 *   evaluate,
 *   FeatureEncoder,
 *   MMoEModel,
 *   parsePipelineConfig,
 *   resolveConfig,
 *   train,
 * } from "@denorec/mmoe";
 *
 * const config = resolveConfig(parsePipelineConfig(`
 *   train_config {
 *     num_epochs: 10
 *     sparse_optimizer { adagrad_optimizer { lr: 0.1 } }
 *     dense_optimizer { adam_optimizer { lr: 0.01 } }
 *   }
 *   data_config { batch_size: 32 label_fields: "clk" fg_mode: FG_DAG }
 *   feature_configs {
 *     id_feature { feature_name: "item" expression: "item:item" num_buckets: 10 embedding_dim: 4 }
 *   }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: "item" group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [8] }
 *       num_expert: 2
 *       task_towers {
 *         tower_name: "ctr" label_name: "clk"
 *         metrics { auc {} } losses { binary_cross_entropy {} }
 *       }
 *     }
 *   }
 * `));
 * // Items 0-4 are clicked, 5-9 are not.
 * const rows = Array.from({ length: 128 }, (_, i) => ({
 *   record: { item: i % 10, clk: i % 10 < 5 ? 1 : 0 },
 *   location: `row ${i}`,
 * }));
 * const encoder = new FeatureEncoder(config);
 * using model = new MMoEModel(config, { maxBatch: 32, seed: 1 });
 * await train(model, () => batchRecords(rows, encoder, { batchSize: 32 }));
 * const metrics = await evaluate(model, batchRecords(rows, encoder, { batchSize: 32 }));
 * assert.equal(metrics.auc_ctr, 1);
 * assert.ok(metrics.binary_cross_entropy_ctr < 0.3);
 * ```
 * @module
 */

// Config: tzrec's pipeline.config (protobuf text or typed objects).
export type * from "./src/config/types.ts";
export {
  ConfigError,
  ConfigTextError,
  type FeatureKind,
  LIMITS,
  type OptimizerConfig,
  type PipelineConfig,
  resolveConfig,
  type ResolvedConfig,
  type ResolvedFeature,
  type ResolvedLoss,
  type ResolvedMetric,
  type ResolvedMLP,
  type ResolvedOptimizer,
  type ResolvedTable,
  type ResolvedTower,
} from "./src/config/config.ts";
export {
  loadPipelineConfig,
  parsePipelineConfig,
  toPipelineConfigText,
} from "./src/config/config_text.ts";

// Data: records in, encoded batches out.
export type { LocatedRecord, RawRecord, RawValue } from "./src/core/records.ts";
export type { DenseInput, EncodedBatch, SparseInput } from "./src/core/batch.ts";
export {
  checkLocalPaths,
  type CsvReadOptions,
  csvReadOptions,
  type CsvWriteOptions,
  inputColumns,
  type ParquetColumnType,
  type ParquetReadOptions,
  type ParquetWriteOptions,
  readRecords,
  writeCsv,
  writeParquet,
} from "./src/data/readers.ts";
export {
  type BatchOptions,
  batchRecords,
  type EncoderOptions,
  FeatureEncoder,
  FeatureError,
  type RequiredColumn,
} from "./src/data/features.ts";
export { mulberry32 } from "./src/core/random.ts";
export {
  type GeneratedStats,
  type GenerateOptions,
  generateRows,
  writeGeneratedData,
} from "./src/data/generate.ts";
export {
  oracleAuc,
  TAOBAO_COLUMNS,
  type TaobaoOptions,
  type TaobaoRow,
  taobaoRows,
  type TaobaoStats,
  writeTaobaoCsv,
} from "./src/data/synthetic.ts";

// Model, training and metrics.
export {
  MMoEModel,
  type ModelOptions,
  type ParameterInfo,
  type StepLosses,
  type StepProfile,
} from "./src/model/mmoe.ts";
export type { Kernels, KernelVariant } from "./src/kernels/kernels.ts";
// The model's layout table (every tensor's name, shape, kind, dtype, init and offset).
export type * from "./src/model/layout.ts";
export {
  type BatchSource,
  DivergedError,
  evaluate,
  type EvaluateOptions,
  train,
  type TrainLog,
  type TrainOptions,
  type TrainSummary,
} from "./src/train/trainer.ts";
export {
  BinnedAuc,
  ExactAuc,
  GroupedAuc,
  type Metric,
  type RocCurve,
} from "./src/train/metrics.ts";
export { renderReport, type ReportData } from "./src/train/report.ts";

// Checkpoints (safetensors, tzrec's names and model.ckpt-<step> layout) and ONNX.
export {
  type CheckpointModel,
  type CheckpointOptions,
  type CheckpointState,
  type DecodedSafetensors,
  type DecodeOptions,
  decodeSafetensors,
  encodeSafetensors,
  latestCheckpoint,
  loadCheckpoint,
  type LoadCheckpointOptions,
  modelCheckpoint,
  type NamedTensor,
  readCheckpoint,
  readCheckpointState,
  restoreCheckpoint,
  saveCheckpoint,
  saveTrainingCheckpoint,
  type SaveTrainingOptions,
  type TrainingPosition,
  type TrainingState,
} from "./src/io/checkpoint.ts";
export { exportOnnx, type OnnxExportOptions, type OnnxFeed, onnxFeeds } from "./src/io/onnx.ts";

// Serving: artifacts (config JSON + the arena's parameter block, f32 or int8 tables) and predictors.
export {
  PredictError,
  type PredictErrorCode,
  Predictor,
  type PredictorOptions,
  readPredictor,
} from "./src/serve/inference.ts";
export { loadPredictor, readModelDir } from "./src/serve/load.ts";
export {
  decodeServingHeader,
  isServingArtifact,
  quantizeRowsInt8,
  SERVING_FILE_NAME,
  SERVING_FORMAT_VERSION,
  servingArtifact,
  type ServingHeader,
  type ServingOptions,
  type ServingTensor,
} from "./src/io/serving.ts";
export {
  createHandler,
  DEFAULT_LIMITS,
  type LoadedModel,
  type ServeLimits,
} from "./src/serve/handler.ts";

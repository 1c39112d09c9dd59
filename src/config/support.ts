/**
 * What this library runs of a tzrec `pipeline.config`: one table, by tzrec
 * message and field (tzrec's own names, `proto/tzrec/protos/`).
 *
 * A field of a message in this table is one of:
 *
 * - `"run"`: read and used, with tzrec's semantics and tzrec's default when
 *   unset (the `[default = ...]` of the proto);
 * - `"required"`: run, and a config without it is refused (the typed config
 *   of `schema.ts` makes it a required property);
 * - `"ignored"`: accepted with any value and dropped, because it tunes tzrec's
 *   GPU, logging, checkpoint cadence or MaxCompute machinery and changes no
 *   number this library computes (the note says why);
 * - a list of enum value names: run, for those values only;
 * - absent: not run. A config that sets it is refused as "not supported yet",
 *   unless it holds tzrec's default value (then it changes nothing); a
 *   message field is refused whenever it is present, since its presence
 *   switches a tzrec feature on.
 *
 * A message absent from the table is not run at all. `deno task proto`
 * generates the typed config, the defaults and the runtime schema
 * (`schema.ts`) from the protos and this table; `scripts/tzrec_support.ts`
 * prints the table of what runs for the README.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SUPPORT } from "./support.ts";
 * assert.equal(SUPPORT.IdFeature.weighted, "run");
 * assert.deepEqual(SUPPORT.FeatureGroupConfig.group_type, ["DEEP"]);
 * assert.equal(SUPPORT.IdFeature.zch, undefined); // not supported yet
 * ```
 * @module
 */

/** How this library treats one tzrec field; see the module doc. */
export type FieldSupport = "run" | "required" | "ignored" | readonly string[];

/** One field of a tzrec message, as the generated `SCHEMA` (`schema.ts`) lists it. */
export interface FieldSchema {
  /** tzrec's field name (`num_buckets`). */
  readonly name: string;
  /** The typed config's property (`numBuckets`). */
  readonly json: string;
  /** A proto scalar type (`uint64`, `string`, ...), `enum`, `message` or `map`. */
  readonly type: string;
  /** A repeated field. */
  readonly repeated?: boolean;
  /** The oneof it belongs to. */
  readonly oneof?: string;
  /** Its message type, when this table lists that message. */
  readonly message?: string;
  /** Enum value names. */
  readonly values?: readonly string[];
  /** tzrec's default of a singular scalar or enum (explicit, else proto2's zero value). */
  readonly fallback?: string | number | boolean;
  /** How this library treats it; absent: not run. */
  readonly support?: FieldSupport;
}

/** Every field of one tzrec message, in proto order. */
export type MessageSchema = readonly FieldSchema[];

const RUN = "run", REQUIRED = "required", IGNORED = "ignored";

/**
 * Every tzrec message this library reads, by message name (package
 * `tzrec.protos`), and how it treats each of its fields.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SUPPORT } from "./support.ts";
 * assert.equal(SUPPORT.MMoE.expert_mlp, "required");
 * ```
 */
export const SUPPORT: {
  readonly [message: string]: { readonly [field: string]: FieldSupport };
} = {
  EasyRecConfig: {
    train_input_path: RUN,
    eval_input_path: RUN,
    model_dir: RUN,
    train_config: RUN,
    eval_config: RUN,
    data_config: RUN,
    feature_configs: REQUIRED,
    model_config: REQUIRED,
  },
  TrainConfig: {
    sparse_optimizer: RUN,
    dense_optimizer: RUN,
    num_steps: RUN,
    num_epochs: RUN,
    log_step_count_steps: RUN,
    save_checkpoints_steps: RUN,
    save_checkpoints_epochs: RUN,
    keep_checkpoint_max: RUN,
    save_checkpoints_timestamp_interval: IGNORED,
    save_checkpoints_timestamps: IGNORED,
    save_checkpoints_timestamp_quorum: IGNORED,
    is_profiling: IGNORED,
    use_tensorboard: IGNORED,
    tensorboard_summaries: IGNORED,
    cudnn_allow_tf32: IGNORED,
    cuda_matmul_allow_tf32: IGNORED,
    global_embedding_constraints: IGNORED,
  },
  EvalConfig: {
    log_step_count_steps: IGNORED,
  },
  DataConfig: {
    batch_size: RUN,
    eval_batch_size: RUN,
    dataset_type: ["CsvDataset", "ParquetDataset", "OdpsDataset"],
    fg_mode: ["FG_NONE", "FG_NORMAL", "FG_DAG"],
    fg_encoded: RUN,
    fg_encoded_multival_sep: RUN,
    label_fields: RUN,
    sample_weight_fields: RUN,
    delimiter: RUN,
    with_header: RUN,
    input_fields: RUN,
    drop_remainder: RUN,
    shuffle: RUN,
    shuffle_buffer_size: RUN,
    num_workers: IGNORED,
    pin_memory: IGNORED,
    fg_threads: IGNORED,
    in_order: IGNORED,
    is_orderby_partition: IGNORED,
    odps_data_quota_name: IGNORED,
    odps_data_compression: IGNORED,
  },
  Field: {
    input_name: REQUIRED,
    input_type: IGNORED,
  },
  FeatureConfig: {
    id_feature: RUN,
    raw_feature: RUN,
  },
  IdFeature: {
    feature_name: REQUIRED,
    expression: RUN,
    embedding_name: RUN,
    embedding_dim: REQUIRED,
    hash_bucket_size: RUN,
    num_buckets: RUN,
    vocab_list: RUN,
    pooling: RUN,
    separator: RUN,
    weighted: RUN,
    fg_encoded_default_value: RUN,
    fg_value_type: IGNORED,
    embedding_constraints: IGNORED,
  },
  RawFeature: {
    feature_name: REQUIRED,
    expression: RUN,
    embedding_name: RUN,
    embedding_dim: RUN,
    boundaries: RUN,
    value_dim: RUN,
    pooling: RUN,
    separator: RUN,
    fg_encoded_default_value: RUN,
    embedding_constraints: IGNORED,
  },
  ModelConfig: {
    feature_groups: REQUIRED,
    mmoe: RUN,
    num_class: IGNORED,
    losses: IGNORED,
    metrics: IGNORED,
    kernel: IGNORED,
  },
  FeatureGroupConfig: {
    group_name: REQUIRED,
    feature_names: REQUIRED,
    group_type: ["DEEP"],
  },
  MMoE: {
    expert_mlp: REQUIRED,
    gate_mlp: RUN,
    num_expert: RUN,
    task_towers: REQUIRED,
  },
  MLP: {
    hidden_units: REQUIRED,
    dropout_ratio: RUN,
    activation: RUN,
    use_bn: RUN,
    bias: RUN,
    use_ln: RUN,
  },
  TaskTower: {
    tower_name: REQUIRED,
    label_name: REQUIRED,
    metrics: RUN,
    losses: REQUIRED,
    num_class: RUN,
    mlp: RUN,
    weight: RUN,
    sample_weight_name: RUN,
    task_space_indicator_label: RUN,
    in_task_space_weight: RUN,
    out_task_space_weight: RUN,
  },
  LossConfig: {
    binary_cross_entropy: RUN,
    softmax_cross_entropy: RUN,
    l2_loss: RUN,
  },
  BinaryCrossEntropy: { label_smoothing: RUN },
  SoftmaxCrossEntropy: { label_smoothing: RUN },
  L2Loss: {},
  MetricConfig: {
    auc: RUN,
    grouped_auc: RUN,
    mean_absolute_error: RUN,
    mean_squared_error: RUN,
    accuracy: RUN,
    exact_auc: RUN,
  },
  AUC: { thresholds: RUN },
  GroupedAUC: { grouping_key: REQUIRED },
  MeanAbsoluteError: {},
  MeanSquaredError: {},
  Accuracy: { threshold: RUN, top_k: RUN },
  ExactAUC: {},
  SparseOptimizer: {
    sgd_optimizer: RUN,
    adagrad_optimizer: RUN,
    adam_optimizer: RUN,
    constant_learning_rate: RUN,
    exponential_decay_learning_rate: RUN,
  },
  DenseOptimizer: {
    sgd_optimizer: RUN,
    adagrad_optimizer: RUN,
    adam_optimizer: RUN,
    constant_learning_rate: RUN,
    exponential_decay_learning_rate: RUN,
  },
  FusedSGDOptimizer: { lr: RUN, max_gradient: IGNORED },
  FusedAdagradOptimizer: { lr: RUN, initial_accumulator_value: RUN, max_gradient: IGNORED },
  FusedAdamOptimizer: {
    lr: RUN,
    beta1: RUN,
    beta2: RUN,
    weight_decay: RUN,
    max_gradient: IGNORED,
  },
  SGDOptimizer: { lr: RUN, momentum: RUN, weight_decay: RUN, dampening: RUN, nesterov: RUN },
  AdagradOptimizer: { lr: RUN, weight_decay: RUN, initial_accumulator_value: RUN, eps: RUN },
  AdamOptimizer: { lr: RUN, beta1: RUN, beta2: RUN, weight_decay: RUN, eps: RUN },
  ConstantLR: {},
  ExponentialDecayLR: {
    decay_size: REQUIRED,
    decay_factor: RUN,
    staircase: RUN,
    min_learning_rate: RUN,
  },
};

/**
 * Why a field is ignored, or what of it runs, by `Message.field`: shown in
 * the typed config's docs and in the support table of the README.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NOTES } from "./support.ts";
 * assert.match(NOTES["DataConfig.num_workers"], /reader/);
 * ```
 */
export const NOTES: { readonly [field: string]: string } = {
  "EasyRecConfig.train_input_path":
    "Local CSV or Parquet files (globs allowed); an `odps://` table must be exported to Parquet/CSV first.",
  "EasyRecConfig.eval_input_path": "As train_input_path.",
  "TrainConfig.num_steps":
    "Exactly one of num_epochs and num_steps, as tzrec asserts (`num_steps ^ num_epochs`); with only num_steps the data is cycled.",
  "TrainConfig.num_epochs":
    "Defaults to 1 when neither num_epochs nor num_steps is set (tzrec refuses to train then).",
  "TrainConfig.save_checkpoints_timestamp_interval": "Kafka event-time checkpoints.",
  "TrainConfig.save_checkpoints_timestamps": "Kafka event-time checkpoints.",
  "TrainConfig.save_checkpoints_timestamp_quorum": "Kafka event-time checkpoints.",
  "TrainConfig.is_profiling": "torch profiler.",
  "TrainConfig.use_tensorboard": "TensorBoard logging.",
  "TrainConfig.tensorboard_summaries": "TensorBoard logging.",
  "TrainConfig.cudnn_allow_tf32": "CUDA TF32 switch; the Wasm kernels compute in f32.",
  "TrainConfig.cuda_matmul_allow_tf32": "CUDA TF32 switch; the Wasm kernels compute in f32.",
  "TrainConfig.global_embedding_constraints": "Embedding sharding across GPUs.",
  "EvalConfig.log_step_count_steps": "Eval progress logging.",
  "DataConfig.dataset_type":
    "CsvDataset and ParquetDataset read local files; OdpsDataset is accepted when the input paths are local files (e.g. given by --train_input_path).",
  "DataConfig.fg_mode":
    "FG_NONE (tzrec's default): columns named by feature_name hold encoded values; FG_DAG and FG_NORMAL: columns named by the expression hold raw values, encoded here as pyfg does.",
  "DataConfig.fg_encoded":
    "Deprecated in tzrec: true is FG_NONE, false FG_DAG (fg_threads > 0) or FG_NORMAL.",
  "DataConfig.eval_batch_size": "Batch size of evaluation and prediction; default batch_size.",
  "DataConfig.shuffle_buffer_size": "In batches: tzrec shuffles the order of whole batches.",
  "DataConfig.with_header":
    "CSV: false (tzrec's default) with input_fields reads files without a header row.",
  "DataConfig.input_fields": "CSV column names when with_header is false.",
  "DataConfig.num_workers": "Parallel reader processes.",
  "DataConfig.pin_memory": "CUDA pinned memory.",
  "DataConfig.fg_threads": "pyfg threads.",
  "DataConfig.in_order": "Order of batches across reader processes (one reader here: in order).",
  "DataConfig.is_orderby_partition": "MaxCompute reader.",
  "DataConfig.odps_data_quota_name": "MaxCompute reader.",
  "DataConfig.odps_data_compression": "MaxCompute reader.",
  "Field.input_name": "Column name.",
  "Field.input_type":
    "pyarrow's parse type of a CSV column: here each cell is parsed by the feature that reads it.",
  "IdFeature.expression": "Required with FG_DAG/FG_NORMAL (`user:column` reads `column`).",
  "IdFeature.weighted":
    "`id:weight` values (FG_NONE: `4:2.3\\x035:2.4`; FG_DAG: `4:0.1\\x1d5:0.2`).",
  "IdFeature.fg_encoded_default_value": "FG_NONE: ids of a missing value.",
  "IdFeature.fg_value_type": "pyfg speed hint.",
  "IdFeature.embedding_constraints": "Embedding sharding across GPUs.",
  "RawFeature.expression": "Required with FG_DAG/FG_NORMAL.",
  "RawFeature.fg_encoded_default_value": "FG_NONE: values (or bucket) of a missing value.",
  "RawFeature.embedding_constraints": "Embedding sharding across GPUs.",
  "ModelConfig.mmoe": "The only model this library runs.",
  "ModelConfig.feature_groups":
    "MMoE reads one DEEP group (tzrec reads the first group and builds the others unused).",
  "ModelConfig.num_class": "tzrec's MMoE reads each task tower's num_class.",
  "ModelConfig.losses": "tzrec's MMoE reads each task tower's losses.",
  "ModelConfig.metrics": "tzrec's MMoE reads each task tower's metrics.",
  "ModelConfig.kernel": "Triton / CUTLASS GPU kernels.",
  "TaskTower.losses":
    "Any mix tzrec allows: binary_cross_entropy and l2_loss with num_class 1, softmax_cross_entropy with num_class > 1; each kind once.",
  "MetricConfig.exact_auc": "denorec's addition: exact (rank based) AUC.",
  "Accuracy.top_k": "1 only.",
  "GroupedAUC.grouping_key": "Any id feature or bucketized raw feature of feature_configs.",
  "FusedSGDOptimizer.max_gradient": "Read only with gradient_clipping, which is not supported.",
  "FusedAdagradOptimizer.max_gradient": "Read only with gradient_clipping, which is not supported.",
  "FusedAdamOptimizer.max_gradient": "Read only with gradient_clipping, which is not supported.",
};

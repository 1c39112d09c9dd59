/**
 * The typed tzrec pipeline config, checked once and resolved into the
 * {@link ResolvedConfig} that the model, trainer, feature encoder and metrics
 * read without further lookups.
 *
 * The config is one shape: the interfaces of `types.ts` (generated from
 * tzrec's protos and the table of what runs, `support.ts`), with tzrec's
 * field names in camelCase (`hidden_units` -> `hiddenUnits`), oneofs as one
 * set property (`{ idFeature: {...} }`), enums as their names (`"DEEP"`),
 * 64-bit integers as numbers. {@link parsePipelineConfig} reads a
 * `pipeline.config` into it; programs can build one in code.
 *
 * {@link resolveConfig} walks the config along tzrec's schema (`schema.ts`):
 * a field tzrec does not have is an unknown field; a tzrec field this library
 * does not run is "not supported yet" unless it holds tzrec's default; every
 * value is range-checked (limits that keep a model inside one Wasm memory are
 * named in the message); tzrec's defaults fill what is unset. Errors are
 * {@link ConfigError}s `<field path>: <what>`; for a config read from a file
 * they are {@link ConfigTextError}s `file:line:column: <field path>: <what>`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "./config.ts";
 * const resolved = resolveConfig({
 *   featureConfigs: [
 *     { idFeature: { featureName: "user_id", numBuckets: 100, embeddingDim: 8 } },
 *     { rawFeature: { featureName: "price" } },
 *   ],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["user_id", "price"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [16, 8] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * assert.equal(resolved.inputWidth, 9); // 8 (embedding) + 1 (dense price)
 * assert.equal(resolved.data.fgMode, "FG_NONE"); // tzrec's default: encoded columns named by feature_name
 * assert.equal(resolved.towers[0].losses[0].kind, "binary_cross_entropy");
 * ```
 * @module
 */
import { Activation } from "../core/activation.ts";
import { ConfigError, locate } from "./errors.ts";
import { DEFAULTS, SCHEMA } from "./schema.ts";
import type { FieldSchema } from "./support.ts";
import type {
  DenseOptimizer,
  EasyRecConfig,
  FeatureConfig,
  IdFeature,
  LossConfig,
  MetricConfig,
  MLP,
  RawFeature,
  SparseOptimizer,
  TaskTower,
} from "./types.ts";

export type * from "./types.ts";
export { DEFAULTS } from "./schema.ts";
export { ConfigError, ConfigTextError } from "./errors.ts";

/** A whole tzrec `pipeline.config` (tzrec's `EasyRecConfig`). */
export type PipelineConfig = EasyRecConfig;

/** An optimizer config that fits both `sparse_optimizer` and `dense_optimizer`. */
export type OptimizerConfig = SparseOptimizer & DenseOptimizer;

// -------------------------------------------------------------- resolved types

/** An MLP with every default applied. */
export interface ResolvedMLP {
  /** Layer widths. */
  hiddenUnits: number[];
  /** Dropout ratio per layer. */
  dropoutRatio: number[];
  /** {@link Activation} code. */
  activation: number;
  /** LeakyReLU negative slope (0 otherwise). */
  slope: number;
  /** BatchNorm per layer. */
  useBn: boolean;
  /** Linear bias per layer (false when useBn). */
  bias: boolean;
  /** LayerNorm per layer. */
  useLn: boolean;
}

/** How a feature's value becomes embedding rows or dense columns. */
export type FeatureKind = "num_buckets" | "hash_bucket" | "vocab" | "boundaries" | "dense";

/** A feature the encoder reads: one of the model's group, or a grouped_auc key. */
export interface ResolvedFeature {
  /** Feature name. */
  name: string;
  /** Input column read: `feature_name` (FG_NONE), else the expression's column. */
  column: string;
  /** Encoding. */
  kind: FeatureKind;
  /**
   * Values are already encoded (tzrec FG_NONE): ids are table rows (hashing,
   * vocabulary and bucketizing were done before), dense values are numbers.
   */
  encoded: boolean;
  /** Columns this feature fills in the group input: embedding dim or value dim (0 for a key). */
  width: number;
  /** First column of this feature in the group input (-1 for a key). */
  offset: number;
  /** Embedding table index in {@link ResolvedConfig.tables}; -1 for dense and keys. */
  table: number;
  /** Rows of the table (ids must be < rows). */
  rows: number;
  /** Bucket boundaries (ascending, float32 as tzrec's `repeated float`) for `boundaries`. */
  boundaries: number[];
  /** Vocabulary for `vocab`: value -> row. */
  vocab: Map<string, number>;
  /** Mean pooling instead of sum. */
  mean: boolean;
  /**
   * tzrec `id_feature.weighted`: every id carries a weight (`id:weight`
   * inputs) and pooling sums weight x embedding row.
   */
  weighted: boolean;
  /** Multi-value separator: `fg_encoded_multival_sep` (FG_NONE), else the feature's `separator`. */
  separator: string;
  /**
   * FG_NONE `fg_encoded_default_value`: the ids (sparse) or values (dense) a
   * missing value stands for; null when unset.
   */
  encodedDefault: number[] | null;
}

/** An embedding table. */
export interface ResolvedTable {
  /** Table name (embedding_name, default `<feature>_emb`). */
  name: string;
  /** Rows. */
  rows: number;
  /** Width. */
  dim: number;
  /** Names of the features that read it. */
  features: string[];
}

/**
 * A metric with defaults applied. The prediction it reads follows tzrec:
 * `probs_<t>` (`probs1_<t>` when num_class is 2) for the AUCs, `probs_<t>`
 * for accuracy (all classes when num_class > 1), `y_<t>` for the errors.
 */
export type ResolvedMetric =
  | { kind: "auc"; name: string; thresholds: number }
  | { kind: "exact_auc"; name: string }
  | { kind: "grouped_auc"; name: string; groupingKey: string }
  | { kind: "mean_absolute_error"; name: string }
  | { kind: "mean_squared_error"; name: string }
  | { kind: "accuracy"; name: string; threshold: number; numClass: number };

/** A tower loss with defaults applied. */
export interface ResolvedLoss {
  /** Loss kind (tzrec's `LossConfig` field name). */
  kind: "binary_cross_entropy" | "l2_loss" | "softmax_cross_entropy";
  /** Reported name, `<kind>_<tower>` (`binary_cross_entropy_ctr`). */
  name: string;
  /** Label smoothing (BCE and softmax cross-entropy; 0 otherwise). */
  labelSmoothing: number;
}

/** A tower with defaults applied. */
export interface ResolvedTower {
  /** Tower name. */
  name: string;
  /** Label column. */
  label: string;
  /** Output width. */
  numClass: number;
  /** Optional tower MLP. */
  mlp: ResolvedMLP | null;
  /** The tower's losses in config order (tzrec sums them), each with its reported name. */
  losses: ResolvedLoss[];
  /** Eval metrics. */
  metrics: ResolvedMetric[];
  /** tzrec's has-weight rule: weight, sample weight or indicator set explicitly. */
  hasWeight: boolean;
  /** Tower loss weight. */
  weight: number;
  /** Sample weight column or null. */
  sampleWeightName: string | null;
  /** Task-space indicator label column or null. */
  taskSpaceIndicatorLabel: string | null;
  /** In-space weight. */
  inTaskSpaceWeight: number;
  /** Out-of-space weight. */
  outTaskSpaceWeight: number;
}

/** An optimizer with defaults applied. */
export interface ResolvedOptimizer {
  /** Update rule. */
  kind: "adam" | "adagrad" | "sgd";
  /** Base learning rate. */
  lr: number;
  /** Adam beta1. */
  beta1: number;
  /** Adam beta2. */
  beta2: number;
  /** Epsilon: Adam 1e-8, dense Adagrad 1e-10 (torch), sparse Adagrad 1e-8 (fbgemm). */
  eps: number;
  /** L2 weight decay added to the gradient (torch). */
  weightDecay: number;
  /** SGD momentum (torch); 0 for the other optimizers and sparse SGD. */
  momentum: number;
  /** SGD dampening (torch `dampening`); 0 otherwise. */
  dampening: number;
  /** SGD Nesterov momentum (torch `nesterov`); false otherwise. */
  nesterov: boolean;
  /** Adagrad's starting accumulator (torch/fbgemm `initial_accumulator_value`); 0 otherwise. */
  initialAccumulatorValue: number;
  /** Learning-rate schedule. */
  schedule:
    | { kind: "constant" }
    | {
      kind: "exponential_decay";
      decaySize: number;
      decayFactor: number;
      staircase: boolean;
      minLearningRate: number;
    };
}

/** The whole config with defaults applied and validated. */
export interface ResolvedConfig {
  /** Features of the model's DEEP group, in group order. */
  features: ResolvedFeature[];
  /**
   * Sparse features outside the group that a `grouped_auc` metric groups by:
   * encoded for their keys only (no table, no group columns).
   */
  groupingFeatures: ResolvedFeature[];
  /** Embedding tables in order of first use. */
  tables: ResolvedTable[];
  /** F: width of the group input (sum of feature widths). */
  inputWidth: number;
  /** Expert MLP. */
  expertMlp: ResolvedMLP;
  /** E. */
  numExpert: number;
  /** Gate MLP (one per task) or null. */
  gateMlp: ResolvedMLP | null;
  /** Towers in config order. */
  towers: ResolvedTower[];
  /** Embedding optimizer. */
  sparseOptimizer: ResolvedOptimizer;
  /** Dense optimizer. */
  denseOptimizer: ResolvedOptimizer;
  /**
   * Training loop options. `numEpochs` is `Infinity` when only `num_steps` is
   * set (tzrec then cycles the data until `num_steps`), and 1 when neither
   * is; `numSteps` 0 means no step limit.
   */
  train: {
    numEpochs: number;
    numSteps: number;
    logStepCountSteps: number;
    /** Save a checkpoint every this many steps (0: only at the end). */
    saveCheckpointsSteps: number;
    /** Save at every this-many epoch ends instead of by steps (0: by steps). */
    saveCheckpointsEpochs: number;
    /** Keep the newest this many checkpoints (0: all). */
    keepCheckpointMax: number;
  };
  /** Input options. */
  data: {
    /** Rows per training batch. */
    batchSize: number;
    /** Rows per evaluation / prediction batch (`eval_batch_size`, default `batch_size`). */
    evalBatchSize: number;
    /** Label columns (`label_fields`). */
    labelFields: string[];
    /** Sample weight columns. */
    sampleWeightFields: string[];
    /** CSV field delimiter. */
    delimiter: string;
    /** Shuffle training rows. */
    shuffle: boolean;
    /**
     * tzrec's `shuffle_buffer_size`: batches in its shuffle buffer (tzrec's
     * reader shuffles the order of whole batches through it).
     */
    shuffleBufferSize: number;
    /** Drop the last partial batch. */
    dropRemainder: boolean;
    /** tzrec `dataset_type`. */
    datasetType: "CsvDataset" | "ParquetDataset" | "OdpsDataset";
    /** tzrec `fg_mode` (after the `fg_encoded` compatibility rule). */
    fgMode: "FG_NONE" | "FG_NORMAL" | "FG_DAG";
    /**
     * CSV column names of files without a header row (`with_header: false`
     * with `input_fields`); null: the first row is the header.
     */
    csvColumns: string[] | null;
  };
  /** Paths from the config (may be overridden by CLI flags). */
  paths: { trainInputPath: string; evalInputPath: string; modelDir: string };
}

// ---------------------------------------------------------------------- limits

/**
 * Size limits checked at config time, so that a config that cannot fit is
 * refused with the limit named instead of failing later on allocation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { LIMITS } from "./config.ts";
 * assert.equal(LIMITS.rows, 2 ** 31 - 1);
 * ```
 */
export const LIMITS = {
  /** Table rows and bucket counts: ids are int32 table rows. */
  rows: 2 ** 31 - 1,
  /** Embedding width and dense value_dim. */
  dim: 4096,
  /** Units of one MLP layer. */
  units: 65536,
  /** Experts. */
  experts: 256,
  /** Tower output width. */
  numClass: 65536,
  /** Rows per batch. */
  batchSize: 1 << 20,
  /**
   * AUC thresholds: the binned AUC keeps one TP/FP counter pair per
   * threshold (16 MB at the cap); past ~1e5 it equals the exact AUC of
   * float32 probabilities anyway (use `exact_auc`).
   */
  thresholds: 1_000_000,
  /** Bytes of parameters, gradients and optimizer state: one 32-bit Wasm memory. */
  memoryBytes: 2 ** 32,
} as const;

// ------------------------------------------------------------------ formatting

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "a list";
  if (value === null) return "null";
  if (typeof value === "object") return "an object";
  return String(value);
}

function join(path: string, name: string): string {
  return path === "" ? name : `${path}.${name}`;
}

// --------------------------------------------------------------- schema walk

/** Extra words for a field that is not supported yet, by `Message.oneof`. */
const HINTS: Record<string, string> = {
  "ModelConfig.model": " (the only model this library runs is mmoe)",
  "FeatureConfig.feature": " (this library runs id_feature and raw_feature)",
};

const INTEGER_RANGES: Record<string, [number, number]> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  sint32: [-(2 ** 31), 2 ** 31 - 1],
  sfixed32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  fixed32: [0, 2 ** 32 - 1],
  int64: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  sint64: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  sfixed64: [-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint64: [0, Number.MAX_SAFE_INTEGER],
  fixed64: [0, Number.MAX_SAFE_INTEGER],
};

/** A set field of a field this library does not run that changes nothing: tzrec's default. */
function holdsDefault(field: FieldSchema, value: unknown): boolean {
  if (field.repeated) return Array.isArray(value) && value.length === 0;
  if (field.type === "map") {
    return typeof value === "object" && value !== null && Object.keys(value).length === 0;
  }
  if (field.type === "message") return false;
  if (field.type === "float" && typeof value === "number") {
    return Math.fround(value) === field.fallback;
  }
  return value === field.fallback;
}

/** Checks one value of a field this library runs (one element of a repeated field). */
function checkValue(field: FieldSchema, value: unknown, path: string): void {
  switch (field.type) {
    case "message":
      checkMessage(value, field.message!, path);
      return;
    case "enum": {
      if (typeof value !== "string" || !field.values!.includes(value)) {
        throw new ConfigError(
          path,
          `expected one of ${field.values!.join(", ")}, got ${show(value)}`,
        );
      }
      const runs = field.support;
      if (Array.isArray(runs) && !runs.includes(value)) {
        throw new ConfigError(
          path,
          `${value} is not supported yet (supported: ${runs.join(", ")})`,
        );
      }
      return;
    }
    case "string":
      if (typeof value !== "string") {
        throw new ConfigError(path, `expected a string, got ${show(value)}`);
      }
      return;
    case "bool":
      if (typeof value !== "boolean") {
        throw new ConfigError(path, `expected true or false, got ${show(value)}`);
      }
      return;
    case "float":
    case "double":
      if (typeof value !== "number") {
        throw new ConfigError(path, `expected a number, got ${show(value)}`);
      }
      return;
    default: {
      const [min, max] = INTEGER_RANGES[field.type];
      if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
        throw new ConfigError(path, `expected a ${field.type} integer, got ${show(value)}`);
      }
    }
  }
}

/**
 * Checks `value` against tzrec's message `message`: every property a field of
 * it, at most one field per oneof, fields that do not run only at tzrec's
 * default, values of the right type, required fields present.
 */
function checkMessage(value: unknown, message: string, path: string): void {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(path, `expected a message (an object), got ${show(value)}`);
  }
  const fields = SCHEMA[message];
  const oneofs = new Map<string, string>();
  const present = new Set<string>();
  for (const [key, item] of Object.entries(value)) {
    if (item === undefined) continue;
    const field = fields.find((f) => f.json === key);
    if (field === undefined) {
      throw new ConfigError(join(path, key), `unknown field for tzrec.protos.${message}`);
    }
    const fieldPath = join(path, field.name);
    if (field.oneof !== undefined) {
      const other = oneofs.get(field.oneof);
      if (other !== undefined) {
        throw new ConfigError(
          fieldPath,
          `${other} is set too; oneof ${field.oneof} holds only one field`,
        );
      }
      oneofs.set(field.oneof, field.name);
    }
    present.add(field.name);
    if (field.support === undefined) {
      if (holdsDefault(field, item)) continue;
      const hint = HINTS[`${message}.${field.oneof}`] ?? "";
      throw new ConfigError(fieldPath, `not supported yet${hint}`);
    }
    if (field.support === "ignored") continue;
    if (field.repeated) {
      if (!Array.isArray(item)) {
        throw new ConfigError(fieldPath, `expected a list, got ${show(item)}`);
      }
      item.forEach((element, i) => checkValue(field, element, `${fieldPath}[${i}]`));
      if (field.support === "required" && item.length === 0) {
        throw new ConfigError(fieldPath, "is required (an empty list)");
      }
    } else checkValue(field, item, fieldPath);
  }
  for (const field of fields) {
    if (field.support === "required" && !present.has(field.name)) {
      throw new ConfigError(join(path, field.name), "is required");
    }
  }
}

// ------------------------------------------------------------------ validation

/** An integer in [min, max]; `limit` says where the maximum comes from. */
function intIn(value: number, path: string, min: number, max: number, limit = ""): number {
  if (!Number.isInteger(value) || value < min) {
    throw new ConfigError(path, `must be an integer >= ${min}, got ${show(value)}`);
  }
  if (value > max) {
    throw new ConfigError(
      path,
      `must be at most ${max}${limit ? ` (${limit})` : ""}, got ${value}`,
    );
  }
  return value;
}

/** A finite number in [min, max] (open at `min` when `minOpen`). */
function numberIn(
  value: number,
  path: string,
  min: number,
  max = Infinity,
  minOpen = false,
): number {
  const ok = Number.isFinite(value) && (minOpen ? value > min : value >= min) && value <= max;
  if (!ok) {
    const low = `${minOpen ? "(" : "["}${min}`, high = max === Infinity ? "inf)" : `${max}]`;
    throw new ConfigError(path, `must be a finite number in ${low}, ${high}, got ${show(value)}`);
  }
  return value;
}

function nonEmpty(value: string | undefined, path: string): string {
  if (value === undefined || value === "") {
    throw new ConfigError(path, "must be a non-empty string");
  }
  return value;
}

/** The name of the one set field of a oneof-like object (the schema walk allows at most one). */
function chosen<T extends object>(value: T, path: string, what: string): keyof T & string {
  const set = Object.keys(value).filter((k) => (value as Record<string, unknown>)[k] !== undefined);
  if (set.length === 0) throw new ConfigError(path, `must set ${what}`);
  return set[0] as keyof T & string;
}

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

const ACTIVATIONS: Record<string, number> = {
  "nn.ReLU": Activation.relu,
  "nn.Sigmoid": Activation.sigmoid,
  "nn.Tanh": Activation.tanh,
  "nn.LeakyReLU": Activation.leakyRelu,
  "nn.GELU": Activation.gelu,
  "nn.SiLU": Activation.silu,
};

function resolveActivation(text: string, path: string): { activation: number; slope: number } {
  if (text === "") return { activation: Activation.identity, slope: 0 };
  const match = text.match(/^(nn\.\w+)(?:\((.*)\))?$/);
  const code = match ? ACTIVATIONS[match[1]] : undefined;
  if (!match || code === undefined) {
    throw new ConfigError(
      path,
      `activation ${JSON.stringify(text)} is not supported yet (supported: ${
        Object.keys(ACTIVATIONS).join(", ")
      })`,
    );
  }
  let slope = code === Activation.leakyRelu ? 0.01 : 0; // torch default negative_slope
  const args = (match[2] ?? "").trim();
  if (args !== "") {
    const slopeArg = args.match(/^(?:negative_slope\s*=\s*)?([-+0-9.eE]+)$/);
    if (code !== Activation.leakyRelu || !slopeArg || !Number.isFinite(Number(slopeArg[1]))) {
      throw new ConfigError(path, `cannot read the arguments of ${JSON.stringify(text)}`);
    }
    slope = Number(slopeArg[1]);
  }
  return { activation: code, slope };
}

function resolveMlp(mlp: MLP, path: string): ResolvedMLP {
  const units = mlp.hiddenUnits;
  units.forEach((u, i) =>
    intIn(u, `${path}.hidden_units[${i}]`, 1, LIMITS.units, "LIMITS.units, units per layer")
  );
  const ratios = mlp.dropoutRatio ?? [];
  let dropoutRatio: number[];
  if (ratios.length === 0) dropoutRatio = units.map(() => 0);
  else if (ratios.length === 1) dropoutRatio = units.map(() => ratios[0]);
  else if (ratios.length === units.length) dropoutRatio = [...ratios];
  else {
    throw new ConfigError(
      `${path}.dropout_ratio`,
      `has ${ratios.length} values for ${units.length} layers (give 0, 1 or ${units.length})`,
    );
  }
  dropoutRatio.forEach((r, i) => {
    if (!(r >= 0 && r < 1)) {
      throw new ConfigError(`${path}.dropout_ratio[${i}]`, `must be in [0, 1), got ${show(r)}`);
    }
  });
  const useBn = mlp.useBn ?? DEFAULTS.MLP.useBn;
  const useLn = mlp.useLn ?? DEFAULTS.MLP.useLn;
  if (useBn && useLn) {
    throw new ConfigError(path, "use_bn and use_ln cannot both be set (tzrec Perceptron)");
  }
  return {
    hiddenUnits: [...units],
    dropoutRatio,
    ...resolveActivation(mlp.activation ?? DEFAULTS.MLP.activation, `${path}.activation`),
    useBn,
    bias: (mlp.bias ?? DEFAULTS.MLP.bias) && !useBn,
    useLn,
  };
}

/** Dense parameters of an MLP on `inputs` columns (weights, biases, norm scales). */
function mlpParameters(mlp: ResolvedMLP, inputs: number): number {
  let count = 0;
  for (const units of mlp.hiddenUnits) {
    count += inputs * units + (mlp.bias ? units : 0) + (mlp.useBn || mlp.useLn ? 2 * units : 0);
    inputs = units;
  }
  return count;
}

// ------------------------------------------------------------------ optimizers

const SPARSE_ADAGRAD_EPS = 1e-8; // fbgemm EXACT_ADAGRAD (no eps field in tzrec's FusedAdagrad)
const SPARSE_ADAM_EPS = 1e-8; // fbgemm ADAM (no eps field in tzrec's FusedAdam)

function resolveOptimizer(
  config: SparseOptimizer | DenseOptimizer,
  path: string,
  sparse: boolean,
): ResolvedOptimizer {
  const kind = chosen(
    {
      sgdOptimizer: config.sgdOptimizer,
      adagradOptimizer: config.adagradOptimizer,
      adamOptimizer: config.adamOptimizer,
    },
    path,
    "one of sgd_optimizer, adagrad_optimizer, adam_optimizer",
  );
  const bodyPath = `${path}.${snake(kind)}`;
  let schedule: ResolvedOptimizer["schedule"] = { kind: "constant" };
  const decay = config.exponentialDecayLearningRate;
  if (decay) {
    const dp = `${path}.exponential_decay_learning_rate`;
    schedule = {
      kind: "exponential_decay",
      decaySize: intIn(decay.decaySize, `${dp}.decay_size`, 1, 2 ** 32 - 1),
      decayFactor: numberIn(
        decay.decayFactor ?? DEFAULTS.ExponentialDecayLR.decayFactor,
        `${dp}.decay_factor`,
        0,
        Infinity,
        true,
      ),
      staircase: decay.staircase ?? DEFAULTS.ExponentialDecayLR.staircase,
      minLearningRate: numberIn(
        decay.minLearningRate ?? DEFAULTS.ExponentialDecayLR.minLearningRate,
        `${dp}.min_learning_rate`,
        0,
      ),
    };
  }
  const base: ResolvedOptimizer = {
    kind: "sgd",
    lr: 0,
    beta1: 0,
    beta2: 0,
    eps: 0,
    weightDecay: 0,
    momentum: 0,
    dampening: 0,
    nesterov: false,
    initialAccumulatorValue: 0,
    schedule,
  };
  // lr 0 is allowed, as in tzrec (its schedulers then keep 0: a frozen part).
  const lr = (value: number) => numberIn(value, `${bodyPath}.lr`, 0);
  const unit = (value: number, name: string) => {
    if (!(Number.isFinite(value) && value >= 0 && value < 1)) {
      throw new ConfigError(`${bodyPath}.${name}`, `must be in [0, 1), got ${show(value)}`);
    }
    return value;
  };
  if (sparse) {
    const s = config as SparseOptimizer;
    if (kind === "adagradOptimizer") {
      const o = s.adagradOptimizer!;
      return {
        ...base,
        kind: "adagrad",
        lr: lr(o.lr ?? DEFAULTS.FusedAdagradOptimizer.lr),
        eps: SPARSE_ADAGRAD_EPS,
        initialAccumulatorValue: numberIn(
          o.initialAccumulatorValue ?? DEFAULTS.FusedAdagradOptimizer.initialAccumulatorValue,
          `${bodyPath}.initial_accumulator_value`,
          0,
        ),
      };
    }
    if (kind === "adamOptimizer") {
      const o = s.adamOptimizer!;
      return {
        ...base,
        kind: "adam",
        lr: lr(o.lr ?? DEFAULTS.FusedAdamOptimizer.lr),
        beta1: unit(o.beta1 ?? DEFAULTS.FusedAdamOptimizer.beta1, "beta1"),
        beta2: unit(o.beta2 ?? DEFAULTS.FusedAdamOptimizer.beta2, "beta2"),
        eps: SPARSE_ADAM_EPS,
        weightDecay: numberIn(
          o.weightDecay ?? DEFAULTS.FusedAdamOptimizer.weightDecay,
          `${bodyPath}.weight_decay`,
          0,
        ),
      };
    }
    // tzrec's FusedSGDOptimizer (fbgemm EXACT_SGD) has no momentum.
    return { ...base, kind: "sgd", lr: lr(s.sgdOptimizer!.lr ?? DEFAULTS.FusedSGDOptimizer.lr) };
  }
  const d = config as DenseOptimizer;
  if (kind === "adamOptimizer") {
    const o = d.adamOptimizer!;
    return {
      ...base,
      kind: "adam",
      lr: lr(o.lr ?? DEFAULTS.AdamOptimizer.lr),
      beta1: unit(o.beta1 ?? DEFAULTS.AdamOptimizer.beta1, "beta1"),
      beta2: unit(o.beta2 ?? DEFAULTS.AdamOptimizer.beta2, "beta2"),
      eps: numberIn(o.eps ?? DEFAULTS.AdamOptimizer.eps, `${bodyPath}.eps`, 0),
      weightDecay: numberIn(
        o.weightDecay ?? DEFAULTS.AdamOptimizer.weightDecay,
        `${bodyPath}.weight_decay`,
        0,
      ),
    };
  }
  if (kind === "adagradOptimizer") {
    const o = d.adagradOptimizer!;
    return {
      ...base,
      kind: "adagrad",
      lr: lr(o.lr ?? DEFAULTS.AdagradOptimizer.lr),
      eps: numberIn(o.eps ?? DEFAULTS.AdagradOptimizer.eps, `${bodyPath}.eps`, 0),
      weightDecay: numberIn(
        o.weightDecay ?? DEFAULTS.AdagradOptimizer.weightDecay,
        `${bodyPath}.weight_decay`,
        0,
      ),
      initialAccumulatorValue: numberIn(
        o.initialAccumulatorValue ?? DEFAULTS.AdagradOptimizer.initialAccumulatorValue,
        `${bodyPath}.initial_accumulator_value`,
        0,
      ),
    };
  }
  const o = d.sgdOptimizer!;
  const momentum = unit(o.momentum ?? DEFAULTS.SGDOptimizer.momentum, "momentum");
  const dampening = numberIn(
    o.dampening ?? DEFAULTS.SGDOptimizer.dampening,
    `${bodyPath}.dampening`,
    -Infinity,
  );
  const nesterov = o.nesterov ?? DEFAULTS.SGDOptimizer.nesterov;
  if (nesterov && (momentum <= 0 || dampening !== 0)) {
    throw new ConfigError(
      `${bodyPath}.nesterov`,
      "Nesterov momentum needs momentum > 0 and dampening 0 (torch.optim.SGD)",
    );
  }
  return {
    ...base,
    kind: "sgd",
    lr: lr(o.lr ?? DEFAULTS.SGDOptimizer.lr),
    weightDecay: numberIn(
      o.weightDecay ?? DEFAULTS.SGDOptimizer.weightDecay,
      `${bodyPath}.weight_decay`,
      0,
    ),
    momentum,
    dampening,
    nesterov,
  };
}

/** Optimizer state floats per parameter float (Adam: 2 moments; Adagrad: 1 sum; SGD: momentum). */
function stateFloats(optimizer: ResolvedOptimizer): number {
  if (optimizer.kind === "adam") return 2;
  if (optimizer.kind === "adagrad") return 1;
  return optimizer.momentum > 0 ? 1 : 0;
}

// ---------------------------------------------------------------- features

/** `side:column` of an FG_DAG / FG_NORMAL expression -> column. */
function columnOf(expression: string | undefined, path: string, fgMode: string): string {
  if (expression === undefined || expression === "") {
    throw new ConfigError(path, `is required with fg_mode ${fgMode} (the raw input column)`);
  }
  const match = expression.match(/^(user|item|context|feature|const):(.+)$/);
  if (!match) {
    throw new ConfigError(
      path,
      `must look like "user:column" (side user, item or context), got ${show(expression)}`,
    );
  }
  if (match[1] === "feature" || match[1] === "const") {
    throw new ConfigError(
      path,
      `${match[1]}: inputs (another feature's output, a constant) are not supported yet`,
    );
  }
  return match[2];
}

/** FG_NONE `fg_encoded_default_value` split by the multi-value separator. */
function encodedDefault(
  text: string | undefined,
  separator: string,
  integers: boolean,
  path: string,
): number[] | null {
  if (text === undefined || text === "") return null;
  return text.split(separator).map((piece) => {
    const x = Number(piece);
    if (piece.trim() === "" || !Number.isFinite(x) || (integers && !Number.isInteger(x))) {
      throw new ConfigError(
        path,
        `${show(piece)} is not ${integers ? "an integer id" : "a finite number"}`,
      );
    }
    return x;
  });
}

interface FeatureContext {
  fgMode: "FG_NONE" | "FG_NORMAL" | "FG_DAG";
  multivalSeparator: string;
}

/** One feature of `feature_configs`, without its table and group position. */
function resolveFeature(fc: FeatureConfig, path: string, context: FeatureContext): ResolvedFeature {
  const encoded = context.fgMode === "FG_NONE";
  const kind = chosen(fc, path, "id_feature or raw_feature");
  const p = `${path}.${snake(kind)}`;
  if (kind === "idFeature") {
    const f = fc.idFeature as IdFeature;
    const name = nonEmpty(f.featureName, `${p}.feature_name`);
    const dim = intIn(f.embeddingDim, `${p}.embedding_dim`, 1, LIMITS.dim, "LIMITS.dim");
    const set = [
      f.numBuckets !== undefined && "num_buckets",
      f.hashBucketSize !== undefined && "hash_bucket_size",
      f.vocabList !== undefined && f.vocabList.length > 0 && "vocab_list",
    ].filter(Boolean);
    if (set.length !== 1) {
      throw new ConfigError(
        set.length === 0 ? p : `${p}.${set[1]}`,
        set.length === 0
          ? "must set one of num_buckets, hash_bucket_size, vocab_list"
          : `${set[0]} is set too; set one of num_buckets, hash_bucket_size, vocab_list`,
      );
    }
    let featureKind: FeatureKind, rows: number;
    const vocab = new Map<string, number>();
    const limit = "LIMITS.rows: ids are int32 table rows";
    if (f.numBuckets !== undefined) {
      featureKind = "num_buckets";
      rows = intIn(f.numBuckets, `${p}.num_buckets`, 1, LIMITS.rows, limit);
    } else if (f.hashBucketSize !== undefined) {
      featureKind = "hash_bucket";
      rows = intIn(f.hashBucketSize, `${p}.hash_bucket_size`, 1, LIMITS.rows, limit);
    } else {
      featureKind = "vocab";
      // tzrec without default_bucketize_value: row 0 is default_value, row 1 <OOV>.
      f.vocabList!.forEach((v, i) => {
        if (vocab.has(v)) {
          throw new ConfigError(`${p}.vocab_list[${i}]`, `duplicate entry ${show(v)}`);
        }
        vocab.set(v, i + 2);
      });
      rows = intIn(f.vocabList!.length + 2, `${p}.vocab_list`, 3, LIMITS.rows, limit);
    }
    const pooling = f.pooling ?? DEFAULTS.IdFeature.pooling;
    if (pooling !== "sum" && pooling !== "mean") {
      throw new ConfigError(`${p}.pooling`, `must be "sum" or "mean", got ${show(pooling)}`);
    }
    if (pooling === "mean" && f.weighted) {
      // torch's EmbeddingBag refuses per_sample_weights with mode "mean".
      throw new ConfigError(
        `${p}.pooling`,
        `"mean" with weighted: true is not supported (sum only)`,
      );
    }
    const separator = encoded
      ? context.multivalSeparator
      : f.separator ?? DEFAULTS.IdFeature.separator;
    return {
      name,
      column: encoded ? name : columnOf(f.expression, `${p}.expression`, context.fgMode),
      kind: featureKind,
      encoded,
      width: dim,
      offset: -1,
      table: -1,
      rows,
      boundaries: [],
      vocab,
      mean: pooling === "mean",
      weighted: f.weighted ?? DEFAULTS.IdFeature.weighted,
      separator: nonEmpty(
        separator,
        encoded ? "data_config.fg_encoded_multival_sep" : `${p}.separator`,
      ),
      encodedDefault: encoded
        ? encodedDefault(f.fgEncodedDefaultValue, separator, true, `${p}.fg_encoded_default_value`)
        : null,
    };
  }
  const f = fc.rawFeature as RawFeature;
  const name = nonEmpty(f.featureName, `${p}.feature_name`);
  const column = encoded ? name : columnOf(f.expression, `${p}.expression`, context.fgMode);
  const separator = encoded
    ? context.multivalSeparator
    : f.separator ?? DEFAULTS.RawFeature.separator;
  const boundaries = f.boundaries ?? [];
  const pooling = f.pooling ?? DEFAULTS.RawFeature.pooling;
  if (pooling !== "sum" && pooling !== "mean") {
    throw new ConfigError(`${p}.pooling`, `must be "sum" or "mean", got ${show(pooling)}`);
  }
  const common = {
    name,
    column,
    encoded,
    offset: -1,
    table: -1,
    vocab: new Map<string, number>(),
    mean: pooling === "mean",
    weighted: false,
    separator: nonEmpty(
      separator,
      encoded ? "data_config.fg_encoded_multival_sep" : `${p}.separator`,
    ),
  };
  if (boundaries.length > 0) {
    boundaries.forEach((b, i) => {
      numberIn(b, `${p}.boundaries[${i}]`, -Infinity);
      if (i > 0 && !(b > boundaries[i - 1])) {
        throw new ConfigError(`${p}.boundaries[${i}]`, "boundaries must be strictly ascending");
      }
    });
    if (f.embeddingDim === undefined) {
      throw new ConfigError(`${p}.embedding_dim`, "is required with boundaries");
    }
    return {
      ...common,
      kind: "boundaries",
      width: intIn(f.embeddingDim, `${p}.embedding_dim`, 1, LIMITS.dim, "LIMITS.dim"),
      rows: intIn(boundaries.length + 1, `${p}.boundaries`, 2, LIMITS.rows, "LIMITS.rows"),
      boundaries: boundaries.map(Math.fround),
      encodedDefault: encoded
        ? encodedDefault(f.fgEncodedDefaultValue, separator, true, `${p}.fg_encoded_default_value`)
        : null,
    };
  }
  const width = intIn(
    f.valueDim ?? DEFAULTS.RawFeature.valueDim,
    `${p}.value_dim`,
    1,
    LIMITS.dim,
    "LIMITS.dim",
  );
  const defaults = encoded
    ? encodedDefault(f.fgEncodedDefaultValue, separator, false, `${p}.fg_encoded_default_value`)
    : null;
  if (defaults !== null && defaults.length !== width) {
    throw new ConfigError(
      `${p}.fg_encoded_default_value`,
      `has ${defaults.length} values, value_dim is ${width}`,
    );
  }
  return { ...common, kind: "dense", width, rows: 0, boundaries: [], encodedDefault: defaults };
}

// -------------------------------------------------------------------- towers

const LOSS_KINDS = ["binary_cross_entropy", "softmax_cross_entropy", "l2_loss"] as const;

function resolveLosses(t: TaskTower, tp: string, tower: string, numClass: number): ResolvedLoss[] {
  const seen = new Set<string>();
  return t.losses.map((loss: LossConfig, i): ResolvedLoss => {
    const lp = `${tp}.losses[${i}]`;
    const key = chosen(loss, lp, `one of ${LOSS_KINDS.join(", ")}`);
    const kind = snake(key) as ResolvedLoss["kind"];
    if (seen.has(kind)) {
      throw new ConfigError(
        `${lp}.${kind}`,
        "is set twice in this tower (tzrec names losses <kind>_<tower>: the second replaces the first)",
      );
    }
    seen.add(kind);
    if (kind === "softmax_cross_entropy" ? numClass < 2 : numClass !== 1) {
      throw new ConfigError(
        `${tp}.num_class`,
        kind === "softmax_cross_entropy"
          ? `softmax_cross_entropy needs num_class > 1, got ${numClass}`
          : `${kind} needs num_class 1, got ${numClass}`,
      );
    }
    const smoothing = kind === "binary_cross_entropy"
      ? loss.binaryCrossEntropy!.labelSmoothing ?? DEFAULTS.BinaryCrossEntropy.labelSmoothing
      : kind === "softmax_cross_entropy"
      ? loss.softmaxCrossEntropy!.labelSmoothing ?? DEFAULTS.SoftmaxCrossEntropy.labelSmoothing
      : 0;
    if (!(smoothing >= 0 && smoothing <= 1)) {
      throw new ConfigError(
        `${lp}.${kind}.label_smoothing`,
        `must be in [0, 1], got ${show(smoothing)}`,
      );
    }
    return { kind, name: `${kind}_${tower}`, labelSmoothing: smoothing };
  });
}

function resolveMetrics(
  t: TaskTower,
  tp: string,
  tower: string,
  numClass: number,
  losses: ResolvedLoss[],
  sparseFeatures: Map<string, unknown>,
): ResolvedMetric[] {
  const has = (kind: ResolvedLoss["kind"]) => losses.some((l) => l.kind === kind);
  const probs = has("binary_cross_entropy") || has("softmax_cross_entropy");
  const seen = new Set<string>();
  return (t.metrics ?? []).map((m: MetricConfig, j): ResolvedMetric => {
    const mp = `${tp}.metrics[${j}]`;
    const key = chosen(m, mp, "a metric");
    const kind = snake(key);
    const at = `${mp}.${kind}`;
    if (seen.has(kind)) {
      throw new ConfigError(
        at,
        "is set twice in this tower (tzrec names metrics <kind>_<tower>: the second replaces the first)",
      );
    }
    seen.add(kind);
    const name = `${kind}_${tower}`;
    const needProbs = () => {
      if (!probs) {
        throw new ConfigError(
          at,
          "reads probs, which needs a binary_cross_entropy or softmax_cross_entropy loss",
        );
      }
    };
    const binary = () => {
      needProbs();
      if (numClass > 2) {
        throw new ConfigError(at, `needs num_class <= 2 (tzrec asserts it), got ${numClass}`);
      }
    };
    switch (key) {
      case "auc": {
        binary();
        const thresholds = m.auc!.thresholds ?? DEFAULTS.AUC.thresholds;
        return {
          kind: "auc",
          name,
          thresholds: intIn(
            thresholds,
            `${at}.thresholds`,
            2,
            LIMITS.thresholds,
            "LIMITS.thresholds",
          ),
        };
      }
      case "exactAuc":
        binary();
        return { kind: "exact_auc", name };
      case "groupedAuc": {
        binary();
        const groupingKey = nonEmpty(m.groupedAuc!.groupingKey, `${at}.grouping_key`);
        if (!sparseFeatures.has(groupingKey)) {
          throw new ConfigError(
            `${at}.grouping_key`,
            `${
              show(groupingKey)
            } is not an id_feature or bucketized raw_feature of feature_configs`,
          );
        }
        return { kind: "grouped_auc", name, groupingKey };
      }
      case "meanAbsoluteError":
      case "meanSquaredError":
        if (!has("l2_loss")) throw new ConfigError(at, "reads y, which needs an l2_loss");
        return { kind: kind as "mean_absolute_error" | "mean_squared_error", name };
      case "accuracy": {
        needProbs();
        const topK = m.accuracy!.topK ?? DEFAULTS.Accuracy.topK;
        if (numClass > 1 && topK !== 1) {
          throw new ConfigError(`${at}.top_k`, `top_k ${topK} is not supported yet (1 runs)`);
        }
        return {
          kind: "accuracy",
          name,
          threshold: numberIn(
            m.accuracy!.threshold ?? DEFAULTS.Accuracy.threshold,
            `${at}.threshold`,
            0,
            1,
          ),
          numClass,
        };
      }
      default:
        throw new ConfigError(at, "not supported yet");
    }
  });
}

// -------------------------------------------------------------------------- API

/**
 * Checks `config` once, at the boundary, applies tzrec's defaults and returns
 * the {@link ResolvedConfig}. Throws a {@link ConfigError} naming the first
 * bad field (a {@link ConfigTextError} with `file:line:column` when the config
 * was read by {@link parsePipelineConfig} / {@link loadPipelineConfig}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError, resolveConfig } from "./config.ts";
 * assert.throws(
 *   () =>
 *     resolveConfig({
 *       featureConfigs: [{ idFeature: { featureName: "a", numBuckets: 4, embeddingDim: 4 } }],
 *       modelConfig: {
 *         featureGroups: [{ groupName: "all", featureNames: ["missing"] }],
 *         mmoe: { expertMlp: { hiddenUnits: [4] }, taskTowers: [] },
 *       },
 *     }),
 *   (e) => e instanceof ConfigError && e.path === "model_config.mmoe.task_towers",
 * );
 * ```
 */
export function resolveConfig(config: PipelineConfig): ResolvedConfig {
  try {
    checkMessage(config, "EasyRecConfig", "");
    return resolveChecked(config);
  } catch (error) {
    if (error instanceof ConfigError && typeof config === "object" && config !== null) {
      throw locate(config, error);
    }
    throw error;
  }
}

function resolveChecked(config: PipelineConfig): ResolvedConfig {
  const train = config.trainConfig ?? {};
  const data = config.dataConfig ?? {};
  const model = config.modelConfig;

  // tzrec config_util._get_compatible_fg_mode: a set fg_encoded wins over fg_mode.
  let fgMode = data.fgMode ?? DEFAULTS.DataConfig.fgMode;
  if (data.fgEncoded !== undefined) {
    fgMode = data.fgEncoded ? "FG_NONE" : (data.fgThreads ?? 1) > 0 // fg_threads: tzrec's default 1
      ? "FG_DAG"
      : "FG_NORMAL";
  }
  const context: FeatureContext = {
    fgMode,
    multivalSeparator: data.fgEncodedMultivalSep ?? DEFAULTS.DataConfig.fgEncodedMultivalSep,
  };

  // Every feature, by name.
  const byName = new Map<string, { resolved: ResolvedFeature; path: string; table: string }>();
  config.featureConfigs.forEach((fc, i) => {
    const path = `feature_configs[${i}]`;
    const resolved = resolveFeature(fc, path, context);
    const kind = fc.idFeature ? "id_feature" : "raw_feature";
    if (byName.has(resolved.name)) {
      throw new ConfigError(
        `${path}.${kind}.feature_name`,
        `duplicate feature ${show(resolved.name)} (also ${byName.get(resolved.name)!.path})`,
      );
    }
    const embeddingName = (fc.idFeature ?? fc.rawFeature)!.embeddingName;
    byName.set(resolved.name, {
      resolved,
      path,
      table: embeddingName !== undefined && embeddingName !== ""
        ? embeddingName
        : `${resolved.name}_emb`,
    });
  });

  // The group MMoE reads (tzrec: the first one; it builds the others unused).
  const groups = model.featureGroups;
  if (groups.length === 0) throw new ConfigError("model_config.feature_groups", "is required");
  if (groups.length > 1) {
    throw new ConfigError(
      "model_config.feature_groups[1]",
      "not supported yet: MMoE reads only the first feature group (tzrec builds the others' embeddings and never uses them)",
    );
  }
  const groupPath = "model_config.feature_groups[0]";
  const features: ResolvedFeature[] = [];
  const tables: ResolvedTable[] = [];
  const tableIndex = new Map<string, number>();
  let offset = 0;
  model.featureGroups[0].featureNames.forEach((name, gi) => {
    const entry = byName.get(name);
    if (!entry) {
      throw new ConfigError(
        `${groupPath}.feature_names[${gi}]`,
        `no feature_configs entry named ${show(name)}`,
      );
    }
    if (features.some((f) => f.name === name)) {
      throw new ConfigError(`${groupPath}.feature_names[${gi}]`, `${show(name)} is listed twice`);
    }
    const feature: ResolvedFeature = { ...entry.resolved, offset };
    if (feature.kind !== "dense") {
      let t = tableIndex.get(entry.table);
      if (t === undefined) {
        t = tables.length;
        tableIndex.set(entry.table, t);
        tables.push({
          name: entry.table,
          rows: feature.rows,
          dim: feature.width,
          features: [name],
        });
      } else {
        const table = tables[t];
        if (table.rows !== feature.rows || table.dim !== feature.width) {
          throw new ConfigError(
            entry.path,
            `shares embedding ${
              show(entry.table)
            } (${table.rows} x ${table.dim}) but needs ${feature.rows} x ${feature.width}`,
          );
        }
        table.features.push(name);
      }
      feature.table = t;
    }
    features.push(feature);
    offset += feature.width;
  });

  const mmoe = model.mmoe;
  const mp = "model_config.mmoe";
  if (!mmoe) throw new ConfigError(mp, "is required (the only model this library runs)");
  const expertMlp = resolveMlp(mmoe.expertMlp, `${mp}.expert_mlp`);
  const numExpert = intIn(
    mmoe.numExpert ?? DEFAULTS.MMoE.numExpert,
    `${mp}.num_expert`,
    1,
    LIMITS.experts,
    "LIMITS.experts",
  );
  const gateMlp = mmoe.gateMlp ? resolveMlp(mmoe.gateMlp, `${mp}.gate_mlp`) : null;
  const sparseFeatures = new Map(
    [...byName].filter(([, e]) => e.resolved.kind !== "dense").map(([n, e]) => [n, e]),
  );
  const towerNames = new Set<string>();
  const towers = mmoe.taskTowers.map((t, i): ResolvedTower => {
    const tp = `${mp}.task_towers[${i}]`;
    const name = nonEmpty(t.towerName, `${tp}.tower_name`);
    if (towerNames.has(name)) {
      throw new ConfigError(`${tp}.tower_name`, `duplicate tower ${show(name)}`);
    }
    towerNames.add(name);
    const numClass = intIn(
      t.numClass ?? DEFAULTS.TaskTower.numClass,
      `${tp}.num_class`,
      1,
      LIMITS.numClass,
      "LIMITS.numClass",
    );
    const losses = resolveLosses(t, tp, name, numClass);
    const nonNegative = (value: number, field: string) => numberIn(value, `${tp}.${field}`, 0);
    return {
      name,
      label: nonEmpty(t.labelName, `${tp}.label_name`),
      numClass,
      mlp: t.mlp ? resolveMlp(t.mlp, `${tp}.mlp`) : null,
      losses,
      metrics: resolveMetrics(t, tp, name, numClass, losses, sparseFeatures),
      hasWeight: t.weight !== undefined || t.sampleWeightName !== undefined ||
        t.taskSpaceIndicatorLabel !== undefined,
      weight: nonNegative(t.weight ?? DEFAULTS.TaskTower.weight, "weight"),
      sampleWeightName: t.sampleWeightName ?? null,
      taskSpaceIndicatorLabel: t.taskSpaceIndicatorLabel ?? null,
      inTaskSpaceWeight: nonNegative(
        t.inTaskSpaceWeight ?? DEFAULTS.TaskTower.inTaskSpaceWeight,
        "in_task_space_weight",
      ),
      outTaskSpaceWeight: nonNegative(
        t.outTaskSpaceWeight ?? DEFAULTS.TaskTower.outTaskSpaceWeight,
        "out_task_space_weight",
      ),
    };
  });

  // Labels and sample weights come from data_config in tzrec; a tower's
  // column must be one of them when they are listed.
  const labelFields = [...(data.labelFields ?? [])];
  const sampleWeightFields = [...(data.sampleWeightFields ?? [])];
  towers.forEach((tower, i) => {
    const tp = `${mp}.task_towers[${i}]`;
    const check = (column: string | null, field: string, list: string[], listName: string) => {
      if (column !== null && list.length > 0 && !list.includes(column)) {
        throw new ConfigError(
          `${tp}.${field}`,
          `${show(column)} is not in data_config.${listName} (tzrec reads it from there)`,
        );
      }
    };
    check(tower.label, "label_name", labelFields, "label_fields");
    check(tower.taskSpaceIndicatorLabel, "task_space_indicator_label", labelFields, "label_fields");
    check(tower.sampleWeightName, "sample_weight_name", sampleWeightFields, "sample_weight_fields");
  });

  // Features read only for grouped_auc keys.
  const groupingFeatures: ResolvedFeature[] = [];
  for (const tower of towers) {
    for (const metric of tower.metrics) {
      if (metric.kind !== "grouped_auc") continue;
      const key = metric.groupingKey;
      if (features.some((f) => f.name === key) || groupingFeatures.some((f) => f.name === key)) {
        continue;
      }
      groupingFeatures.push({ ...byName.get(key)!.resolved, width: 0 });
    }
  }

  const sparseOptimizer = resolveOptimizer(
    train.sparseOptimizer ?? { adagradOptimizer: {} },
    "train_config.sparse_optimizer",
    true,
  );
  const denseOptimizer = resolveOptimizer(
    train.denseOptimizer ?? { adamOptimizer: {} },
    "train_config.dense_optimizer",
    false,
  );

  // Parameters, dense gradients and optimizer state must fit one Wasm memory
  // (embedding gradients are per batch row, not per table row).
  const embeddingFloats = tables.reduce((sum, t) => sum + t.rows * t.dim, 0);
  let denseFloats = numExpert * mlpParameters(expertMlp, offset);
  const expertOut = expertMlp.hiddenUnits[expertMlp.hiddenUnits.length - 1];
  for (const tower of towers) {
    const gateIn = gateMlp ? gateMlp.hiddenUnits[gateMlp.hiddenUnits.length - 1] : offset;
    denseFloats += (gateMlp ? mlpParameters(gateMlp, offset) : 0) + gateIn * numExpert + numExpert;
    const towerIn = tower.mlp ? tower.mlp.hiddenUnits[tower.mlp.hiddenUnits.length - 1] : expertOut;
    denseFloats += (tower.mlp ? mlpParameters(tower.mlp, expertOut) : 0) +
      towerIn * tower.numClass + tower.numClass;
  }
  const bytes = 4 * (embeddingFloats * (1 + stateFloats(sparseOptimizer)) +
    denseFloats * (2 + stateFloats(denseOptimizer)));
  if (bytes > LIMITS.memoryBytes) {
    const largest = [...tables].sort((a, b) => b.rows * b.dim - a.rows * a.dim)[0];
    const gib = (bytes / 2 ** 30).toFixed(1);
    throw new ConfigError(
      largest ? byName.get(largest.features[0])!.path : `${mp}.expert_mlp`,
      `the model needs ${gib} GiB of parameters, gradients and optimizer state; one Wasm memory holds 4 GiB (LIMITS.memoryBytes)` +
        (largest
          ? `; the largest table is ${largest.name} (${largest.rows} x ${largest.dim})`
          : ""),
    );
  }

  // tzrec main.py asserts `num_steps ^ num_epochs`: one of them, not both equal.
  const numSteps = train.numSteps ?? 0;
  const numEpochs = train.numEpochs ?? 0;
  if (numSteps > 0 && numEpochs > 0 && numSteps === numEpochs) {
    throw new ConfigError(
      "train_config.num_steps",
      "num_epochs and num_steps are both set, to the same value (tzrec asserts num_steps ^ num_epochs: set one)",
    );
  }
  const batchSize = intIn(
    data.batchSize ?? DEFAULTS.DataConfig.batchSize,
    "data_config.batch_size",
    1,
    LIMITS.batchSize,
    "LIMITS.batchSize",
  );
  const withHeader = data.withHeader ?? DEFAULTS.DataConfig.withHeader;
  const inputFields = (data.inputFields ?? []).map((field, i) =>
    nonEmpty(field.inputName, `data_config.input_fields[${i}].input_name`)
  );
  const shuffle = data.shuffle ?? DEFAULTS.DataConfig.shuffle;
  return {
    features,
    groupingFeatures,
    tables,
    inputWidth: offset,
    expertMlp,
    numExpert,
    gateMlp,
    towers,
    sparseOptimizer,
    denseOptimizer,
    train: {
      numEpochs: numEpochs > 0 ? numEpochs : numSteps > 0 ? Infinity : 1,
      numSteps,
      logStepCountSteps: intIn(
        train.logStepCountSteps ?? DEFAULTS.TrainConfig.logStepCountSteps,
        "train_config.log_step_count_steps",
        1,
        2 ** 32 - 1,
      ),
      saveCheckpointsSteps: intIn(
        train.saveCheckpointsSteps ?? DEFAULTS.TrainConfig.saveCheckpointsSteps,
        "train_config.save_checkpoints_steps",
        0,
        2 ** 32 - 1,
      ),
      saveCheckpointsEpochs: intIn(
        train.saveCheckpointsEpochs ?? 0,
        "train_config.save_checkpoints_epochs",
        0,
        2 ** 32 - 1,
      ),
      keepCheckpointMax: intIn(
        train.keepCheckpointMax ?? DEFAULTS.TrainConfig.keepCheckpointMax,
        "train_config.keep_checkpoint_max",
        0,
        2 ** 32 - 1,
      ),
    },
    data: {
      batchSize,
      evalBatchSize: data.evalBatchSize === undefined ? batchSize : intIn(
        data.evalBatchSize,
        "data_config.eval_batch_size",
        1,
        LIMITS.batchSize,
        "LIMITS.batchSize",
      ),
      labelFields,
      sampleWeightFields,
      delimiter: nonEmpty(data.delimiter ?? DEFAULTS.DataConfig.delimiter, "data_config.delimiter"),
      shuffle,
      shuffleBufferSize: intIn(
        data.shuffleBufferSize ?? DEFAULTS.DataConfig.shuffleBufferSize,
        "data_config.shuffle_buffer_size",
        1,
        2 ** 32 - 1,
      ),
      dropRemainder: data.dropRemainder ?? DEFAULTS.DataConfig.dropRemainder,
      datasetType: (data.datasetType ?? DEFAULTS.DataConfig.datasetType) as ResolvedConfig["data"][
        "datasetType"
      ],
      fgMode,
      csvColumns: !withHeader && inputFields.length > 0 ? inputFields : null,
    },
    paths: {
      trainInputPath: config.trainInputPath ?? "",
      evalInputPath: config.evalInputPath ?? "",
      modelDir: config.modelDir ?? "",
    },
  };
}

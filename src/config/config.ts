/**
 * The typed tzrec pipeline config (the subset this library runs), its one
 * defaults table and its one validation pass.
 *
 * Field names are tzrec's protobuf names in camelCase (`hidden_units` ->
 * `hiddenUnits`), so a `pipeline.config` maps onto these objects one to one.
 * {@link resolveConfig} applies tzrec's defaults, checks every field once and
 * returns a {@link ResolvedConfig} that the model, trainer and metrics read
 * without further lookups. Errors are {@link ConfigError}s that name the field
 * by its tzrec path, e.g.
 * `model_config.mmoe.task_towers[1].mlp.hidden_units: must be non-empty`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "./config.ts";
 * const resolved = resolveConfig({
 *   featureConfigs: [
 *     { idFeature: { featureName: "user_id", expression: "user:user_id", numBuckets: 100, embeddingDim: 8 } },
 *     { rawFeature: { featureName: "price", expression: "item:price" } },
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
 * assert.equal(resolved.towers[0].losses[0].kind, "binary_cross_entropy");
 * ```
 * @module
 */
import { Activation } from "../core/activation.ts";

// ---------------------------------------------------------------- input types

/** tzrec `MLP` (module.proto). */
export interface MLP {
  /** Output width of each layer. */
  hiddenUnits: number[];
  /** Dropout per layer: empty = 0, one value = every layer, else one per layer. */
  dropoutRatio?: number[];
  /** Activation module, e.g. `"nn.ReLU"` (default), `"nn.LeakyReLU(negative_slope=0.1)"`. */
  activation?: string;
  /** BatchNorm1d after each Linear (which then has no bias). Default false. */
  useBn?: boolean;
  /** Linear bias. Default true. */
  bias?: boolean;
  /** LayerNorm after each Linear. Default false. */
  useLn?: boolean;
}

/** tzrec `LossConfig`: exactly one of its fields. */
export interface LossConfig {
  /** BCE with logits (num_class 1). */
  binaryCrossEntropy?: { labelSmoothing?: number };
  /** Mean squared error on the raw output `y_<t>`. */
  l2Loss?: Record<string, never>;
  /** Softmax cross-entropy (num_class > 1). */
  softmaxCrossEntropy?: { labelSmoothing?: number };
}

/** tzrec `MetricConfig`: exactly one of its fields. */
export interface MetricConfig {
  /** Binned AUROC, torchmetrics `BinaryAUROC(thresholds)`; default 200 thresholds. */
  auc?: { thresholds?: number };
  /** Exact (rank based, ties averaged) AUC; this library's addition. */
  exactAuc?: Record<string, never>;
  /** Mean of exact per-group AUCs over groups with both labels. */
  groupedAuc?: { groupingKey: string };
  /** Mean absolute error. */
  meanAbsoluteError?: Record<string, never>;
  /** Mean squared error. */
  meanSquaredError?: Record<string, never>;
  /** Accuracy at a probability threshold (default 0.5). */
  accuracy?: { threshold?: number };
}

/** tzrec `TaskTower` (tower.proto). */
export interface TaskTower {
  /** Task name: outputs are `logits_<towerName>`, metrics `auc_<towerName>`. */
  towerName: string;
  /** Label column. */
  labelName: string;
  /** Metrics reported in eval. */
  metrics?: MetricConfig[];
  /** Losses (this library supports exactly one per tower). */
  losses?: LossConfig[];
  /** Output width: 1 for BCE/l2, >1 for softmax. Default 1. */
  numClass?: number;
  /** Tower MLP between the expert mixture and the final Linear. */
  mlp?: MLP;
  /** Loss weight. Default 1. */
  weight?: number;
  /** Per-row sample weight column. */
  sampleWeightName?: string;
  /** Label column whose value > 0 marks a row inside the task space. */
  taskSpaceIndicatorLabel?: string;
  /** Weight of rows inside the task space. Default 1. */
  inTaskSpaceWeight?: number;
  /** Weight of rows outside the task space. Default 1. */
  outTaskSpaceWeight?: number;
}

/** tzrec `MMoE` (multi_task_rank.proto). */
export interface MMoE {
  /** The MLP each expert runs. */
  expertMlp: MLP;
  /** Optional per-task MLP before each gate's Linear. */
  gateMlp?: MLP;
  /** Number of experts E. */
  numExpert: number;
  /** One tower per task. */
  taskTowers: TaskTower[];
}

/** tzrec `FeatureGroupConfig`. */
export interface FeatureGroupConfig {
  /** Group name. */
  groupName: string;
  /** Features concatenated in this order. */
  featureNames: string[];
  /** Only `"DEEP"` is supported. */
  groupType?: "DEEP" | "WIDE" | "SEQUENCE";
}

/** tzrec `IdFeature`. */
export interface IdFeature {
  /** Feature name, referenced by feature groups. */
  featureName: string;
  /** `"side:column"`, e.g. `"user:user_id"` reads column `user_id`. */
  expression: string;
  /** Embedding width. */
  embeddingDim: number;
  /** Integer ids used as rows directly, in [0, numBuckets). */
  numBuckets?: number;
  /** Strings hashed into [0, hashBucketSize). */
  hashBucketSize?: number;
  /** Vocabulary: value i maps to row i + 2 (0 default/pad, 1 unknown), tzrec style. */
  vocabList?: string[];
  /** Table name; features with the same name share one table. */
  embeddingName?: string;
  /** Pooling of multi-value ids: `"sum"` (default) or `"mean"`. */
  pooling?: "sum" | "mean";
  /** Multi-value separator inside a field. Default `"\x1d"`. */
  separator?: string;
}

/** tzrec `RawFeature`. */
export interface RawFeature {
  /** Feature name. */
  featureName: string;
  /** `"side:column"`. */
  expression: string;
  /** Bucketize: bucket = number of boundaries <= x, then embed. */
  boundaries?: number[];
  /** Embedding width when bucketized. */
  embeddingDim?: number;
  /** Dense width when not bucketized. Default 1. */
  valueDim?: number;
  /** Table name when bucketized. */
  embeddingName?: string;
  /** Separator of a multi-dimensional dense value. Default `"\x1d"`. */
  separator?: string;
}

/** tzrec `FeatureConfig`: exactly one of its fields. */
export interface FeatureConfig {
  /** Categorical id feature. */
  idFeature?: IdFeature;
  /** Numeric feature. */
  rawFeature?: RawFeature;
}

/** A learning-rate schedule (tzrec optimizer.proto). */
export interface LearningRateConfig {
  /** lr stays constant. */
  constantLearningRate?: Record<string, never>;
  /** lr * decayFactor^(step / decaySize), floored at minLearningRate. */
  exponentialDecayLearningRate?: {
    decaySize?: number;
    decayFactor?: number;
    staircase?: boolean;
    minLearningRate?: number;
  };
}

/** An optimizer: exactly one of the optimizer fields, plus a schedule. */
export interface OptimizerConfig extends LearningRateConfig {
  /** Adagrad. */
  adagradOptimizer?: { lr: number; weightDecay?: number };
  /** Adam. */
  adamOptimizer?: {
    lr: number;
    beta1?: number;
    beta2?: number;
    weightDecay?: number;
  };
  /**
   * SGD (torch, dampening 0). Dense momentum defaults to 0.9 as in tzrec;
   * the sparse (embedding) SGD has no momentum.
   */
  sgdOptimizer?: { lr: number; momentum?: number; weightDecay?: number };
}

/** tzrec `TrainConfig`. */
export interface TrainConfig {
  /** Optimizer of the embedding tables. Default Adagrad lr 0.002 (tzrec). */
  sparseOptimizer?: OptimizerConfig;
  /** Optimizer of every other parameter. Default Adam lr 0.002. */
  denseOptimizer?: OptimizerConfig;
  /** Epochs. Default 1. */
  numEpochs?: number;
  /** Stop after this many steps (0 = no limit). */
  numSteps?: number;
  /** Log every this many steps. Default 100. */
  logStepCountSteps?: number;
}

/** tzrec `DataConfig`. */
export interface DataConfig {
  /** Rows per batch. Default 1024. */
  batchSize?: number;
  /** Label columns. */
  labelFields?: string[];
  /** Sample weight columns. */
  sampleWeightFields?: string[];
  /** Field delimiter. Default `","`. */
  delimiter?: string;
  /** Shuffle training rows. Default false. */
  shuffle?: boolean;
  /** Drop the last partial batch. Default false. */
  dropRemainder?: boolean;
}

/** tzrec `ModelConfig` with an MMoE. */
export interface ModelConfig {
  /** Feature groups; MMoE reads the first. */
  featureGroups: FeatureGroupConfig[];
  /** The model. */
  mmoe: MMoE;
}

/** tzrec `EasyRecConfig` (pipeline.config). */
export interface PipelineConfig {
  /** Training input. */
  trainInputPath?: string;
  /** Evaluation input. */
  evalInputPath?: string;
  /** Checkpoints and results. */
  modelDir?: string;
  /** Training options. */
  trainConfig?: TrainConfig;
  /** Evaluation options (none yet). */
  evalConfig?: Record<string, never>;
  /** Input options. */
  dataConfig?: DataConfig;
  /** Every feature. */
  featureConfigs: FeatureConfig[];
  /** The model. */
  modelConfig: ModelConfig;
}

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

/** How a feature's raw value becomes embedding rows or dense columns. */
export type FeatureKind = "num_buckets" | "hash_bucket" | "vocab" | "boundaries" | "dense";

/** A feature of the model's group, in group order. */
export interface ResolvedFeature {
  /** Feature name. */
  name: string;
  /** Input column read (from the expression). */
  column: string;
  /** Encoding. */
  kind: FeatureKind;
  /** Columns this feature fills in the group input: embedding dim or value dim. */
  width: number;
  /** First column of this feature in the group input. */
  offset: number;
  /** Embedding table index in {@link ResolvedConfig.tables}; -1 for dense. */
  table: number;
  /** Rows of the table (ids must be < rows). */
  rows: number;
  /** Bucket boundaries (ascending) for `boundaries`. */
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
  /** Multi-value separator. */
  separator: string;
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

/** A metric with defaults applied. */
export type ResolvedMetric =
  | { kind: "auc"; name: string; thresholds: number }
  | { kind: "exact_auc"; name: string }
  | { kind: "grouped_auc"; name: string; groupingKey: string }
  | { kind: "mean_absolute_error"; name: string }
  | { kind: "mean_squared_error"; name: string }
  | { kind: "accuracy"; name: string; threshold: number };

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
  /** Training loop options. */
  train: { numEpochs: number; numSteps: number; logStepCountSteps: number };
  /** Input options. */
  data: {
    batchSize: number;
    labelFields: string[];
    sampleWeightFields: string[];
    delimiter: string;
    shuffle: boolean;
    dropRemainder: boolean;
  };
  /** Paths from the config (may be overridden by CLI flags). */
  paths: { trainInputPath: string; evalInputPath: string; modelDir: string };
}

/** A config field is missing, malformed or unsupported; `path` names it. */
export class ConfigError extends Error {
  /** tzrec field path, e.g. `model_config.mmoe.num_expert`. */
  readonly path: string;
  /** Creates the error `${path}: ${message}`. */
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "ConfigError";
    this.path = path;
  }
}

// -------------------------------------------------------------------- defaults

/** tzrec's defaults (proto2 `[default = ...]`), in one place. */
export const DEFAULTS = {
  mlp: { activation: "nn.ReLU", useBn: false, bias: true, useLn: false },
  tower: { numClass: 1, weight: 1, inTaskSpaceWeight: 1, outTaskSpaceWeight: 1 },
  auc: { thresholds: 200 },
  accuracy: { threshold: 0.5 },
  idFeature: { pooling: "sum", separator: "\x1d" },
  rawFeature: { valueDim: 1, separator: "\x1d" },
  adam: { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
  denseAdagradEps: 1e-10,
  denseSgdMomentum: 0.9,
  sparseAdagradEps: 1e-8,
  sparseOptimizer: { adagradOptimizer: { lr: 0.002 } } as OptimizerConfig,
  denseOptimizer: { adamOptimizer: { lr: 0.002 } } as OptimizerConfig,
  exponentialDecay: { decayFactor: 0.95, staircase: true, minLearningRate: 0 },
  train: { numEpochs: 1, numSteps: 0, logStepCountSteps: 100 },
  data: { batchSize: 1024, delimiter: ",", shuffle: false, dropRemainder: false },
} as const;

// ------------------------------------------------------------------ validation

function positiveInt(value: unknown, path: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new ConfigError(path, `must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value;
}

function finiteNumber(value: unknown, path: string): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw new ConfigError(path, `must be a finite number, got ${JSON.stringify(value)}`);
  }
  return value;
}

function nonEmptyString(value: unknown, path: string): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new ConfigError(path, "must be a non-empty string");
  }
  return value;
}

/** The single set field of a oneof-like object, or an error naming the choices. */
function oneOf<T extends object>(value: T | undefined, path: string, choices: string[]): keyof T {
  const set = value
    ? Object.keys(value).filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    : [];
  if (set.length !== 1) {
    throw new ConfigError(
      path,
      set.length === 0
        ? `must set one of ${choices.join(", ")}`
        : `sets ${set.join(" and ")}; exactly one of ${choices.join(", ")} is allowed`,
    );
  }
  if (!choices.includes(snake(set[0]))) {
    throw new ConfigError(`${path}.${snake(set[0])}`, "is not supported yet");
  }
  return set[0] as keyof T;
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

function resolveMlp(mlp: MLP | undefined, path: string): ResolvedMLP {
  if (!mlp) throw new ConfigError(path, "is required");
  const units = mlp.hiddenUnits;
  if (!Array.isArray(units) || units.length === 0) {
    throw new ConfigError(`${path}.hidden_units`, "must be non-empty");
  }
  units.forEach((u, i) => positiveInt(u, `${path}.hidden_units[${i}]`));
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
      throw new ConfigError(`${path}.dropout_ratio[${i}]`, `must be in [0, 1), got ${r}`);
    }
  });
  const useBn = mlp.useBn ?? DEFAULTS.mlp.useBn;
  const useLn = mlp.useLn ?? DEFAULTS.mlp.useLn;
  if (useBn && useLn) {
    throw new ConfigError(path, "use_bn and use_ln cannot both be set (tzrec Perceptron)");
  }
  return {
    hiddenUnits: [...units],
    dropoutRatio,
    ...resolveActivation(mlp.activation ?? DEFAULTS.mlp.activation, `${path}.activation`),
    useBn,
    bias: (mlp.bias ?? DEFAULTS.mlp.bias) && !useBn,
    useLn,
  };
}

function resolveOptimizer(
  config: OptimizerConfig,
  path: string,
  sparse: boolean,
): ResolvedOptimizer {
  const kind = oneOf(
    {
      adamOptimizer: config.adamOptimizer,
      adagradOptimizer: config.adagradOptimizer,
      sgdOptimizer: config.sgdOptimizer,
    },
    path,
    ["adam_optimizer", "adagrad_optimizer", "sgd_optimizer"],
  );
  const body = config[kind]!;
  const bodyPath = `${path}.${snake(kind)}`;
  const lr = finiteNumber(body.lr, `${bodyPath}.lr`);
  const weightDecay = finiteNumber(body.weightDecay ?? 0, `${bodyPath}.weight_decay`);
  let schedule: ResolvedOptimizer["schedule"] = { kind: "constant" };
  const decay = config.exponentialDecayLearningRate;
  if (decay && config.constantLearningRate) {
    throw new ConfigError(path, "sets two learning-rate schedules");
  }
  if (decay) {
    const dp = `${path}.exponential_decay_learning_rate`;
    schedule = {
      kind: "exponential_decay",
      decaySize: positiveInt(decay.decaySize, `${dp}.decay_size`),
      decayFactor: finiteNumber(
        decay.decayFactor ?? DEFAULTS.exponentialDecay.decayFactor,
        `${dp}.decay_factor`,
      ),
      staircase: decay.staircase ?? DEFAULTS.exponentialDecay.staircase,
      minLearningRate: finiteNumber(
        decay.minLearningRate ?? DEFAULTS.exponentialDecay.minLearningRate,
        `${dp}.min_learning_rate`,
      ),
    };
  }
  if (kind === "adamOptimizer") {
    const adam = config.adamOptimizer!;
    return {
      kind: "adam",
      lr,
      beta1: finiteNumber(adam.beta1 ?? DEFAULTS.adam.beta1, `${bodyPath}.beta1`),
      beta2: finiteNumber(adam.beta2 ?? DEFAULTS.adam.beta2, `${bodyPath}.beta2`),
      eps: DEFAULTS.adam.eps,
      weightDecay,
      momentum: 0,
      dampening: 0,
      nesterov: false,
      initialAccumulatorValue: 0,
      schedule,
    };
  }
  let momentum = 0;
  if (kind === "sgdOptimizer") {
    const given = config.sgdOptimizer!.momentum;
    if (sparse && given !== undefined && given !== 0) {
      // tzrec's FusedSGDOptimizer (embeddings) has no momentum field.
      throw new ConfigError(
        `${bodyPath}.momentum`,
        "the sparse (embedding) SGD has no momentum in tzrec",
      );
    }
    momentum = sparse
      ? 0
      : finiteNumber(given ?? DEFAULTS.denseSgdMomentum, `${bodyPath}.momentum`);
    if (!(momentum >= 0 && momentum < 1)) {
      throw new ConfigError(`${bodyPath}.momentum`, `must be in [0, 1), got ${momentum}`);
    }
  }
  return {
    kind: kind === "adagradOptimizer" ? "adagrad" : "sgd",
    lr,
    beta1: 0,
    beta2: 0,
    eps: sparse ? DEFAULTS.sparseAdagradEps : DEFAULTS.denseAdagradEps,
    weightDecay,
    momentum,
    dampening: 0,
    nesterov: false,
    initialAccumulatorValue: 0,
    schedule,
  };
}

function columnOf(expression: unknown, path: string): string {
  const text = nonEmptyString(expression, path);
  const match = text.match(/^(?:user|item|context|feature):(.+)$/);
  if (!match) {
    throw new ConfigError(
      path,
      `must look like "user:column" (side user/item/context), got ${JSON.stringify(text)}`,
    );
  }
  return match[1];
}

/**
 * Applies tzrec's defaults and validates `config` once, at the boundary.
 * Throws a {@link ConfigError} naming the first bad field.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError, resolveConfig } from "./config.ts";
 * assert.throws(
 *   () =>
 *     resolveConfig({
 *       featureConfigs: [],
 *       modelConfig: {
 *         featureGroups: [{ groupName: "all", featureNames: ["missing"] }],
 *         mmoe: { expertMlp: { hiddenUnits: [4] }, numExpert: 2, taskTowers: [] },
 *       },
 *     }),
 *   (e) => e instanceof ConfigError && e.path === "model_config.feature_groups[0].feature_names[0]",
 * );
 * ```
 */
export function resolveConfig(config: PipelineConfig): ResolvedConfig {
  // Features by name.
  const byName = new Map<string, { config: FeatureConfig; path: string }>();
  (config.featureConfigs ?? []).forEach((fc, i) => {
    const path = `feature_configs[${i}]`;
    const kind = oneOf(fc, path, ["id_feature", "raw_feature"]);
    const name = nonEmptyString(fc[kind]!.featureName, `${path}.${snake(kind)}.feature_name`);
    if (byName.has(name)) {
      throw new ConfigError(
        `${path}.${snake(kind)}.feature_name`,
        `duplicate feature ${JSON.stringify(name)}`,
      );
    }
    byName.set(name, { config: fc, path });
  });

  const model = config.modelConfig;
  if (!model) throw new ConfigError("model_config", "is required");
  const groups = model.featureGroups ?? [];
  if (groups.length === 0) {
    throw new ConfigError("model_config.feature_groups", "must be non-empty");
  }
  if (groups.length > 1) {
    throw new ConfigError(
      "model_config.feature_groups[1]",
      "MMoE reads one DEEP group; more groups are not supported yet",
    );
  }
  const group = groups[0];
  const groupPath = "model_config.feature_groups[0]";
  if ((group.groupType ?? "DEEP") !== "DEEP") {
    throw new ConfigError(
      `${groupPath}.group_type`,
      `${group.groupType} groups are not supported yet`,
    );
  }
  if (!group.featureNames?.length) {
    throw new ConfigError(`${groupPath}.feature_names`, "must be non-empty");
  }

  const features: ResolvedFeature[] = [];
  const tables: ResolvedTable[] = [];
  const tableIndex = new Map<string, number>();
  let offset = 0;
  group.featureNames.forEach((name, gi) => {
    const entry = byName.get(name);
    if (!entry) {
      throw new ConfigError(
        `${groupPath}.feature_names[${gi}]`,
        `no feature_configs entry named ${JSON.stringify(name)}`,
      );
    }
    const { config: fc, path } = entry;
    let feature: ResolvedFeature;
    let tableName: string | null = null;
    if (fc.idFeature) {
      const f = fc.idFeature, p = `${path}.id_feature`;
      const dim = positiveInt(f.embeddingDim, `${p}.embedding_dim`);
      const encodings = [f.numBuckets, f.hashBucketSize, f.vocabList].filter((v) =>
        v !== undefined
      );
      if (encodings.length !== 1) {
        throw new ConfigError(
          p,
          "must set exactly one of num_buckets, hash_bucket_size, vocab_list",
        );
      }
      let kind: FeatureKind, rows: number;
      const vocab = new Map<string, number>();
      if (f.numBuckets !== undefined) {
        kind = "num_buckets";
        rows = positiveInt(f.numBuckets, `${p}.num_buckets`);
      } else if (f.hashBucketSize !== undefined) {
        kind = "hash_bucket";
        rows = positiveInt(f.hashBucketSize, `${p}.hash_bucket_size`);
      } else {
        kind = "vocab";
        if (!f.vocabList!.length) throw new ConfigError(`${p}.vocab_list`, "must be non-empty");
        f.vocabList!.forEach((v, i) => vocab.set(v, i + 2));
        rows = f.vocabList!.length + 2;
      }
      const pooling = f.pooling ?? DEFAULTS.idFeature.pooling;
      if (pooling !== "sum" && pooling !== "mean") {
        throw new ConfigError(
          `${p}.pooling`,
          `must be "sum" or "mean", got ${JSON.stringify(pooling)}`,
        );
      }
      feature = {
        name,
        column: columnOf(f.expression, `${p}.expression`),
        kind,
        width: dim,
        offset,
        table: -1,
        rows,
        boundaries: [],
        vocab,
        mean: pooling === "mean",
        weighted: false,
        separator: f.separator ?? DEFAULTS.idFeature.separator,
      };
      tableName = f.embeddingName ?? `${name}_emb`;
    } else {
      const f = fc.rawFeature!, p = `${path}.raw_feature`;
      const column = columnOf(f.expression, `${p}.expression`);
      const separator = f.separator ?? DEFAULTS.rawFeature.separator;
      if (f.boundaries && f.boundaries.length > 0) {
        f.boundaries.forEach((b, i) => {
          finiteNumber(b, `${p}.boundaries[${i}]`);
          if (i > 0 && !(b > f.boundaries![i - 1])) {
            throw new ConfigError(`${p}.boundaries[${i}]`, "boundaries must be strictly ascending");
          }
        });
        const dim = positiveInt(f.embeddingDim, `${p}.embedding_dim`);
        feature = {
          name,
          column,
          kind: "boundaries",
          width: dim,
          offset,
          table: -1,
          rows: f.boundaries.length + 1,
          boundaries: [...f.boundaries],
          vocab: new Map(),
          mean: false,
          weighted: false,
          separator,
        };
        tableName = f.embeddingName ?? `${name}_emb`;
      } else {
        const valueDim = positiveInt(f.valueDim ?? DEFAULTS.rawFeature.valueDim, `${p}.value_dim`);
        feature = {
          name,
          column,
          kind: "dense",
          width: valueDim,
          offset,
          table: -1,
          rows: 0,
          boundaries: [],
          vocab: new Map(),
          mean: false,
          weighted: false,
          separator,
        };
      }
    }
    if (tableName !== null) {
      let t = tableIndex.get(tableName);
      if (t === undefined) {
        t = tables.length;
        tableIndex.set(tableName, t);
        tables.push({ name: tableName, rows: feature.rows, dim: feature.width, features: [name] });
      } else {
        const table = tables[t];
        if (table.rows !== feature.rows || table.dim !== feature.width) {
          throw new ConfigError(
            path,
            `shares embedding ${
              JSON.stringify(tableName)
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
  const numExpert = positiveInt(mmoe.numExpert, `${mp}.num_expert`);
  const gateMlp = mmoe.gateMlp ? resolveMlp(mmoe.gateMlp, `${mp}.gate_mlp`) : null;
  if (!mmoe.taskTowers?.length) throw new ConfigError(`${mp}.task_towers`, "must be non-empty");
  const towerNames = new Set<string>();
  const towers = mmoe.taskTowers.map((t, i): ResolvedTower => {
    const tp = `${mp}.task_towers[${i}]`;
    const name = nonEmptyString(t.towerName, `${tp}.tower_name`);
    if (towerNames.has(name)) {
      throw new ConfigError(`${tp}.tower_name`, `duplicate tower ${JSON.stringify(name)}`);
    }
    towerNames.add(name);
    const numClass = positiveInt(t.numClass ?? DEFAULTS.tower.numClass, `${tp}.num_class`);
    const losses = t.losses ?? [];
    if (losses.length === 0) throw new ConfigError(`${tp}.losses`, "must set one loss");
    const resolvedLosses = losses.map((loss, j): ResolvedLoss => {
      const lp = `${tp}.losses[${j}]`;
      const lossKind = oneOf(loss, lp, [
        "binary_cross_entropy",
        "l2_loss",
        "softmax_cross_entropy",
      ]);
      const kind = snake(lossKind) as ResolvedLoss["kind"];
      if ((kind === "softmax_cross_entropy") !== (numClass > 1)) {
        throw new ConfigError(
          `${tp}.num_class`,
          kind === "softmax_cross_entropy"
            ? "softmax_cross_entropy needs num_class > 1"
            : `${kind} needs num_class 1, got ${numClass}`,
        );
      }
      const smoothing = (loss[lossKind] as { labelSmoothing?: number }).labelSmoothing ?? 0;
      if (!(smoothing >= 0 && smoothing <= 1)) {
        throw new ConfigError(
          `${lp}.${kind}.label_smoothing`,
          `must be in [0, 1], got ${smoothing}`,
        );
      }
      return { kind, name: `${kind}_${name}`, labelSmoothing: smoothing };
    });
    const metrics = (t.metrics ?? []).map((m, j): ResolvedMetric => {
      const mpath = `${tp}.metrics[${j}]`;
      const key = oneOf(m, mpath, [
        "auc",
        "exact_auc",
        "grouped_auc",
        "mean_absolute_error",
        "mean_squared_error",
        "accuracy",
      ]);
      const metricName = `${snake(key)}_${name}`;
      switch (key) {
        case "auc":
          return {
            kind: "auc",
            name: metricName,
            thresholds: positiveInt(
              m.auc!.thresholds ?? DEFAULTS.auc.thresholds,
              `${mpath}.auc.thresholds`,
            ),
          };
        case "groupedAuc":
          return {
            kind: "grouped_auc",
            name: metricName,
            groupingKey: nonEmptyString(
              m.groupedAuc!.groupingKey,
              `${mpath}.grouped_auc.grouping_key`,
            ),
          };
        case "accuracy":
          return {
            kind: "accuracy",
            name: metricName,
            threshold: finiteNumber(
              m.accuracy!.threshold ?? DEFAULTS.accuracy.threshold,
              `${mpath}.accuracy.threshold`,
            ),
          };
        default:
          return { kind: snake(key), name: metricName } as ResolvedMetric;
      }
    });
    return {
      name,
      label: nonEmptyString(t.labelName, `${tp}.label_name`),
      numClass,
      mlp: t.mlp ? resolveMlp(t.mlp, `${tp}.mlp`) : null,
      losses: resolvedLosses,
      metrics,
      hasWeight: t.weight !== undefined || t.sampleWeightName !== undefined ||
        t.taskSpaceIndicatorLabel !== undefined,
      weight: finiteNumber(t.weight ?? DEFAULTS.tower.weight, `${tp}.weight`),
      sampleWeightName: t.sampleWeightName ?? null,
      taskSpaceIndicatorLabel: t.taskSpaceIndicatorLabel ?? null,
      inTaskSpaceWeight: finiteNumber(
        t.inTaskSpaceWeight ?? DEFAULTS.tower.inTaskSpaceWeight,
        `${tp}.in_task_space_weight`,
      ),
      outTaskSpaceWeight: finiteNumber(
        t.outTaskSpaceWeight ?? DEFAULTS.tower.outTaskSpaceWeight,
        `${tp}.out_task_space_weight`,
      ),
    };
  });

  const train = config.trainConfig ?? {};
  const data = config.dataConfig ?? {};
  return {
    features,
    tables,
    inputWidth: offset,
    expertMlp,
    numExpert,
    gateMlp,
    towers,
    sparseOptimizer: resolveOptimizer(
      train.sparseOptimizer ?? DEFAULTS.sparseOptimizer,
      "train_config.sparse_optimizer",
      true,
    ),
    denseOptimizer: resolveOptimizer(
      train.denseOptimizer ?? DEFAULTS.denseOptimizer,
      "train_config.dense_optimizer",
      false,
    ),
    train: {
      numEpochs: positiveInt(
        train.numEpochs ?? DEFAULTS.train.numEpochs,
        "train_config.num_epochs",
      ),
      numSteps: train.numSteps === undefined || train.numSteps === 0
        ? 0
        : positiveInt(train.numSteps, "train_config.num_steps"),
      logStepCountSteps: positiveInt(
        train.logStepCountSteps ?? DEFAULTS.train.logStepCountSteps,
        "train_config.log_step_count_steps",
      ),
    },
    data: {
      batchSize: positiveInt(data.batchSize ?? DEFAULTS.data.batchSize, "data_config.batch_size"),
      labelFields: [...(data.labelFields ?? [])],
      sampleWeightFields: [...(data.sampleWeightFields ?? [])],
      delimiter: data.delimiter ?? DEFAULTS.data.delimiter,
      shuffle: data.shuffle ?? DEFAULTS.data.shuffle,
      dropRemainder: data.dropRemainder ?? DEFAULTS.data.dropRemainder,
    },
    paths: {
      trainInputPath: config.trainInputPath ?? "",
      evalInputPath: config.evalInputPath ?? "",
      modelDir: config.modelDir ?? "",
    },
  };
}

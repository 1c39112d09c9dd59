/**
 * The training and evaluation loops, with tzrec's names: per-task losses
 * `binary_cross_entropy_<t>`, metrics `auc_<t>`, logging every
 * `log_step_count_steps` steps.
 *
 * Batches come from any iterable or async iterable of {@link EncodedBatch}es,
 * so a file reader can stream them; nothing here holds more than one batch.
 *
 * @example Train and evaluate a tiny model
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { evaluate, train } from "./trainer.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 2, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       numExpert: 2,
 *       taskTowers: [{
 *         towerName: "ctr",
 *         labelName: "clk",
 *         losses: [{ binaryCrossEntropy: {} }],
 *         metrics: [{ auc: {} }],
 *       }],
 *     },
 *   },
 *   trainConfig: { denseOptimizer: { adamOptimizer: { lr: 0.05 } }, numEpochs: 30 },
 * });
 * // Item 1 is always clicked, item 0 never.
 * const batch = {
 *   size: 4,
 *   features: [{ ids: Int32Array.of(0, 1, 0, 1), offsets: Int32Array.of(0, 1, 2, 3, 4) }],
 *   columns: { clk: Float32Array.of(0, 1, 0, 1) },
 * };
 * const model = new MMoEModel(config, { maxBatch: 4, seed: 1 });
 * await train(model, () => [batch]);
 * const metrics = await evaluate(model, [batch]);
 * assert.equal(metrics.auc_ctr, 1);
 * assert.ok(metrics.binary_cross_entropy_ctr < 0.3);
 * ```
 * @module
 */
import { createMetric, WeightedMean } from "./metrics.ts";
import type { EncodedBatch } from "../core/batch.ts";
import { firstNonFiniteTensor, type TrainingPosition } from "../io/checkpoint.ts";
import type { MMoEModel, StepLosses } from "../model/mmoe.ts";

/** Batches of one pass over the data. */
export type BatchSource = Iterable<EncodedBatch> | AsyncIterable<EncodedBatch>;

/** A progress record, emitted every `logEvery` steps and at the end. */
export interface TrainLog {
  /** Optimizer steps so far. */
  step: number;
  /** 1-based epoch. */
  epoch: number;
  /** Rows trained so far. */
  samples: number;
  /** Rows per second since the previous log. */
  samplesPerSecond: number;
  /** Mean of each loss since the previous log (batch-size weighted). */
  losses: Record<string, number>;
  /** Mean total loss since the previous log. */
  total: number;
  /** Seconds since training started. */
  elapsed: number;
}

/** Options of {@link train}; defaults come from the model's train_config. */
export interface TrainOptions {
  /** Epochs (train_config.num_epochs); ignored when `numSteps` is set. */
  numEpochs?: number;
  /**
   * Train until the model's step count reaches this total, restarting the
   * data as often as needed, 0 = epochs instead (train_config.num_steps).
   */
  numSteps?: number;
  /** Log every this many steps (train_config.log_step_count_steps). */
  logStepCountSteps?: number;
  /** Receives every log record; default none. */
  onLog?: (log: TrainLog) => void;
  /** Called after each complete epoch (e.g. to evaluate). */
  onEpochEnd?: (epoch: number) => void | Promise<void>;
  /**
   * Where to start: a resumed run passes the position saved in its
   * checkpoint, and the batches of that epoch already trained are skipped.
   * Default epoch 1, batch 0.
   */
  start?: TrainingPosition;
  /**
   * Saves a checkpoint of the model, with the position of the next batch:
   * called every `saveCheckpointsSteps` steps, at every
   * `saveCheckpointsEpochs`-th epoch end, and once when training ends,
   * never twice for one step and never for the step training resumed at.
   * Before each call the updated model is checked: a NaN or infinite loss on
   * the last batch, or a tensor holding NaN or infinity, throws
   * {@link DivergedError} and nothing is saved.
   */
  onCheckpoint?: (position: TrainingPosition) => void | Promise<void>;
  /**
   * Save when the step (tzrec's 0-based `global_step`, `model.step - 1`) is a
   * positive multiple of this, 0 = only at the end
   * (train_config.save_checkpoints_steps).
   */
  saveCheckpointsSteps?: number;
  /**
   * Save at the end of every this-many epochs instead of every
   * `saveCheckpointsSteps` steps, 0 = by steps (train_config.save_checkpoints_epochs).
   */
  saveCheckpointsEpochs?: number;
}

/** What {@link train} did. */
export interface TrainSummary {
  /** Steps taken by this call. */
  steps: number;
  /** Rows trained by this call. */
  samples: number;
  /** Wall time in seconds. */
  seconds: number;
  /** Every log record. */
  logs: TrainLog[];
  /** Where the data stands after the last step (the next batch). */
  position: TrainingPosition;
}

/**
 * Training diverged: a step's loss is NaN or infinite (training stops before
 * that step's update), or the model after a step gives a non-finite loss or
 * holds NaN or infinity where a checkpoint was due (that step is not saved).
 * Either way the checkpoints saved so far are those of good steps. The
 * message names the step, what is not finite and what to try.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DivergedError } from "./trainer.ts";
 * const error = new DivergedError(7, 1, "the loss is NaN", "dense adam lr 1e+30");
 * assert.equal(
 *   error.message,
 *   "step 7 (epoch 1): training diverged: the loss is NaN; lower the learning rate " +
 *     "(dense adam lr 1e+30) or check the inputs for NaN and infinite labels and values",
 * );
 * ```
 */
export class DivergedError extends RangeError {
  /** The step (the model's step count once it has run). */
  readonly step: number;
  /** Its 1-based epoch. */
  readonly epoch: number;

  /** `problem` says what is not finite; `learningRates` the rates in use. */
  constructor(step: number, epoch: number, problem: string, learningRates: string) {
    super(
      `step ${step} (epoch ${epoch}): training diverged: ${problem}; lower the learning rate ` +
        `(${learningRates}) or check the inputs for NaN and infinite labels and values`,
    );
    this.name = "DivergedError";
    this.step = step;
    this.epoch = epoch;
  }
}

const learningRates = (model: MMoEModel): string => {
  const { denseOptimizer: dense, sparseOptimizer: sparse } = model.config;
  // Rates come from f32 proto fields: 6 digits show 0.05, not 0.05000000074505806.
  const lr = (value: number) => String(Number(value.toPrecision(6)));
  return `dense ${dense.kind} lr ${lr(dense.lr)}, sparse ${sparse.kind} lr ${lr(sparse.lr)}`;
};

const describeLosses = ({ losses, total }: StepLosses): string =>
  `the loss is ${total} (${Object.entries(losses).map(([k, v]) => `${k} ${v}`).join(", ")})`;

/**
 * Trains `model` for `numEpochs` passes over `epochBatches(epoch)`, or until
 * its step count reaches `numSteps` (the data restarts with the next epoch
 * as often as needed), one optimizer step per batch. Started at a saved
 * position with the model restored from the checkpoint saved there (and
 * `epochBatches` giving each epoch's batches in the same order, e.g.
 * shuffled with a seed from (seed, epoch)), it continues the interrupted run
 * exactly: the same losses and the same parameters, bit for bit.
 *
 * Each step's loss is checked before the update: a NaN or infinite loss
 * throws {@link DivergedError} and leaves the parameters as they were.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { train } from "./trainer.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ rawFeature: { featureName: "x", expression: "item:x" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["x"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 *   trainConfig: { numEpochs: 2, logStepCountSteps: 1 },
 * });
 * const batch = { size: 2, features: [{ values: Float32Array.of(-1, 1) }], columns: { clk: Float32Array.of(0, 1) } };
 * const summary = await train(new MMoEModel(config, { maxBatch: 2 }), () => [batch, batch]);
 * assert.equal(summary.steps, 4);
 * assert.equal(summary.logs.length, 4);
 *
 * // num_steps counts the model's steps and restarts the data: 5 steps are epochs 1, 2 and 3.
 * const model = new MMoEModel(config, { maxBatch: 2 });
 * const epochs: number[] = [];
 * await train(model, (epoch) => (epochs.push(epoch), [batch, batch]), { numSteps: 5 });
 * assert.deepEqual([model.step, ...epochs], [5, 1, 2, 3]);
 * ```
 */
export async function train(
  model: MMoEModel,
  epochBatches: (epoch: number) => BatchSource,
  options: TrainOptions = {},
): Promise<TrainSummary> {
  const settings = model.config.train;
  const numEpochs = options.numEpochs ?? settings.numEpochs;
  const numSteps = options.numSteps ?? settings.numSteps;
  const logEvery = options.logStepCountSteps ?? settings.logStepCountSteps;
  const saveEpochs = options.saveCheckpointsEpochs ?? settings.saveCheckpointsEpochs;
  const saveSteps = saveEpochs > 0
    ? 0
    : options.saveCheckpointsSteps ?? settings.saveCheckpointsSteps;
  const start = options.start ?? { epoch: 1, batchesInEpoch: 0 };
  if (!Number.isInteger(start.epoch) || start.epoch < 1) {
    throw new RangeError(`start.epoch must be a positive integer, got ${start.epoch}`);
  }
  if (!Number.isInteger(start.batchesInEpoch) || start.batchesInEpoch < 0) {
    throw new RangeError(
      `start.batchesInEpoch must be a non-negative integer, got ${start.batchesInEpoch}`,
    );
  }
  const logs: TrainLog[] = [];
  const started = performance.now();
  let lastLog = started, steps = 0, samples = 0, windowSamples = 0;
  let window: Record<string, number> = {}, windowTotal = 0;

  const log = (epoch: number) => {
    const now = performance.now();
    const losses: Record<string, number> = {};
    for (const [name, sum] of Object.entries(window)) losses[name] = sum / windowSamples;
    const record: TrainLog = {
      step: model.step,
      epoch,
      samples,
      samplesPerSecond: windowSamples / ((now - lastLog) / 1000),
      losses,
      total: windowTotal / windowSamples,
      elapsed: (now - started) / 1000,
    };
    logs.push(record);
    options.onLog?.(record);
    lastLog = now;
    window = {};
    windowTotal = 0;
    windowSamples = 0;
  };

  // The step resumed at is saved already; tzrec saves a step once.
  let savedStep = model.step;
  let lastBatch: EncodedBatch | null = null, lastEpoch = start.epoch;
  let position: TrainingPosition = { ...start };
  const save = async () => {
    if (!options.onCheckpoint || model.step === savedStep || lastBatch === null) return;
    // A finite loss before an update does not make the updated model usable
    // (lr 1e30 gives finite 1e30 weights): check it before saving it.
    const check = model.evalStep(lastBatch);
    const bad = firstNonFiniteTensor(model);
    if (!Number.isFinite(check.total) || bad) {
      const problem = bad
        ? `after its update ${bad.name} holds ${bad.value} at index ${bad.index}`
        : `after its update ${describeLosses(check)} on its batch`;
      throw new DivergedError(
        model.step,
        lastEpoch,
        `${problem}, so it was not saved`,
        learningRates(model),
      );
    }
    await options.onCheckpoint({ ...position });
    savedStep = model.step;
  };
  const done = () => numSteps > 0 && model.step >= numSteps;

  for (let epoch = start.epoch; numSteps > 0 ? !done() : epoch <= numEpochs; epoch++) {
    const skip = epoch === start.epoch ? start.batchesInEpoch : 0;
    let batchesInEpoch = 0;
    for await (const batch of epochBatches(epoch)) {
      if (batchesInEpoch < skip) {
        batchesInEpoch++;
        continue;
      }
      const stepLosses = model.forwardBackward(batch);
      const { losses, total } = stepLosses;
      if (!Number.isFinite(total)) {
        const problem = `${describeLosses(stepLosses)}, so the parameters were not updated`;
        throw new DivergedError(model.step + 1, epoch, problem, learningRates(model));
      }
      model.applyGradients();
      lastBatch = batch;
      lastEpoch = epoch;
      steps++;
      batchesInEpoch++;
      position = { epoch, batchesInEpoch };
      samples += batch.size;
      windowSamples += batch.size;
      for (const [name, value] of Object.entries(losses)) {
        window[name] = (window[name] ?? 0) + value * batch.size;
      }
      windowTotal += total * batch.size;
      if (model.step % logEvery === 0) log(epoch);
      if (saveSteps > 0 && model.step > 1 && (model.step - 1) % saveSteps === 0) await save();
      if (done()) break;
    }
    if (windowSamples > 0) log(epoch);
    if (done()) break;
    if (batchesInEpoch < skip) {
      throw new RangeError(
        `resuming at batch ${skip} of epoch ${epoch}, but that epoch of the training data ` +
          `has only ${batchesInEpoch} batches: did the data or the batch size change?`,
      );
    }
    if (batchesInEpoch === 0) throw new RangeError(`epoch ${epoch} of the training data is empty`);
    position = { epoch: epoch + 1, batchesInEpoch: 0 };
    await options.onEpochEnd?.(epoch);
    if (saveEpochs > 0 && epoch % saveEpochs === 0) await save();
  }
  await save();
  return { steps, samples, seconds: (performance.now() - started) / 1000, logs, position };
}

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /** Receives each batch's outputs (e.g. for a ROC plot or predictions file). */
  onBatch?: (outputs: Record<string, Float32Array>, batch: EncodedBatch) => void;
}

/**
 * Evaluates `model` in eval mode over `batches`: every configured metric
 * (`auc_<t>`, ...) over the whole set, and every loss as a batch-size
 * weighted mean (`binary_cross_entropy_<t>`), streaming.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { evaluate } from "./trainer.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ rawFeature: { featureName: "x", expression: "item:x" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["x"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }], metrics: [{ auc: {} }] }],
 *     },
 *   },
 * });
 * const batch = { size: 2, features: [{ values: Float32Array.of(-1, 1) }], columns: { clk: Float32Array.of(0, 1) } };
 * const metrics = await evaluate(new MMoEModel(config, { maxBatch: 2 }), [batch]);
 * assert.deepEqual(Object.keys(metrics).sort(), ["auc_ctr", "binary_cross_entropy_ctr"]);
 * ```
 */
export async function evaluate(
  model: MMoEModel,
  batches: BatchSource,
  options: EvaluateOptions = {},
): Promise<Record<string, number>> {
  const config = model.config;
  const towers = config.towers.map((tower) => ({
    tower,
    metrics: tower.metrics.map((spec) => ({
      metric: createMetric(spec),
      prediction: predictionOf(spec.kind, tower.name, tower.numClass),
      groupingKey: spec.kind === "grouped_auc" ? spec.groupingKey : null,
    })),
    losses: tower.losses.map((loss) => new WeightedMean(loss.name)),
  }));
  for await (const batch of batches) {
    const { losses } = model.evalStep(batch);
    const outputs = model.outputs(batch.size);
    for (const { tower, metrics, losses: means } of towers) {
      for (const mean of means) mean.update(losses[mean.name], batch.size);
      const labels = batch.columns[tower.label].subarray(0, batch.size);
      for (const { metric, prediction, groupingKey } of metrics) {
        const preds = outputs[prediction];
        if (preds === undefined) {
          throw new RangeError(
            `${metric.name} reads ${prediction}, which tower ${tower.name}'s losses do not produce`,
          );
        }
        // grouped_auc keys: the FeatureEncoder's batch.groups (first id of the feature per row).
        metric.update(
          preds,
          labels,
          groupingKey === null ? undefined : batch.groups?.[groupingKey],
        );
      }
    }
    options.onBatch?.(outputs, batch);
  }
  const result: Record<string, number> = {};
  for (const { metrics, losses } of towers) {
    for (const { metric } of metrics) result[metric.name] = metric.compute();
    for (const mean of losses) result[mean.name] = mean.compute();
  }
  return result;
}

/**
 * The prediction a metric reads, as tzrec's `RankModel._update_metric_impl`:
 * AUCs the probabilities (`probs1_<t>` with 2 classes), MAE/MSE `y_<t>`,
 * accuracy `probs_<t>`.
 */
function predictionOf(kind: string, tower: string, numClass: number): string {
  if (kind === "mean_absolute_error" || kind === "mean_squared_error") return `y_${tower}`;
  if (kind === "accuracy") return `probs_${tower}`;
  return numClass === 2 ? `probs1_${tower}` : `probs_${tower}`;
}

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
import type { MMoEModel } from "../model/mmoe.ts";

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
  /** Epochs (train_config.num_epochs). */
  numEpochs?: number;
  /** Stop after this many steps, 0 = no limit (train_config.num_steps). */
  numSteps?: number;
  /** Log every this many steps (train_config.log_step_count_steps). */
  logStepCountSteps?: number;
  /** Receives every log record; default none. */
  onLog?: (log: TrainLog) => void;
  /** Called after each epoch (e.g. to evaluate or checkpoint). */
  onEpochEnd?: (epoch: number) => void | Promise<void>;
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
}

/**
 * Trains `model` for `numEpochs` passes over `epochBatches(epoch)` (or until
 * `numSteps`), one optimizer step per batch.
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
 * ```
 */
export async function train(
  model: MMoEModel,
  epochBatches: (epoch: number) => BatchSource,
  options: TrainOptions = {},
): Promise<TrainSummary> {
  const numEpochs = options.numEpochs ?? model.config.train.numEpochs;
  const numSteps = options.numSteps ?? model.config.train.numSteps;
  const logEvery = options.logStepCountSteps ?? model.config.train.logStepCountSteps;
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

  outer: for (let epoch = 1; epoch <= numEpochs; epoch++) {
    for await (const batch of epochBatches(epoch)) {
      const { losses, total } = model.trainStep(batch);
      steps++;
      samples += batch.size;
      windowSamples += batch.size;
      for (const [name, value] of Object.entries(losses)) {
        window[name] = (window[name] ?? 0) + value * batch.size;
      }
      windowTotal += total * batch.size;
      if (model.step % logEvery === 0) log(epoch);
      if (numSteps > 0 && steps >= numSteps) {
        if (windowSamples > 0) log(epoch);
        break outer;
      }
    }
    if (windowSamples > 0) log(epoch);
    await options.onEpochEnd?.(epoch);
  }
  return { steps, samples, seconds: (performance.now() - started) / 1000, logs };
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
      groupingKey: spec.kind === "grouped_auc" ? spec.groupingKey : null,
    })),
    loss: new WeightedMean(tower.losses[0].name),
  }));
  for await (const batch of batches) {
    const { losses } = model.evalStep(batch);
    const outputs = model.outputs(batch.size);
    for (const { tower, metrics, loss } of towers) {
      loss.update(losses[tower.losses[0].name], batch.size);
      const preds = tower.losses[0].kind === "l2_loss"
        ? outputs[`y_${tower.name}`]
        : tower.numClass === 2
        ? outputs[`probs1_${tower.name}`]
        : outputs[`probs_${tower.name}`];
      const labels = batch.columns[tower.label].subarray(0, batch.size);
      for (const { metric, groupingKey } of metrics) {
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
  for (const { metrics, loss } of towers) {
    for (const { metric } of metrics) result[metric.name] = metric.compute();
    result[loss.name] = loss.compute();
  }
  return result;
}

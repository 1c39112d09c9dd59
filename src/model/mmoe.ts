/**
 * The MMoE model (Ma et al., KDD 2018) with TorchEasyRec's semantics, on one
 * arena of Wasm memory laid out by {@link planModel} (`./layout.ts`).
 *
 *   x = concat(embeddings and dense features of the DEEP group)      (B, F)
 *   experts = stack_e MLP_e(x)                                         (B, E, D)
 *   logits_t = Linear_t(x or gate_mlp_t(x)), gate_t = softmax(logits_t) (B, T, E)
 *   task_in_t = sum_e gate_t[:, e] * expert_e                          (B, T, D)
 *   out_t = Linear(tower_mlp_t(task_in_t))                             (B, C)
 *
 * Linear weights are stored as PyTorch does, [out, in], so the forward is the
 * NT GEMM, the input gradient NN and the weight gradient TN (`linear.ts`).
 * Every dense parameter lives in one block (zeroing gradients is one fill,
 * the dense optimizer one flat loop); embedding tables live beside it and get
 * sparse row updates.
 *
 * @example Train a tiny MMoE for a few steps
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "./mmoe.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 4, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 *   trainConfig: { denseOptimizer: { adamOptimizer: { lr: 0.05 } }, sparseOptimizer: { adagradOptimizer: { lr: 0.5 } } },
 * });
 * const model = new MMoEModel(config, { maxBatch: 4, seed: 1 });
 * const batch = {
 *   size: 4,
 *   features: [{ ids: Int32Array.of(0, 1, 2, 3), offsets: Int32Array.of(0, 1, 2, 3, 4) }],
 *   columns: { clk: Float32Array.of(1, 0, 1, 0) },
 * };
 * const first = model.trainStep(batch).total;
 * for (let i = 0; i < 20; i++) model.trainStep(batch);
 * assert.ok(model.trainStep(batch).total < first);
 * ```
 * @module
 */
import { createArenaMemory } from "../kernels/arena.ts";
import type { ResolvedConfig, ResolvedOptimizer } from "../config/config.ts";
import {
  Activation,
  bestKernelVariant,
  instantiateKernels,
  type Kernels,
  type KernelVariant,
  runGemm,
} from "../kernels/kernels.ts";
import { type Gemm, linearBackward, linearForward, type Matrix } from "../kernels/linear.ts";
import { defaultThreads, GemmPool, threadsSupported } from "../kernels/threads.ts";
import { mulberry32 } from "../core/random.ts";
import type { DenseInput, EncodedBatch, SparseInput } from "../core/batch.ts";
import {
  activeLosses,
  type EmbeddingDtype,
  type Layer,
  type ModelPlan,
  planModel,
  sizeOf,
  type Stack,
  stateDict,
  type Tensor,
  towerOutputs,
  type View,
} from "./layout.ts";

export type { DenseInput, EncodedBatch, SparseInput };
// The layout's public part: MMoEModel.plan exposes the table and the structure.
export {
  type Dtype,
  DTYPE_BYTES,
  type EmbeddingDtype,
  type FeaturePlan,
  type Init,
  type Layer,
  memberName,
  type ModelPlan,
  type ModuleList,
  type OutputSource,
  planModel,
  type PlanOptions,
  type Region,
  type RegionKind,
  type Stack,
  stateDict,
  type TablePlan,
  type Tensor,
  towerOutputs,
  type TowerPlan,
  type View,
} from "./layout.ts";

/** Model construction options. */
export interface ModelOptions {
  /** Largest batch the arena holds. */
  maxBatch: number;
  /** Seed of parameter init and dropout. Default 0. */
  seed?: number;
  /** Kernel build; default the fastest the runtime validates. */
  variant?: KernelVariant;
  /** Capacity of ids per row per sparse feature (multi-value features). Default 4. */
  idsPerRow?: number;
  /**
   * Serve only (default false): the arena holds parameters, buffers and
   * forward activations, but no gradients, optimizer state or backward
   * buffers (for the Taobao config that drops the Adagrad accumulators, as
   * large as the embedding tables). `evalStep`, `predict` and checkpoint
   * loading work; `trainStep`, `forwardBackward`, `applyGradients` and the
   * gradient and optimizer-state accessors throw a `TypeError`.
   */
  inference?: boolean;
  /**
   * Draw the initial parameters (default true). False leaves every parameter
   * and buffer zero, for a model whose next step is loading a checkpoint (it
   * saves ~16 ns per parameter: ~0.8 s for the Taobao tables). Optimizer
   * state starts as its optimizer says either way.
   */
  initialize?: boolean;
  /**
   * Threads for the GEMMs of forward and backward (rows split across a pool
   * of Workers on a shared arena; results are bit-identical for any count).
   * Default: `navigator.hardwareConcurrency` capped at 8 where shared memory,
   * Workers and `Atomics.wait` exist, else 1; 1 disables the pool. The
   * workers are unref'd once started, so they never keep a process alive;
   * {@link MMoEModel.close} frees them early. Falls back to 1 where threads
   * are unsupported.
   */
  threads?: number;
  /**
   * Embedding tables as `f32` (default) or `int8`: u8 rows with an f16
   * scale and bias per row, torchrec's INT8 rowwise quantization (a quarter
   * of the bytes). Inference only; the tables are zero until a serving
   * artifact (`src/io/serving.ts`) fills them.
   */
  embeddings?: EmbeddingDtype;
}

/** Losses of one step: per tower by loss name, and their sum. */
export interface StepLosses {
  /** `binary_cross_entropy_ctr` etc. */
  losses: Record<string, number>;
  /** Sum over towers (tzrec's total loss). */
  total: number;
}

/** A named tensor of the model (tzrec state_dict name and PyTorch shape). */
export interface ParameterInfo {
  /** tzrec state_dict name. */
  name: string;
  /** PyTorch shape. */
  shape: number[];
  /** Byte offset of the value. */
  offset: number;
  /** Byte offset of the dense gradient (0 for embeddings, buffers and counters). */
  grad: number;
  /**
   * `dense` (trained by the dense optimizer), `embedding` (sparse
   * optimizer), `buffer` (BatchNorm running statistics) or `counter`
   * (BatchNorm `num_batches_tracked`: train-mode forwards, i64).
   */
  kind: "dense" | "embedding" | "buffer" | "counter";
  /**
   * Element type: `f32`; `i64` for counters (read them with
   * {@link MMoEModel.int64View}); `u8` and `f16` for the rows and the
   * per-row (scale, bias) of an int8 table.
   */
  dtype: "f32" | "i64" | "u8" | "f16";
}

/** Learning rate at `step` (1-based) under the optimizer's schedule (tzrec ExponentialDecayLR). */
export function learningRate(optimizer: ResolvedOptimizer, step: number): number {
  const s = optimizer.schedule;
  if (s.kind === "constant") return optimizer.lr;
  const progress = (step - 1) / s.decaySize;
  const exponent = s.staircase ? Math.floor(progress) : progress;
  return Math.max(optimizer.lr * Math.pow(s.decayFactor, exponent), s.minLearningRate);
}

/** Byte offset of a view's first element and its row stride. */
const at = (v: View): Matrix => ({ at: v.region.offset + 4 * v.column, ld: v.ld });

/** Columns s*width.. of a [B, S*width] matrix: member s of a stacked layer. */
const member = (m: Matrix, s: number, width: number): Matrix => ({
  at: m.at + 4 * s * width,
  ld: m.ld,
});

/**
 * An MMoE model on its own arena. Construct it from a {@link ResolvedConfig};
 * feed {@link EncodedBatch}es to {@link MMoEModel.trainStep},
 * {@link MMoEModel.evalStep} and {@link MMoEModel.predict}.
 */
export class MMoEModel {
  /** The config this model was built from. */
  readonly config: ResolvedConfig;
  /** Largest batch. */
  readonly maxBatch: number;
  /** The kernels and their memory. */
  readonly kernels: Kernels;
  /** Arena memory (fixed size). */
  readonly memory: WebAssembly.Memory;
  /** The arena's regions and the model's structure ({@link planModel}). */
  readonly plan: ModelPlan;
  /** Every parameter, buffer and counter by tzrec name, in state_dict order. */
  readonly parameters: ParameterInfo[];
  /** Training steps taken (optimizer step count). */
  step = 0;
  /** Built with {@link ModelOptions.inference}: forward only. */
  readonly inference: boolean;
  /** Threads the GEMMs use (1: no pool); see {@link ModelOptions.threads}. */
  readonly threads: number;

  readonly #tensors: Tensor[];
  readonly #byName: Map<string, Tensor>;
  readonly #f32: Float32Array;
  readonly #i32: Int32Array;
  readonly #i64: BigInt64Array;
  readonly #seed: number;
  readonly #pool: GemmPool | null;
  readonly #gemm: Gemm;
  /** Per batch: each sparse feature's first id in its table's id buffer, and each table's ids. */
  readonly #idStart: number[];
  readonly #idCount: number[];
  /** Per backward: rows each table's sparse gradient touches. */
  readonly #uniqueCount: number[];

  /** Lays out the arena for `config` and initialises parameters (PyTorch/torchrec defaults). */
  constructor(config: ResolvedConfig, options: ModelOptions) {
    const { maxBatch } = options;
    if (!Number.isInteger(maxBatch) || maxBatch <= 0) {
      throw new RangeError(`maxBatch must be a positive integer, got ${maxBatch}`);
    }
    const idsPerRow = options.idsPerRow ?? 4;
    if (!Number.isInteger(idsPerRow) || idsPerRow <= 0) {
      throw new RangeError(`idsPerRow must be a positive integer, got ${idsPerRow}`);
    }
    const threads = options.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`threads must be a positive integer, got ${threads}`);
    }
    this.config = config;
    this.maxBatch = maxBatch;
    this.#seed = options.seed ?? 0;
    this.inference = options.inference ?? false;
    this.threads = threads > 1 && threadsSupported() ? threads : 1;
    const variant = options.variant ?? bestKernelVariant();
    // GEMM scratch sizes come from the kernels themselves: ask a one-page instance.
    const sizing = instantiateKernels(new WebAssembly.Memory({ initial: 1 }), variant).exports;
    this.plan = planModel(config, {
      maxBatch,
      idsPerRow,
      training: !this.inference,
      threads: this.threads,
      gemmWorkspaceBytes: sizing.gemmWorkspaceBytes,
      embeddings: options.embeddings,
    });
    this.memory = createArenaMemory(this.plan.bytes, { shared: this.threads > 1 });
    this.kernels = instantiateKernels(this.memory, variant).exports;
    const [work, ...workerWorks] = this.plan.works.map((w) => w.offset);
    this.#pool = this.threads > 1 ? new GemmPool(this.memory, variant, workerWorks) : null;
    const k = this.kernels, pool = this.#pool;
    this.#gemm = pool ? (op) => pool.gemm(k, op, work) : (op) => runGemm(k, op, work);
    this.#f32 = new Float32Array(this.memory.buffer);
    this.#i32 = new Int32Array(this.memory.buffer);
    this.#i64 = new BigInt64Array(this.memory.buffer);
    this.#tensors = stateDict(this.plan);
    this.#byName = new Map(this.#tensors.map((t) => [t.name, t]));
    this.parameters = this.#tensors.map((t) => ({
      name: t.name,
      shape: t.shape,
      offset: t.offset,
      grad: t.grad,
      kind: t.kind as ParameterInfo["kind"],
      dtype: t.dtype as ParameterInfo["dtype"],
    }));
    this.#idStart = config.features.map(() => 0);
    this.#idCount = config.tables.map(() => 0);
    this.#uniqueCount = config.tables.map(() => 0);
    this.#initialize(options.initialize ?? true);
  }

  /**
   * Every region's starting values from its table entry: uniform draws
   * (nn.Linear, torchrec tables), constants (norm gamma, running variance,
   * Adagrad's initial accumulator); the rest of the arena is already zero.
   */
  #initialize(parameters: boolean): void {
    const random = mulberry32(this.#seed ^ 0x5eed);
    for (const r of this.plan.regions) {
      if (r.init.kind === "zero" || (!parameters && r.kind !== "optimizer")) continue;
      const view = this.view(r.offset, sizeOf(r.shape));
      if (r.init.kind === "constant") {
        view.fill(r.init.value);
      } else {
        const bound = r.init.bound;
        for (let i = 0; i < view.length; i++) view[i] = (random() * 2 - 1) * bound;
      }
    }
  }

  // -------------------------------------------------------------- embeddings

  /** x (B, F) = each feature's pooled embedding or dense values, in group order. */
  #embeddingsForward(B: number): void {
    const k = this.kernels, p = this.plan, x = p.x.offset, F = this.config.inputWidth;
    this.config.features.forEach((f, i) => {
      const input = p.features[i], out = x + 4 * f.offset;
      if (input.values) {
        k.copyColumns(out, input.values.offset, B, f.width, F, f.width);
        return;
      }
      const table = p.tables[f.table], rows = table.weight.offset;
      const ids = table.ids.offset + 4 * this.#idStart[i];
      const weights = input.weights?.offset ?? 0, offsets = input.offsets!.offset;
      if (table.scaleBias) {
        const scaleBias = table.scaleBias.offset;
        k.embeddingGatherInt8(out, rows, scaleBias, ids, weights, offsets, B, f.width, F, f.mean);
      } else {
        k.embeddingGather(out, rows, ids, weights, offsets, B, f.width, F, f.mean);
      }
    });
  }

  /** Sparse table gradients from dx: ids deduplicated per table, rows summed (fbgemm). */
  #embeddingsBackward(B: number): void {
    const k = this.kernels, p = this.plan, dx = p.dx!.offset, F = this.config.inputWidth;
    p.tables.forEach((table, t) => {
      const unique = table.unique!.offset, inverse = table.inverse!.offset;
      const ids = table.ids.offset, hash = table.hash!.offset;
      const U = k.embeddingUnique(unique, inverse, ids, this.#idCount[t], hash, table.hashCapacity);
      const rows = table.gradRows!.offset / 4;
      this.#f32.fill(0, rows, rows + U * table.dim);
      this.#uniqueCount[t] = U;
    });
    this.config.features.forEach((f, i) => {
      if (f.table < 0) return;
      const input = p.features[i], table = p.tables[f.table], rows = table.gradRows!.offset;
      const inverse = table.inverse!.offset + 4 * this.#idStart[i], dOut = dx + 4 * f.offset;
      const weights = input.weights?.offset ?? 0, offsets = input.offsets!.offset;
      k.embeddingBackward(rows, dOut, inverse, weights, offsets, B, f.width, F, f.mean);
    });
  }

  // ------------------------------------------------------------------ layers

  /** One stacked Perceptron (or Linear) forward: z = x W^T + b -> norm -> act -> dropout. */
  #layerForward(l: Layer, input: Matrix, B: number, training: boolean, seed: number): void {
    const k = this.kernels, S = l.S, N = l.outWidth, K = l.inWidth, W = S * N, n = B * W;
    const z: Matrix = { at: l.z.offset, ld: W };
    const weight = l.weight.offset, bias = l.bias?.offset ?? 0;
    if (l.shared) {
      linearForward(this.#gemm, z, input, weight, bias, B, K, W, l.fused);
    } else {
      for (let s = 0; s < S; s++) {
        const b = bias && bias + 4 * s * N;
        const w = weight + 4 * s * N * K;
        linearForward(this.#gemm, member(z, s, N), member(input, s, K), w, b, B, K, N, l.fused);
      }
    }
    if (l.fused) return;
    if (l.norm !== null) {
      const [a, mean, invStd, z] = [l.a.offset, l.mean!.offset, l.invStd!.offset, l.z.offset];
      const gamma = l.gamma!.offset, beta = l.beta!.offset;
      if (l.norm === "layer") {
        k.layerNormForward(a, mean, invStd, z, gamma, beta, B, S, N, l.eps);
      } else {
        const rm = l.runningMean!.offset, rv = l.runningVar!.offset;
        const { momentum, eps } = l;
        k.batchNormForward(a, mean, invStd, rm, rv, z, gamma, beta, B, W, momentum, eps, training);
        if (training) {
          // num_batches_tracked: torch counts every train-mode forward of a BatchNorm.
          const counters = l.batches!.offset / 8;
          for (let s = 0; s < S; s++) this.#i64[counters + s] += 1n;
        }
      }
    }
    if (l.y === l.a) return;
    if (l.dropout > 0 && training) {
      k.biasActivation(l.h.offset, l.a.offset, 0, B, W, l.activation, l.slope);
      k.dropoutForward(l.y.offset, l.mask!.offset, l.h.offset, n, l.dropout, seed >>> 0);
    } else {
      k.biasActivation(l.y.offset, l.a.offset, 0, B, W, l.activation, l.slope);
    }
  }

  /**
   * Backward of {@link MMoEModel.#layerForward} from dy (overwritten): weight,
   * bias and norm gradients accumulate; the input gradient goes to `dInput`
   * (accumulated when `accumulate`), or nowhere when it is null.
   */
  #layerBackward(
    l: Layer,
    input: Matrix,
    dInput: Matrix | null,
    accumulate: boolean,
    B: number,
  ): void {
    const k = this.kernels, S = l.S, N = l.outWidth, K = l.inWidth, W = S * N, n = B * W;
    const dy = l.dy!.offset, dz = l.dz!.offset;
    if (l.dropout > 0) k.multiply(dy, dy, l.mask!.offset, n);
    if (l.activation !== Activation.identity) {
      k.activationBackward(dy, dy, l.a.offset, l.h.offset, n, l.activation, l.slope);
    }
    if (l.norm !== null) {
      const gamma = l.gamma!.offset, dGamma = l.gamma!.grad!.offset, dBeta = l.beta!.grad!.offset;
      const z = l.z.offset, mean = l.mean!.offset, invStd = l.invStd!.offset;
      if (l.norm === "batch") {
        k.batchNormBackward(dz, dGamma, dBeta, dy, z, gamma, mean, invStd, B, W);
      } else {
        k.layerNormBackward(dz, dGamma, dBeta, dy, z, gamma, mean, invStd, B, S, N);
      }
    }
    if (l.bias) k.columnSum(l.bias.grad!.offset, dz, B, W);
    const dZ: Matrix = { at: dz, ld: W }, dW = l.weight.grad!.offset, weight = l.weight.offset;
    if (l.shared) {
      linearBackward(this.#gemm, dW, dInput, accumulate, dZ, input, weight, B, K, W);
      return;
    }
    for (let s = 0; s < S; s++) {
      const dx = dInput && member(dInput, s, K), dz = member(dZ, s, N), x = member(input, s, K);
      const w = 4 * s * N * K;
      linearBackward(this.#gemm, dW + w, dx, accumulate, dz, x, weight + w, B, K, N);
    }
  }

  /** A stack's layers forward; the last layer's y is its output. */
  #stackForward(stack: Stack, B: number, training: boolean, seed: number): void {
    let input = at(stack.input);
    stack.layers.forEach((l, i) => {
      this.#layerForward(l, input, B, training, seed * 31 + i);
      input = { at: l.y.offset, ld: l.S * l.outWidth };
    });
  }

  /** A stack's layers backward from the last layer's dy to `stack.dInput`. */
  #stackBackward(stack: Stack, B: number): void {
    for (let i = stack.layers.length - 1; i >= 0; i--) {
      const l = stack.layers[i];
      if (i > 0) {
        const previous = stack.layers[i - 1], ld = previous.S * previous.outWidth;
        const x = { at: previous.y.offset, ld }, dx = { at: previous.dy!.offset, ld };
        this.#layerBackward(l, x, dx, false, B);
      } else {
        const d = stack.dInput;
        this.#layerBackward(l, at(stack.input), d && at(d), d?.accumulate ?? false, B);
      }
    }
  }

  // ------------------------------------------------------------------- model

  #forward(B: number, training: boolean): void {
    const p = this.plan, c = this.config;
    const T = c.towers.length, E = c.numExpert, D = p.experts.layers.at(-1)!.outWidth;
    const seed = (this.#seed * 1000003 + this.step) >>> 0;
    this.#embeddingsForward(B);
    this.#stackForward(p.experts, B, training, seed);
    this.#stackForward(p.gates, B, training, seed + 7919);
    const experts = p.experts.layers.at(-1)!.y.offset, logits = p.gates.layers.at(-1)!.y.offset;
    this.kernels.gateMixtureForward(p.taskInput.offset, p.gate.offset, logits, experts, B, T, E, D);
    p.towers.forEach((t, i) => this.#stackForward(t.stack, B, training, seed + 104729 * (i + 1)));
  }

  #backward(B: number): void {
    const p = this.plan, c = this.config;
    const T = c.towers.length, E = c.numExpert, D = p.experts.layers.at(-1)!.outWidth;
    this.#f32.fill(0, p.denseGrad / 4, p.denseGrad / 4 + p.dense.count);
    if (p.dx) this.#f32.fill(0, p.dx.offset / 4, p.dx.offset / 4 + B * c.inputWidth);
    for (const t of p.towers) this.#stackBackward(t.stack, B);
    const experts = p.experts.layers.at(-1)!, gates = p.gates.layers.at(-1)!;
    const dLogits = gates.dy!.offset, dExperts = experts.dy!.offset, dTask = p.dTaskInput!.offset;
    const gate = p.gate.offset, expertOut = experts.y.offset;
    this.kernels.gateMixtureBackward(dLogits, dExperts, dTask, gate, expertOut, B, T, E, D);
    this.#stackBackward(p.gates, B);
    this.#stackBackward(p.experts, B);
    if (p.dx) this.#embeddingsBackward(B);
  }

  /**
   * Every tower's losses on its logits (tzrec's loss weights), their
   * probabilities and, when `withGrad`, dLogits (the sum over the tower's
   * losses, scaled by 1/B as the batch mean).
   */
  #loss(B: number, withGrad: boolean): StepLosses {
    const k = this.kernels, f32 = this.#f32;
    const losses: Record<string, number> = {};
    let total = 0;
    for (const t of this.plan.towers) {
      const c = t.tower, C = c.numClass;
      const column = (name: string | null) => (name ? this.plan.columns.get(name)!.offset : 0);
      const weights = c.hasWeight ? t.weights.offset : 0;
      if (c.hasWeight) {
        const sample = column(c.sampleWeightName), indicator = column(c.taskSpaceIndicatorLabel);
        const [inSpace, outSpace] = [c.inTaskSpaceWeight, c.outTaskSpaceWeight];
        k.taskSpaceWeights(weights, sample, indicator, B, inSpace, outSpace, c.weight);
      }
      const logits = t.stack.layers.at(-1)!, labels = column(c.label);
      activeLosses(c).forEach((loss, i) => {
        const dLogits = !withGrad ? 0 : i === 0 ? logits.dy!.offset : t.dLogitsExtra!.offset;
        const z = logits.y.offset, probs = t.probs.offset, s = loss.labelSmoothing;
        const sum = loss.kind === "binary_cross_entropy"
          ? k.sigmoidBinaryCrossEntropy(dLogits, probs, z, labels, weights, B, s, 1 / B)
          : loss.kind === "softmax_cross_entropy"
          ? k.softmaxCrossEntropy(dLogits, probs, z, labels, weights, B, C, s, 1 / B)
          : k.squaredError(dLogits, z, labels, weights, B, 1 / B);
        if (i > 0 && withGrad) {
          // Several losses on one tower: their gradients add (B x C values).
          const to = logits.dy!.offset / 4, from = dLogits / 4;
          for (let j = 0; j < B * C; j++) f32[to + j] += f32[from + j];
        }
        losses[loss.name] = sum / B;
        total += sum / B;
      });
    }
    return { losses, total };
  }

  // --------------------------------------------------------------- optimizer

  /**
   * One optimizer step from the gradients of the last
   * {@link MMoEModel.forwardBackward}: the dense optimizer over the dense
   * block, the sparse optimizer over the touched embedding rows.
   */
  applyGradients(): void {
    this.#requireTraining("applyGradients");
    const k = this.kernels, p = this.plan;
    this.step++;
    const dense = this.config.denseOptimizer;
    const lr = learningRate(dense, this.step);
    const { offset: param, count: n } = p.dense, grad = p.denseGrad;
    const state = p.denseState.map((s) => s.offset);
    if (dense.kind === "adam") {
      const { beta1, beta2, eps, weightDecay } = dense;
      k.adamStep(param, grad, state[0], state[1], n, lr, beta1, beta2, eps, weightDecay, this.step);
    } else if (dense.kind === "adagrad") {
      k.adagradStep(param, grad, state[0], n, lr, dense.eps, dense.weightDecay);
    } else if (dense.momentum > 0) {
      const { momentum: mu, dampening, nesterov, weightDecay: wd } = dense, first = this.step === 1;
      k.sgdMomentumStep(param, grad, state[0], n, lr, mu, dampening, nesterov, wd, first);
    } else {
      k.sgdStep(param, grad, n, lr, dense.weightDecay);
    }
    const sparse = this.config.sparseOptimizer;
    const sparseLr = learningRate(sparse, this.step);
    p.tables.forEach((t, i) => {
      const table = t.weight.offset, rows = t.unique!.offset, g = t.gradRows!.offset;
      const [s0, s1] = t.weight.state.map((s) => s.region.offset);
      const U = this.#uniqueCount[i], dim = t.dim;
      if (sparse.kind === "adagrad") {
        k.adagradRows(table, s0, rows, g, U, dim, sparseLr, sparse.eps);
      } else if (sparse.kind === "adam") {
        const { beta1, beta2, eps, weightDecay: wd } = sparse;
        k.adamRows(table, s0, s1, rows, g, U, dim, sparseLr, beta1, beta2, eps, wd, this.step);
      } else {
        k.sgdRows(table, rows, g, U, dim, sparseLr);
      }
    });
  }

  // --------------------------------------------------------------------- API

  /**
   * Forward in train mode, losses, backward and one optimizer step.
   * Returns the per-tower losses of this batch (before the update). A NaN or
   * infinite loss throws a `RangeError` before the update: the parameters
   * and optimizer state stay as they were.
   */
  trainStep(batch: EncodedBatch): StepLosses {
    this.#requireTraining("trainStep");
    const losses = this.forwardBackward(batch);
    if (!Number.isFinite(losses.total)) {
      throw new RangeError(
        `step ${this.step + 1}: the loss is ${losses.total} (${JSON.stringify(losses.losses)}); ` +
          "the parameters were not updated",
      );
    }
    this.applyGradients();
    return losses;
  }

  /**
   * Forward (train mode), losses and backward without the optimizer step:
   * gradients are left in the arena ({@link MMoEModel.gradient},
   * {@link MMoEModel.embeddingGradient}). For gradient checks and parity tests.
   */
  forwardBackward(batch: EncodedBatch): StepLosses {
    this.#requireTraining("forwardBackward");
    this.#loadBatch(batch, true);
    this.#forward(batch.size, true);
    const losses = this.#loss(batch.size, true);
    this.#backward(batch.size);
    return losses;
  }

  /** Forward in eval mode (no dropout, BN running stats) and the losses. */
  evalStep(batch: EncodedBatch): StepLosses {
    this.#loadBatch(batch, true);
    this.#forward(batch.size, false);
    return this.#loss(batch.size, false);
  }

  /**
   * Forward in eval mode without labels (the batch's label, indicator and
   * weight columns are not read, so a `FeatureEncoder` built with
   * `labels: false` feeds it) and its {@link MMoEModel.outputs}. The outputs
   * equal those of {@link MMoEModel.evalStep} on the same features.
   */
  predict(batch: EncodedBatch): Record<string, Float32Array> {
    this.#loadBatch(batch, false);
    this.#forward(batch.size, false);
    const k = this.kernels, B = batch.size;
    for (const t of this.plan.towers) {
      // Probabilities from the loss kernels without labels or gradient (the sum is dropped).
      const z = t.stack.layers.at(-1)!.y.offset, probs = t.probs.offset, C = t.tower.numClass;
      const kinds = activeLosses(t.tower).map((l) => l.kind);
      if (kinds.includes("binary_cross_entropy")) {
        k.sigmoidBinaryCrossEntropy(0, probs, z, z, 0, B, 0, 0);
      } else if (kinds.includes("softmax_cross_entropy")) {
        k.softmaxCrossEntropy(0, probs, z, z, 0, B, C, 0, 0);
      }
    }
    return this.outputs(B);
  }

  #requireTraining(method: string): void {
    if (this.inference) {
      throw new TypeError(
        `MMoEModel.${method}: this model was built with inference: true and has no ` +
          "gradients or optimizer state; build it without inference to train",
      );
    }
  }

  /**
   * Outputs of the last forward, copied out, named as tzrec's predictions
   * (per tower, the union over its losses): `logits_<t>`, `probs_<t>` (BCE,
   * softmax), `probs1_<t>` (softmax with 2 classes), `y_<t>` (l2_loss).
   */
  outputs(size: number): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    for (const t of this.plan.towers) {
      const C = t.tower.numClass;
      const logits = t.stack.layers.at(-1)!.y.offset / 4, probs = t.probs.offset / 4;
      for (const { name, from } of towerOutputs(t.tower)) {
        const start = from === "logits" ? logits : probs;
        out[name] = from === "probs1"
          ? Float32Array.from({ length: size }, (_, b) => this.#f32[probs + b * C + 1])
          : this.#f32.slice(start, start + size * C);
      }
    }
    return out;
  }

  /** Gate weights (B x E) of tower `t` from the last forward, copied out. */
  gateWeights(t: number, size: number): Float32Array {
    const E = this.config.numExpert, T = this.config.towers.length;
    const gate = this.plan.gate.offset / 4 + t * E;
    const out = new Float32Array(size * E);
    for (let b = 0; b < size; b++) {
      out.set(this.#f32.subarray(gate + b * T * E, gate + b * T * E + E), b * E);
    }
    return out;
  }

  /** Group input x (B x F) of the last forward, copied out. */
  groupInput(size: number): Float32Array {
    const x = this.plan.x.offset / 4;
    return this.#f32.slice(x, x + size * this.config.inputWidth);
  }

  /**
   * Optimizer state tensors for checkpoints, named after the parameter they
   * belong to (`<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.sum`,
   * `<param>.momentum_buffer`), with the parameter's shape. The step count is
   * {@link MMoEModel.step}.
   */
  optimizerState(): { name: string; shape: number[]; offset: number }[] {
    this.#requireTraining("optimizerState");
    return this.#tensors.flatMap((t) =>
      t.state.map((s) => ({ name: `${t.name}.${s.key}`, shape: t.shape, offset: s.offset }))
    );
  }

  /** A float view of `count` values at byte offset `offset`. */
  view(offset: number, count: number): Float32Array {
    return this.#f32.subarray(offset / 4, offset / 4 + count);
  }

  /** An i64 view of `count` values at byte offset `offset` (BatchNorm counters). */
  int64View(offset: number, count: number): BigInt64Array {
    return this.#i64.subarray(offset / 8, offset / 8 + count);
  }

  /** The value view of an f32 parameter or buffer by name. */
  parameter(name: string): Float32Array {
    const t = this.#byName.get(name);
    if (!t || t.dtype !== "f32") {
      throw new RangeError(`no f32 parameter named ${JSON.stringify(name)}`);
    }
    return this.view(t.offset, sizeOf(t.shape));
  }

  /** The dense gradient view of a dense parameter by name (after a backward). */
  gradient(name: string): Float32Array {
    this.#requireTraining("gradient");
    const t = this.#byName.get(name);
    if (!t || t.kind !== "dense") {
      throw new RangeError(`no dense parameter named ${JSON.stringify(name)}`);
    }
    return this.view(t.grad, sizeOf(t.shape));
  }

  /**
   * The sparse gradient of table `t` after a backward: the unique rows and
   * their gradient rows (duplicates summed).
   */
  embeddingGradient(t: number): { rows: Int32Array; grads: Float32Array } {
    this.#requireTraining("embeddingGradient");
    const table = this.plan.tables[t], U = this.#uniqueCount[t];
    const rows = table.unique!.offset / 4, grads = table.gradRows!.offset / 4;
    return {
      rows: this.#i32.slice(rows, rows + U),
      grads: this.#f32.slice(grads, grads + U * table.dim),
    };
  }

  // ------------------------------------------------------------ batch input

  /**
   * Checks `batch` once, naming the feature, column and row of a problem,
   * then copies it into the arena: ids of each table's features one after
   * another, offsets, weights, dense values and (with `labels`) the label,
   * indicator and sample-weight columns. Kernels never validate.
   */
  #loadBatch(batch: EncodedBatch, labels: boolean): void {
    const B = batch.size, p = this.plan, config = this.config;
    if (!Number.isInteger(B) || B <= 0 || B > this.maxBatch) {
      throw new RangeError(
        `batch size ${B} is outside [1, ${this.maxBatch}] (the model's maxBatch)`,
      );
    }
    if (batch.features.length !== config.features.length) {
      throw new RangeError(
        `batch has ${batch.features.length} features, the model's group has ${config.features.length}`,
      );
    }
    this.#idCount.fill(0);
    config.features.forEach((f, i) => {
      const plan = p.features[i], input = batch.features[i];
      const where = `feature ${f.name}`;
      if (plan.values) {
        const { values } = input as DenseInput;
        if (!(values instanceof Float32Array) || values.length !== B * f.width) {
          throw new TypeError(`${where}: expected a Float32Array of ${B * f.width} dense values`);
        }
        assertFinite(values, where, f.width);
        this.#f32.set(values, plan.values.offset / 4);
        return;
      }
      const { ids, offsets, weights } = input as SparseInput;
      if (!(ids instanceof Int32Array) || !(offsets instanceof Int32Array)) {
        throw new TypeError(`${where}: expected Int32Array ids and offsets`);
      }
      if (offsets.length !== B + 1 || offsets[0] !== 0 || offsets[B] !== ids.length) {
        throw new RangeError(
          `${where}: offsets must have ${B + 1} entries from 0 to ids.length (${ids.length})`,
        );
      }
      for (let b = 0; b < B; b++) {
        if (!(offsets[b + 1] >= offsets[b])) {
          throw new RangeError(
            `${where}: row ${b}: offsets[${b + 1}] = ${offsets[b + 1]} is below offsets[${b}] = ${
              offsets[b]
            }`,
          );
        }
      }
      if (ids.length > plan.capacity) {
        throw new RangeError(
          `${where}: ${ids.length} ids in a batch of ${B} exceed the arena's ${plan.capacity} ` +
            "(raise idsPerRow)",
        );
      }
      const rows = f.rows;
      for (let j = 0; j < ids.length; j++) {
        if (!(ids[j] >= 0 && ids[j] < rows)) {
          throw new RangeError(`${where}: id ${ids[j]} is outside [0, ${rows})`);
        }
      }
      if (f.weighted) {
        if (!(weights instanceof Float32Array) || weights.length !== ids.length) {
          throw new TypeError(
            `${where}: a weighted feature needs a Float32Array of one weight per id (${ids.length})`,
          );
        }
        assertFinite(weights, `${where} weights`, 0);
        this.#f32.set(weights, plan.weights!.offset / 4);
      } else if (weights !== undefined) {
        throw new TypeError(`${where}: weights given, but the feature is not weighted`);
      }
      const table = p.tables[f.table];
      this.#idStart[i] = this.#idCount[f.table];
      this.#i32.set(ids, table.ids.offset / 4 + this.#idStart[i]);
      this.#idCount[f.table] += ids.length;
      this.#i32.set(offsets, plan.offsets!.offset / 4);
    });
    if (!labels) return;
    for (const [name, region] of p.columns) {
      const values = batch.columns[name];
      if (!(values instanceof Float32Array) || values.length < B) {
        throw new RangeError(`batch has no column ${JSON.stringify(name)} with ${B} values`);
      }
      const column = values.subarray(0, B);
      assertFinite(column, `column ${JSON.stringify(name)}`, 1);
      this.#f32.set(column, region.offset / 4);
    }
  }

  // ----------------------------------------------------------------- threads

  /**
   * Starts the GEMM workers now rather than at the first large GEMM, and
   * resolves when every one is ready (until then the calling thread computes
   * their rows, with the same results). Resolves at once when `threads` is 1.
   */
  ready(): Promise<void> {
    return this.#pool ? this.#pool.start() : Promise.resolve();
  }

  /**
   * Terminates the GEMM workers (they would otherwise live, idle and
   * unref'd, until the process exits). The model stays usable on one thread.
   * Idempotent.
   */
  close(): void {
    this.#pool?.close();
  }

  /** {@link MMoEModel.close}, for `using model = new MMoEModel(...)`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Throws a RangeError naming the first non-finite value's row (values of `width` per row). */
function assertFinite(values: Float32Array, where: string, width: number): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      const at = width > 0 ? `row ${Math.floor(i / width)}` : `value ${i}`;
      throw new RangeError(`${where}: ${at} is ${values[i]}, not a finite number`);
    }
  }
}

/**
 * The MMoE model (Ma et al., KDD 2018) with TorchEasyRec's semantics, on one
 * arena of Wasm memory.
 *
 *   x = concat(embeddings and dense features of the DEEP group)      (B, F)
 *   expert_e = MLP_e(x)                                                (B, D)
 *   gate_t = softmax(Linear_t(x or gate_mlp_t(x)))                     (B, E)
 *   task_in_t = sum_e gate_t[:, e] * expert_e                          (B, D)
 *   out_t = Linear(tower_mlp_t(task_in_t))                             (B, C)
 *
 * Linear weights are stored as PyTorch does, [out, in], so the forward is the
 * NT GEMM, the input gradient NN and the weight gradient TN. Every dense
 * parameter lives in one block (zeroing gradients is one fill, Adam one flat
 * loop); embedding tables live beside it and get sparse row updates.
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
import { ArenaLayout, createArenaMemory } from "../kernels/arena.ts";
import type {
  ResolvedConfig,
  ResolvedMLP,
  ResolvedOptimizer,
  ResolvedTower,
} from "../config/config.ts";
import {
  Activation,
  bestKernelVariant,
  instantiateKernels,
  type Kernels,
  type KernelVariant,
} from "../kernels/kernels.ts";
import { defaultThreads, GemmPool, threadsSupported } from "../kernels/threads.ts";
import { mulberry32 } from "../core/random.ts";
import type { DenseInput, EncodedBatch, SparseInput } from "../core/batch.ts";

export type { DenseInput, EncodedBatch, SparseInput };

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
   * saves ~16 ns per parameter: ~0.8 s for the Taobao tables).
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
  /** Byte offset of the dense gradient (0 for embeddings and buffers). */
  grad: number;
  /** `dense` (Adam etc.), `embedding` (sparse optimizer) or `buffer` (BN running stats). */
  kind: "dense" | "embedding" | "buffer";
}

/** One Perceptron: Linear -> [BatchNorm | LayerNorm] -> activation -> [Dropout]. */
interface Layer {
  inWidth: number;
  outWidth: number;
  weight: number;
  bias: number;
  gamma: number;
  beta: number;
  runningMean: number;
  runningVar: number;
  dWeight: number;
  dBias: number;
  dGamma: number;
  dBeta: number;
  act: number;
  slope: number;
  useBn: boolean;
  useLn: boolean;
  dropout: number;
  /** Fused path: Linear + bias + ReLU in the GEMM epilogue, y holds everything. */
  fused: boolean;
  /** Linear output (B, out); equals `y` when fused. */
  z: number;
  /** Normalised pre-activation (B, out); equals `z` without a norm. */
  a: number;
  /** Activation output before dropout (B, out); equals `y` without dropout. */
  h: number;
  /** Layer output (B, out). */
  y: number;
  /** Norm statistics (out for BN, B for LN). */
  mean: number;
  invStd: number;
  /** Dropout mask (B, out). */
  mask: number;
  /** Gradient w.r.t. the output, then reused for the pre-activation (B, out). */
  dy: number;
  /** Gradient w.r.t. z when a norm sits between (B, out). */
  dz: number;
}

interface MLPBlock {
  layers: Layer[];
  /** Output (B, last width) and its gradient. */
  out: number;
  dOut: number;
}

interface TowerState {
  config: ResolvedTower;
  gateMlp: MLPBlock | null;
  gateWeight: number;
  gateBias: number;
  dGateWeight: number;
  dGateBias: number;
  gateIn: number;
  gateInWidth: number;
  gateLogits: number;
  gate: number;
  dGateLogits: number;
  dGateIn: number;
  taskIn: number;
  dTaskIn: number;
  mlp: MLPBlock | null;
  linearWeight: number;
  linearBias: number;
  dLinearWeight: number;
  dLinearBias: number;
  logits: number;
  probs: number;
  dLogits: number;
  weights: number;
}

interface TableState {
  rows: number;
  dim: number;
  weight: number;
  accum: number;
  adamM: number;
  adamV: number;
  /** Concatenated ids of every feature reading this table. */
  ids: number;
  capacity: number;
  unique: number;
  inverse: number;
  gradRows: number;
  hash: number;
  hashCapacity: number;
  uniqueCount: number;
}

interface FeatureState {
  table: number;
  /** Byte offset of this feature's ids inside the table's id buffer. */
  ids: number;
  /** Index of this feature's first id in the table's id buffer. */
  idStart: number;
  capacity: number;
  offsets: number;
  dense: number;
  width: number;
  column: number;
  mean: boolean;
}

/** Allocator pair used while building: dense params go to their own block. */
interface Builder {
  param(
    name: string,
    shape: number[],
    kind: ParameterInfo["kind"],
  ): { offset: number; grad: number };
  acts: ArenaLayout;
}

/** BatchNorm1d / LayerNorm eps (torch default). */
const NORM_EPS = 1e-5;

/** Learning rate at `step` (1-based) under the optimizer's schedule (tzrec ExponentialDecayLR). */
export function learningRate(optimizer: ResolvedOptimizer, step: number): number {
  const s = optimizer.schedule;
  if (s.kind === "constant") return optimizer.lr;
  const progress = (step - 1) / s.decaySize;
  const exponent = s.staircase ? Math.floor(progress) : progress;
  return Math.max(optimizer.lr * Math.pow(s.decayFactor, exponent), s.minLearningRate);
}

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
  /** Every parameter and buffer by tzrec name, in state_dict order. */
  readonly parameters: ParameterInfo[] = [];
  /** Training steps taken (optimizer step count). */
  step = 0;
  /** Built with {@link ModelOptions.inference}: forward only. */
  readonly inference: boolean;
  /** Threads the GEMMs use (1: no pool); see {@link ModelOptions.threads}. */
  readonly threads: number;

  private readonly f32: Float32Array;
  private readonly i32: Int32Array;
  private readonly seed: number;
  private readonly denseStart: number;
  private readonly denseCount: number;
  private readonly gradStart: number;
  private readonly denseM: number;
  private readonly denseV: number;
  private readonly denseAccum: number;
  private readonly denseMomentum: number;
  private readonly x: number;
  private readonly dx: number;
  private readonly work: number;
  private readonly pool: GemmPool | null;
  private readonly experts: MLPBlock[];
  private readonly expertStride: number;
  private readonly expertOut: number;
  private readonly dExpertOut: number;
  private readonly towers: TowerState[];
  private readonly tables: TableState[];
  private readonly features: FeatureState[];
  private readonly columns = new Map<string, number>();

  /** Builds the arena for `config` and initialises parameters (PyTorch/torchrec defaults). */
  constructor(config: ResolvedConfig, options: ModelOptions) {
    const { maxBatch } = options;
    if (!Number.isInteger(maxBatch) || maxBatch <= 0) {
      throw new RangeError(`maxBatch must be a positive integer, got ${maxBatch}`);
    }
    this.config = config;
    this.maxBatch = maxBatch;
    this.seed = options.seed ?? 0;
    this.inference = options.inference ?? false;
    const idsPerRow = options.idsPerRow ?? 4;
    const threads = options.threads ?? defaultThreads();
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`threads must be a positive integer, got ${threads}`);
    }
    this.threads = threads > 1 && threadsSupported() ? threads : 1;

    // Pass 1 counts dense parameters so their block (and its gradient and
    // optimizer states) can be laid out contiguously before everything else.
    let denseCount = 0;
    const counting: Builder = {
      param: (_name, shape, kind) => {
        if (kind === "dense") denseCount += Math.ceil(shape.reduce((a, b) => a * b, 1) / 16) * 16;
        return { offset: 0, grad: 0 };
      },
      acts: new ArenaLayout(),
    };
    this.#build(counting, maxBatch, idsPerRow);

    const layout = new ArenaLayout();
    this.denseCount = denseCount;
    this.denseStart = layout.floats(denseCount);
    const training = !this.inference;
    this.gradStart = training ? layout.floats(denseCount) : 0;
    const dense = training ? config.denseOptimizer.kind : "none";
    this.denseM = dense === "adam" ? layout.floats(denseCount) : 0;
    this.denseV = dense === "adam" ? layout.floats(denseCount) : 0;
    this.denseAccum = dense === "adagrad" ? layout.floats(denseCount) : 0;
    this.denseMomentum = dense === "sgd" && config.denseOptimizer.momentum > 0
      ? layout.floats(denseCount)
      : 0;
    let denseCursor = 0;
    const real: Builder = {
      param: (name, shape, kind) => {
        const size = shape.reduce((a, b) => a * b, 1);
        let offset: number, grad = 0;
        if (kind === "dense") {
          offset = this.denseStart + denseCursor * 4;
          grad = training ? this.gradStart + denseCursor * 4 : 0;
          denseCursor += Math.ceil(size / 16) * 16;
        } else {
          offset = layout.floats(size);
        }
        this.parameters.push({ name, shape, offset, grad, kind });
        return { offset, grad };
      },
      acts: layout,
    };
    const built = this.#build(real, maxBatch, idsPerRow);
    this.x = built.x;
    this.dx = built.dx;
    this.experts = built.experts;
    this.expertStride = built.expertStride;
    this.expertOut = built.expertOut;
    this.dExpertOut = built.dExpertOut;
    this.towers = built.towers;
    this.tables = built.tables;
    this.features = built.features;
    for (const [name, offset] of built.columns) this.columns.set(name, offset);
    this.work = layout.reserve(built.workBytes);
    // One GEMM scratch region per worker thread.
    const workerWorks = Array.from(
      { length: this.threads - 1 },
      () => layout.reserve(built.workBytes),
    );

    this.memory = createArenaMemory(layout.bytes, { shared: this.threads > 1 });
    const variant = options.variant ?? bestKernelVariant();
    const instance = instantiateKernels(this.memory, variant);
    this.kernels = instance.exports;
    this.pool = this.threads > 1 ? new GemmPool(this.memory, variant, workerWorks) : null;
    this.f32 = new Float32Array(this.memory.buffer);
    this.i32 = new Int32Array(this.memory.buffer);
    if (options.initialize ?? true) this.#initParameters();
  }

  // ------------------------------------------------------------------ layout

  #build(b: Builder, maxBatch: number, idsPerRow: number) {
    const config = this.config;
    const acts = b.acts;
    const B = maxBatch;
    const F = config.inputWidth;
    const training = !this.inference;
    /** A region only backward and the optimizers use: 0 (none) in an inference model. */
    const backward = (count: number) => training ? acts.floats(count) : 0;
    let workBytes = 0;
    const needWork = (K: number, N: number) => {
      // The kernels' gemmWorkspaceBytes: min(K, 256) * roundUp(N, 8) + min(K, 256) * 96 floats.
      const kc = Math.min(K, 256);
      workBytes = Math.max(workBytes, (kc * (Math.ceil(N / 8) * 8) + kc * 96) * 4);
    };
    /** The two backward GEMMs of a Linear [outW, inW]: input gradient NN, weight gradient TN. */
    const needBackwardWork = (inW: number, outW: number) => {
      if (!training) return;
      needWork(outW, inW);
      needWork(B, inW);
    };

    // Embedding tables (state_dict order follows the group).
    const tables: TableState[] = config.tables.map((t) => {
      const { offset } = b.param(`embedding_group.${t.name}.weight`, [t.rows, t.dim], "embedding");
      return {
        rows: t.rows,
        dim: t.dim,
        weight: offset,
        accum: 0,
        adamM: 0,
        adamV: 0,
        ids: 0,
        capacity: 0,
        unique: 0,
        inverse: 0,
        gradRows: 0,
        hash: 0,
        hashCapacity: 0,
        uniqueCount: 0,
      };
    });
    const sparse = training ? config.sparseOptimizer.kind : "none";
    for (const t of tables) {
      const size = t.rows * t.dim;
      if (sparse === "adagrad") t.accum = acts.floats(size);
      if (sparse === "adam") {
        t.adamM = acts.floats(size);
        t.adamV = acts.floats(size);
      }
    }
    const capacityPerFeature = B * idsPerRow;
    const features: FeatureState[] = config.features.map((f) => {
      if (f.table < 0) {
        return {
          table: -1,
          ids: 0,
          idStart: 0,
          capacity: 0,
          offsets: 0,
          dense: acts.floats(B * f.width),
          width: f.width,
          column: f.offset,
          mean: false,
        };
      }
      const table = tables[f.table];
      const state: FeatureState = {
        table: f.table,
        ids: 0,
        idStart: table.capacity,
        capacity: capacityPerFeature,
        offsets: acts.floats(B + 1),
        dense: 0,
        width: f.width,
        column: f.offset,
        mean: f.mean,
      };
      table.capacity += capacityPerFeature;
      return state;
    });
    for (const t of tables) {
      t.ids = acts.floats(t.capacity);
      t.unique = backward(t.capacity);
      t.inverse = backward(t.capacity);
      t.gradRows = backward(t.capacity * t.dim);
      t.hashCapacity = training ? 1 << Math.ceil(Math.log2(Math.max(2, 2 * t.capacity))) : 0;
      t.hash = backward(t.hashCapacity);
    }
    for (const f of features) {
      if (f.table >= 0) f.ids = tables[f.table].ids + f.idStart * 4;
    }

    const x = acts.floats(B * F);
    const dx = backward(B * F);

    const mlp = (
      spec: ResolvedMLP,
      inWidth: number,
      prefix: string,
      out?: number,
      dOut?: number,
    ): MLPBlock => {
      const layers: Layer[] = [];
      spec.hiddenUnits.forEach((width, l) => {
        const inW = l === 0 ? inWidth : spec.hiddenUnits[l - 1];
        const p = `${prefix}.mlp.${l}.perceptron`;
        const w = b.param(`${p}.0.weight`, [width, inW], "dense");
        const bias = spec.bias ? b.param(`${p}.0.bias`, [width], "dense") : { offset: 0, grad: 0 };
        const norm = spec.useBn || spec.useLn;
        const gamma = norm ? b.param(`${p}.1.weight`, [width], "dense") : { offset: 0, grad: 0 };
        const beta = norm ? b.param(`${p}.1.bias`, [width], "dense") : { offset: 0, grad: 0 };
        const runningMean = spec.useBn
          ? b.param(`${p}.1.running_mean`, [width], "buffer").offset
          : 0;
        const runningVar = spec.useBn ? b.param(`${p}.1.running_var`, [width], "buffer").offset : 0;
        const dropout = spec.dropoutRatio[l];
        const fused = !norm && spec.activation === Activation.relu && dropout === 0;
        const last = l === spec.hiddenUnits.length - 1;
        const y = last && out !== undefined ? out : acts.floats(B * width);
        const dy = last && dOut !== undefined ? dOut : backward(B * width);
        const z = fused ? y : acts.floats(B * width);
        const a = norm ? acts.floats(B * width) : z;
        // Dropout only runs in training: eval writes the activation straight into y.
        const h = dropout > 0 && training ? acts.floats(B * width) : y;
        needWork(inW, width); // forward NT: K = in, N = out
        needBackwardWork(inW, width); // NN: K = out, N = in; TN: K = batch, N = in
        layers.push({
          inWidth: inW,
          outWidth: width,
          weight: w.offset,
          bias: bias.offset,
          gamma: gamma.offset,
          beta: beta.offset,
          runningMean,
          runningVar,
          dWeight: w.grad,
          dBias: bias.grad,
          dGamma: gamma.grad,
          dBeta: beta.grad,
          act: spec.activation,
          slope: spec.slope,
          useBn: spec.useBn,
          useLn: spec.useLn,
          dropout,
          fused,
          z,
          a,
          h,
          y,
          mean: norm ? acts.floats(spec.useBn ? width : B) : 0,
          invStd: norm ? acts.floats(spec.useBn ? width : B) : 0,
          mask: dropout > 0 ? backward(B * width) : 0,
          dy,
          dz: norm ? backward(B * width) : dy,
        });
      });
      const lastLayer = layers[layers.length - 1];
      return { layers, out: lastLayer.y, dOut: lastLayer.dy };
    };

    // Experts: outputs stacked along E with a fixed stride (maxBatch x D) so
    // the gating kernel reaches expert e at expertOut + e * stride.
    const E = config.numExpert;
    const D = config.expertMlp.hiddenUnits[config.expertMlp.hiddenUnits.length - 1];
    const expertStride = B * D;
    const expertOut = acts.floats(E * expertStride);
    const dExpertOut = backward(E * expertStride);
    const experts: MLPBlock[] = [];
    for (let e = 0; e < E; e++) {
      experts.push(
        mlp(
          config.expertMlp,
          F,
          `mmoe.expert_mlps.${e}`,
          expertOut + e * expertStride * 4,
          training ? dExpertOut + e * expertStride * 4 : 0,
        ),
      );
    }

    const gateMlps = config.gateMlp
      ? config.towers.map((_, t) => mlp(config.gateMlp!, F, `mmoe.gate_mlps.${t}`))
      : null;
    const gateInWidth = config.gateMlp
      ? config.gateMlp.hiddenUnits[config.gateMlp.hiddenUnits.length - 1]
      : F;
    const gateFinals = config.towers.map((_, t) => {
      const w = b.param(`mmoe.gate_finals.${t}.weight`, [E, gateInWidth], "dense");
      const bias = b.param(`mmoe.gate_finals.${t}.bias`, [E], "dense");
      needWork(gateInWidth, E);
      needBackwardWork(gateInWidth, E);
      return { w, bias };
    });

    const columns = new Map<string, number>();
    const column = (name: string | null) => {
      if (name !== null && !columns.has(name)) columns.set(name, acts.floats(B));
    };

    const towers: TowerState[] = config.towers.map((tower, t) => {
      const gateMlp = gateMlps ? gateMlps[t] : null;
      const tMlp = tower.mlp ? mlp(tower.mlp, D, `_task_tower.${t}.tower_mlp`) : null;
      const linearIn = tower.mlp ? tower.mlp.hiddenUnits[tower.mlp.hiddenUnits.length - 1] : D;
      const C = tower.numClass;
      const lw = b.param(`_task_tower.${t}.linear.weight`, [C, linearIn], "dense");
      const lb = b.param(`_task_tower.${t}.linear.bias`, [C], "dense");
      needWork(linearIn, C);
      needBackwardWork(linearIn, C);
      column(tower.label);
      column(tower.sampleWeightName);
      column(tower.taskSpaceIndicatorLabel);
      const taskIn = acts.floats(B * D);
      const dTaskIn = backward(B * D);
      return {
        config: tower,
        gateMlp,
        gateWeight: gateFinals[t].w.offset,
        gateBias: gateFinals[t].bias.offset,
        dGateWeight: gateFinals[t].w.grad,
        dGateBias: gateFinals[t].bias.grad,
        gateIn: gateMlp ? gateMlp.out : x,
        gateInWidth,
        gateLogits: acts.floats(B * E),
        gate: acts.floats(B * E),
        dGateLogits: backward(B * E),
        dGateIn: gateMlp ? gateMlp.dOut : 0,
        taskIn,
        dTaskIn,
        mlp: tMlp,
        linearWeight: lw.offset,
        linearBias: lb.offset,
        dLinearWeight: lw.grad,
        dLinearBias: lb.grad,
        logits: acts.floats(B * C),
        probs: acts.floats(B * C),
        dLogits: backward(B * C),
        weights: acts.floats(B),
      };
    });
    return {
      x,
      dx,
      experts,
      expertStride,
      expertOut,
      dExpertOut,
      towers,
      tables,
      features,
      columns,
      workBytes,
    };
  }

  /**
   * Optimizer state tensors for checkpoints, named after the parameter they
   * belong to (`<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.sum`), with
   * the parameter's shape. The step count is {@link MMoEModel.step}.
   */
  optimizerState(): { name: string; shape: number[]; offset: number }[] {
    this.#requireTraining("optimizerState");
    const state: { name: string; shape: number[]; offset: number }[] = [];
    for (const p of this.parameters) {
      if (p.kind === "dense") {
        const at = (block: number) => block + (p.offset - this.denseStart);
        if (this.denseM !== 0) {
          state.push({ name: `${p.name}.exp_avg`, shape: p.shape, offset: at(this.denseM) });
        }
        if (this.denseV !== 0) {
          state.push({ name: `${p.name}.exp_avg_sq`, shape: p.shape, offset: at(this.denseV) });
        }
        if (this.denseAccum !== 0) {
          state.push({ name: `${p.name}.sum`, shape: p.shape, offset: at(this.denseAccum) });
        }
        if (this.denseMomentum !== 0) {
          state.push({
            name: `${p.name}.momentum_buffer`,
            shape: p.shape,
            offset: at(this.denseMomentum),
          });
        }
      } else if (p.kind === "embedding") {
        const table = this.tables[this.parameters.filter((q) => q.kind === "embedding").indexOf(p)];
        if (table.accum !== 0) {
          state.push({ name: `${p.name}.sum`, shape: p.shape, offset: table.accum });
        }
        if (table.adamM !== 0) {
          state.push({ name: `${p.name}.exp_avg`, shape: p.shape, offset: table.adamM });
        }
        if (table.adamV !== 0) {
          state.push({ name: `${p.name}.exp_avg_sq`, shape: p.shape, offset: table.adamV });
        }
      }
    }
    return state;
  }

  // -------------------------------------------------------------------- init

  #initParameters(): void {
    const random = mulberry32(this.seed ^ 0x5eed);
    for (const p of this.parameters) {
      const size = p.shape.reduce((a, b) => a * b, 1);
      const view = this.f32.subarray(p.offset / 4, p.offset / 4 + size);
      if (p.kind === "embedding") {
        // torchrec EmbeddingBagConfig default: U(-sqrt(1/rows), sqrt(1/rows)).
        const bound = Math.sqrt(1 / p.shape[0]);
        for (let i = 0; i < size; i++) view[i] = (random() * 2 - 1) * bound;
      } else if (p.name.endsWith("running_var") || (p.name.endsWith(".1.weight"))) {
        view.fill(1); // BatchNorm/LayerNorm gamma and running variance start at 1.
      } else if (p.name.endsWith("running_mean") || p.name.endsWith(".1.bias")) {
        view.fill(0);
      } else {
        // nn.Linear default (kaiming_uniform a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
        // weight [out, in] and bias [out] alike.
        const fanIn = p.name.endsWith("weight") ? p.shape[1] : this.#fanInOfBias(p.name);
        const bound = 1 / Math.sqrt(fanIn);
        for (let i = 0; i < size; i++) view[i] = (random() * 2 - 1) * bound;
      }
    }
  }

  #fanInOfBias(name: string): number {
    const weight = this.parameters.find((q) => q.name === name.replace(/bias$/, "weight"));
    return weight!.shape[1];
  }

  // ----------------------------------------------------------------- helpers

  /** A float view of `count` values at byte offset `offset`. */
  view(offset: number, count: number): Float32Array {
    return this.f32.subarray(offset / 4, offset / 4 + count);
  }

  /** The value view of a parameter by name. */
  parameter(name: string): Float32Array {
    const p = this.parameters.find((q) => q.name === name);
    if (!p) throw new RangeError(`no parameter named ${JSON.stringify(name)}`);
    return this.view(p.offset, p.shape.reduce((a, b) => a * b, 1));
  }

  /** The dense gradient view of a dense parameter by name (after a backward). */
  gradient(name: string): Float32Array {
    this.#requireTraining("gradient");
    const p = this.parameters.find((q) => q.name === name);
    if (!p || p.kind !== "dense") {
      throw new RangeError(`no dense parameter named ${JSON.stringify(name)}`);
    }
    return this.view(p.grad, p.shape.reduce((a, b) => a * b, 1));
  }

  /**
   * The sparse gradient of table `t` after a backward: the unique rows and
   * their gradient rows (duplicates summed).
   */
  embeddingGradient(t: number): { rows: Int32Array; grads: Float32Array } {
    this.#requireTraining("embeddingGradient");
    const table = this.tables[t];
    const U = table.uniqueCount;
    return {
      rows: this.i32.slice(table.unique / 4, table.unique / 4 + U),
      grads: this.f32.slice(table.gradRows / 4, table.gradRows / 4 + U * table.dim),
    };
  }

  // ------------------------------------------------------------ batch input

  #loadBatch(batch: EncodedBatch, labels = true): void {
    const B = batch.size;
    if (!Number.isInteger(B) || B <= 0 || B > this.maxBatch) {
      throw new RangeError(
        `batch size ${B} is outside [1, ${this.maxBatch}] (the model's maxBatch)`,
      );
    }
    const features = this.config.features;
    if (batch.features.length !== features.length) {
      throw new RangeError(
        `batch has ${batch.features.length} features, the model's group has ${features.length}`,
      );
    }
    const k = this.kernels;
    const F = this.config.inputWidth;
    features.forEach((f, i) => {
      const state = this.features[i];
      const input = batch.features[i];
      if (state.table < 0) {
        const values = (input as DenseInput).values;
        if (!values || values.length !== B * state.width) {
          throw new RangeError(`feature ${f.name}: expected ${B * state.width} dense values`);
        }
        this.f32.set(values, state.dense / 4);
        k.copyColumns(this.x + state.column * 4, state.dense, B, state.width, F, state.width);
        return;
      }
      const { ids, offsets } = input as SparseInput;
      if (
        !ids || !offsets || offsets.length !== B + 1 || offsets[0] !== 0 ||
        offsets[B] !== ids.length
      ) {
        throw new RangeError(
          `feature ${f.name}: offsets must have ${B + 1} entries from 0 to ids.length`,
        );
      }
      if (ids.length > state.capacity) {
        throw new RangeError(
          `feature ${f.name}: ${ids.length} ids in a batch of ${B} exceed the arena's ${state.capacity} ` +
            "(raise idsPerRow)",
        );
      }
      const rows = this.tables[state.table].rows;
      for (let j = 0; j < ids.length; j++) {
        if (!(ids[j] >= 0 && ids[j] < rows)) {
          throw new RangeError(`feature ${f.name}: id ${ids[j]} is outside [0, ${rows})`);
        }
      }
      this.i32.set(ids, state.ids / 4);
      this.i32.set(offsets, state.offsets / 4);
      const table = this.tables[state.table];
      k.embeddingGather(
        this.x + state.column * 4,
        table.weight,
        state.ids,
        state.offsets,
        B,
        state.width,
        F,
        state.mean,
      );
    });
    if (!labels) return;
    for (const [name, offset] of this.columns) {
      const values = batch.columns[name];
      if (!values || values.length < B) {
        throw new RangeError(`batch has no column ${JSON.stringify(name)} with ${B} values`);
      }
      this.f32.set(values.subarray(0, B), offset / 4);
    }
  }

  // ----------------------------------------------------------------- forward

  /** `gemm` on this model's scratch, rows split across the pool when there is one. */
  #gemm(
    c: number,
    a: number,
    b: number,
    bias: number,
    M: number,
    K: number,
    N: number,
    lda: number,
    transA: boolean,
    transB: boolean,
    accumulate: boolean,
    relu: boolean,
  ): void {
    if (this.pool) {
      this.pool.gemm(
        this.kernels,
        c,
        a,
        b,
        bias,
        this.work,
        M,
        K,
        N,
        lda,
        transA,
        transB,
        accumulate,
        relu,
      );
    } else {
      this.kernels.gemm(c, a, b, bias, this.work, M, K, N, lda, transA, transB, accumulate, relu);
    }
  }

  #linearForward(
    out: number,
    input: number,
    weight: number,
    bias: number,
    B: number,
    inW: number,
    outW: number,
    relu: boolean,
  ): void {
    // out (B, outW) = input (B, inW) @ weight^T, weight stored [outW, inW].
    this.#gemm(out, input, weight, bias, B, inW, outW, inW, false, true, false, relu);
  }

  #mlpForward(
    block: MLPBlock,
    input: number,
    B: number,
    training: boolean,
    seed: number,
  ): void {
    const k = this.kernels;
    let x = input;
    block.layers.forEach((l, i) => {
      const n = B * l.outWidth;
      if (l.fused) {
        this.#linearForward(l.y, x, l.weight, l.bias, B, l.inWidth, l.outWidth, true);
      } else {
        this.#linearForward(l.z, x, l.weight, l.bias, B, l.inWidth, l.outWidth, false);
        if (l.useBn) {
          k.batchNormForward(
            l.a,
            l.mean,
            l.invStd,
            l.runningMean,
            l.runningVar,
            l.z,
            l.gamma,
            l.beta,
            B,
            l.outWidth,
            0.1,
            NORM_EPS,
            training,
          );
        } else if (l.useLn) {
          k.layerNormForward(l.a, l.mean, l.invStd, l.z, l.gamma, l.beta, B, l.outWidth, NORM_EPS);
        }
        if (l.dropout > 0 && training) {
          k.biasActivation(l.h, l.a, 0, B, l.outWidth, l.act, l.slope);
          k.dropoutForward(l.y, l.mask, l.h, n, l.dropout, (seed * 31 + i) >>> 0);
        } else {
          k.biasActivation(l.y, l.a, 0, B, l.outWidth, l.act, l.slope);
        }
      }
      x = l.y;
    });
  }

  #forward(B: number, training: boolean): void {
    const k = this.kernels;
    const E = this.config.numExpert;
    const D = this.config.expertMlp.hiddenUnits[this.config.expertMlp.hiddenUnits.length - 1];
    const stepSeed = (this.seed * 1000003 + this.step) >>> 0;
    this.experts.forEach((expert, e) =>
      this.#mlpForward(expert, this.x, B, training, stepSeed + 101 * e)
    );
    this.towers.forEach((t, i) => {
      if (t.gateMlp) this.#mlpForward(t.gateMlp, this.x, B, training, stepSeed + 7919 * (i + 1));
      this.#linearForward(
        t.gateLogits,
        t.gateIn,
        t.gateWeight,
        t.gateBias,
        B,
        t.gateInWidth,
        E,
        false,
      );
      k.gateMixtureForward(
        t.taskIn,
        t.gate,
        t.gateLogits,
        this.expertOut,
        B,
        E,
        D,
        this.expertStride,
      );
      let h = t.taskIn, hWidth = D;
      if (t.mlp) {
        this.#mlpForward(t.mlp, t.taskIn, B, training, stepSeed + 104729 * (i + 1));
        h = t.mlp.out;
        hWidth = t.mlp.layers[t.mlp.layers.length - 1].outWidth;
      }
      this.#linearForward(
        t.logits,
        h,
        t.linearWeight,
        t.linearBias,
        B,
        hWidth,
        t.config.numClass,
        false,
      );
    });
  }

  /** Loss of every tower (writes probs and, when `withGrad`, dLogits). */
  #loss(B: number, withGrad: boolean): StepLosses {
    const k = this.kernels;
    const losses: Record<string, number> = {};
    let total = 0;
    for (const t of this.towers) {
      const c = t.config;
      let weights = 0;
      if (c.hasWeight) {
        k.taskSpaceWeights(
          t.weights,
          c.sampleWeightName ? this.columns.get(c.sampleWeightName)! : 0,
          c.taskSpaceIndicatorLabel ? this.columns.get(c.taskSpaceIndicatorLabel)! : 0,
          B,
          c.inTaskSpaceWeight,
          c.outTaskSpaceWeight,
          c.weight,
        );
        weights = t.weights;
      }
      const labels = this.columns.get(c.label)!;
      const dLogits = withGrad ? t.dLogits : 0;
      let sum: number;
      if (c.losses[0].kind === "binary_cross_entropy") {
        sum = k.sigmoidBinaryCrossEntropy(
          dLogits,
          t.probs,
          t.logits,
          labels,
          weights,
          B,
          c.losses[0].labelSmoothing,
          1 / B,
        );
      } else if (c.losses[0].kind === "softmax_cross_entropy") {
        sum = k.softmaxCrossEntropy(
          dLogits,
          t.probs,
          t.logits,
          labels,
          weights,
          B,
          c.numClass,
          c.losses[0].labelSmoothing,
          1 / B,
        );
      } else {
        sum = k.squaredError(dLogits, t.logits, labels, weights, B, 1 / B);
      }
      losses[c.losses[0].name] = sum / B;
      total += sum / B;
    }
    return { losses, total };
  }

  // ---------------------------------------------------------------- backward

  #linearBackward(
    dInput: number,
    accumulateInput: boolean,
    dOut: number,
    input: number,
    weight: number,
    dWeight: number,
    dBias: number,
    B: number,
    inW: number,
    outW: number,
  ): void {
    const k = this.kernels;
    // dWeight [outW, inW] += dOut^T (outW x B) @ input (B x inW).
    this.#gemm(dWeight, dOut, input, 0, outW, B, inW, outW, true, false, true, false);
    if (dBias !== 0) k.columnSum(dBias, dOut, B, outW);
    // dInput (B, inW) (+)= dOut (B, outW) @ weight [outW, inW].
    if (dInput !== 0) {
      this.#gemm(
        dInput,
        dOut,
        weight,
        0,
        B,
        outW,
        inW,
        outW,
        false,
        false,
        accumulateInput,
        false,
      );
    }
  }

  /** Backward through an MLP whose output gradient is in block.dOut. */
  #mlpBackward(
    block: MLPBlock,
    input: number,
    dInput: number,
    accumulateInput: boolean,
    B: number,
    training: boolean,
  ): void {
    const k = this.kernels;
    for (let i = block.layers.length - 1; i >= 0; i--) {
      const l = block.layers[i];
      const n = B * l.outWidth;
      if (l.dropout > 0 && training) k.multiply(l.dy, l.dy, l.mask, n);
      // dy -> d(pre-activation), in place.
      k.activationBackward(l.dy, l.dy, l.a, l.h, n, l.act, l.slope);
      if (l.useBn) {
        k.batchNormBackward(
          l.dz,
          l.dGamma,
          l.dBeta,
          l.dy,
          l.z,
          l.gamma,
          l.mean,
          l.invStd,
          B,
          l.outWidth,
        );
      } else if (l.useLn) {
        k.layerNormBackward(
          l.dz,
          l.dGamma,
          l.dBeta,
          l.dy,
          l.z,
          l.gamma,
          l.mean,
          l.invStd,
          B,
          l.outWidth,
        );
      }
      const layerInput = i === 0 ? input : block.layers[i - 1].y;
      const dLayerInput = i === 0 ? dInput : block.layers[i - 1].dy;
      this.#linearBackward(
        dLayerInput,
        i === 0 ? accumulateInput : false,
        l.dz,
        layerInput,
        l.weight,
        l.dWeight,
        l.dBias,
        B,
        l.inWidth,
        l.outWidth,
      );
    }
  }

  #backward(B: number): void {
    const k = this.kernels;
    const E = this.config.numExpert;
    const D = this.config.expertMlp.hiddenUnits[this.config.expertMlp.hiddenUnits.length - 1];
    const F = this.config.inputWidth;
    this.f32.fill(0, this.gradStart / 4, this.gradStart / 4 + this.denseCount);
    this.f32.fill(0, this.dx / 4, this.dx / 4 + B * F);
    for (let e = 0; e < E; e++) {
      const start = (this.dExpertOut + e * this.expertStride * 4) / 4;
      this.f32.fill(0, start, start + B * D);
    }
    this.towers.forEach((t) => {
      // Tower: Linear, then its MLP, back to the task input.
      let h = t.taskIn, dh = t.dTaskIn, hWidth = D;
      if (t.mlp) {
        h = t.mlp.out;
        dh = t.mlp.dOut;
        hWidth = t.mlp.layers[t.mlp.layers.length - 1].outWidth;
      }
      this.#linearBackward(
        dh,
        false,
        t.dLogits,
        h,
        t.linearWeight,
        t.dLinearWeight,
        t.dLinearBias,
        B,
        hWidth,
        t.config.numClass,
      );
      if (t.mlp) this.#mlpBackward(t.mlp, t.taskIn, t.dTaskIn, false, B, true);
      // Mixture and gate: dExperts accumulate over tasks.
      k.gateMixtureBackward(
        t.dGateLogits,
        this.dExpertOut,
        t.dTaskIn,
        t.gate,
        this.expertOut,
        B,
        E,
        D,
        this.expertStride,
      );
      if (t.gateMlp) {
        this.#linearBackward(
          t.dGateIn,
          false,
          t.dGateLogits,
          t.gateIn,
          t.gateWeight,
          t.dGateWeight,
          t.dGateBias,
          B,
          t.gateInWidth,
          E,
        );
        this.#mlpBackward(t.gateMlp, this.x, this.dx, true, B, true);
      } else {
        this.#linearBackward(
          this.dx,
          true,
          t.dGateLogits,
          this.x,
          t.gateWeight,
          t.dGateWeight,
          t.dGateBias,
          B,
          F,
          E,
        );
      }
    });
    this.experts.forEach((expert) => this.#mlpBackward(expert, this.x, this.dx, true, B, true));
    // Embeddings: sparse row gradients with duplicate ids summed per table.
    this.tables.forEach((table, ti) => {
      // Features of a table occupy consecutive slices; unused tails hold stale ids, so
      // dedup runs over each feature's used ids only, through a compacted copy.
      let used = 0;
      this.features.forEach((f) => {
        if (f.table !== ti) return;
        const count = this.i32[f.offsets / 4 + B];
        if (f.idStart !== used) {
          this.i32.copyWithin(table.ids / 4 + used, f.ids / 4, f.ids / 4 + count);
        }
        used += count;
      });
      table.uniqueCount = k.embeddingUnique(
        table.unique,
        table.inverse,
        table.ids,
        used,
        table.hash,
        table.hashCapacity,
      );
      this.f32.fill(0, table.gradRows / 4, table.gradRows / 4 + table.uniqueCount * table.dim);
      let start = 0;
      this.features.forEach((f) => {
        if (f.table !== ti) return;
        const count = this.i32[f.offsets / 4 + B];
        k.embeddingBackward(
          table.gradRows,
          this.dx + f.column * 4,
          table.inverse + start * 4,
          f.offsets,
          B,
          f.width,
          F,
          f.mean,
        );
        start += count;
      });
    });
  }

  // --------------------------------------------------------------- optimizer

  /**
   * One optimizer step from the gradients of the last
   * {@link MMoEModel.forwardBackward}: dense optimizer over the dense block,
   * sparse optimizer over the touched embedding rows.
   */
  applyGradients(): void {
    this.#requireTraining("applyGradients");
    const k = this.kernels;
    this.step++;
    const dense = this.config.denseOptimizer;
    const lr = learningRate(dense, this.step);
    if (dense.kind === "adam") {
      k.adamStep(
        this.denseStart,
        this.gradStart,
        this.denseM,
        this.denseV,
        this.denseCount,
        lr,
        dense.beta1,
        dense.beta2,
        dense.eps,
        dense.weightDecay,
        this.step,
      );
    } else if (dense.kind === "adagrad") {
      k.adagradStep(
        this.denseStart,
        this.gradStart,
        this.denseAccum,
        this.denseCount,
        lr,
        dense.eps,
        dense.weightDecay,
      );
    } else if (this.denseMomentum !== 0) {
      k.sgdMomentumStep(
        this.denseStart,
        this.gradStart,
        this.denseMomentum,
        this.denseCount,
        lr,
        dense.momentum,
        dense.weightDecay,
        this.step === 1,
      );
    } else {
      k.sgdStep(this.denseStart, this.gradStart, this.denseCount, lr, dense.weightDecay);
    }
    const sparse = this.config.sparseOptimizer;
    const sparseLr = learningRate(sparse, this.step);
    for (const t of this.tables) {
      if (sparse.kind === "adagrad") {
        k.adagradRows(
          t.weight,
          t.accum,
          t.unique,
          t.gradRows,
          t.uniqueCount,
          t.dim,
          sparseLr,
          sparse.eps,
        );
      } else if (sparse.kind === "adam") {
        k.adamRows(
          t.weight,
          t.adamM,
          t.adamV,
          t.unique,
          t.gradRows,
          t.uniqueCount,
          t.dim,
          sparseLr,
          sparse.beta1,
          sparse.beta2,
          sparse.eps,
          this.step,
        );
      } else {
        k.sgdRows(t.weight, t.unique, t.gradRows, t.uniqueCount, t.dim, sparseLr);
      }
    }
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
    this.#loadBatch(batch);
    this.#forward(batch.size, true);
    const losses = this.#loss(batch.size, true);
    this.#backward(batch.size);
    return losses;
  }

  /** Forward in eval mode (no dropout, BN running stats) and the losses. */
  evalStep(batch: EncodedBatch): StepLosses {
    this.#loadBatch(batch);
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
    this.#probabilities(batch.size);
    return this.outputs(batch.size);
  }

  /** Probabilities of every classification tower from its logits (the loss kernels, no gradient). */
  #probabilities(B: number): void {
    const k = this.kernels;
    for (const t of this.towers) {
      const c = t.config;
      // The label column is read but only enters the loss sum, which is dropped.
      const labels = this.columns.get(c.label)!;
      if (c.losses[0].kind === "binary_cross_entropy") {
        k.sigmoidBinaryCrossEntropy(0, t.probs, t.logits, labels, 0, B, 0, 0);
      } else if (c.losses[0].kind === "softmax_cross_entropy") {
        k.softmaxCrossEntropy(0, t.probs, t.logits, labels, 0, B, c.numClass, 0, 0);
      }
    }
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
   * Eval-mode outputs of the last {@link MMoEModel.evalStep} or
   * {@link MMoEModel.forwardBackward}, copied out: `logits_<t>`, `probs_<t>`
   * (BCE, softmax), `probs1_<t>` (softmax with 2 classes), `y_<t>` (l2_loss).
   */
  outputs(size: number): Record<string, Float32Array> {
    const out: Record<string, Float32Array> = {};
    for (const t of this.towers) {
      const { name, numClass: C, losses } = t.config;
      const loss = losses[0];
      const logits = this.f32.slice(t.logits / 4, t.logits / 4 + size * C);
      if (loss.kind === "l2_loss") {
        out[`y_${name}`] = logits;
        continue;
      }
      out[`logits_${name}`] = logits;
      const probs = this.f32.slice(t.probs / 4, t.probs / 4 + size * C);
      out[`probs_${name}`] = probs;
      if (loss.kind === "softmax_cross_entropy" && C === 2) {
        out[`probs1_${name}`] = Float32Array.from({ length: size }, (_, i) => probs[i * 2 + 1]);
      }
    }
    return out;
  }

  /** Gate weights (B x E) of tower `t` from the last forward, copied out. */
  gateWeights(t: number, size: number): Float32Array {
    const tower = this.towers[t];
    return this.f32.slice(tower.gate / 4, tower.gate / 4 + size * this.config.numExpert);
  }

  /** Group input x (B x F) of the last forward, copied out. */
  groupInput(size: number): Float32Array {
    return this.f32.slice(this.x / 4, this.x / 4 + size * this.config.inputWidth);
  }

  // ----------------------------------------------------------------- threads

  /**
   * Starts the GEMM workers now rather than at the first large GEMM, and
   * resolves when every one is ready (until then the calling thread computes
   * their rows, with the same results). Resolves at once when `threads` is 1.
   */
  ready(): Promise<void> {
    return this.pool ? this.pool.start() : Promise.resolve();
  }

  /**
   * Terminates the GEMM workers (they would otherwise live, idle and
   * unref'd, until the process exits). The model stays usable on one thread.
   * Idempotent.
   */
  close(): void {
    this.pool?.close();
  }

  /** {@link MMoEModel.close}, for `using model = new MMoEModel(...)`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

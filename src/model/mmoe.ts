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
  type GemmOp,
  instantiateKernels,
  type Kernels,
  type KernelVariant,
  runGemm,
} from "../kernels/kernels.ts";
import {
  linearForward,
  linearInputGradient,
  linearWeightGradient,
  type Matrix,
  type Weight,
} from "../kernels/linear.ts";
import {
  defaultThreads,
  KernelPool,
  shareOut,
  splitGemms,
  splitRange,
  type Task,
  threadsSupported,
} from "../kernels/threads.ts";
import { mulberry32 } from "../core/random.ts";
import type { DenseInput, EncodedBatch, SparseInput } from "../core/batch.ts";
import {
  activeLosses,
  type EmbeddingDtype,
  type Layer,
  type ModelPlan,
  type PackedFrom,
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
  type PackedFrom,
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
   * Threads for the step: every kernel that costs time (GEMMs, activations,
   * norms, embedding gather and scatter, optimizers) runs split across a
   * pool of Workers on a shared arena, each output element computed by one
   * thread in a fixed order, so results are bit-identical for any count.
   * Default: `navigator.hardwareConcurrency` capped at 8 where shared memory,
   * Workers and `Atomics.wait` exist, else 1; 1 disables the pool. The
   * workers start on the first step, are unref'd once started (they never
   * keep a process alive), and stop when the model is closed
   * ({@link MMoEModel.close}) or garbage-collected. Falls back to 1 where
   * threads are unsupported.
   */
  threads?: number;
  /**
   * Embedding tables as `f32` (default) or `int8`: u8 rows with an f16
   * scale and bias per row, torchrec's INT8 rowwise quantization (a quarter
   * of the bytes). Inference only; the tables are zero until a serving
   * artifact (`src/io/serving.ts`) fills them.
   */
  embeddings?: EmbeddingDtype;
  /**
   * Time the phases of every step ({@link MMoEModel.profile}; default false).
   * Costs two `performance.now()` calls per parallel step.
   */
  profile?: boolean;
}

/**
 * Milliseconds spent per phase of the steps since the last
 * {@link MMoEModel.profile} call: weight packing, forward GEMMs and the other
 * forward kernels (embedding gather, norms, activations, mixture), the loss,
 * backward GEMMs (with the bias gradients), the other backward kernels,
 * the embedding backward (sparse gradient rows), the optimizers.
 */
export interface StepProfile {
  /** Repacking the Linear weights' GEMM panels. */
  pack: number;
  /** Forward GEMMs (with their bias + ReLU epilogues). */
  forwardGemm: number;
  /** Embedding gather, norms, activations, dropout, the gate mixture. */
  forwardOther: number;
  /** Losses and their gradient (on the calling thread). */
  loss: number;
  /** Weight- and input-gradient GEMMs and the bias gradients. */
  backwardGemm: number;
  /** Activation, dropout and norm backward, the mixture backward, zeroing gradients. */
  backwardOther: number;
  /** Sparse gradient rows of the embedding tables. */
  embeddingBackward: number;
  /** Dense and sparse optimizer updates, BatchNorm running statistics. */
  optimizer: number;
  /** Parallel steps run with at least one worker. */
  parallelSteps: number;
}

type Phase = Exclude<keyof StepProfile, "parallelSteps">;

const PHASES: Phase[] = [
  "pack",
  "forwardGemm",
  "forwardOther",
  "loss",
  "backwardGemm",
  "backwardOther",
  "embeddingBackward",
  "optimizer",
];

/**
 * Elements per thread below which an elementwise or row kernel is not split
 * (32 KiB of floats: handing a range to a spinning worker costs a few µs).
 */
const SPLIT_MIN_ELEMENTS = 8192;

/** Element ranges start on cache lines: 16 floats. */
const ELEMENT_GRAIN = 16;

/** Weight bytes per thread below which packing stays on one thread (~30 µs of copying). */
const PACK_SPLIT_MIN_BYTES = 1 << 19;

/** Closes the pool of a model that was garbage-collected without `close()`. */
const orphanedPools = new FinalizationRegistry<KernelPool>((pool) => pool.close());

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
  /** Threads the step runs on (1: no pool); see {@link ModelOptions.threads}. */
  readonly threads: number;

  readonly #tensors: Tensor[];
  readonly #byName: Map<string, Tensor>;
  readonly #f32: Float32Array;
  readonly #i32: Int32Array;
  readonly #i64: BigInt64Array;
  readonly #seed: number;
  readonly #pool: KernelPool | null;
  /** The calling thread's GEMM scratch. */
  readonly #work: number;
  /** Per batch: each sparse feature's first id in its table's id buffer, and each table's ids. */
  readonly #idStart: number[];
  readonly #idCount: number[];
  /** Per backward: rows each table's sparse gradient touches. */
  readonly #uniqueCount: number[];
  /** Bumped whenever the parameters may have changed; the panels are current at `#packedAt`. */
  #generation = 1;
  #packedAt = 0;
  /** A train-mode forward staged BatchNorm statistics that the next optimizer step commits. */
  #batchNormStaged = false;
  /** {@link MMoEModel.#accumulatedGrads}, once computed. */
  #accumulatedRanges: [number, number][] | null = null;
  /** Phase timing ({@link ModelOptions.profile}): ms per phase, the phase running and since when. */
  readonly #profile: Record<Phase, number> | null;
  #phase: Phase | null = null;
  #phaseStart = 0;

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
      gemmPackedBBytes: sizing.gemmPackedBBytes,
    });
    this.memory = createArenaMemory(this.plan.bytes, { shared: this.threads > 1 });
    this.kernels = instantiateKernels(this.memory, variant).exports;
    const works = this.plan.works.map((w) => w.offset);
    this.#work = works[0];
    this.#pool = this.threads > 1
      ? new KernelPool(this.memory, variant, works, this.kernels)
      : null;
    if (this.#pool) orphanedPools.register(this, this.#pool, this);
    this.#profile = options.profile
      ? Object.fromEntries(PHASES.map((phase) => [phase, 0])) as Record<Phase, number>
      : null;
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
    const initialize = options.initialize ?? true;
    this.#initialize(initialize);
    // A model about to load a checkpoint packs at load (parametersChanged).
    if (initialize) this.#packWeights();
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

  // ----------------------------------------------------------------- threads

  /** Runs one parallel step: task t on thread t (all on this thread without a pool). */
  #run(tasks: readonly Task[]): void {
    if (this.#pool) {
      this.#pool.run(this.kernels, tasks);
      return;
    }
    for (const task of tasks) task(this.kernels, this.#work);
  }

  /**
   * `body` over [0, total) in ranges of multiples of `grain`, one range per
   * thread, each of at least `minimum` items (one range when the total is small).
   */
  #split(
    total: number,
    grain: number,
    minimum: number,
    body: (k: Kernels, start: number, count: number) => void,
  ): void {
    const ranges = splitRange(total, this.threads, grain, minimum);
    this.#run(ranges.map(([start, count]) => (k: Kernels) => body(k, start, count)));
  }

  /** `body` over element ranges of [0, n) (elementwise kernels). */
  #elements(n: number, body: (k: Kernels, start: number, count: number) => void): void {
    this.#split(n, ELEMENT_GRAIN, SPLIT_MIN_ELEMENTS, body);
  }

  /** `body` over row ranges of [0, B) for rows of `width` floats. */
  #rows(B: number, width: number, body: (k: Kernels, b0: number, rows: number) => void): void {
    this.#split(B, 1, Math.ceil(SPLIT_MIN_ELEMENTS / Math.max(1, width)), body);
  }

  /**
   * `body` over column ranges of [0, W) for columns of `B` rows (kernels
   * whose columns are independent: BatchNorm, the bias gradient).
   */
  #columns(W: number, B: number, body: (k: Kernels, h0: number, columns: number) => void): void {
    this.#split(W, ELEMENT_GRAIN, Math.ceil(SPLIT_MIN_ELEMENTS / Math.max(1, B)), body);
  }

  /**
   * GEMM ops as one parallel step, each split by rows or columns
   * (`splitGemms`), with `also` (column ranges of a bias gradient, say)
   * spread over the same threads.
   */
  #gemms(ops: readonly GemmOp[], also: readonly Task[] = []): void {
    const parts = splitGemms(ops, this.threads);
    const count = Math.max(also.length, ...parts.map((part, t) => (part.length > 0 ? t + 1 : 0)));
    this.#run(
      Array.from({ length: Math.max(1, count) }, (_, t) => (k: Kernels, work: number) => {
        also[t]?.(k, work);
        for (const op of parts[t] ?? []) runGemm(k, op, work);
      }),
    );
  }

  /** Starts timing `phase` (ends the one running); a no-op unless profiling. */
  #enter(phase: Phase | null): void {
    const profile = this.#profile;
    if (profile === null) return;
    const now = performance.now();
    if (this.#phase !== null) profile[this.#phase] += now - this.#phaseStart;
    this.#phase = phase;
    this.#phaseStart = now;
  }

  // ----------------------------------------------------------------- weights

  /**
   * Packs every Linear weight into its GEMM panels (the `packed` regions of
   * the layout), whole panel sets shared out over the threads by size.
   */
  #packWeights(): void {
    this.#enter("pack");
    const jobs: { from: PackedFrom; at: number; s: number; bytes: number }[] = [];
    for (const r of this.plan.regions) {
      const from = r.packedFrom;
      if (!from) continue;
      for (let s = 0; s < from.members; s++) {
        jobs.push({ from, at: r.offset, s, bytes: from.memberBytes });
      }
    }
    const lists = shareOut(jobs.map((job) => job.bytes), this.threads, PACK_SPLIT_MIN_BYTES);
    this.#run(
      lists.map((list) => (k: Kernels) => {
        for (const { from, at, s } of list.map((i) => jobs[i])) {
          const weight = from.weight.offset + s * from.memberBytes;
          k.gemmPackB(at + s * from.stride, weight, from.K, from.N, from.transB);
        }
      }),
    );
    this.#packedAt = this.#generation;
    this.#enter(null);
  }

  /**
   * Tells the model its parameters were written through a view
   * ({@link MMoEModel.parameter}, {@link MMoEModel.view}) after the view was
   * taken: repacks the weights' GEMM panels now. The checkpoint loader calls
   * it. Views taken with `parameter`/`view`/`int64View` mark the panels stale
   * themselves (they are repacked at the next forward), and training forwards
   * always repack, so only writes through a view kept across an eval-mode
   * forward need this call.
   */
  parametersChanged(): void {
    this.#generation++;
    this.#packWeights();
  }

  // -------------------------------------------------------------- embeddings

  /**
   * x (B, F) = each feature's pooled embedding or dense values, in group
   * order, by row ranges; in training also each table's deduplicated ids for
   * the backward (one table per thread).
   */
  #embeddingsForward(B: number, training: boolean): void {
    this.#enter("forwardOther");
    const p = this.plan, x = p.x.offset, F = this.config.inputWidth;
    const features = this.config.features.map((f, i) => {
      const input = p.features[i], out = x + 4 * f.offset;
      if (input.values) return { dense: true, f, out, values: input.values.offset };
      const table = p.tables[f.table];
      return {
        dense: false,
        f,
        out,
        rows: table.weight.offset,
        scaleBias: table.scaleBias?.offset ?? 0,
        ids: table.ids.offset + 4 * this.#idStart[i],
        weights: input.weights?.offset ?? 0,
        offsets: input.offsets!.offset,
      };
    });
    const ranges = splitRange(B, this.threads, 1, Math.ceil(SPLIT_MIN_ELEMENTS / F));
    const unique = training && p.dx ? p.tables.map((_, t) => t) : [];
    this.#run(ranges.map(([b0, rows], part) => (k: Kernels) => {
      for (const g of features) {
        const out = g.out + 4 * b0 * F;
        if (g.dense) {
          const w = g.f.width;
          k.copyColumns(out, g.values! + 4 * b0 * w, rows, w, F, w);
        } else {
          const { ids, weights, offsets, scaleBias } = g;
          if (scaleBias) {
            k.embeddingGatherInt8(
              out,
              g.rows!,
              scaleBias,
              ids!,
              weights!,
              offsets! + 4 * b0,
              rows,
              g.f.width,
              F,
              g.f.mean,
            );
          } else {
            k.embeddingGather(
              out,
              g.rows!,
              ids!,
              weights!,
              offsets! + 4 * b0,
              rows,
              g.f.width,
              F,
              g.f.mean,
            );
          }
        }
      }
      for (let t = part; t < unique.length; t += ranges.length) {
        const table = p.tables[t];
        k.embeddingUnique(
          table.unique!.offset,
          table.inverse!.offset,
          table.uniqueCount!.offset,
          table.ids.offset,
          this.#idCount[t],
          table.hash!.offset,
          table.hashCapacity,
        );
      }
    }));
  }

  /**
   * Sparse table gradients from dx: per table (one thread each), its
   * deduplicated rows zeroed, then every feature reading it summed in
   * (fbgemm's duplicate-summing backward).
   */
  #embeddingsBackward(B: number): void {
    this.#enter("embeddingBackward");
    const p = this.plan, dx = p.dx!.offset, F = this.config.inputWidth;
    p.tables.forEach((table, t) => {
      this.#uniqueCount[t] = this.#i32[table.uniqueCount!.offset / 4];
    });
    // Tables to threads by ids scattered plus rows zeroed (dim floats each).
    const costs = p.tables.map((table, t) => (this.#idCount[t] + this.#uniqueCount[t]) * table.dim);
    const lists = shareOut(costs, this.threads, SPLIT_MIN_ELEMENTS);
    this.#run(
      lists.map((list) => (k: Kernels) => {
        for (const t of list) {
          const table = p.tables[t], rows = table.gradRows!.offset;
          k.fill(rows, 0, this.#uniqueCount[t] * table.dim);
          this.config.features.forEach((f, i) => {
            if (f.table !== t) return;
            const input = p.features[i];
            const inverse = table.inverse!.offset + 4 * this.#idStart[i], dOut = dx + 4 * f.offset;
            const weights = input.weights?.offset ?? 0, offsets = input.offsets!.offset;
            k.embeddingBackward(rows, dOut, inverse, weights, offsets, B, f.width, F, f.mean);
          });
        }
      }),
    );
  }

  // ------------------------------------------------------------------ layers

  /** One stacked Perceptron (or Linear) forward: z = x W^T + b -> norm -> act -> dropout. */
  #layerForward(l: Layer, input: Matrix, B: number, training: boolean, seed: number): void {
    const S = l.S, N = l.outWidth, K = l.inWidth, W = S * N;
    const z: Matrix = { at: l.z.offset, ld: W };
    const bias = l.bias?.offset ?? 0, panels = l.panels.offset;
    this.#enter("forwardGemm");
    if (l.shared) {
      const weight: Weight = { at: panels, packed: true };
      this.#gemms([linearForward(z, input, weight, bias, B, K, W, l.fused)]);
    } else {
      const stride = l.panels.packedFrom!.stride;
      this.#gemms(Array.from({ length: S }, (_, s) => {
        const weight: Weight = { at: panels + s * stride, packed: true };
        const b = bias && bias + 4 * s * N;
        return linearForward(member(z, s, N), member(input, s, K), weight, b, B, K, N, l.fused);
      }));
    }
    this.#enter("forwardOther");
    if (l.fused) return;
    if (l.norm === "batch") {
      const { eps } = l;
      const [a, mean, invStd, zAt] = [l.a.offset, l.mean!.offset, l.invStd!.offset, l.z.offset];
      const [gamma, beta, rm, rv] = [l.gamma!, l.beta!, l.runningMean!, l.runningVar!]
        .map((r) => r.offset);
      // Eval mode normalises with the running statistics read in place, so
      // the batch mean a train-mode forward staged stays for the commit.
      const m = training ? mean : rm, variance = training ? l.variance!.offset : 0;
      this.#columns(W, B, (k, h0, columns) => {
        const o = 4 * h0;
        k.batchNormForward(
          a + o,
          m + o,
          invStd + o,
          variance && variance + o,
          rm + o,
          rv + o,
          zAt + o,
          gamma + o,
          beta + o,
          B,
          columns,
          W,
          eps,
          training,
        );
      });
      if (training) this.#batchNormStaged = true;
    } else if (l.norm === "layer") {
      const [a, mean, invStd, zAt] = [l.a.offset, l.mean!.offset, l.invStd!.offset, l.z.offset];
      const gamma = l.gamma!.offset, beta = l.beta!.offset;
      this.#rows(B, W, (k, b0, rows) => {
        const o = 4 * b0 * W, so = 4 * b0 * S;
        k.layerNormForward(a + o, mean + so, invStd + so, zAt + o, gamma, beta, rows, S, N, l.eps);
      });
    }
    if (l.y === l.a) return;
    const [y, a, h] = [l.y.offset, l.a.offset, l.h.offset];
    const dropout = l.dropout > 0 && training;
    this.#elements(B * W, (k, i0, count) => {
      const o = 4 * i0;
      k.biasActivation((dropout ? h : y) + o, a + o, 0, 1, count, l.activation, l.slope);
      if (dropout) {
        k.dropoutForward(y + o, l.mask!.offset + o, h + o, count, i0, l.dropout, seed >>> 0);
      }
    });
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
    const S = l.S, N = l.outWidth, K = l.inWidth, W = S * N;
    const dy = l.dy!.offset, dz = l.dz!.offset;
    const bias = l.bias?.grad?.offset ?? 0;
    // ReLU straight before the Linear's output (no dropout, no norm): its
    // backward and the bias gradient are one pass over dy.
    const fused = bias !== 0 && l.activation === Activation.relu && l.dropout === 0 &&
      l.norm === null;
    this.#enter("backwardOther");
    if (fused) {
      const y = l.h.offset;
      this.#columns(W, B, (k, h0, columns) => {
        const o = 4 * h0;
        k.reluBackwardColumnSum(dy + o, bias + o, dy + o, y + o, B, columns, W);
      });
    } else if (l.dropout > 0 || l.activation !== Activation.identity) {
      const [mask, a, h] = [l.mask?.offset ?? 0, l.a.offset, l.h.offset];
      this.#elements(B * W, (k, i0, count) => {
        const o = 4 * i0;
        if (mask) k.multiply(dy + o, dy + o, mask + o, count);
        if (l.activation !== Activation.identity) {
          k.activationBackward(dy + o, dy + o, a + o, h + o, count, l.activation, l.slope);
        }
      });
    }
    if (l.norm !== null) {
      const gamma = l.gamma!.offset, dGamma = l.gamma!.grad!.offset, dBeta = l.beta!.grad!.offset;
      const z = l.z.offset, mean = l.mean!.offset, invStd = l.invStd!.offset;
      if (l.norm === "batch") {
        this.#columns(W, B, (k, h0, columns) => {
          const o = 4 * h0;
          k.batchNormBackward(
            dz + o,
            dGamma + o,
            dBeta + o,
            dy + o,
            z + o,
            gamma + o,
            mean + o,
            invStd + o,
            B,
            columns,
            W,
          );
        });
      } else {
        // dGamma and dBeta sum over rows: one thread keeps their order.
        this.#run([
          (k) => k.layerNormBackward(dz, dGamma, dBeta, dy, z, gamma, mean, invStd, B, S, N),
        ]);
      }
    }
    this.#enter("backwardGemm");
    const dZ: Matrix = { at: dz, ld: W }, dW = l.weight.grad!.offset;
    const panels = l.inputPanels?.offset ?? 0, stride = l.inputPanels?.packedFrom?.stride ?? 0;
    const ops: GemmOp[] = [];
    for (let s = 0; s < (l.shared ? 1 : S); s++) {
      // The shared first layer is one Linear [S*N, K]; deeper ones S Linears [N, K].
      const width = l.shared ? W : N, w = 4 * s * N * K;
      const dOut = l.shared ? dZ : member(dZ, s, N), x = l.shared ? input : member(input, s, K);
      ops.push(linearWeightGradient(dW + w, dOut, x, B, K, width));
      if (dInput !== null) {
        const dx = l.shared ? dInput : member(dInput, s, K);
        const weight: Weight = { at: panels + s * stride, packed: true };
        ops.push(linearInputGradient(dx, accumulate, dOut, weight, B, K, width));
      }
    }
    const biasParts = bias && !fused
      ? splitRange(W, this.threads, ELEMENT_GRAIN, Math.ceil(SPLIT_MIN_ELEMENTS / B))
        .map(([h0, columns]) => (k: Kernels) =>
          k.columnSum(bias + 4 * h0, dz + 4 * h0, B, columns, W)
        )
      : [];
    this.#gemms(ops, biasParts);
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
    // Training forwards always repack: a gradient check writes through a view it keeps.
    if (training || this.#packedAt !== this.#generation) this.#packWeights();
    this.#embeddingsForward(B, training);
    this.#stackForward(p.experts, B, training, seed);
    this.#stackForward(p.gates, B, training, seed + 7919);
    this.#enter("forwardOther");
    const [out, gate] = [p.taskInput.offset, p.gate.offset];
    const experts = p.experts.layers.at(-1)!.y.offset, logits = p.gates.layers.at(-1)!.y.offset;
    this.#rows(B, T * E * D, (k, b0, rows) => {
      const [o, g, x] = [4 * b0 * T * D, 4 * b0 * T * E, 4 * b0 * E * D];
      k.gateMixtureForward(out + o, gate + g, logits + g, experts + x, rows, T, E, D);
    });
    p.towers.forEach((t, i) => this.#stackForward(t.stack, B, training, seed + 104729 * (i + 1)));
    this.#enter(null);
  }

  /**
   * The dense gradient block less the Linear weights' gradients, which their
   * GEMMs overwrite: [byte offset, floats] ranges, the ones the backward
   * accumulates into.
   */
  get #accumulatedGrads(): [number, number][] {
    if (this.#accumulatedRanges) return this.#accumulatedRanges;
    const p = this.plan, start = p.denseGrad, end = start + 4 * p.dense.count;
    const written = [p.experts, p.gates, ...p.towers.map((t) => t.stack)]
      .flatMap((stack) => stack.layers.map((l) => l.weight.grad!))
      .map((g) => [g.offset, g.offset + 4 * g.shape.reduce((a, b) => a * b, 1)])
      .sort((x, y) => x[0] - y[0]);
    const ranges: [number, number][] = [];
    let at = start;
    for (const [from, to] of [...written, [end, end]]) {
      if (from > at) ranges.push([at, (from - at) / 4]);
      at = Math.max(at, to);
    }
    return this.#accumulatedRanges = ranges;
  }

  #backward(B: number): void {
    const p = this.plan, c = this.config;
    const T = c.towers.length, E = c.numExpert, D = p.experts.layers.at(-1)!.outWidth;
    this.#enter("backwardOther");
    // Zero what the backward accumulates into: the dense gradients that no
    // weight-gradient GEMM overwrites (biases, norms), the group input's gradient.
    const dx = p.dx?.offset ?? 0;
    const zeroed = dx
      ? [...this.#accumulatedGrads, [dx, B * c.inputWidth]]
      : this.#accumulatedGrads;
    const total = zeroed.reduce((sum, [, count]) => sum + count, 0);
    this.#elements(total, (k, i0, count) => {
      let start = 0;
      for (const [at, n] of zeroed) {
        const from = Math.max(i0, start), to = Math.min(i0 + count, start + n);
        if (from < to) k.fill(at + 4 * (from - start), 0, to - from);
        start += n;
      }
    });
    for (const t of p.towers) this.#stackBackward(t.stack, B);
    this.#enter("backwardOther");
    const experts = p.experts.layers.at(-1)!, gates = p.gates.layers.at(-1)!;
    const dLogits = gates.dy!.offset, dExperts = experts.dy!.offset, dTask = p.dTaskInput!.offset;
    const gate = p.gate.offset, expertOut = experts.y.offset;
    this.#rows(B, T * E * D, (k, b0, rows) => {
      const [o, g, x] = [4 * b0 * T * D, 4 * b0 * T * E, 4 * b0 * E * D];
      k.gateMixtureBackward(
        dLogits + g,
        dExperts + x,
        dTask + o,
        gate + g,
        expertOut + x,
        rows,
        T,
        E,
        D,
      );
    });
    this.#stackBackward(p.gates, B);
    this.#stackBackward(p.experts, B);
    if (p.dx) this.#embeddingsBackward(B);
    this.#enter(null);
  }

  /**
   * Every tower's losses on its logits (tzrec's loss weights), their
   * probabilities and, when `withGrad`, dLogits (the sum over the tower's
   * losses, scaled by 1/B as the batch mean).
   */
  #loss(B: number, withGrad: boolean): StepLosses {
    this.#enter("loss");
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
    this.#enter(null);
    return { losses, total };
  }

  // --------------------------------------------------------------- optimizer

  /**
   * One optimizer step from the gradients of the last
   * {@link MMoEModel.forwardBackward}: the dense optimizer over the dense
   * block and the sparse optimizer over the touched embedding rows (both
   * split into element and row ranges across the threads), and the
   * BatchNorm running statistics and counters of that step's forward (torch
   * moves them in the train-mode forward; here they wait for the step, so a
   * step refused for a non-finite loss leaves every buffer as it was).
   */
  applyGradients(): void {
    this.#requireTraining("applyGradients");
    this.#enter("optimizer");
    const p = this.plan;
    this.step++;
    this.#generation++;
    if (this.#batchNormStaged) this.#commitBatchNorm();
    const dense = this.config.denseOptimizer, step = this.step;
    const lr = learningRate(dense, step);
    const { offset: param, count: n } = p.dense, grad = p.denseGrad;
    const [s0, s1] = p.denseState.map((s) => s.offset);
    const denseRange = (k: Kernels, i0: number, count: number) => {
      const [pp, g, m, v] = [param, grad, s0, s1].map((at) => at + 4 * i0);
      if (dense.kind === "adam") {
        const { beta1, beta2, eps, weightDecay } = dense;
        k.adamStep(pp, g, m, v, count, lr, beta1, beta2, eps, weightDecay, step);
      } else if (dense.kind === "adagrad") {
        k.adagradStep(pp, g, m, count, lr, dense.eps, dense.weightDecay);
      } else if (dense.momentum > 0) {
        const { momentum: mu, dampening, nesterov, weightDecay: wd } = dense;
        k.sgdMomentumStep(pp, g, m, count, lr, mu, dampening, nesterov, wd, step === 1);
      } else {
        k.sgdStep(pp, g, count, lr, dense.weightDecay);
      }
    };
    const sparse = this.config.sparseOptimizer;
    const sparseLr = learningRate(sparse, step);
    const rowsRange = (k: Kernels, t: number, u0: number, U: number) => {
      const table = p.tables[t], dim = table.dim, weight = table.weight.offset;
      const rows = table.unique!.offset + 4 * u0, g = table.gradRows!.offset + 4 * u0 * dim;
      const [a0, a1] = table.weight.state.map((s) => s.region.offset);
      if (sparse.kind === "adagrad") {
        k.adagradRows(weight, a0, rows, g, U, dim, sparseLr, sparse.eps);
      } else if (sparse.kind === "adam") {
        const { beta1, beta2, eps, weightDecay: wd } = sparse;
        k.adamRows(weight, a0, a1, rows, g, U, dim, sparseLr, beta1, beta2, eps, wd, step);
      } else {
        k.sgdRows(weight, rows, g, U, dim, sparseLr);
      }
    };
    // One parallel step: thread t takes range t of the dense block and of every table's rows.
    const denseParts = splitRange(n, this.threads, ELEMENT_GRAIN, SPLIT_MIN_ELEMENTS);
    const rowParts = p.tables.map((table, t) =>
      splitRange(this.#uniqueCount[t], this.threads, 1, SPLIT_MIN_ELEMENTS / (4 * table.dim))
    );
    const parts = Math.max(denseParts.length, ...rowParts.map((r) => r.length));
    this.#run(Array.from({ length: parts }, (_, part) => (k: Kernels) => {
      if (part < denseParts.length) denseRange(k, ...denseParts[part]);
      rowParts.forEach((ranges, t) => {
        if (part < ranges.length && ranges[part][1] > 0) rowsRange(k, t, ...ranges[part]);
      });
    }));
    this.#enter(null);
  }

  /**
   * BatchNorm's running statistics toward the batch statistics the last
   * train-mode forward staged, and num_batches_tracked + 1 (torch counts every
   * train-mode forward of a BatchNorm).
   */
  #commitBatchNorm(): void {
    this.#batchNormStaged = false;
    const k = this.kernels;
    for (
      const stack of [
        this.plan.experts,
        this.plan.gates,
        ...this.plan.towers.map((t) => t.stack),
      ]
    ) {
      for (const l of stack.layers) {
        if (l.norm !== "batch") continue;
        const [rm, rv, mean, variance] = [l.runningMean!, l.runningVar!, l.mean!, l.variance!]
          .map((r) => r.offset);
        k.batchNormRunningUpdate(rm, rv, mean, variance, l.S * l.outWidth, l.momentum);
        const counters = l.batches!.offset / 8;
        for (let s = 0; s < l.S; s++) this.#i64[counters + s] += 1n;
      }
    }
  }

  // --------------------------------------------------------------------- API

  /**
   * Forward in train mode, losses, backward and one optimizer step.
   * Returns the per-tower losses of this batch (before the update). A NaN or
   * infinite loss throws a `RangeError` before the update: the parameters,
   * buffers (BatchNorm running statistics and counters) and optimizer state
   * stay as they were.
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
   * {@link MMoEModel.embeddingGradient}), and the BatchNorm batch statistics
   * staged for {@link MMoEModel.applyGradients}, which commits them to the
   * running statistics. For gradient checks, parity tests and loops that
   * check the loss before they step.
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

  /**
   * A float view of `count` values at byte offset `offset`. The view may be
   * written: the weights' GEMM panels are repacked at the next forward (see
   * {@link MMoEModel.parametersChanged} for writes after that).
   */
  view(offset: number, count: number): Float32Array {
    this.#generation++;
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

  // --------------------------------------------------------------- lifecycle

  /**
   * Starts the workers now rather than at the first step, and resolves when
   * every one is ready (until then the calling thread runs their ranges, with
   * the same results). Resolves at once when `threads` is 1.
   */
  ready(): Promise<void> {
    return this.#pool ? this.#pool.start() : Promise.resolve();
  }

  /**
   * Milliseconds per phase of the steps run since the last call (or since
   * the model was built), then starts counting again; null unless the model
   * was built with {@link ModelOptions.profile}.
   *
   * @example
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
   * });
   * const model = new MMoEModel(config, { maxBatch: 2, profile: true, threads: 1 });
   * const batch = {
   *   size: 2,
   *   features: [{ ids: Int32Array.of(0, 3), offsets: Int32Array.of(0, 1, 2) }],
   *   columns: { clk: Float32Array.of(1, 0) },
   * };
   * model.trainStep(batch);
   * const profile = model.profile()!;
   * assert.ok(profile.forwardGemm > 0 && profile.optimizer > 0);
   * assert.equal(model.profile()!.forwardGemm, 0);
   * ```
   */
  profile(): StepProfile | null {
    const times = this.#profile;
    if (times === null) return null;
    const result = { ...times, parallelSteps: this.#pool?.splits ?? 0 };
    for (const phase of PHASES) times[phase] = 0;
    if (this.#pool) this.#pool.splits = 0;
    return result;
  }

  /**
   * Terminates the workers (otherwise they stop when the model is
   * garbage-collected, or with the process: they never keep it alive). The
   * model stays usable on one thread. Idempotent.
   */
  close(): void {
    if (this.#pool === null) return;
    orphanedPools.unregister(this);
    this.#pool.close();
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

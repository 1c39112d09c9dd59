/**
 * The model's structure, stated once: {@link planModel} turns a resolved
 * config into a table of every region of the arena (parameter, buffer,
 * gradient, optimizer state, input, activation, scratch), each with its name,
 * shape, kind, dtype and init, and the structured plan the forward and
 * backward read (a size table cut into named views, as llm.c's
 * `ParameterTensors`). Sizing, placement, init, the optimizer loops,
 * checkpoint names, ONNX export and the threads' scratch all walk this table;
 * nothing reads meaning out of a name.
 *
 * Stacking. MMoE runs E expert MLPs and T gates on the same input x. Their
 * layers are stacked: member s (expert or task) of a layer owns columns
 * s*H..s*H+H of one [B, S*H] activation, and its Linear weight [H, in] is
 * rows s*H.. of one [S*H, in] region, which is exactly the S weights
 * [H, in] one after another. So the first layer of a stack is ONE GEMM with
 * N = S*H; deeper layers, whose inputs differ per member, are one GEMM per
 * member addressing its column block through the GEMM's row strides; bias,
 * BatchNorm, activation and dropout run once over all S*H columns, LayerNorm
 * over S groups. The experts' last layer is [B, E, D], tzrec's
 * `torch.stack(expert_fea_list, dim=1)`; the gates' last layer (the
 * `gate_finals` Linears) is the gate logits [B, T, E]; the mixture writes
 * [B, T, D] and tower t reads its columns t*D.
 *
 * Placement is one pass in table order after a stable sort by kind: dense
 * parameters first (one block), then the embedding tables, buffers and
 * counters, so that every parameter and buffer lies in one block at the start
 * of the arena ({@link ModelPlan.parameters}: the data section of a serving
 * artifact), then the dense gradients (a block parallel to the dense one),
 * each dense optimizer state (parallel blocks), then everything else.
 * Zeroing the gradients is one fill and a dense optimizer step one flat loop.
 *
 * Int8 embeddings ({@link PlanOptions.embeddings}, inference only): each
 * table is `weight` [rows, dim] u8 and `weight_qscaleshift` [rows, 2] f16
 * (scale, bias) per row, torchrec's INT8 rowwise layout split as its
 * quantized state_dict splits it; a value is `scale * q + bias`.
 *
 * Packed weights. Every Linear weight also has `packed` regions derived from
 * it ({@link PackedFrom}): its panels for the forward GEMM (op(B) = W^T, as
 * `gemmPackB` lays them out) and, in a training model, for the input-gradient
 * GEMM (op(B) = W). The model repacks them from the weights whenever the
 * weights may have changed, so the GEMMs never pack a weight per call.
 *
 * @example The table of a tiny model
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { instantiateKernels } from "../kernels/kernels.ts";
 * import { planModel, stateDict } from "./layout.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 4, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       numExpert: 3,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const { exports: k } = instantiateKernels(new WebAssembly.Memory({ initial: 1 }));
 * const plan = planModel(config, {
 *   maxBatch: 2,
 *   idsPerRow: 1,
 *   training: true,
 *   threads: 1,
 *   gemmWorkspaceBytes: k.gemmWorkspaceBytes,
 *   gemmPackedBBytes: k.gemmPackedBBytes,
 * });
 * const experts = plan.experts.layers[0].weight;
 * assert.deepEqual(experts.shape, [3, 8, 4]); // three expert Linears [8, 4], stacked
 * assert.deepEqual(stateDict(plan).slice(0, 3).map((t) => t.name), [
 *   "embedding_group.emb_impls.__BASE__.ebc.embedding_bags.item_emb.weight",
 *   "mmoe.expert_mlps.0.mlp.0.perceptron.0.weight",
 *   "mmoe.expert_mlps.0.mlp.0.perceptron.0.bias",
 * ]);
 * ```
 * @module
 */
import type { ResolvedConfig, ResolvedMLP, ResolvedTower } from "../config/config.ts";
import { Activation } from "../core/activation.ts";
import { ArenaLayout, MAX_WASM_BYTES } from "../kernels/arena.ts";

/**
 * What a region holds, which decides how it is trained, initialised and
 * saved: `dense` (a parameter of the dense optimizer, with a gradient and
 * state in parallel blocks), `embedding` (a table of the sparse optimizer),
 * `buffer` (BatchNorm running statistics), `counter` (BatchNorm
 * num_batches_tracked, i64), `gradient`, `optimizer` (optimizer state),
 * `packed` (a Linear weight's GEMM panels, {@link PackedFrom}), `input` (a
 * batch's ids, offsets, weights, dense values, label columns), `activation`
 * (forward values), `scratch` (backward-only values and GEMM workspaces).
 */
export type RegionKind =
  | "dense"
  | "embedding"
  | "buffer"
  | "counter"
  | "gradient"
  | "optimizer"
  | "packed"
  | "input"
  | "activation"
  | "scratch";

/** A region's starting values. */
export type Init =
  | { kind: "zero" }
  | { kind: "constant"; value: number }
  | { kind: "uniform"; bound: number };

/** Element type of a region (`u8` and `f16`: int8 embedding tables and their scales). */
export type Dtype = "f32" | "i32" | "i64" | "u8" | "f16";

/** The state_dict module list whose members a parameter region stacks. */
export interface ModuleList {
  /** Name prefix: `mmoe.expert_mlps`, `_task_tower.0`, ... */
  prefix: string;
  /** Member s is named `<prefix>.<s>` (a torch ModuleList) rather than `<prefix>`. */
  indexed: boolean;
  /** Members stacked in each of its regions. */
  members: number;
  /** Its parameter and buffer regions in the module's state_dict order. */
  regions: Region[];
}

/**
 * How a `packed` region derives from a Linear weight: member s of the
 * weight region (`memberBytes` apart) packed by `gemmPackB(region.offset +
 * s * stride, weight.offset + s * memberBytes, K, N, transB)`.
 */
export interface PackedFrom {
  /** The weight region, [S, out, in]. */
  weight: Region;
  /** Members packed one by one (1 when the whole stack is one op(B)). */
  members: number;
  /** Bytes between members in the weight region. */
  memberBytes: number;
  /** Bytes between members' panels (a multiple of 64). */
  stride: number;
  /** Inner size of the GEMM reading the panels. */
  K: number;
  /** Columns of op(B). */
  N: number;
  /** op(B) = W^T (the forward), or W (the input gradient). */
  transB: boolean;
}

/** One region of the arena. */
export interface Region {
  /** tzrec's state_dict name with `*` for the member of a stack, or a descriptive name. */
  name: string;
  /** Shape; stacked tensors lead with the member count. */
  shape: number[];
  /** What it holds. */
  kind: RegionKind;
  /** Element type. */
  dtype: Dtype;
  /** Starting values. */
  init: Init;
  /** Byte offset (set by placement). */
  offset: number;
  /** Parameters and buffers: the module list and the name inside a member. */
  tensor?: { module: ModuleList; suffix: string };
  /** Dense parameters in a training model: the gradient. */
  grad?: Region;
  /** Trained parameters: optimizer state by torch's state key (`exp_avg`, `sum`, ...). */
  state: { key: string; region: Region }[];
  /** `packed` regions: the weight it is packed from and how. */
  packedFrom?: PackedFrom;
}

/** A row-major matrix view: region, first column, row stride in elements. */
export interface View {
  /** The region. */
  region: Region;
  /** First column. */
  column: number;
  /** Row stride. */
  ld: number;
}

/**
 * One Perceptron (tzrec `mlp.<l>.perceptron`) of S stacked MLPs, or a plain
 * Linear (identity activation, no norm): Linear -> [BatchNorm | LayerNorm]
 * -> activation -> [Dropout], every tensor [B, S*outWidth] (member s in
 * columns s*outWidth..).
 */
export interface Layer {
  /** Members stacked. */
  S: number;
  /** Input width per member. */
  inWidth: number;
  /** Output width per member. */
  outWidth: number;
  /** Every member reads the same input: one GEMM with N = S*outWidth. */
  shared: boolean;
  /** {@link Activation} code. */
  activation: number;
  /** LeakyReLU slope. */
  slope: number;
  /** Normalisation after the Linear. */
  norm: "batch" | "layer" | null;
  /** The norm's eps (torch's BatchNorm1d / LayerNorm default, 1e-5). */
  eps: number;
  /** BatchNorm's running-statistics momentum (torch's default, 0.1). */
  momentum: number;
  /** Dropout ratio (0 in an inference model). */
  dropout: number;
  /** Linear + bias + ReLU in the GEMM epilogue: z, a, h and y are one region. */
  fused: boolean;
  /** Linear weight [S, out, in]. */
  weight: Region;
  /** The weight packed for the forward GEMM (op(B) = W^T). */
  panels: Region;
  /** The weight packed for the input-gradient GEMM (op(B) = W); null in inference. */
  inputPanels: Region | null;
  /** Linear bias [S, out] or null. */
  bias: Region | null;
  /** Norm gamma [S, out] or null. */
  gamma: Region | null;
  /** Norm beta. */
  beta: Region | null;
  /** BatchNorm running mean [S, out]. */
  runningMean: Region | null;
  /** BatchNorm running variance. */
  runningVar: Region | null;
  /** BatchNorm num_batches_tracked [S] (i64). */
  batches: Region | null;
  /** Linear output. */
  z: Region;
  /** Normalised (z without a norm). */
  a: Region;
  /** Activation output before dropout (y unless dropout trains). */
  h: Region;
  /** Layer output. */
  y: Region;
  /** Norm statistics (BN: [S*out]; LN: [B, S]). */
  mean: Region | null;
  /** 1/sqrt(var + eps), like `mean`. */
  invStd: Region | null;
  /**
   * BatchNorm in a training model: the unbiased batch variance [S*out] of the
   * last train-mode forward, staged with `mean` until the step commits them
   * to the running statistics.
   */
  variance: Region | null;
  /** Dropout mask. */
  mask: Region | null;
  /** Gradient w.r.t. y, reused in place for a and h (null in inference). */
  dy: Region | null;
  /** Gradient w.r.t. z (dy without a norm). */
  dz: Region | null;
}

/** S MLPs side by side on one input (experts, gates) or one MLP (a tower). */
export interface Stack {
  /** Members. */
  S: number;
  /** Input (shared by every member of the first layer). */
  input: View;
  /** Where the input gradient goes and whether it accumulates; null: not needed. */
  dInput: (View & { accumulate: boolean }) | null;
  /** Layers in order; the last one's y is the stack's output. */
  layers: Layer[];
}

/** An embedding table and its per-batch scratch. */
export interface TablePlan {
  /** Rows. */
  rows: number;
  /** Width. */
  dim: number;
  /** The table [rows, dim]: f32, or u8 in an int8 plan. */
  weight: Region;
  /** Int8 plan: (scale, bias) per row [rows, 2] f16; null for f32 tables. */
  scaleBias: Region | null;
  /** Concatenated ids of every feature reading it (i32). */
  ids: Region;
  /** Ids capacity per batch. */
  capacity: number;
  /** Deduplicated ids (i32). */
  unique: Region | null;
  /** Position of each id in `unique` (i32). */
  inverse: Region | null;
  /** How many ids `unique` holds (i32 [1]). */
  uniqueCount: Region | null;
  /** Summed gradient rows [capacity, dim]. */
  gradRows: Region | null;
  /** Dedup hash table (i32). */
  hash: Region | null;
  /** Its slots, a power of two >= 2 capacity. */
  hashCapacity: number;
}

/** One feature of the group and its input regions. */
export interface FeaturePlan {
  /** Table index, or -1 for a dense feature. */
  table: number;
  /** Ids per batch this feature may bring. */
  capacity: number;
  /** CSR offsets [B + 1] (i32). */
  offsets: Region | null;
  /** Per-id weights of a weighted feature. */
  weights: Region | null;
  /** Dense values [B, width]. */
  values: Region | null;
}

/** A tower: its stack (tower MLP + `linear`) and its loss regions. */
export interface TowerPlan {
  /** The config. */
  tower: ResolvedTower;
  /** Tower MLP layers and the output Linear, on task input columns t*D. */
  stack: Stack;
  /** Probabilities [B, C] (classification losses). */
  probs: Region;
  /** Loss weights [B]. */
  weights: Region;
  /** Gradient of a tower's second and later losses [B, C], summed into dLogits. */
  dLogitsExtra: Region | null;
}

/** An optimizer state slot of one optimizer (torch's state key) and its starting value. */
interface StateSlot {
  /** State key. */
  key: string;
  /** Starting value. */
  init: Init;
}

/** Everything {@link planModel} lays out. */
export interface ModelPlan {
  /** Every region, in placement order. */
  regions: Region[];
  /** state_dict modules in order. */
  modules: ModuleList[];
  /** Arena bytes. */
  bytes: number;
  /** Largest batch. */
  maxBatch: number;
  /** Whether gradients, optimizer state and backward scratch exist. */
  training: boolean;
  /** Embedding tables, config order. */
  tables: TablePlan[];
  /** Group features, group order. */
  features: FeaturePlan[];
  /** Group input x [B, F]. */
  x: Region;
  /** Its gradient (null without tables or in inference). */
  dx: Region | null;
  /** E expert MLPs: output [B, E, D]. */
  experts: Stack;
  /** T gates (gate MLPs, then the gate Linears): output logits [B, T, E]. */
  gates: Stack;
  /** Softmax gates [B, T, E]. */
  gate: Region;
  /** Mixtures, the towers' inputs [B, T, D]. */
  taskInput: Region;
  /** Their gradient. */
  dTaskInput: Region | null;
  /** Towers in config order. */
  towers: TowerPlan[];
  /** Label, sample-weight and indicator columns [B]. */
  columns: Map<string, Region>;
  /** Dense parameter block: first byte and float count (padding included). */
  dense: { offset: number; count: number };
  /**
   * Every parameter and buffer region (dense, embedding, buffer, counter):
   * one block from the first byte of the arena's regions, padding included.
   * Its layout depends on the config and the embedding dtype only, not on
   * the batch size, threads or training.
   */
  parameters: { offset: number; bytes: number };
  /** Embedding tables' element type. */
  embeddings: EmbeddingDtype;
  /** Gradient block start (0 in inference). */
  denseGrad: number;
  /** Dense optimizer state blocks, one per slot. */
  denseState: { key: string; offset: number }[];
  /** One GEMM workspace per thread. */
  works: Region[];
}

/** Options of {@link planModel}. */
export interface PlanOptions {
  /** Largest batch. */
  maxBatch: number;
  /** Ids capacity per row of each sparse feature. */
  idsPerRow: number;
  /** Gradients, optimizer state and backward scratch. */
  training: boolean;
  /** GEMM workspaces (one per thread). */
  threads: number;
  /** The kernels' `gemmWorkspaceBytes` (scratch of one GEMM). */
  gemmWorkspaceBytes: (K: number, N: number) => number;
  /**
   * Embedding tables as f32 (default) or `int8` (u8 rows with an f16 scale
   * and bias per row, as torchrec's INT8 quantized tables; inference only).
   */
  embeddings?: EmbeddingDtype;
  /** The kernels' `gemmPackedBBytes` (panels of one packed op(B)). */
  gemmPackedBBytes: (K: number, N: number) => number;
}

/** Element type of the embedding tables: f32, or int8 rowwise (inference). */
export type EmbeddingDtype = "f32" | "int8";

const ZERO: Init = { kind: "zero" };
const ONE: Init = { kind: "constant", value: 1 };

/** torchrec's embedding prefix for our features (tzrec's `__BASE__` data group). */
const EMBEDDING_BAGS = "embedding_group.emb_impls.__BASE__.ebc.embedding_bags";

/** Bytes per element. */
export const DTYPE_BYTES: Record<Dtype, number> = { f32: 4, i32: 4, i64: 8, u8: 1, f16: 2 };

/** Dense optimizer state slots (torch.optim state keys), per optimizer. */
function optimizerSlots(
  optimizer: ResolvedConfig["denseOptimizer"],
  sparse: boolean,
): StateSlot[] {
  switch (optimizer.kind) {
    case "adam":
      return [{ key: "exp_avg", init: ZERO }, { key: "exp_avg_sq", init: ZERO }];
    case "adagrad":
      // torch.optim.Adagrad and fbgemm's momentum1 start at initial_accumulator_value.
      return [{ key: "sum", init: constant(optimizer.initialAccumulatorValue) }];
    case "sgd":
      return !sparse && optimizer.momentum > 0 ? [{ key: "momentum_buffer", init: ZERO }] : [];
  }
}

function constant(value: number): Init {
  return value === 0 ? ZERO : { kind: "constant", value };
}

/** PyTorch's nn.Linear default (kaiming_uniform, a = sqrt 5) for weight and bias alike. */
function linearInit(inWidth: number): Init {
  return { kind: "uniform", bound: 1 / Math.sqrt(inWidth) };
}

/** Collects regions and modules while the structure is walked once. */
class Builder {
  readonly regions: Region[] = [];
  readonly modules: ModuleList[] = [];
  workBytes = 0;

  constructor(
    readonly B: number,
    readonly training: boolean,
    readonly denseSlots: StateSlot[],
    readonly sparseSlots: StateSlot[],
    readonly workspace: (K: number, N: number) => number,
    readonly packedBytes: (K: number, N: number) => number,
  ) {}

  region(name: string, shape: number[], kind: RegionKind, init = ZERO, dtype: Dtype = "f32") {
    const region: Region = { name, shape, kind, dtype, init, offset: 0, state: [] };
    this.regions.push(region);
    return region;
  }

  /** A region only backward and the optimizers use: null in an inference model. */
  backward(name: string, shape: number[], dtype: Dtype = "f32"): Region | null {
    return this.training ? this.region(name, shape, "scratch", ZERO, dtype) : null;
  }

  module(prefix: string, indexed: boolean, members: number): ModuleList {
    const module: ModuleList = { prefix, indexed, members, regions: [] };
    this.modules.push(module);
    return module;
  }

  /**
   * A tensor of `module`, stacked over its members: `dense` parameters get a
   * gradient and the dense optimizer's state, `embedding` tables the sparse
   * optimizer's.
   */
  tensor(
    module: ModuleList,
    suffix: string,
    shape: number[],
    kind: "dense" | "embedding" | "buffer" | "counter",
    init: Init,
    dtype: Dtype = kind === "counter" ? "i64" : "f32",
  ): Region {
    const name = `${module.prefix}${module.indexed ? ".*" : ""}.${suffix}`;
    const stacked = module.indexed ? [module.members, ...shape] : shape;
    const region = this.region(name, stacked, kind, init, dtype);
    region.tensor = { module, suffix };
    module.regions.push(region);
    if (this.training && (kind === "dense" || kind === "embedding")) {
      if (kind === "dense") region.grad = this.region(`${name}.grad`, stacked, "gradient");
      for (const slot of kind === "dense" ? this.denseSlots : this.sparseSlots) {
        const state = this.region(`${name}.${slot.key}`, stacked, "optimizer", slot.init);
        region.state.push({ key: slot.key, region: state });
      }
    }
    return region;
  }

  /**
   * The panels of `weight` ([S, out, in]) for the GEMM reading op(B) = W^T
   * (`transB`) or W, K x N per member; `members` 1 packs the whole stack as
   * one op(B).
   */
  panels(name: string, weight: Region, members: number, K: number, N: number, transB: boolean) {
    const stride = Math.ceil(this.packedBytes(K, N) / 64) * 64;
    const region = this.region(name, [members, stride / 4], "packed");
    const memberBytes = (sizeOf(weight.shape) * 4) / members;
    region.packedFrom = { weight, members, memberBytes, stride, K, N, transB };
    return region;
  }

  /** Records the scratch of one GEMM (K inner size, N output columns). */
  gemm(K: number, N: number): void {
    this.workBytes = Math.max(this.workBytes, this.workspace(K, N));
  }

  /** Records the three GEMMs of a Linear [N, K] over B rows: forward, dW (TN), dX (NN). */
  linear(K: number, N: number): void {
    this.gemm(K, N);
    if (!this.training) return;
    this.gemm(this.B, K);
    this.gemm(N, K);
  }

  /**
   * The layers of `spec` for S stacked members reading `inWidth` columns of
   * `input`, named `<within>mlp.<l>.perceptron.*` in `module`, then, when
   * `linear` is given, a plain Linear of `linear.outWidth` outputs named
   * `<linear.suffix>.{weight,bias}` in `linear.module`.
   */
  stack(
    S: number,
    input: View,
    inWidth: number,
    dInput: Stack["dInput"],
    module: ModuleList,
    within: string,
    spec: ResolvedMLP | null,
    linear: { module: ModuleList; suffix: string; outWidth: number } | null,
  ): Stack {
    const B = this.B;
    const widths = spec ? spec.hiddenUnits : [];
    const count = widths.length + (linear ? 1 : 0);
    const layers: Layer[] = [];
    for (let l = 0; l < count; l++) {
      const perceptron = l < widths.length ? spec : null;
      const outWidth = perceptron ? widths[l] : linear!.outWidth;
      const owner = perceptron ? module : linear!.module;
      const p = perceptron ? `${within}mlp.${l}.perceptron` : linear!.suffix;
      const linearName = perceptron ? `${p}.0.` : p === "" ? "" : `${p}.`;
      const name = `${owner.prefix}${owner.indexed ? ".*" : ""}${p === "" ? "" : `.${p}`}`;
      const shape = [B, S * outWidth];
      const norm = perceptron?.useBn ? "batch" : perceptron?.useLn ? "layer" : null;
      const activation = perceptron ? perceptron.activation : Activation.identity;
      const dropout = perceptron && this.training ? perceptron.dropoutRatio[l] : 0;
      const init = linearInit(inWidth);
      const weight = this.tensor(owner, `${linearName}weight`, [outWidth, inWidth], "dense", init);
      const bias = !perceptron || perceptron.bias
        ? this.tensor(owner, `${linearName}bias`, [outWidth], "dense", init)
        : null;
      const gamma = norm ? this.tensor(owner, `${p}.1.weight`, [outWidth], "dense", ONE) : null;
      const beta = norm ? this.tensor(owner, `${p}.1.bias`, [outWidth], "dense", ZERO) : null;
      const bn = norm === "batch";
      const runningMean = bn
        ? this.tensor(owner, `${p}.1.running_mean`, [outWidth], "buffer", ZERO)
        : null;
      const runningVar = bn
        ? this.tensor(owner, `${p}.1.running_var`, [outWidth], "buffer", ONE)
        : null;
      const batches = bn
        ? this.tensor(owner, `${p}.1.num_batches_tracked`, [], "counter", ZERO)
        : null;
      // z -> a (norm) -> h (activation) -> y (dropout); a step that does nothing aliases.
      const fused = norm === null && activation === Activation.relu && dropout === 0;
      const z = this.region(`${name}.z`, shape, "activation");
      const a = norm ? this.region(`${name}.a`, shape, "activation") : z;
      const ownOutput = !fused && (activation !== Activation.identity || dropout > 0);
      const y = ownOutput ? this.region(`${name}.y`, shape, "activation") : a;
      const h = dropout > 0 ? this.region(`${name}.h`, shape, "activation") : y;
      const statistics = bn ? [S * outWidth] : [B, S];
      const dy = this.backward(`${name}.dy`, shape);
      // The first layer of a stack is one GEMM over all members, deeper ones one per member.
      const shared = l === 0, members = shared ? 1 : S;
      const width = shared ? S * outWidth : outWidth;
      const panels = this.panels(`${name}.weight.panels`, weight, members, inWidth, width, true);
      const inputPanels = this.training && (l > 0 || dInput !== null)
        ? this.panels(`${name}.weight.input_panels`, weight, members, width, inWidth, false)
        : null;
      layers.push({
        S,
        inWidth,
        outWidth,
        shared,
        activation,
        slope: perceptron ? perceptron.slope : 0,
        norm,
        eps: 1e-5,
        momentum: 0.1,
        dropout,
        fused,
        weight,
        panels,
        inputPanels,
        bias,
        gamma,
        beta,
        runningMean,
        runningVar,
        batches,
        z,
        a,
        h,
        y,
        mean: norm ? this.region(`${name}.mean`, statistics, "activation") : null,
        invStd: norm ? this.region(`${name}.inv_std`, statistics, "activation") : null,
        variance: bn && this.training
          ? this.region(`${name}.variance`, statistics, "activation")
          : null,
        mask: dropout > 0 ? this.region(`${name}.mask`, shape, "activation") : null,
        dy,
        dz: norm ? this.backward(`${name}.dz`, shape) : dy,
      });
      this.linear(inWidth, l === 0 ? S * outWidth : outWidth);
      inWidth = outWidth;
    }
    return { S, input, dInput, layers };
  }
}

/** The product of a shape (1 for a scalar). */
export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function bytesOf(region: Region): number {
  return sizeOf(region.shape) * DTYPE_BYTES[region.dtype];
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;

/**
 * Lays out the model of `config`: walks its structure once in tzrec's
 * state_dict order (embedding tables, experts, gate MLPs, gate Linears,
 * towers), giving every tensor, activation and scratch buffer a region, then
 * places the regions. Throws a {@link RangeError} naming the bytes needed
 * (and the largest regions) when they exceed what a wasm32 memory holds,
 * before anything is allocated.
 */
export function planModel(config: ResolvedConfig, options: PlanOptions): ModelPlan {
  const { maxBatch: B, idsPerRow, training } = options;
  const embeddings = options.embeddings ?? "f32";
  if (embeddings !== "f32" && embeddings !== "int8") {
    throw new TypeError(`embeddings must be "f32" or "int8", got ${JSON.stringify(embeddings)}`);
  }
  if (embeddings === "int8" && training) {
    throw new TypeError("int8 embeddings are for inference: train with f32 tables");
  }
  const b = new Builder(
    B,
    training,
    training ? optimizerSlots(config.denseOptimizer, false) : [],
    training ? optimizerSlots(config.sparseOptimizer, true) : [],
    options.gemmWorkspaceBytes,
    options.gemmPackedBBytes,
  );
  const F = config.inputWidth, E = config.numExpert, T = config.towers.length;
  const D = config.expertMlp.hiddenUnits[config.expertMlp.hiddenUnits.length - 1];

  // Embedding tables: torchrec EmbeddingBagCollection, U(+-sqrt(1/rows)) (EmbeddingBagConfig default);
  // int8 tables come from a quantized model, never drawn.
  const bags = b.module(EMBEDDING_BAGS, false, 1);
  const int8 = embeddings === "int8";
  const weights = config.tables.map((t) =>
    int8
      ? b.tensor(bags, `${t.name}.weight`, [t.rows, t.dim], "embedding", ZERO, "u8")
      : b.tensor(bags, `${t.name}.weight`, [t.rows, t.dim], "embedding", {
        kind: "uniform",
        bound: Math.sqrt(1 / t.rows),
      })
  );
  const scaleBiases = config.tables.map((t) =>
    int8
      ? b.tensor(bags, `${t.name}.weight_qscaleshift`, [t.rows, 2], "embedding", ZERO, "f16")
      : null
  );
  const capacities = config.tables.map(() => 0);
  const features: FeaturePlan[] = config.features.map((f) => {
    if (f.table < 0) {
      const values = b.region(`${f.name}.values`, [B, f.width], "input");
      return { table: -1, capacity: 0, offsets: null, weights: null, values };
    }
    if (f.weighted && f.mean) {
      throw new RangeError(
        `feature ${f.name}: weighted ids with mean pooling are not supported (torch's ` +
          "EmbeddingBag refuses per_sample_weights unless pooling is sum)",
      );
    }
    const capacity = B * idsPerRow;
    capacities[f.table] += capacity;
    return {
      table: f.table,
      capacity,
      offsets: b.region(`${f.name}.offsets`, [B + 1], "input", ZERO, "i32"),
      weights: f.weighted ? b.region(`${f.name}.weights`, [capacity], "input") : null,
      values: null,
    };
  });
  const tables: TablePlan[] = config.tables.map((t, i) => {
    const capacity = capacities[i];
    const hashCapacity = training ? 2 ** Math.ceil(Math.log2(Math.max(2, 2 * capacity))) : 0;
    return {
      rows: t.rows,
      dim: t.dim,
      weight: weights[i],
      scaleBias: scaleBiases[i],
      ids: b.region(`${t.name}.ids`, [capacity], "input", ZERO, "i32"),
      capacity,
      unique: b.backward(`${t.name}.unique`, [capacity], "i32"),
      inverse: b.backward(`${t.name}.inverse`, [capacity], "i32"),
      uniqueCount: b.backward(`${t.name}.unique_count`, [1], "i32"),
      gradRows: b.backward(`${t.name}.grad_rows`, [capacity, t.dim]),
      hash: b.backward(`${t.name}.hash`, [hashCapacity], "i32"),
      hashCapacity,
    };
  });
  const x = b.region("embedding_group.x", [B, F], "activation");
  const dx = config.tables.length > 0 ? b.backward("embedding_group.dx", [B, F]) : null;
  const xView: View = { region: x, column: 0, ld: F };
  const dxView = dx ? { region: dx, column: 0, ld: F, accumulate: true } : null;

  // Experts, then the gates: gate MLPs (if any) and the gate Linears, stacked along T.
  const experts = b.stack(
    E,
    xView,
    F,
    dxView,
    b.module("mmoe.expert_mlps", true, E),
    "",
    config.expertMlp,
    null,
  );
  const gateMlps = config.gateMlp ? b.module("mmoe.gate_mlps", true, T) : null;
  const gateFinals = b.module("mmoe.gate_finals", true, T);
  const gates = b.stack(T, xView, F, dxView, gateMlps ?? gateFinals, "", config.gateMlp, {
    module: gateFinals,
    suffix: "",
    outWidth: E,
  });
  const gate = b.region("mmoe.gate", [B, T * E], "activation");
  const taskInput = b.region("mmoe.task_input", [B, T * D], "activation");
  const dTaskInput = b.backward("mmoe.task_input.grad", [B, T * D]);

  // Towers: TaskTower `tower_mlp` and `linear` on task input t (columns t*D).
  const columns = new Map<string, Region>();
  const column = (name: string | null) => {
    if (name !== null && !columns.has(name)) columns.set(name, b.region(name, [B], "input"));
  };
  const towers: TowerPlan[] = config.towers.map((tower, t) => {
    const module = b.module(`_task_tower.${t}`, false, 1);
    const C = tower.numClass;
    const stack = b.stack(
      1,
      { region: taskInput, column: t * D, ld: T * D },
      D,
      dTaskInput ? { region: dTaskInput, column: t * D, ld: T * D, accumulate: false } : null,
      module,
      "tower_mlp.",
      tower.mlp,
      { module, suffix: "linear", outWidth: C },
    );
    column(tower.label);
    column(tower.sampleWeightName);
    column(tower.taskSpaceIndicatorLabel);
    return {
      tower,
      stack,
      probs: b.region(`${tower.name}.probs`, [B, C], "activation"),
      weights: b.region(`${tower.name}.loss_weights`, [B], "activation"),
      dLogitsExtra: activeLosses(tower).length > 1
        ? b.backward(`${tower.name}.d_logits_extra`, [B, C])
        : null,
    };
  });
  const works = Array.from(
    { length: options.threads },
    (_, i) => b.region(`gemm.work.${i}`, [Math.ceil(b.workBytes / 4)], "scratch"),
  );

  // Placement: dense parameters, the other parameters and buffers, the dense gradients, each
  // dense optimizer state, the rest.
  const rank = new Map<Region, number>();
  for (const r of b.regions) {
    if (r.kind === "embedding" || r.kind === "buffer" || r.kind === "counter") rank.set(r, 1);
    if (r.kind !== "dense") continue;
    rank.set(r, 0);
    if (r.grad) rank.set(r.grad, 2);
    r.state.forEach(({ region }, i) => rank.set(region, 3 + i));
  }
  const regions = [...b.regions].sort((p, q) => (rank.get(p) ?? 99) - (rank.get(q) ?? 99));
  const arena = new ArenaLayout();
  let total = arena.bytes;
  for (const r of regions) total += Math.ceil(bytesOf(r) / 64) * 64;
  if (total > MAX_WASM_BYTES) {
    const largest = [...regions].sort((p, q) => bytesOf(q) - bytesOf(p)).slice(0, 3)
      .map((r) => `${r.name} [${r.shape.join(", ")}] ${gib(bytesOf(r))}`);
    throw new RangeError(
      `the model needs ${total} bytes (${gib(total)}) of arena, more than the 4 GiB a wasm32 ` +
        `memory holds (largest: ${largest.join("; ")}): lower num_expert, the layer widths, ` +
        "the batch size or the embedding table sizes",
    );
  }
  for (const r of regions) r.offset = arena.reserve(bytesOf(r));
  const denseRegions = regions.filter((r) => r.kind === "dense");
  const first = denseRegions[0], after = regions[denseRegions.length];
  const denseEnd = after ? after.offset : arena.bytes;
  const parameterCount = regions.filter((r) => (rank.get(r) ?? 99) <= 1).length;
  const parametersEnd = parameterCount < regions.length
    ? regions[parameterCount].offset
    : arena.bytes;
  return {
    regions,
    modules: b.modules,
    bytes: arena.bytes,
    maxBatch: B,
    training,
    tables,
    features,
    x,
    dx,
    experts,
    gates,
    gate,
    taskInput,
    dTaskInput,
    towers,
    columns,
    dense: { offset: first.offset, count: (denseEnd - first.offset) / 4 },
    parameters: { offset: first.offset, bytes: parametersEnd - first.offset },
    embeddings,
    denseGrad: first.grad?.offset ?? 0,
    denseState: first.state.map(({ key, region }) => ({ key, offset: region.offset })),
    works,
  };
}

/**
 * The losses of a tower that count: tzrec keys them by `<loss>_<tower>`, so of
 * two losses with one name the later replaces the earlier.
 */
export function activeLosses(tower: ResolvedTower): ResolvedTower["losses"] {
  return tower.losses.filter((loss, i) =>
    tower.losses.findLastIndex((other) => other.name === loss.name) === i
  );
}

/** One state_dict tensor: a member of a stacked region. */
export interface Tensor {
  /** tzrec state_dict name. */
  name: string;
  /** PyTorch shape. */
  shape: number[];
  /** Byte offset. */
  offset: number;
  /** Region kind (`dense`, `embedding`, `buffer` or `counter`). */
  kind: RegionKind;
  /** Element type (`i64` for num_batches_tracked). */
  dtype: Dtype;
  /** Byte offset of the dense gradient (0 if none). */
  grad: number;
  /** Optimizer state tensors by key. */
  state: { key: string; offset: number }[];
  /** The region it belongs to. */
  region: Region;
  /** Member index in the region. */
  member: number;
}

/** The state_dict name of member `s` of a parameter or buffer region. */
export function memberName(region: Region, s: number): string {
  const { module, suffix } = region.tensor!;
  return `${module.indexed ? `${module.prefix}.${s}` : module.prefix}.${suffix}`;
}

/** Every parameter and buffer tensor in tzrec's state_dict order. */
export function stateDict(plan: ModelPlan): Tensor[] {
  const tensors: Tensor[] = [];
  for (const module of plan.modules) {
    for (let s = 0; s < module.members; s++) {
      for (const region of module.regions) {
        const shape = module.indexed ? region.shape.slice(1) : region.shape;
        const step = sizeOf(shape) * DTYPE_BYTES[region.dtype] * s;
        tensors.push({
          name: memberName(region, s),
          shape,
          offset: region.offset + step,
          kind: region.kind,
          dtype: region.dtype,
          grad: region.grad ? region.grad.offset + step : 0,
          state: region.state.map(({ key, region }) => ({ key, offset: region.offset + step })),
          region,
          member: s,
        });
      }
    }
  }
  return tensors;
}

/** Where a prediction comes from: the tower's logits, its probabilities, or column 1 of them. */
export type OutputSource = "logits" | "probs" | "probs1";

/**
 * tzrec's prediction names of a tower, in order, with their source: per
 * loss, `logits_<t>`/`probs_<t>` (binary or softmax cross-entropy; plus
 * `probs1_<t>` for 2 classes) or `y_<t>` (l2_loss), merged as
 * `RankModel._output_to_prediction_impl`'s dict updates merge them.
 */
export function towerOutputs(tower: ResolvedTower): { name: string; from: OutputSource }[] {
  const outputs = new Map<string, OutputSource>();
  for (const loss of tower.losses) {
    if (loss.kind === "l2_loss") {
      outputs.set(`y_${tower.name}`, "logits");
      continue;
    }
    outputs.set(`logits_${tower.name}`, "logits");
    outputs.set(`probs_${tower.name}`, "probs");
    if (loss.kind === "softmax_cross_entropy" && tower.numClass === 2) {
      outputs.set(`probs1_${tower.name}`, "probs1");
    }
  }
  return [...outputs].map(([name, from]) => ({ name, from }));
}

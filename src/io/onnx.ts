/**
 * ONNX export of a trained {@link MMoEModel}: the eval-mode forward as an
 * ONNX graph (ai.onnx opset 13 to 21, default 17) that onnxruntime and other
 * ONNX runtimes run, with every weight stored as an initializer under its
 * tzrec state_dict name.
 *
 * The graph, for a batch of B rows:
 *
 * - inputs, in group order: per embedded feature `<feature>.ids` (int64
 *   [B, L], row b's ids padded to a common length L) and `<feature>.mask`
 *   (float [B, L], 1 for a real id, 0 for padding; L may differ per feature
 *   and per call), or for a weighted feature `<feature>.weights` (float
 *   [B, L], each id's weight, 0 for padding); per dense feature
 *   `<feature>.values` (float [B, width]);
 * - pooling: `Gather(table, ids)` * mask (or weights), `ReduceSum` over L,
 *   and for mean pooling a `Div` by `max(sum(mask), 1)` (an empty row pools
 *   to zeros, as in the kernels);
 * - experts, gate MLPs and tower MLPs: `Gemm` (transB, PyTorch [out, in]
 *   weights) -> `BatchNormalization` (running stats) or folded into the Gemm
 *   / `LayerNormalization` (opset 17+) or its decomposition -> activation
 *   (`Relu`, `Sigmoid`, `Tanh`, `LeakyRelu`, exact GELU via `Erf`, SiLU as
 *   x * Sigmoid(x));
 * - gates: `Softmax(Gemm(x or gate_mlp(x)))`, mixture `MatMul(gate [B,1,E],
 *   experts [B,E,D])` as tzrec's `bmm`;
 * - outputs, per tower in config order, named as tzrec's predictions (the
 *   union over the tower's losses): `logits_<t>` and `probs_<t>` (sigmoid,
 *   [B]) for binary cross-entropy; `logits_<t>` and `probs_<t>` ([B, C],
 *   softmax) plus `probs1_<t>` ([B], C = 2 only) for softmax cross-entropy;
 *   `y_<t>` ([B]) for l2_loss.
 *
 * Layers are written from the model's plan (`../model/layout.ts`): every
 * expert, gate and tower layer is a Perceptron or Linear of the plan, each
 * weight the state_dict tensor of its member.
 *
 * {@link onnxFeeds} turns an {@link EncodedBatch} into those inputs, so the
 * exported graph can be checked against {@link MMoEModel.evalStep}.
 *
 * @example Export a model and run it with onnxruntime-web
 * ```ts
 * import assert from "node:assert/strict";
 * import * as ort from "onnxruntime-web";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { exportOnnx, onnxFeeds } from "./onnx.ts";
 *
 * const config = resolveConfig({
 *   featureConfigs: [
 *     { idFeature: { featureName: "item", expression: "item:item", numBuckets: 10, embeddingDim: 4 } },
 *     { rawFeature: { featureName: "price", expression: "item:price" } },
 *   ],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item", "price"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const model = new MMoEModel(config, { maxBatch: 2, seed: 3 });
 * const batch = {
 *   size: 2,
 *   features: [
 *     { ids: Int32Array.of(1, 2, 7), offsets: Int32Array.of(0, 2, 3) },
 *     { values: Float32Array.of(0.5, -1) },
 *   ],
 *   columns: { clk: Float32Array.of(1, 0) },
 * };
 * model.evalStep(batch);
 * const expected = model.outputs(2).probs_ctr;
 *
 * ort.env.wasm.numThreads = 1;
 * const session = await ort.InferenceSession.create(exportOnnx(model));
 * const feeds = Object.fromEntries(
 *   Object.entries(onnxFeeds(model, batch)).map(([name, f]) => [name, new ort.Tensor(f.type, f.data, f.dims)]),
 * );
 * const result = await session.run(feeds);
 * const probs = result.probs_ctr.data as Float32Array;
 * probs.forEach((p, i) => assert.ok(Math.abs(p - expected[i]) < 1e-5));
 * ```
 * @module
 */
import { create, toBinary } from "@bufbuild/protobuf";
import type { ResolvedConfig } from "../config/config.ts";
import { Activation } from "../core/activation.ts";
import type { DenseInput, EncodedBatch, SparseInput } from "../core/batch.ts";
import type { MMoEModel } from "../model/mmoe.ts";
import { type Layer, memberName, type Stack, towerOutputs } from "../model/layout.ts";
import {
  AttributeProto_AttributeType,
  type AttributeProtoSchema,
  ModelProtoSchema,
  type NodeProtoSchema,
  TensorProto_DataType,
  type TensorProtoSchema,
  type ValueInfoProtoSchema,
} from "../proto/onnx/onnx_pb.ts";
import type { MessageInitShape } from "@bufbuild/protobuf";

/** Lowest ai.onnx opset {@link exportOnnx} writes (Softmax, ReduceSum, Unsqueeze semantics of 13). */
export const ONNX_MIN_OPSET = 13;
/** Highest ai.onnx opset {@link exportOnnx} writes (tested with onnxruntime-web 1.30). */
export const ONNX_MAX_OPSET = 21;
/** Default ai.onnx opset of {@link exportOnnx}: the first with `LayerNormalization`. */
export const ONNX_DEFAULT_OPSET = 17;

/** Options of {@link exportOnnx}. */
export interface OnnxExportOptions {
  /** ai.onnx opset version, {@link ONNX_MIN_OPSET} to {@link ONNX_MAX_OPSET}. Default 17. */
  opset?: number;
  /**
   * BatchNorm layers (eval form, running statistics): `"node"` writes a
   * `BatchNormalization` reading the tzrec-named gamma, beta and running
   * stats (default); `"fold"` folds them into the preceding Gemm, whose
   * weight and bias are then written as `<linear>.weight.bn_folded` and
   * `<linear>.bias.bn_folded`.
   */
  batchNorm?: "node" | "fold";
  /**
   * LayerNorm layers: `"node"` writes `LayerNormalization` (needs opset 17+,
   * the default there); `"decompose"` writes ReduceMean, Sub, Mul, Add, Sqrt
   * and Div (the default below opset 17).
   */
  layerNorm?: "node" | "decompose";
  /** Graph name. Default `"mmoe"`. */
  graphName?: string;
  /** ModelProto.producer_version. Default `""`. */
  producerVersion?: string;
  /** ModelProto.doc_string. */
  docString?: string;
  /** Extra ModelProto.metadata_props entries (after the ones the exporter writes). */
  metadata?: Record<string, string>;
}

/**
 * One input tensor for an ONNX runtime: the arguments of onnxruntime's
 * `new ort.Tensor(type, data, dims)`.
 */
export type OnnxFeed =
  | {
    /** Element type of ids. */
    type: "int64";
    /** Row-major values. */
    data: BigInt64Array;
    /** Shape. */
    dims: number[];
  }
  | {
    /** Element type of masks and dense values. */
    type: "float32";
    /** Row-major values. */
    data: Float32Array;
    /** Shape. */
    dims: number[];
  };

/** The graph input names of one feature, as {@link exportOnnx} writes them. */
export interface OnnxFeatureInputs {
  /** Feature name. */
  feature: string;
  /** `embedding` (ids + mask or weights inputs) or `dense` (values input). */
  kind: "embedding" | "dense";
  /** Input names: `[<f>.ids, <f>.mask]`, `[<f>.ids, <f>.weights]` (weighted) or `[<f>.values]`. */
  inputs: string[];
}

/**
 * The graph inputs {@link exportOnnx} writes for `config`, in group order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { onnxInputNames } from "./onnx.ts";
 * const config = resolveConfig({
 *   featureConfigs: [
 *     { idFeature: { featureName: "user", expression: "user:user", numBuckets: 5, embeddingDim: 2 } },
 *     { rawFeature: { featureName: "age", expression: "user:age" } },
 *   ],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["user", "age"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * assert.deepEqual(onnxInputNames(config).flatMap((f) => f.inputs), [
 *   "user.ids",
 *   "user.mask",
 *   "age.values",
 * ]);
 * ```
 */
export function onnxInputNames(config: ResolvedConfig): OnnxFeatureInputs[] {
  return config.features.map((f) =>
    f.table >= 0
      ? {
        feature: f.name,
        kind: "embedding",
        inputs: [`${f.name}.ids`, `${f.name}.${f.weighted ? "weights" : "mask"}`],
      }
      : { feature: f.name, kind: "dense", inputs: [`${f.name}.values`] }
  );
}

/**
 * The graph output names {@link exportOnnx} writes for `config`, in order
 * (tzrec's prediction names): `logits_<t>`, `probs_<t>` (and `probs1_<t>`
 * for 2-class softmax) or `y_<t>` per tower.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { onnxOutputNames } from "./onnx.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ rawFeature: { featureName: "age", expression: "user:age" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["age"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [
 *         { towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] },
 *         { towerName: "dwell", labelName: "t", losses: [{ l2Loss: {} }] },
 *       ],
 *     },
 *   },
 * });
 * assert.deepEqual(onnxOutputNames(config), ["logits_ctr", "probs_ctr", "y_dwell"]);
 * ```
 */
export function onnxOutputNames(config: ResolvedConfig): string[] {
  return config.towers.flatMap((t) => towerOutputs(t).map((o) => o.name));
}

/**
 * The ONNX inputs of `batch` for a graph from {@link exportOnnx}: each
 * embedded feature's CSR ids become a zero-padded [B, L] int64 matrix (L =
 * the longest row of this batch, at least 1) and a [B, L] float mask (a
 * weighted feature's weights instead, 0 on padding); dense features pass
 * through as [B, width].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { onnxFeeds } from "./onnx.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "tags", expression: "item:tags", numBuckets: 9, embeddingDim: 2, pooling: "mean" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["tags"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const feeds = onnxFeeds(config, {
 *   size: 3,
 *   features: [{ ids: Int32Array.of(4, 5, 8), offsets: Int32Array.of(0, 2, 2, 3) }],
 *   columns: {},
 * });
 * assert.deepEqual(feeds["tags.ids"].dims, [3, 2]);
 * assert.deepEqual([...feeds["tags.ids"].data], [4n, 5n, 0n, 0n, 8n, 0n]);
 * assert.deepEqual([...feeds["tags.mask"].data], [1, 1, 0, 0, 1, 0]);
 * ```
 */
export function onnxFeeds(
  model: MMoEModel | ResolvedConfig,
  batch: EncodedBatch,
): Record<string, OnnxFeed> {
  const config = "config" in model ? model.config : model;
  const B = batch.size;
  if (!Number.isInteger(B) || B <= 0) {
    throw new RangeError(`batch size must be a positive integer, got ${B}`);
  }
  if (batch.features.length !== config.features.length) {
    throw new RangeError(
      `batch has ${batch.features.length} features, the model's group has ${config.features.length}`,
    );
  }
  const feeds: Record<string, OnnxFeed> = {};
  config.features.forEach((f, i) => {
    const input = batch.features[i];
    if (f.table < 0) {
      const values = (input as DenseInput).values;
      if (!values || values.length !== B * f.width) {
        throw new RangeError(`feature ${f.name}: expected ${B * f.width} dense values`);
      }
      feeds[`${f.name}.values`] = { type: "float32", data: values.slice(), dims: [B, f.width] };
      return;
    }
    const { ids, offsets, weights } = input as SparseInput;
    if (f.weighted && !(weights instanceof Float32Array && weights.length === ids?.length)) {
      throw new RangeError(`feature ${f.name}: a weighted feature needs one weight per id`);
    }
    if (
      !ids || !offsets || offsets.length !== B + 1 || offsets[0] !== 0 || offsets[B] !== ids.length
    ) {
      throw new RangeError(
        `feature ${f.name}: offsets must have ${B + 1} entries from 0 to ids.length`,
      );
    }
    let L = 1;
    for (let b = 0; b < B; b++) {
      const count = offsets[b + 1] - offsets[b];
      if (count < 0) throw new RangeError(`feature ${f.name}: offsets must not decrease`);
      L = Math.max(L, count);
    }
    const padded = new BigInt64Array(B * L);
    const mask = new Float32Array(B * L);
    for (let b = 0; b < B; b++) {
      for (let j = offsets[b], k = b * L; j < offsets[b + 1]; j++, k++) {
        const id = ids[j];
        if (!(id >= 0 && id < f.rows)) {
          throw new RangeError(`feature ${f.name}: id ${id} is outside [0, ${f.rows})`);
        }
        padded[k] = BigInt(id);
        mask[k] = f.weighted ? weights![j] : 1;
      }
    }
    feeds[`${f.name}.ids`] = { type: "int64", data: padded, dims: [B, L] };
    feeds[`${f.name}.${f.weighted ? "weights" : "mask"}`] = {
      type: "float32",
      data: mask,
      dims: [B, L],
    };
  });
  return feeds;
}

// ------------------------------------------------------------------ builder

type NodeInit = MessageInitShape<typeof NodeProtoSchema>;
type TensorInit = MessageInitShape<typeof TensorProtoSchema>;
type ValueInfoInit = MessageInitShape<typeof ValueInfoProtoSchema>;
type AttributeInit = MessageInitShape<typeof AttributeProtoSchema>;

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

function floatBytes(values: ArrayLike<number>): Uint8Array {
  const copy = Float32Array.from(values);
  if (LITTLE_ENDIAN) return new Uint8Array(copy.buffer);
  const out = new Uint8Array(copy.length * 4);
  const view = new DataView(out.buffer);
  copy.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

function int64Bytes(values: readonly number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return out;
}

function attr(name: string, value: number | number[], kind: "int" | "float"): AttributeInit {
  if (Array.isArray(value)) {
    return kind === "int"
      ? { name, type: AttributeProto_AttributeType.INTS, ints: value.map((v) => BigInt(v)) }
      : { name, type: AttributeProto_AttributeType.FLOATS, floats: value };
  }
  return kind === "int"
    ? { name, type: AttributeProto_AttributeType.INT, i: BigInt(value) }
    : { name, type: AttributeProto_AttributeType.FLOAT, f: value };
}

function valueInfo(
  name: string,
  elemType: TensorProto_DataType,
  dims: (number | string)[],
): ValueInfoInit {
  return {
    name,
    type: {
      value: {
        case: "tensorType",
        value: {
          elemType,
          shape: {
            dim: dims.map((d) => ({
              value: typeof d === "number"
                ? { case: "dimValue" as const, value: BigInt(d) }
                : { case: "dimParam" as const, value: d },
            })),
          },
        },
      },
    },
  };
}

/** Nodes and initializers in the making; tensor names double as node names. */
class GraphBuilder {
  readonly nodes: NodeInit[] = [];
  readonly initializers: TensorInit[] = [];
  readonly #constants = new Set<string>();

  constructor(readonly opset: number) {}

  /** Appends a node writing `output` (also the node's name) and returns `output`. */
  node(
    opType: string,
    inputs: string[],
    output: string,
    attributes: AttributeInit[] = [],
  ): string {
    this.nodes.push({
      opType,
      input: inputs,
      output: [output],
      name: output,
      attribute: attributes,
    });
    return output;
  }

  /** A float initializer. */
  floats(name: string, dims: number[], values: ArrayLike<number>): string {
    this.initializers.push({
      name,
      dims: dims.map((d) => BigInt(d)),
      dataType: TensorProto_DataType.FLOAT,
      rawData: floatBytes(values),
    });
    return name;
  }

  /** A shared float scalar constant. */
  scalar(value: number): string {
    const name = `const.float.${value}`;
    if (!this.#constants.has(name)) {
      this.#constants.add(name);
      this.floats(name, [], [value]);
    }
    return name;
  }

  /** A shared int64 vector constant (axes, indices). */
  ints(values: number[], scalar = false): string {
    const name = `const.int64.${scalar ? "" : "["}${values.join(",")}${scalar ? "" : "]"}`;
    if (!this.#constants.has(name)) {
      this.#constants.add(name);
      this.initializers.push({
        name,
        dims: scalar ? [] : [BigInt(values.length)],
        dataType: TensorProto_DataType.INT64,
        rawData: int64Bytes(values),
      });
    }
    return name;
  }

  unsqueeze(input: string, axis: number, output: string): string {
    return this.node("Unsqueeze", [input, this.ints([axis])], output);
  }

  squeeze(input: string, axis: number, output: string): string {
    return this.node("Squeeze", [input, this.ints([axis])], output);
  }

  reduceSum(input: string, axis: number, keepdims: boolean, output: string): string {
    return this.node("ReduceSum", [input, this.ints([axis])], output, [
      attr("keepdims", keepdims ? 1 : 0, "int"),
    ]);
  }

  /** ReduceMean over the last axis, keepdims (axes an input from opset 18). */
  reduceMeanLast(input: string, output: string): string {
    return this.opset >= 18
      ? this.node("ReduceMean", [input, this.ints([-1])], output, [attr("keepdims", 1, "int")])
      : this.node("ReduceMean", [input], output, [
        attr("axes", [-1], "int"),
        attr("keepdims", 1, "int"),
      ]);
  }
}

function irVersionFor(opset: number): number {
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  return 10;
}

/** The exporter's walk over the model: parameters by tzrec name, options resolved. */
class Exporter {
  readonly g: GraphBuilder;
  readonly #written = new Set<string>();

  constructor(
    readonly model: MMoEModel,
    readonly batchNorm: "node" | "fold",
    readonly layerNorm: "node" | "decompose",
    opset: number,
  ) {
    this.g = new GraphBuilder(opset);
  }

  /** A model parameter as an initializer under its tzrec name (written once). */
  param(name: string): string {
    if (!this.#written.has(name)) {
      const info = this.model.parameters.find((p) => p.name === name);
      if (!info) throw new RangeError(`the model has no parameter ${JSON.stringify(name)}`);
      this.#written.add(name);
      this.g.floats(name, info.shape, this.model.parameter(name));
    }
    return name;
  }

  activation(x: string, act: number, slope: number, prefix: string): string {
    const g = this.g;
    switch (act) {
      case Activation.identity:
        return x;
      case Activation.relu:
        return g.node("Relu", [x], `${prefix}/Relu`);
      case Activation.sigmoid:
        return g.node("Sigmoid", [x], `${prefix}/Sigmoid`);
      case Activation.tanh:
        return g.node("Tanh", [x], `${prefix}/Tanh`);
      case Activation.leakyRelu:
        return g.node("LeakyRelu", [x], `${prefix}/LeakyRelu`, [attr("alpha", slope, "float")]);
      case Activation.gelu: {
        // nn.GELU(): x * 0.5 * (1 + erf(x / sqrt 2)), as torch's ONNX export writes it.
        const scaled = g.node("Mul", [x, g.scalar(Math.SQRT1_2)], `${prefix}/Gelu/Mul`);
        const erf = g.node("Erf", [scaled], `${prefix}/Gelu/Erf`);
        const cdf = g.node("Add", [erf, g.scalar(1)], `${prefix}/Gelu/Add`);
        const half = g.node("Mul", [x, g.scalar(0.5)], `${prefix}/Gelu/Mul_half`);
        return g.node("Mul", [half, cdf], `${prefix}/Gelu`);
      }
      case Activation.silu: {
        const s = g.node("Sigmoid", [x], `${prefix}/SiLU/Sigmoid`);
        return g.node("Mul", [x, s], `${prefix}/SiLU`);
      }
      default:
        throw new RangeError(`activation code ${act} has no ONNX form`);
    }
  }

  /**
   * Member `s` of a stack of the plan in eval mode, from `input`: per layer
   * a Gemm on the member's Linear, then its norm and activation (dropout is
   * the identity in eval). Node names follow the tensors' tzrec module paths.
   */
  stack(stack: Stack, input: string, s: number): string {
    let x = input;
    for (const l of stack.layers) x = this.layer(l, x, s);
    return x;
  }

  layer(l: Layer, x: string, s: number): string {
    const g = this.g, N = l.outWidth, K = l.inWidth;
    const weight = memberName(l.weight, s), bias = l.bias && memberName(l.bias, s);
    const linear = weight.replace(/\.weight$/, "");
    let z: string;
    if (l.norm === "batch" && this.batchNorm === "fold") {
      // BN(Wx + b) = (s W) x + (b - mean) s + beta, s = gamma / sqrt(var + eps).
      const w = this.model.parameter(weight);
      const b = bias ? this.model.parameter(bias) : null;
      const [gamma, beta, mean, variance] = [l.gamma, l.beta, l.runningMean, l.runningVar]
        .map((r) => this.model.parameter(memberName(r!, s)));
      const fw = new Float64Array(N * K), fb = new Float64Array(N);
      for (let o = 0; o < N; o++) {
        const scale = gamma[o] / Math.sqrt(variance[o] + l.eps);
        for (let i = 0; i < K; i++) fw[o * K + i] = w[o * K + i] * scale;
        fb[o] = ((b ? b[o] : 0) - mean[o]) * scale + beta[o];
      }
      const fwName = g.floats(`${weight}.bn_folded`, [N, K], fw);
      const fbName = g.floats(`${linear}.bias.bn_folded`, [N], fb);
      z = g.node("Gemm", [x, fwName, fbName], `${linear}/Gemm`, [attr("transB", 1, "int")]);
    } else {
      const inputs = [x, this.param(weight)];
      if (bias) inputs.push(this.param(bias));
      z = g.node("Gemm", inputs, `${linear}/Gemm`, [attr("transB", 1, "int")]);
      if (l.norm !== null) {
        const gamma = memberName(l.gamma!, s), beta = memberName(l.beta!, s);
        const norm = gamma.replace(/\.weight$/, "");
        z = l.norm === "batch"
          ? g.node(
            "BatchNormalization",
            [
              z,
              this.param(gamma),
              this.param(beta),
              this.param(memberName(l.runningMean!, s)),
              this.param(memberName(l.runningVar!, s)),
            ],
            `${norm}/BatchNormalization`,
            [attr("epsilon", l.eps, "float")],
          )
          : this.layerNormalization(z, gamma, beta, l.eps, norm);
      }
    }
    return this.activation(z, l.activation, l.slope, `${linear}/act`);
  }

  layerNormalization(x: string, gamma: string, beta: string, eps: number, prefix: string): string {
    const g = this.g;
    if (this.layerNorm === "node") {
      return g.node(
        "LayerNormalization",
        [x, this.param(gamma), this.param(beta)],
        `${prefix}/LayerNormalization`,
        [attr("axis", -1, "int"), attr("epsilon", eps, "float")],
      );
    }
    const mean = g.reduceMeanLast(x, `${prefix}/ReduceMean`);
    const d = g.node("Sub", [x, mean], `${prefix}/Sub`);
    const sq = g.node("Mul", [d, d], `${prefix}/Square`);
    const variance = g.reduceMeanLast(sq, `${prefix}/Variance`);
    const shifted = g.node("Add", [variance, g.scalar(eps)], `${prefix}/AddEps`);
    const std = g.node("Sqrt", [shifted], `${prefix}/Sqrt`);
    const normed = g.node("Div", [d, std], `${prefix}/Div`);
    const scaled = g.node("Mul", [normed, this.param(gamma)], `${prefix}/Mul`);
    return g.node("Add", [scaled, this.param(beta)], `${prefix}/LayerNormalization`);
  }
}

/**
 * Writes `model` (its current parameters, eval mode: no dropout, BatchNorm
 * on running statistics) as a serialized ONNX ModelProto. Run it with
 * onnxruntime (web, node or native) and feed it {@link onnxFeeds}; the
 * module documentation above lists the graph's inputs and outputs.
 *
 * Weights are initializers with tzrec state_dict names
 * (`embedding_group.emb_impls.__BASE__.ebc.embedding_bags.<table>.weight`,
 * `mmoe.expert_mlps.0.mlp.0.perceptron.0.weight`, ...);
 * a table shared by several features is stored once. The whole model is one
 * protobuf message, so it must stay under protobuf's 2 GiB.
 *
 * @example Check the graph's interface
 * ```ts
 * import assert from "node:assert/strict";
 * import { fromBinary } from "@bufbuild/protobuf";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { exportOnnx } from "./onnx.ts";
 * import { ModelProtoSchema } from "../proto/onnx/onnx_pb.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 4, embeddingDim: 2 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4], useBn: true },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const model = new MMoEModel(config, { maxBatch: 1 });
 * const onnx = fromBinary(ModelProtoSchema, exportOnnx(model, { opset: 18 }));
 * assert.equal(onnx.opsetImport[0].version, 18n);
 * assert.deepEqual(onnx.graph!.input.map((v) => v.name), ["item.ids", "item.mask"]);
 * assert.deepEqual(onnx.graph!.output.map((v) => v.name), ["logits_ctr", "probs_ctr"]);
 * assert.ok(onnx.graph!.initializer.some((t) => t.name === "mmoe.expert_mlps.0.mlp.0.perceptron.1.running_var"));
 * ```
 */
export function exportOnnx(model: MMoEModel, options: OnnxExportOptions = {}): Uint8Array {
  const opset = options.opset ?? ONNX_DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < ONNX_MIN_OPSET || opset > ONNX_MAX_OPSET) {
    throw new RangeError(
      `opset must be an integer in [${ONNX_MIN_OPSET}, ${ONNX_MAX_OPSET}], got ${opset}`,
    );
  }
  const layerNorm = options.layerNorm ?? (opset >= 17 ? "node" : "decompose");
  if (layerNorm === "node" && opset < 17) {
    throw new RangeError(`LayerNormalization needs opset 17 or later, got ${opset}`);
  }
  const batchNorm = options.batchNorm ?? "node";
  if (batchNorm !== "node" && batchNorm !== "fold") {
    throw new RangeError(`batchNorm must be "node" or "fold", got ${JSON.stringify(batchNorm)}`);
  }
  if (layerNorm !== "node" && layerNorm !== "decompose") {
    throw new RangeError(
      `layerNorm must be "node" or "decompose", got ${JSON.stringify(layerNorm)}`,
    );
  }
  const config = model.config;
  const ex = new Exporter(model, batchNorm, layerNorm, opset);
  const g = ex.g;
  const inputs: ValueInfoInit[] = [];
  const outputs: ValueInfoInit[] = [];
  const BATCH = "batch";

  // Group input x (B, F): pooled embeddings and dense values, in group order.
  const plan = model.plan;
  const parts = config.features.map((f) => {
    if (f.table < 0) {
      const name = `${f.name}.values`;
      inputs.push(valueInfo(name, TensorProto_DataType.FLOAT, [BATCH, f.width]));
      return name;
    }
    const [ids, mask] = onnxInputNames(config).find((i) => i.feature === f.name)!.inputs;
    const length = `${f.name}.length`;
    inputs.push(valueInfo(ids, TensorProto_DataType.INT64, [BATCH, length]));
    inputs.push(valueInfo(mask, TensorProto_DataType.FLOAT, [BATCH, length]));
    const table = ex.param(memberName(plan.tables[f.table].weight, 0));
    const rows = g.node("Gather", [table, ids], `${f.name}/Gather`, [attr("axis", 0, "int")]);
    const mask3 = g.unsqueeze(mask, 2, `${f.name}/mask/Unsqueeze`);
    const masked = g.node("Mul", [rows, mask3], `${f.name}/Mul`);
    const pooled = g.reduceSum(masked, 1, false, `${f.name}/ReduceSum`);
    if (!f.mean) return pooled;
    const count = g.reduceSum(mask, 1, true, `${f.name}/count`);
    const divisor = g.node("Max", [count, g.scalar(1)], `${f.name}/count/Max`);
    return g.node("Div", [pooled, divisor], `${f.name}/mean`);
  });
  const x = parts.length === 1
    ? parts[0]
    : g.node("Concat", parts, "embedding_group/Concat", [attr("axis", 1, "int")]);

  // Experts stacked as (B, E, D), as tzrec's torch.stack(dim=1).
  const E = config.numExpert;
  const expertOuts = Array.from({ length: E }, (_, e) => {
    const out = ex.stack(plan.experts, x, e);
    return g.unsqueeze(out, 1, `mmoe.expert_mlps.${e}/Unsqueeze`);
  });
  const experts = E === 1
    ? expertOuts[0]
    : g.node("Concat", expertOuts, "mmoe/experts", [attr("axis", 1, "int")]);

  plan.towers.forEach(({ tower, stack }, t) => {
    const gp = `mmoe.gate_finals.${t}`;
    const gateLogits = ex.stack(plan.gates, x, t);
    const gate = g.node("Softmax", [gateLogits], `${gp}/Softmax`, [attr("axis", -1, "int")]);
    const gate3 = g.unsqueeze(gate, 1, `${gp}/Unsqueeze`);
    const mixed = g.node("MatMul", [gate3, experts], `mmoe.task_input.${t}/MatMul`);
    const h = g.squeeze(mixed, 1, `mmoe.task_input.${t}`);
    const linear = ex.stack(stack, h, 0);
    const name = tower.name, C = tower.numClass;
    const float = TensorProto_DataType.FLOAT;
    // Binary towers give [B] (torch.squeeze(dim=1)); softmax towers [B, C].
    const logits = C === 1 ? g.squeeze(linear, 1, `${name}/Squeeze`) : linear;
    for (const output of towerOutputs(tower)) {
      if (output.from === "logits") {
        g.node("Identity", [logits], output.name);
      } else if (output.from === "probs") {
        if (C === 1) g.node("Sigmoid", [logits], output.name);
        else g.node("Softmax", [linear], output.name, [attr("axis", -1, "int")]);
      } else {
        g.node("Gather", [`probs_${name}`, g.ints([1], true)], output.name, [
          attr("axis", 1, "int"),
        ]);
      }
      const rank2 = C > 1 && output.from !== "probs1";
      outputs.push(valueInfo(output.name, float, rank2 ? [BATCH, C] : [BATCH]));
    }
  });

  const metadata: Record<string, string> = {
    "denorec.inputs": JSON.stringify(onnxInputNames(config)),
    "denorec.outputs": JSON.stringify(onnxOutputNames(config)),
    "denorec.pooling": JSON.stringify(
      Object.fromEntries(
        config.features.filter((f) => f.table >= 0).map((
          f,
        ) => [f.name, f.mean ? "mean" : f.weighted ? "weighted_sum" : "sum"]),
      ),
    ),
    ...options.metadata,
  };
  const message = create(ModelProtoSchema, {
    irVersion: BigInt(irVersionFor(opset)),
    opsetImport: [{ domain: "", version: BigInt(opset) }],
    producerName: "denorec",
    producerVersion: options.producerVersion ?? "",
    docString: options.docString ?? "TorchEasyRec MMoE exported by denorec (eval mode)",
    graph: {
      name: options.graphName ?? "mmoe",
      node: g.nodes,
      initializer: g.initializers,
      input: inputs,
      output: outputs,
    },
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  });
  return toBinary(ModelProtoSchema, message);
}

/**
 * Serving artifacts: what a server needs of a trained model and nothing
 * more, in one file that loads with one copy straight into the arena.
 *
 *   bytes 0..8    magic `DENOREC\0`
 *   bytes 8..12   format version (u32 little-endian, {@link SERVING_FORMAT_VERSION})
 *   bytes 12..16  header length H (u32)
 *   bytes 16..20  XXH32 of the header (u32, seed 0)
 *   bytes 20..24  zero
 *   bytes 24..    the header: UTF-8 JSON {@link ServingHeader} (the tzrec config as
 *                 the typed `PipelineConfig`, the embedding dtype, the tensor
 *                 table, the data section's length and XXH32), zero-padded
 *                 to a multiple of 64 bytes
 *   then          the data section: the inference arena's parameter block
 *                 (`ModelPlan.parameters`: every parameter and buffer, in the layout
 *                 table's placement, padding included), byte for byte
 *
 * So a server parses a small JSON header (no protobuf text parser), builds
 * the inference model, copies (or reads from the file, see
 * {@link readServingFile}) the data section into the arena at
 * `plan.parameters.offset`, and checks one checksum there: XXH32 (xxHash's
 * 32-bit hash, the `xxhash32` kernel: 1.5-5 ms for 8 MB where a CRC-32 in
 * JavaScript takes 7-16 ms at a cold start). No optimizer state; no
 * per-tensor copies, checksums or NaN scans (the model was checked when it
 * was written). The tensor table lets a reader check that its own layout
 * places every tensor where the writer's did.
 *
 * Int8 embeddings ({@link ServingOptions.embeddings}) mirror TorchEasyRec's
 * export, whose default (`QUANT_EMB` unset) is torchrec's
 * `quantize_embeddings(dtype=torch.qint8)`: per table row, u8 values with an
 * f16 scale and bias (fbgemm `FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf`,
 * 8 bits; {@link quantizeRowsInt8}). The dense layers stay f32.
 *
 * @example A tiny model as an f32 and an int8 artifact
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, resolveConfig } from "../../mod.ts";
 * import { decodeServingHeader, servingArtifact } from "./serving.ts";
 * const pipeline = {
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 1000, embeddingDim: 16 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * };
 * const model = new MMoEModel(resolveConfig(pipeline), { maxBatch: 4, seed: 1 });
 * const f32 = servingArtifact(model, pipeline);
 * const int8 = servingArtifact(model, pipeline, { embeddings: "int8" });
 * assert.ok(int8.length < f32.length / 2); // the table: 16 bytes + 4 of scale and bias per row instead of 64
 * const { header } = decodeServingHeader(int8);
 * assert.equal(header.embeddings, "int8");
 * assert.deepEqual(header.config, pipeline);
 * ```
 * @module
 */
import { type PipelineConfig, resolveConfig } from "../config/config.ts";
import {
  type Dtype,
  DTYPE_BYTES,
  type EmbeddingDtype,
  memberName,
  type ModelPlan,
  sizeOf,
  stateDict,
} from "../model/layout.ts";
import { MMoEModel, type ModelOptions } from "../model/mmoe.ts";
import { firstNonFiniteTensor } from "./checkpoint.ts";
import { instantiateKernels } from "../kernels/kernels.ts";

/**
 * The version {@link servingArtifact} writes and readers accept; a reader
 * refuses any other, naming it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SERVING_FORMAT_VERSION } from "./serving.ts";
 * assert.equal(SERVING_FORMAT_VERSION, 1);
 * ```
 */
export const SERVING_FORMAT_VERSION = 1;

/**
 * Where `examples/train.ts` and `examples/export.ts` write the artifact in a
 * model dir, and where `examples/serve.ts` and `readModelDir` look for it.
 *
 * @example
 * ```ts
 * import { SERVING_FILE_NAME } from "./serving.ts";
 * const path = `experiments/mmoe_taobao/${SERVING_FILE_NAME}`;
 * ```
 */
export const SERVING_FILE_NAME = "serving_model.bin";

/** `DENOREC\0` */
const MAGIC = [0x44, 0x45, 0x4e, 0x4f, 0x52, 0x45, 0x43, 0x00];
const PREFIX_BYTES = 24;
/** The data section starts at a multiple of this. */
const DATA_ALIGN = 64;
/** Far above any real header (a config and a tensor table), far below a corrupt length. */
const MAX_HEADER_BYTES = 64 << 20;

/**
 * One tensor of the data section: its tzrec state_dict name (`weight_qscaleshift`
 * for the (scale, bias) pairs of an int8 table), element type, PyTorch shape
 * and byte offset from the start of the data section.
 */
export interface ServingTensor {
  /** tzrec state_dict name. */
  name: string;
  /** Element type. */
  dtype: Dtype;
  /** PyTorch shape. */
  shape: number[];
  /** Byte offset in the data section. */
  offset: number;
}

/** The JSON header of a serving artifact. */
export interface ServingHeader {
  /** The tzrec pipeline config (typed, as `parsePipelineConfig` returns it). */
  config: PipelineConfig;
  /** Embedding tables: `f32` or `int8` (rowwise, f16 scale and bias). */
  embeddings: EmbeddingDtype;
  /** Every parameter and buffer in the data section, in state_dict order. */
  tensors: ServingTensor[];
  /** Length of the data section. */
  dataBytes: number;
  /** XXH32 (seed 0) of the data section, 8 hex digits. */
  dataXxh32: string;
}

/** Options of {@link servingArtifact}. */
export interface ServingOptions {
  /** Embedding tables as `f32` (default) or `int8` (a quarter of the bytes and then some). */
  embeddings?: EmbeddingDtype;
}

/**
 * The tensor table of a plan's parameter block, offsets relative to the
 * block: what a serving artifact's header lists.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, resolveConfig } from "../../mod.ts";
 * import { servingTensors } from "./serving.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 10, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const plan = new MMoEModel(config, { maxBatch: 1, inference: true, embeddings: "int8" }).plan;
 * const [table, pairs] = servingTensors(plan).filter((t) => t.name.startsWith("embedding_group"));
 * assert.deepEqual([table.dtype, table.shape, pairs.dtype, pairs.shape], ["u8", [10, 4], "f16", [10, 2]]);
 * ```
 */
export function servingTensors(plan: ModelPlan): ServingTensor[] {
  return stateDict(plan).map((t) => ({
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    offset: t.offset - plan.parameters.offset,
  }));
}

/**
 * Quantizes `rows` rows of `dim` f32 values as torchrec's INT8 tables do
 * (fbgemm `FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf`, 8 bits): bias =
 * the row's minimum rounded to f16, scale = (max - bias) / 255 rounded to f16
 * (1 for a constant row), q = clamp(round-half-even((x - bias) / scale), 0,
 * 255) computed in f32 as `(x - bias) * (1 / scale)`. Writes q to `q`
 * (rows x dim) and (scale, bias) to `scaleBias` (rows x 2). The values are
 * finite (the model was checked).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { quantizeRowsInt8 } from "./serving.ts";
 * const q = new Uint8Array(4), scaleBias = new Float16Array(2);
 * quantizeRowsInt8(q, scaleBias, Float32Array.of(-1, 0, 0.5, 1), 1, 4);
 * assert.deepEqual(Array.from(scaleBias), [0.007843017578125, -1]); // f16(2 / 255), f16(-1)
 * assert.deepEqual(Array.from(q), [0, 128, 191, 255]); // 1 / scale = 127.5015...
 * ```
 */
export function quantizeRowsInt8(
  q: Uint8Array,
  scaleBias: Float16Array,
  table: Float32Array,
  rows: number,
  dim: number,
): void {
  for (let r = 0; r < rows; r++) {
    const start = r * dim;
    let min = table[start], max = table[start];
    for (let d = 1; d < dim; d++) {
      const x = table[start + d];
      if (x < min) min = x;
      if (x > max) max = x;
    }
    // The bias is stored as f16 and the values are measured from it; the max stays f32.
    const bias = Math.f16round(min);
    const range = Math.fround(max - bias);
    let scale = Math.f16round(range === 0 ? 1 : Math.fround(range / 255));
    if (scale === 0) scale = 1; // a range too small for an f16 scale: every q is 0
    const inverse = Math.fround(1 / scale);
    scaleBias[2 * r] = scale;
    scaleBias[2 * r + 1] = bias;
    for (let d = 0; d < dim; d++) {
      const v = Math.fround(Math.fround(table[start + d] - bias) * inverse);
      q[start + d] = Math.min(255, Math.max(0, roundHalfEven(v)));
    }
  }
}

/** C's `lrintf` in the default rounding mode: to the nearest integer, ties to even. */
function roundHalfEven(v: number): number {
  const r = Math.round(v); // ties up
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The serving artifact of `model` (any model: trained or inference, f32;
 * an int8 model re-exports as int8) with its tzrec config `pipeline`
 * (`model` must have been built from `resolveConfig(pipeline)`). The data
 * section is laid out for an inference model with `options.embeddings`
 * tables; f32 tables are quantized for `int8`. Refuses a model holding NaN
 * or infinity with a `RangeError` naming the tensor, a `pipeline` of
 * another architecture and an f32 artifact of an int8 model with a
 * `TypeError`.
 *
 * @example Export a trained model as `examples/export.ts` does
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, Predictor, resolveConfig } from "../../mod.ts";
 * import { servingArtifact } from "./serving.ts";
 * const pipeline = {
 *   featureConfigs: [{ rawFeature: { featureName: "x", expression: "item:x" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["x"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * };
 * const trained = new MMoEModel(resolveConfig(pipeline), { maxBatch: 8, seed: 1 });
 * const predictor = new Predictor(servingArtifact(trained, pipeline));
 * assert.equal(predictor.predict([{ x: 0.5 }]).probs_ctr.length, 1);
 * ```
 */
export function servingArtifact(
  model: MMoEModel,
  pipeline: PipelineConfig,
  options: ServingOptions = {},
): Uint8Array {
  const embeddings = options.embeddings ?? "f32";
  if (embeddings === "f32" && model.plan.embeddings === "int8") {
    throw new TypeError("an int8 model has no f32 tables to export: export its f32 source");
  }
  const bad = firstNonFiniteTensor(model, false);
  if (bad) {
    throw new RangeError(
      `not exporting a diverged model: tensor ${JSON.stringify(bad.name)} holds ${bad.value} ` +
        `at index ${bad.index} (step ${model.step})`,
    );
  }
  // The server resolves `pipeline` again: it must give the model's config (features included).
  const resolved = (config: MMoEModel["config"]) =>
    JSON.stringify(config, (_, value) => value instanceof Map ? [...value] : value);
  if (resolved(resolveConfig(pipeline)) !== resolved(model.config)) {
    throw new TypeError(
      "the pipeline config describes another model than the one exported: pass the config " +
        "the model was built from",
    );
  }
  // The inference model the artifact loads as (its parameter block does not depend on the
  // batch or threads), filled here and checksummed where its data lies.
  const target = new MMoEModel(model.config, {
    maxBatch: 1,
    idsPerRow: 1,
    inference: true,
    initialize: false,
    threads: 1,
    embeddings,
  });
  const plan = target.plan, tensors = servingTensors(plan);
  const data = new Uint8Array(target.memory.buffer, plan.parameters.offset, plan.parameters.bytes);
  const memory = new Uint8Array(model.memory.buffer);
  const from = new Map(model.parameters.map((p) => [p.name, p]));
  for (const t of tensors) {
    const source = from.get(t.name);
    if (source && source.dtype === t.dtype) {
      const bytes = sizeOf(t.shape) * DTYPE_BYTES[t.dtype];
      data.set(memory.subarray(source.offset, source.offset + bytes), t.offset);
    }
  }
  for (const table of plan.tables) {
    if (!table.scaleBias || model.plan.embeddings === "int8") continue;
    const { rows, dim } = table, at = table.weight.offset - plan.parameters.offset;
    const source = from.get(memberName(table.weight, 0))!;
    const pairs = table.scaleBias.offset - plan.parameters.offset;
    quantizeRowsInt8(
      data.subarray(at, at + rows * dim),
      new Float16Array(data.buffer, data.byteOffset + pairs, rows * 2),
      model.view(source.offset, rows * dim),
      rows,
      dim,
    );
  }
  const header: ServingHeader = {
    config: pipeline,
    embeddings,
    tensors,
    dataBytes: data.length,
    dataXxh32: dataChecksum(target),
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const dataStart = Math.ceil((PREFIX_BYTES + json.length) / DATA_ALIGN) * DATA_ALIGN;
  const out = new Uint8Array(dataStart + data.length);
  const prefix = new DataView(out.buffer);
  out.set(MAGIC, 0);
  prefix.setUint32(8, SERVING_FORMAT_VERSION, true);
  prefix.setUint32(12, json.length, true);
  prefix.setUint32(16, headerChecksum(json), true);
  out.set(json, PREFIX_BYTES);
  out.set(data, dataStart);
  return out;
}

/**
 * Whether `bytes` start like a serving artifact (the magic), as opposed to
 * a safetensors checkpoint or anything else.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isServingArtifact } from "./serving.ts";
 * assert.equal(isServingArtifact(new TextEncoder().encode("DENOREC\0...")), true);
 * assert.equal(isServingArtifact(new Uint8Array(8)), false);
 * ```
 */
export function isServingArtifact(bytes: Uint8Array): boolean {
  return bytes.length >= MAGIC.length && MAGIC.every((b, i) => bytes[i] === b);
}

/**
 * The header of the artifact whose first bytes are `bytes` (at least up to
 * the end of the header; the data section may be absent) and where its data
 * section starts. Checks the magic, the version, the header's checksum (XXH32) and
 * fields; errors (`TypeError` for what is not an artifact or not this
 * version, `RangeError` for corruption) start with `source`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeServingHeader } from "./serving.ts";
 * assert.throws(() => decodeServingHeader(new Uint8Array(64), "x.bin"), {
 *   message: "x.bin: not a denorec serving artifact (no DENOREC magic; write one with " +
 *     "examples/export.ts or servingArtifact)",
 * });
 * ```
 */
export function decodeServingHeader(
  bytes: Uint8Array,
  source = "serving artifact",
): { header: ServingHeader; dataStart: number } {
  const length = servingHeaderLength(bytes, source);
  if (bytes.length < PREFIX_BYTES + length) {
    throw new RangeError(
      `${source}: truncated: the header needs ${PREFIX_BYTES + length} bytes, the input has ` +
        bytes.length,
    );
  }
  const json = bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + length);
  const expected = new DataView(bytes.buffer, bytes.byteOffset + 16, 4).getUint32(0, true);
  const actual = headerChecksum(json);
  if (actual !== expected) {
    throw new RangeError(
      `${source}: header checksum mismatch (stored ${hex(expected)}, computed ${hex(actual)}): ` +
        "the file is corrupt",
    );
  }
  const header = checkHeader(JSON.parse(new TextDecoder().decode(json)), source);
  return { header, dataStart: Math.ceil((PREFIX_BYTES + length) / DATA_ALIGN) * DATA_ALIGN };
}

const hex = (n: number) => n.toString(16).padStart(8, "0");

/** The header length of the 24-byte prefix `bytes` starts with, after its magic and version. */
function servingHeaderLength(bytes: Uint8Array, source: string): number {
  if (!isServingArtifact(bytes)) {
    throw new TypeError(
      `${source}: not a denorec serving artifact (no DENOREC magic; write one with ` +
        "examples/export.ts or servingArtifact)",
    );
  }
  if (bytes.length < PREFIX_BYTES) {
    throw new RangeError(`${source}: truncated: ${bytes.length} bytes, less than the prefix`);
  }
  const prefix = new DataView(bytes.buffer, bytes.byteOffset, PREFIX_BYTES);
  const version = prefix.getUint32(8, true);
  if (version !== SERVING_FORMAT_VERSION) {
    throw new TypeError(
      `${source}: serving format version ${version}, this library reads version ` +
        `${SERVING_FORMAT_VERSION}: export the model again with this version`,
    );
  }
  const length = prefix.getUint32(12, true);
  if (length > MAX_HEADER_BYTES) {
    throw new RangeError(`${source}: header length ${length} is over ${MAX_HEADER_BYTES}`);
  }
  return length;
}

/** The parsed header JSON as a {@link ServingHeader}, or a TypeError naming the field. */
function checkHeader(value: unknown, source: string): ServingHeader {
  const header = value as Partial<ServingHeader> | null;
  const problem = (field: string, expected: string): never => {
    throw new TypeError(`${source}: header field ${field} must be ${expected}`);
  };
  if (typeof header !== "object" || header === null) problem("(root)", "an object");
  const h = header!;
  if (typeof h.config !== "object" || h.config === null) problem("config", "an object");
  if (h.embeddings !== "f32" && h.embeddings !== "int8") problem("embeddings", '"f32" or "int8"');
  if (!Number.isSafeInteger(h.dataBytes) || h.dataBytes! < 0) problem("dataBytes", "a length");
  if (typeof h.dataXxh32 !== "string" || !/^[0-9a-f]{8}$/.test(h.dataXxh32)) {
    problem("dataXxh32", "8 hex digits");
  }
  if (!Array.isArray(h.tensors)) problem("tensors", "an array");
  return h as ServingHeader;
}

/**
 * Checks that `plan` places every tensor of `header` as the writer's layout
 * did (same names, dtypes, shapes and offsets in a parameter block of the
 * same length), so that the data section can be copied as one block; a
 * `RangeError` starting with `source` names the first difference.
 */
function checkServingLayout(header: ServingHeader, plan: ModelPlan, source: string): void {
  const ours = servingTensors(plan);
  const describe = (t: ServingTensor | undefined) =>
    t ? `${t.name} ${t.dtype} [${t.shape.join(", ")}] at ${t.offset}` : "nothing";
  const count = Math.max(ours.length, header.tensors.length);
  for (let i = 0; i < count; i++) {
    const a = header.tensors[i], b = ours[i];
    if (JSON.stringify(a) !== JSON.stringify(b)) {
      throw new RangeError(
        `${source}: the artifact's tensor ${i} is ${describe(a)}, this library lays out ` +
          `${describe(b)}: export the model again with this version`,
      );
    }
  }
  if (header.dataBytes !== plan.parameters.bytes) {
    throw new RangeError(
      `${source}: data section of ${header.dataBytes} bytes, the layout needs ` +
        plan.parameters.bytes,
    );
  }
}

/**
 * XXH32 of a header: the `xxhash32` kernel on a memory of its own (the
 * header comes before the model; a CRC-32 in JavaScript cost 1-2 ms of a
 * cold start for its tables alone).
 */
function headerChecksum(json: Uint8Array): number {
  const memory = new WebAssembly.Memory({ initial: Math.ceil((64 + json.length) / 65536) });
  new Uint8Array(memory.buffer).set(json, 64);
  return instantiateKernels(memory).exports.xxhash32(64, json.length, 0) >>> 0;
}

/** XXH32 of `model`'s parameter block, 8 hex digits. */
function dataChecksum(model: MMoEModel): string {
  const { offset, bytes } = model.plan.parameters;
  return hex(model.kernels.xxhash32(offset, bytes, 0) >>> 0);
}

/**
 * Throws a `RangeError` starting with `source` unless `model`'s parameter
 * block (where the data section was copied) has the header's XXH32.
 */
function checkServingData(header: ServingHeader, model: MMoEModel, source: string): void {
  const actual = dataChecksum(model);
  if (actual !== header.dataXxh32) {
    throw new RangeError(
      `${source}: data checksum mismatch (stored ${header.dataXxh32}, computed ${actual}): ` +
        "the file is corrupt",
    );
  }
}

/** The Deno namespace, or undefined under Bun and Node. */
const deno = (globalThis as { Deno?: typeof Deno }).Deno;

/** Positional reads of one open file: `Deno.FsFile` under Deno, `node:fs` elsewhere. */
interface OpenFile {
  size: number;
  /** Fills `target` from byte `position`; returns the bytes read (fewer at the end of the file). */
  read(target: Uint8Array, position: number): number;
  close(): void;
}

async function openFile(path: string): Promise<OpenFile> {
  if (deno !== undefined) {
    // Deno's own file API: node:fs would load Deno's Node layer (~30 ms of cold start).
    const file = deno.openSync(path);
    return {
      size: file.statSync().size,
      read(target, position) {
        file.seekSync(position, deno.SeekMode.Start);
        let n = 0;
        while (n < target.length) {
          const count = file.readSync(target.subarray(n));
          if (count === null || count === 0) break;
          n += count;
        }
        return n;
      },
      close: () => file.close(),
    };
  }
  const fs = await import("node:fs");
  const fd = fs.openSync(path, "r");
  return {
    size: fs.fstatSync(fd).size,
    read(target, position) {
      let n = 0;
      while (n < target.length) {
        const count = fs.readSync(fd, target, n, target.length - n, position + n);
        if (count === 0) break;
        n += count;
      }
      return n;
    },
    close: () => fs.closeSync(fd),
  };
}

/**
 * How to build the inference model an artifact loads into (`ModelOptions`
 * without what the artifact decides: `inference`, `initialize`, `embeddings`).
 *
 * @example
 * ```ts
 * import type { ServingModelOptions } from "./serving.ts";
 * const options: ServingModelOptions = { maxBatch: 1024, threads: 1 };
 * ```
 */
export type ServingModelOptions = Omit<ModelOptions, "inference" | "initialize" | "embeddings">;

/** The inference model of `header`, parameters still zero. */
function emptyModel(header: ServingHeader, options: ServingModelOptions, source: string) {
  const model = new MMoEModel(resolveConfig(header.config), {
    ...options,
    inference: true,
    initialize: false,
    embeddings: header.embeddings,
  });
  checkServingLayout(header, model.plan, source);
  // Through `view`: the model learns that its parameters are being written (the block is
  // whole 64-byte lines, so a whole number of floats).
  const block = model.view(model.plan.parameters.offset, header.dataBytes / 4);
  return { model, data: new Uint8Array(block.buffer, block.byteOffset, block.byteLength) };
}

/**
 * The inference model of a serving artifact's bytes: the header decoded and
 * checked, the model built (`options`), the data section copied into its
 * parameter block (the one copy) and its checksum checked there. Errors start
 * with `source`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, resolveConfig } from "../../mod.ts";
 * import { servingArtifact, servingModel } from "./serving.ts";
 * const pipeline = {
 *   featureConfigs: [{ rawFeature: { featureName: "x", expression: "item:x" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["x"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * };
 * const source = new MMoEModel(resolveConfig(pipeline), { maxBatch: 1, seed: 3 });
 * const model = servingModel(servingArtifact(source, pipeline), { maxBatch: 64 });
 * assert.equal(model.maxBatch, 64);
 * assert.deepEqual(model.parameter("_task_tower.0.linear.bias"), source.parameter("_task_tower.0.linear.bias"));
 * ```
 */
export function servingModel(
  bytes: Uint8Array,
  options: ServingModelOptions,
  source = "serving artifact",
): MMoEModel {
  const { header, dataStart } = decodeServingHeader(bytes, source);
  checkLength(bytes.length, dataStart, header, source);
  const { model, data } = emptyModel(header, options, source);
  data.set(bytes.subarray(dataStart));
  checkServingData(header, model, source);
  return model;
}

function checkLength(size: number, dataStart: number, header: ServingHeader, source: string) {
  if (size !== dataStart + header.dataBytes) {
    throw new RangeError(
      `${source}: ${size} bytes, the header says ${dataStart + header.dataBytes} ` +
        "(truncated or appended to)",
    );
  }
}

/**
 * {@link servingModel} of the artifact at `path`, without an intermediate
 * copy of its data: the header is read first, the model built, then the data
 * section read from the file straight into its parameter block and checked
 * there. Errors name `path`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readServingModel } from "./serving.ts";
 * await assert.rejects(readServingModel("no/such/serving_model.bin", { maxBatch: 1 }), {
 *   message: /^no\/such\/serving_model\.bin: /,
 * });
 * ```
 */
export async function readServingModel(
  path: string,
  options: ServingModelOptions,
): Promise<MMoEModel> {
  let file: OpenFile;
  try {
    file = await openFile(path);
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    const prefix = new Uint8Array(PREFIX_BYTES);
    file.read(prefix, 0);
    const length = servingHeaderLength(prefix, path);
    const start = new Uint8Array(PREFIX_BYTES + length);
    start.set(prefix);
    file.read(start.subarray(PREFIX_BYTES), PREFIX_BYTES);
    const { header, dataStart } = decodeServingHeader(start, path);
    checkLength(file.size, dataStart, header, path);
    const { model, data } = emptyModel(header, options, path);
    file.read(data, dataStart);
    checkServingData(header, model, path);
    return model;
  } finally {
    file.close();
  }
}

/**
 * Checkpoints: the model's tensors under their tzrec state_dict names and
 * PyTorch shapes, optionally with the optimizer state, in the
 * [safetensors](https://github.com/huggingface/safetensors) format, so
 * `safetensors.torch.load_file` reads them as they are.
 *
 * {@link encodeSafetensors} and {@link decodeSafetensors} are pure functions
 * over bytes (no file system, so they run on Deno Deploy);
 * {@link modelCheckpoint} and {@link loadCheckpoint} map a model
 * (`MMoEModel`, see {@link CheckpointModel}) to and from those bytes;
 * {@link saveCheckpoint} (atomic) and {@link readCheckpoint} move bytes to and
 * from disk with `node:fs`, so they work in Deno, Bun and Node.
 *
 * The codec is hand-written: the only npm package named for the format
 * (`safetensors@0.0.1`) is a single unmaintained release with no source
 * repository, and the format is a u64 length, a JSON header and raw bytes.
 *
 * @example Save a trained model with its optimizer state and resume it
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { loadCheckpoint, modelCheckpoint } from "./checkpoint.ts";
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
 * const batch = {
 *   size: 4,
 *   features: [{ ids: Int32Array.of(0, 1, 2, 3), offsets: Int32Array.of(0, 1, 2, 3, 4) }],
 *   columns: { clk: Float32Array.of(1, 0, 1, 0) },
 * };
 * const model = new MMoEModel(config, { maxBatch: 4, seed: 1 });
 * for (let i = 0; i < 3; i++) model.trainStep(batch);
 * const bytes = modelCheckpoint(model, { withOptimizer: true });
 *
 * const resumed = new MMoEModel(config, { maxBatch: 4, seed: 2 });
 * loadCheckpoint(resumed, bytes, { withOptimizer: true });
 * assert.equal(resumed.step, 3);
 * assert.equal(resumed.trainStep(batch).total, model.trainStep(batch).total);
 * ```
 * @module
 */
// The file helpers import node:fs and friends on first use: the codec and
// loadCheckpoint run on Deno Deploy and in edge isolates, where pulling in
// Deno's Node layer at import time costs ~30 ms of cold start.
const nodeFs = () => import("node:fs/promises");
const nodePath = () => import("node:path");

/**
 * What checkpoints read and write of a model: its tensor table (names,
 * PyTorch shapes, byte offsets), its memory views and its step count.
 * `MMoEModel` (`./mmoe.ts`) is one.
 */
export interface CheckpointModel {
  /** Parameters and buffers in state_dict order (`MMoEModel.parameters`). */
  readonly parameters: readonly { name: string; shape: number[]; offset: number }[];
  /** Optimizer state tensors (`MMoEModel.optimizerState()`). */
  optimizerState(): { name: string; shape: number[]; offset: number }[];
  /** A live float view of `count` values at byte `offset`. */
  view(offset: number, count: number): Float32Array;
  /** Optimizer step count. */
  step: number;
  /** The optimizers' update rules. */
  readonly config: {
    readonly denseOptimizer: { readonly kind: string };
    readonly sparseOptimizer: { readonly kind: string };
  };
}

// ------------------------------------------------------------------ safetensors

/** An F32 tensor to encode: its name, PyTorch shape (row-major) and values. */
export interface NamedTensor {
  /** Tensor name, e.g. a state_dict key. */
  name: string;
  /** Shape; the product of its dims is `data.length`. */
  shape: readonly number[];
  /** Row-major values. */
  data: Float32Array;
}

/** What {@link decodeSafetensors} returns: tensors by name and the metadata map. */
export interface DecodedSafetensors {
  /** Every tensor of the file, values copied out of the input. */
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
  /** The header's `__metadata__` string map (empty when absent). */
  metadata: Record<string, string>;
}

/** The reference reader refuses headers over 100 MB (safetensors `MAX_HEADER_SIZE`). */
const MAX_HEADER_BYTES = 100_000_000;

/** Every dtype of the safetensors spec, to tell "not supported here" from "not a dtype". */
const SAFETENSORS_DTYPES = new Set([
  "BOOL",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "F8_E8M0",
  "F4",
  "F6_E2M3",
  "F6_E3M2",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "F64",
  "I64",
  "U64",
  "C64",
]);

const METADATA_KEY = "__metadata__";

const formatShape = (shape: readonly number[]): string => `[${shape.join(", ")}]`;

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const isCount = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

/**
 * Encodes F32 tensors and an optional string map as safetensors bytes: an
 * 8-byte little-endian header length N, N bytes of JSON header padded with
 * spaces to a multiple of 8 (so the data starts 8-byte aligned), then the
 * tensors' little-endian bytes packed in name order, as the reference
 * `safetensors.serialize` lays them out. Values are copied; the inputs are
 * not kept.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeSafetensors, encodeSafetensors } from "./checkpoint.ts";
 * const bytes = encodeSafetensors(
 *   [{ name: "linear.weight", shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) }],
 *   { format: "pt" },
 * );
 * assert.equal(bytes.length % 8, 0); // 8 + padded header + 24 data bytes
 * const { tensors, metadata } = decodeSafetensors(bytes);
 * assert.deepEqual(tensors.get("linear.weight")!.shape, [2, 3]);
 * assert.deepEqual(Array.from(tensors.get("linear.weight")!.data), [1, 2, 3, 4, 5, 6]);
 * assert.deepEqual(metadata, { format: "pt" });
 * ```
 */
export function encodeSafetensors(
  tensors: readonly NamedTensor[],
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // The header is built entry by entry: JSON.stringify of one object would move
  // integer-like keys ("0") to the front and break the offset order.
  const entries: string[] = [];
  if (metadata !== undefined) {
    const keys = Object.keys(metadata).sort();
    for (const key of keys) {
      if (typeof metadata[key] !== "string") {
        throw new TypeError(`safetensors metadata ${JSON.stringify(key)}: values must be strings`);
      }
    }
    const body = keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`);
    entries.push(`${JSON.stringify(METADATA_KEY)}:{${body.join(",")}}`);
  }
  let dataBytes = 0;
  sorted.forEach((t, i) => {
    if (typeof t.name !== "string" || t.name === METADATA_KEY) {
      throw new TypeError(`safetensors: tensor name ${JSON.stringify(t.name)} is not allowed`);
    }
    if (i > 0 && sorted[i - 1].name === t.name) {
      throw new TypeError(`safetensors: tensor ${JSON.stringify(t.name)} appears twice`);
    }
    if (!t.shape.every(isCount)) {
      throw new RangeError(
        `safetensors: tensor ${JSON.stringify(t.name)}: shape ${
          formatShape(t.shape)
        } must be non-negative integers`,
      );
    }
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) {
      throw new RangeError(
        `safetensors: tensor ${JSON.stringify(t.name)}: shape ${
          formatShape(t.shape)
        } holds ${count} values, data has ${t.data.length}`,
      );
    }
    const info = { dtype: "F32", shape: t.shape, data_offsets: [dataBytes, dataBytes + count * 4] };
    entries.push(`${JSON.stringify(t.name)}:${JSON.stringify(info)}`);
    dataBytes += count * 4;
  });
  const json = new TextEncoder().encode(`{${entries.join(",")}}`);
  const headerBytes = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerBytes + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerBytes);
  // Float32Array bytes are host order; every platform Deno and Bun run on is
  // little-endian, which is what the format stores.
  let at = 8 + headerBytes;
  for (const t of sorted) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Decodes safetensors bytes holding F32 tensors, validating as the reference
 * reader does: the header length fits the input, the header is UTF-8 JSON,
 * every tensor's `data_offsets` match its shape, and the tensors tile the
 * data section exactly (no overlap, no gap, no trailing bytes). Errors name
 * the tensor and what is wrong: {@link RangeError} for sizes and offsets,
 * {@link TypeError} for malformed JSON, fields and dtypes other than F32.
 *
 * @example A file that claims more header than it has
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeSafetensors } from "./checkpoint.ts";
 * const bytes = new Uint8Array(16);
 * bytes[0] = 64; // header length 64, but only 8 bytes follow
 * assert.throws(() => decodeSafetensors(bytes), /header length 64 runs past the end/);
 * ```
 */
export function decodeSafetensors(bytes: Uint8Array): DecodedSafetensors {
  if (bytes.length < 8) {
    throw new RangeError(
      `safetensors: truncated: ${bytes.length} bytes, less than the 8-byte header length`,
    );
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new RangeError(
      `safetensors: header length ${headerLength} is over the ${MAX_HEADER_BYTES}-byte limit ` +
        "(not a safetensors file?)",
    );
  }
  const n = Number(headerLength);
  if (8 + n > bytes.length) {
    throw new RangeError(
      `safetensors: header length ${n} runs past the end of the input ` +
        `(${bytes.length} bytes: 8 + at most ${bytes.length - 8}); truncated file?`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new TypeError("safetensors: header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    throw new TypeError(`safetensors: header is not valid JSON: ${(error as Error).message}`);
  }
  if (!isObject(header)) throw new TypeError("safetensors: header is not a JSON object");

  const metadata: Record<string, string> = {};
  const rawMetadata = header[METADATA_KEY];
  if (rawMetadata !== undefined && rawMetadata !== null) {
    if (!isObject(rawMetadata)) {
      throw new TypeError(`safetensors: ${METADATA_KEY} is not an object of strings`);
    }
    for (const [key, value] of Object.entries(rawMetadata)) {
      if (typeof value !== "string") {
        throw new TypeError(
          `safetensors: ${METADATA_KEY}.${key} is ${JSON.stringify(value)}, not a string`,
        );
      }
      metadata[key] = value;
    }
  }

  const dataStart = 8 + n;
  const dataLength = bytes.length - dataStart;
  const infos: { name: string; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    const where = `safetensors: tensor ${JSON.stringify(name)}`;
    if (!isObject(info)) {
      throw new TypeError(`${where}: entry is not an object with dtype, shape and data_offsets`);
    }
    const { dtype, shape, data_offsets: offsets } = info;
    if (dtype !== "F32") {
      throw new TypeError(
        typeof dtype === "string" && SAFETENSORS_DTYPES.has(dtype)
          ? `${where}: dtype ${dtype} is not supported (only F32 is)`
          : `${where}: unknown dtype ${JSON.stringify(dtype)} (only F32 is supported)`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new TypeError(`${where}: shape ${JSON.stringify(shape)} is not a list of sizes`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) ||
      offsets[0] > offsets[1]
    ) {
      throw new TypeError(
        `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with begin <= end`,
      );
    }
    const [begin, end] = offsets as number[];
    const needed = shape.reduce((a: number, b: number) => a * b, 1) * 4;
    if (end - begin !== needed) {
      throw new RangeError(
        `${where}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, ` +
          `F32 shape ${formatShape(shape)} needs ${needed}`,
      );
    }
    if (end > dataLength) {
      throw new RangeError(
        `${where}: data_offsets [${begin}, ${end}] run past the end of the ` +
          `${dataLength}-byte data section; truncated file?`,
      );
    }
    infos.push({ name, shape, begin, end });
  }

  // The reference reader requires the tensors to tile the data section.
  infos.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  infos.forEach((t, i) => {
    if (t.begin < covered) {
      const previous = infos[i - 1];
      throw new RangeError(
        `safetensors: tensors ${
          JSON.stringify(previous.name)
        } [${previous.begin}, ${previous.end}) ` +
          `and ${JSON.stringify(t.name)} [${t.begin}, ${t.end}) overlap`,
      );
    }
    if (t.begin > covered) {
      throw new RangeError(
        `safetensors: data bytes [${covered}, ${t.begin}) before tensor ${
          JSON.stringify(t.name)
        } belong to no tensor`,
      );
    }
    covered = t.end;
  });
  if (covered !== dataLength) {
    throw new RangeError(
      `safetensors: ${dataLength - covered} data bytes after the last tensor belong to no tensor`,
    );
  }

  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const t of infos) {
    // Uint8Array.prototype.slice copies into a fresh, 4-byte aligned buffer (called
    // directly: a Node Buffer's own slice() returns a view of its pooled buffer).
    const data = new Float32Array(
      Uint8Array.prototype.slice.call(bytes, dataStart + t.begin, dataStart + t.end).buffer,
    );
    tensors.set(t.name, { shape: t.shape, data });
  }
  return { tensors, metadata };
}

// ------------------------------------------------------------------ the model

/** Options of {@link modelCheckpoint} and {@link loadCheckpoint}. */
export interface CheckpointOptions {
  /**
   * Include (save) or require (load) the optimizer state and step count.
   * Save default: false. Load default: restore it when the checkpoint has it.
   */
  withOptimizer?: boolean;
}

/** `format` metadata value of checkpoints written by {@link modelCheckpoint}. */
export const CHECKPOINT_FORMAT = "denorec-mmoe";

/** Name prefix of optimizer state tensors (`optimizer.<param>.exp_avg`). */
const OPTIMIZER_PREFIX = "optimizer.";

interface ModelTensor {
  name: string;
  shape: number[];
  offset: number;
}

function modelTensors(model: CheckpointModel, withOptimizer: boolean): ModelTensor[] {
  const tensors: ModelTensor[] = model.parameters.map(({ name, shape, offset }) => ({
    name,
    shape,
    offset,
  }));
  if (withOptimizer) {
    for (const s of model.optimizerState()) {
      tensors.push({ name: OPTIMIZER_PREFIX + s.name, shape: s.shape, offset: s.offset });
    }
  }
  return tensors;
}

/** FNV-1a (32 bit) of the parameter names and shapes: equal iff the architectures match. */
function architectureFingerprint(model: CheckpointModel): string {
  const text = JSON.stringify(model.parameters.map((p) => [p.name, p.shape]));
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, "0");
}

const optimizerKinds = (model: CheckpointModel): string =>
  `dense ${model.config.denseOptimizer.kind}, sparse ${model.config.sparseOptimizer.kind}`;

const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * The model as safetensors bytes: every parameter and buffer (BatchNorm
 * running stats) under its tzrec state_dict name and PyTorch shape and, with
 * `withOptimizer`, the optimizer state as `optimizer.<param>.exp_avg`,
 * `.exp_avg_sq` (Adam) or `.sum` (Adagrad). Metadata: `format`
 * (`denorec-mmoe`), `step`, `with_optimizer` (so `step` is restored for
 * SGD too, which has no state tensors), `optimizer` kinds and
 * `fingerprint`, a hash of the parameter names and shapes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { decodeSafetensors, modelCheckpoint } from "./checkpoint.ts";
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
 * const model = new MMoEModel(config, { maxBatch: 4 });
 * const { tensors, metadata } = decodeSafetensors(modelCheckpoint(model));
 * assert.deepEqual(tensors.get("_task_tower.0.linear.weight")!.shape, [1, 8]);
 * const table = "embedding_group.emb_impls.__BASE__.ebc.embedding_bags.item_emb.weight";
 * assert.deepEqual(tensors.get(table)!.shape, [4, 4]);
 * assert.equal(metadata.format, "denorec-mmoe");
 * assert.equal(metadata.step, "0");
 * ```
 */
export function modelCheckpoint(
  model: CheckpointModel,
  options: CheckpointOptions = {},
): Uint8Array {
  const withOptimizer = options.withOptimizer ?? false;
  const tensors = modelTensors(model, withOptimizer).map((t) => ({
    name: t.name,
    shape: t.shape,
    data: model.view(t.offset, sizeOf(t.shape)), // encodeSafetensors copies
  }));
  return encodeSafetensors(tensors, {
    format: CHECKPOINT_FORMAT,
    step: String(model.step),
    with_optimizer: String(withOptimizer),
    optimizer: optimizerKinds(model),
    fingerprint: architectureFingerprint(model),
  });
}

/**
 * Loads checkpoint bytes into `model`. Every expected tensor name and shape
 * is checked before anything is written, so a refused checkpoint leaves the
 * model unchanged; the {@link RangeError} lists the missing names, the
 * unexpected names and each shape mismatch, e.g.
 * `_task_tower.0.linear.weight: checkpoint shape [1, 64], model [1, 128]`.
 *
 * With optimizer state (asked for, or by default when the checkpoint has it)
 * the optimizer tensors and the step count are restored too, so
 * training resumes exactly; without it they are left as they are. A
 * safetensors file without `format` metadata (e.g. a PyTorch state_dict saved
 * with `safetensors.torch.save_file`) is accepted when its names and shapes
 * match.
 *
 * @example A checkpoint of a wider tower is refused
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { loadCheckpoint, modelCheckpoint } from "./checkpoint.ts";
 * const configWith = (width: number) =>
 *   resolveConfig({
 *     featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 4, embeddingDim: 4 } }],
 *     modelConfig: {
 *       featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *       mmoe: {
 *         expertMlp: { hiddenUnits: [width] },
 *         numExpert: 2,
 *         taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *       },
 *     },
 *   });
 * const wide = new MMoEModel(configWith(16), { maxBatch: 4 });
 * const narrow = new MMoEModel(configWith(8), { maxBatch: 4 });
 * assert.throws(
 *   () => loadCheckpoint(narrow, modelCheckpoint(wide)),
 *   /_task_tower\.0\.linear\.weight: checkpoint shape \[1, 16\], model \[1, 8\]/,
 * );
 * ```
 */
export function loadCheckpoint(
  model: CheckpointModel,
  bytes: Uint8Array,
  options: CheckpointOptions = {},
): void {
  const { tensors, metadata } = decodeSafetensors(bytes);
  if (metadata.format !== undefined && metadata.format !== CHECKPOINT_FORMAT) {
    throw new TypeError(
      `checkpoint format is ${JSON.stringify(metadata.format)}, expected "${CHECKPOINT_FORMAT}"`,
    );
  }
  const names = [...tensors.keys()];
  // SGD has no state tensors, so our checkpoints also say so in metadata.
  const hasOptimizer = metadata.with_optimizer === "true" ||
    names.some((name) => name.startsWith(OPTIMIZER_PREFIX));
  const withOptimizer = options.withOptimizer ?? hasOptimizer;
  const expected = modelTensors(model, withOptimizer && hasOptimizer);

  const missing: string[] = [];
  const shapes: string[] = [];
  for (const t of expected) {
    const found = tensors.get(t.name);
    if (!found) {
      missing.push(t.name);
    } else if (formatShape(found.shape) !== formatShape(t.shape)) {
      shapes.push(
        `${t.name}: checkpoint shape ${formatShape(found.shape)}, model ${formatShape(t.shape)}`,
      );
    }
  }
  const expectedNames = new Set(expected.map((t) => t.name));
  const unexpected = names.filter((name) =>
    !expectedNames.has(name) && (withOptimizer || !name.startsWith(OPTIMIZER_PREFIX))
  );
  const problems: string[] = [];
  if (missing.length > 0) problems.push(`missing from the checkpoint: ${missing.join(", ")}`);
  if (unexpected.length > 0) problems.push(`not in the model: ${unexpected.join(", ")}`);
  problems.push(...shapes);
  if (withOptimizer && !hasOptimizer) {
    problems.push("no optimizer state in the checkpoint (saved without withOptimizer)");
  }
  const step = /^\d+$/.test(metadata.step ?? "") ? Number(metadata.step) : NaN;
  if (withOptimizer && hasOptimizer && !isCount(step)) {
    problems.push(`metadata step ${JSON.stringify(metadata.step ?? null)} is not a step count`);
  }
  if (problems.length > 0) {
    const context: string[] = [];
    const fingerprint = architectureFingerprint(model);
    if (metadata.fingerprint !== undefined && metadata.fingerprint !== fingerprint) {
      context.push(`fingerprint: checkpoint ${metadata.fingerprint}, model ${fingerprint}`);
    }
    if (
      withOptimizer && metadata.optimizer !== undefined &&
      metadata.optimizer !== optimizerKinds(model)
    ) {
      context.push(`optimizer: checkpoint ${metadata.optimizer}, model ${optimizerKinds(model)}`);
    }
    throw new RangeError(
      `checkpoint does not match the model:\n  ${[...problems, ...context].join("\n  ")}`,
    );
  }

  for (const t of expected) model.view(t.offset, sizeOf(t.shape)).set(tensors.get(t.name)!.data);
  if (withOptimizer) model.step = step;
}

// ------------------------------------------------------------------- files

/**
 * Writes `bytes` to `path` atomically: into a temporary file in the same
 * directory, fsynced, then renamed over `path` (rename within a directory is
 * atomic on POSIX and NTFS), and the directory fsynced so the rename is
 * durable. A crash leaves the old file or the new one, never a torn one; on
 * an error the temporary file is removed and the error names `path`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, readdir, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { readCheckpoint, saveCheckpoint } from "./checkpoint.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "model.safetensors");
 * await saveCheckpoint(path, Uint8Array.of(1, 2, 3));
 * await saveCheckpoint(path, Uint8Array.of(4, 5));
 * assert.deepEqual(await readCheckpoint(path), Uint8Array.of(4, 5));
 * assert.deepEqual(await readdir(dir), ["model.safetensors"]);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function saveCheckpoint(path: string, bytes: Uint8Array): Promise<void> {
  const [{ open, rename, rm }, { basename, dirname, join }] = await Promise.all([
    nodeFs(),
    nodePath(),
  ]);
  const directory = dirname(path);
  const suffix = crypto.randomUUID().slice(0, 8);
  const temporary = join(directory, `.${basename(path)}.${suffix}.tmp`);
  try {
    const file = await open(temporary, "wx");
    try {
      await file.writeFile(bytes);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true }).catch(() => {});
    throw new Error(`saving checkpoint ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    const dir = await open(directory, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch {
    // Directories cannot be opened for fsync on Windows; the rename stands.
  }
}

/**
 * Reads a checkpoint file's bytes (decode them with {@link loadCheckpoint}
 * or {@link decodeSafetensors}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readCheckpoint } from "./checkpoint.ts";
 * await assert.rejects(readCheckpoint("no/such/model.safetensors"), /ENOENT|No such file/i);
 * ```
 */
export async function readCheckpoint(path: string): Promise<Uint8Array> {
  const { readFile } = await nodeFs();
  const buffer = await readFile(path);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

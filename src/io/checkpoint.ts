/**
 * Checkpoints: the model's tensors under their tzrec state_dict names and
 * PyTorch shapes, optionally with the optimizer state, in the
 * [safetensors](https://github.com/huggingface/safetensors) format, so
 * `safetensors.torch.load_file` reads them as they are.
 *
 * Three layers:
 * - bytes: {@link encodeSafetensors} and {@link decodeSafetensors}, pure
 *   functions (no file system, so they run on Deno Deploy). Every file written
 *   here carries a CRC-32 per tensor and one of its header in `__metadata__`
 *   (`crc32`, `header_crc32`), verified on decode; a file without them (written
 *   by another tool) loads unchecked.
 * - the model: {@link modelCheckpoint} and {@link loadCheckpoint} map a model
 *   (`MMoEModel`, see {@link CheckpointModel}) to and from those bytes. Loading
 *   accepts tzrec's own state_dict (names with or without the `model.` prefix
 *   of its training wrapper, int64 `num_batches_tracked`) and refuses tensors
 *   holding NaN or infinity.
 * - files, with `node:fs` (Deno, Bun, Node): {@link saveCheckpoint} (one file,
 *   atomic) and {@link readCheckpoint}; training checkpoints in tzrec's layout,
 *   `<model_dir>/model.ckpt-<step>/{model,optimizer}.safetensors`, with
 *   {@link saveTrainingCheckpoint}, {@link latestCheckpoint},
 *   {@link readCheckpointState} and {@link restoreCheckpoint}.
 *
 * The codec is hand-written: the only npm package named for the format
 * (`safetensors@0.0.1`) is a single unmaintained release with no source
 * repository, and the format is a u64 length, a JSON header and raw bytes.
 * CRC-32 is hand-written too: it is faster than the `crc-32` package (SheetJS)
 * and that package, being CommonJS, costs Deno 30-50 ms of Node-compat
 * start-up on the serving path, whose whole import takes ~10 ms.
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
  readonly parameters: readonly {
    name: string;
    shape: number[];
    offset: number;
    /**
     * `i64` for counters (BatchNorm's `num_batches_tracked`), `u8`/`f16` for
     * int8 tables (refused here: they have no checkpoint), else f32.
     */
    dtype?: "f32" | "i64" | "u8" | "f16";
  }[];
  /** Optimizer state tensors (`MMoEModel.optimizerState()`). */
  optimizerState(): { name: string; shape: number[]; offset: number }[];
  /** A live float view of `count` values at byte `offset`. */
  view(offset: number, count: number): Float32Array;
  /** A live int64 view of `count` values at byte `offset` (the `i64` tensors). */
  int64View(offset: number, count: number): BigInt64Array;
  /** Called once a load has written the parameters (the model repacks its weights' GEMM panels). */
  parametersChanged(): void;
  /** Optimizer step count. */
  step: number;
  /** The optimizers' update rules. */
  readonly config: {
    readonly denseOptimizer: { readonly kind: string };
    readonly sparseOptimizer: { readonly kind: string };
  };
}

// ------------------------------------------------------------------- CRC-32

let crcTables: Int32Array | null = null;

/** The 16 slicing tables of CRC-32 (reflected polynomial 0xedb88320), 16 KiB. */
function makeCrcTables(): Int32Array {
  const t = new Int32Array(16 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  for (let k = 1; k < 16; k++) {
    for (let n = 0; n < 256; n++) {
      const previous = t[(k - 1) * 256 + n];
      t[k * 256 + n] = (previous >>> 8) ^ t[previous & 255];
    }
  }
  return t;
}

/**
 * CRC-32 of `bytes` as 8 lowercase hex digits: the IEEE 802.3 / zlib CRC
 * (Python's `format(zlib.crc32(b), "08x")`), slicing by 16 bytes read as four
 * little-endian words (1.4-1.7x the byte-wise slicing-by-8 of the `crc-32`
 * package, measured in the same run under Deno and Bun).
 */
function crc32(bytes: Uint8Array): string {
  const t = crcTables ??= makeCrcTables();
  let c = -1, i = 0;
  const head = Math.min(bytes.length, (4 - (bytes.byteOffset & 3)) & 3);
  for (; i < head; i++) c = t[(c ^ bytes[i]) & 255] ^ (c >>> 8);
  const count = ((bytes.length - i) >> 4) << 2; // whole 16-byte blocks, in words
  const w = new Int32Array(bytes.buffer, bytes.byteOffset + i, count);
  for (let j = 0; j < count; j += 4) {
    const a = c ^ w[j], b = w[j + 1], d = w[j + 2], e = w[j + 3];
    c = t[3840 + (a & 255)] ^ t[3584 + ((a >>> 8) & 255)] ^ t[3328 + ((a >>> 16) & 255)] ^
      t[3072 + (a >>> 24)] ^ t[2816 + (b & 255)] ^ t[2560 + ((b >>> 8) & 255)] ^
      t[2304 + ((b >>> 16) & 255)] ^ t[2048 + (b >>> 24)] ^ t[1792 + (d & 255)] ^
      t[1536 + ((d >>> 8) & 255)] ^ t[1280 + ((d >>> 16) & 255)] ^ t[1024 + (d >>> 24)] ^
      t[768 + (e & 255)] ^ t[512 + ((e >>> 8) & 255)] ^ t[256 + ((e >>> 16) & 255)] ^ t[e >>> 24];
  }
  for (i += count * 4; i < bytes.length; i++) c = t[(c ^ bytes[i]) & 255] ^ (c >>> 8);
  return (~c >>> 0).toString(16).padStart(8, "0");
}

// ------------------------------------------------------------------ safetensors

/** An F32 tensor to encode: its name, PyTorch shape (row-major) and values. */
export interface NamedTensor {
  /** Tensor name, e.g. a state_dict key. */
  name: string;
  /** Shape; the product of its dims is `data.length`. */
  shape: readonly number[];
  /** Row-major values: F32, or I64 (counters such as BatchNorm's `num_batches_tracked`). */
  data: Float32Array | BigInt64Array;
}

/** What {@link decodeSafetensors} returns: tensors by name and the metadata map. */
export interface DecodedSafetensors {
  /**
   * Every tensor of the file as F32 values copied out of the input (I64
   * tensors such as BatchNorm's `num_batches_tracked` are converted, exactly
   * up to 2^24).
   */
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
  /** The header's `__metadata__` string map (empty when absent), without the checksums. */
  metadata: Record<string, string>;
  /** The file carried checksums (`crc32`, `header_crc32`) and they matched. */
  checksums: boolean;
}

/** Options of {@link decodeSafetensors}. */
export interface DecodeOptions {
  /**
   * The file the bytes came from, named in every error. Default: the path
   * {@link readCheckpoint} read them from, else none (errors start `safetensors:`).
   */
  source?: string;
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

/** Bytes per element of the dtypes read here. */
const DTYPE_BYTES: Record<string, number> = { F32: 4, I64: 8 };

const METADATA_KEY = "__metadata__";
/** Metadata key of the tensors' CRC-32s: a JSON object string, name -> 8 hex digits. */
const CRC_KEY = "crc32";
/** Metadata key of the header's CRC-32 (see {@link headerChecksum}). */
const HEADER_CRC_KEY = "header_crc32";

/** Paths of the byte arrays {@link readCheckpoint} returned, for error messages. */
const sources = new WeakMap<Uint8Array, string>();

const formatShape = (shape: readonly number[]): string => `[${shape.join(", ")}]`;

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const isCount = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

const byName = <T extends { name: string }>(a: T, b: T): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/**
 * CRC-32 of the header's content in a canonical form, so that it survives
 * re-serialisation (key order, spacing, padding, data offsets): the JSON text
 * of `[[[key, value], ...], [[name, dtype, shape], ...]]`, metadata entries
 * but this one sorted by key, tensors sorted by name. It covers every
 * metadata value (the step count, the tensors' CRCs) and each dtype and shape.
 */
function headerChecksum(
  metadata: Record<string, string>,
  tensors: { name: string; dtype: string; shape: readonly number[] }[],
): string {
  const entries = Object.keys(metadata).filter((k) => k !== HEADER_CRC_KEY).sort()
    .map((k) => [k, metadata[k]]);
  const infos = [...tensors].sort(byName).map((t) => [t.name, t.dtype, t.shape]);
  return crc32(new TextEncoder().encode(JSON.stringify([entries, infos])));
}

const dtypeOf = (data: Float32Array | BigInt64Array): "F32" | "I64" =>
  data instanceof BigInt64Array ? "I64" : "F32";

const bytesOf = (data: Float32Array | BigInt64Array): Uint8Array =>
  new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/**
 * Encodes F32 tensors and an optional string map as safetensors bytes: an
 * 8-byte little-endian header length N, N bytes of JSON header padded with
 * spaces to a multiple of 8 (so the data starts 8-byte aligned), then the
 * tensors' little-endian bytes packed in name order, as the reference
 * `safetensors.serialize` lays them out. Values are copied; the inputs are
 * not kept. The metadata gains `crc32` (a JSON object string: tensor name ->
 * CRC-32 of its bytes as 8 hex digits, Python's `zlib.crc32`) and
 * `header_crc32`; those two keys of `metadata` are replaced.
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
 * const { tensors, metadata, checksums } = decodeSafetensors(bytes);
 * assert.deepEqual(tensors.get("linear.weight")!.shape, [2, 3]);
 * assert.deepEqual(Array.from(tensors.get("linear.weight")!.data), [1, 2, 3, 4, 5, 6]);
 * assert.deepEqual(metadata, { format: "pt" });
 * assert.equal(checksums, true);
 * ```
 */
export function encodeSafetensors(
  tensors: readonly NamedTensor[],
  metadata: Readonly<Record<string, string>> = {},
): Uint8Array {
  const sorted = [...tensors].sort(byName);
  let dataBytes = 0;
  const infos: string[] = [];
  const crcs: Record<string, string> = {};
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
    const info = {
      dtype: dtypeOf(t.data),
      shape: t.shape,
      data_offsets: [dataBytes, dataBytes + t.data.byteLength],
    };
    infos.push(`${JSON.stringify(t.name)}:${JSON.stringify(info)}`);
    crcs[t.name] = crc32(bytesOf(t.data));
    dataBytes += t.data.byteLength;
  });
  const meta: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== "string") {
      throw new TypeError(`safetensors metadata ${JSON.stringify(key)}: values must be strings`);
    }
    if (key !== CRC_KEY && key !== HEADER_CRC_KEY) meta[key] = value;
  }
  // Built entry by entry: JSON.stringify of one object would move integer-like
  // names ("0") to the front.
  meta[CRC_KEY] = `{${sorted.map((t) => `${JSON.stringify(t.name)}:"${crcs[t.name]}"`).join(",")}}`;
  meta[HEADER_CRC_KEY] = headerChecksum(
    meta,
    sorted.map((t) => ({ ...t, dtype: dtypeOf(t.data) })),
  );
  const body = Object.keys(meta).sort().map((k) =>
    `${JSON.stringify(k)}:${JSON.stringify(meta[k])}`
  );
  const json = new TextEncoder().encode(
    `{${[`${JSON.stringify(METADATA_KEY)}:{${body.join(",")}}`, ...infos].join(",")}}`,
  );
  const headerBytes = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerBytes + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerBytes);
  // Float32Array bytes are host order; every platform Deno and Bun run on is
  // little-endian, which is what the format stores.
  let at = 8 + headerBytes;
  for (const t of sorted) {
    out.set(bytesOf(t.data), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Decodes safetensors bytes holding F32 (or I64) tensors, validating as the
 * reference reader does: the header length fits the input, the header is
 * UTF-8 JSON, every tensor's `data_offsets` match its shape, and the tensors
 * tile the data section exactly (no overlap, no gap, no trailing bytes).
 * When the metadata carries `header_crc32` and `crc32` (every file
 * {@link encodeSafetensors} writes does), the header and each tensor's bytes
 * are checked against them, so a flipped bit or two tensors swapped between
 * same-shape entries is an error, not a wrong model. Errors start with the
 * file ({@link DecodeOptions.source}) and name the tensor and what is wrong:
 * {@link RangeError} for sizes, offsets and checksums, {@link TypeError} for
 * malformed JSON, fields and unsupported dtypes.
 *
 * @example A file that claims more header than it has
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeSafetensors } from "./checkpoint.ts";
 * const bytes = new Uint8Array(16);
 * bytes[0] = 64; // header length 64, but only 8 bytes follow
 * assert.throws(
 *   () => decodeSafetensors(bytes, { source: "model.safetensors" }),
 *   /^RangeError: model\.safetensors: header length 64 runs past the end/,
 * );
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  options: DecodeOptions = {},
): DecodedSafetensors {
  const where = options.source ?? sources.get(bytes) ?? "safetensors";
  const { header, dataStart } = parseHeader(bytes, where);
  const { metadata, infos } = readHeader(header, where);

  const dataLength = bytes.length - dataStart;
  for (const t of infos) {
    if (t.end > dataLength) {
      throw new RangeError(
        `${where}: tensor ${
          JSON.stringify(t.name)
        }: data_offsets [${t.begin}, ${t.end}] run past ` +
          `the end of the ${dataLength}-byte data section; truncated file?`,
      );
    }
  }
  // The reference reader requires the tensors to tile the data section.
  const ordered = [...infos].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  ordered.forEach((t, i) => {
    if (t.begin < covered) {
      const previous = ordered[i - 1];
      throw new RangeError(
        `${where}: tensors ${JSON.stringify(previous.name)} [${previous.begin}, ${previous.end}) ` +
          `and ${JSON.stringify(t.name)} [${t.begin}, ${t.end}) overlap`,
      );
    }
    if (t.begin > covered) {
      throw new RangeError(
        `${where}: data bytes [${covered}, ${t.begin}) before tensor ${
          JSON.stringify(t.name)
        } belong to no tensor`,
      );
    }
    covered = t.end;
  });
  if (covered !== dataLength) {
    throw new RangeError(
      `${where}: ${dataLength - covered} data bytes after the last tensor belong to no tensor`,
    );
  }

  const checksums = verifyChecksums(bytes, dataStart, metadata, infos, where);
  delete metadata[CRC_KEY];
  delete metadata[HEADER_CRC_KEY];

  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const t of infos) {
    const begin = dataStart + t.begin, end = dataStart + t.end;
    // Uint8Array.prototype.slice copies into a fresh, 4-byte aligned buffer (called
    // directly: a Node Buffer's own slice() returns a view of its pooled buffer).
    const data = t.dtype === "F32"
      ? new Float32Array(Uint8Array.prototype.slice.call(bytes, begin, end).buffer)
      : int64ToFloat32(bytes, begin, (end - begin) / 8);
    tensors.set(t.name, { shape: t.shape, data });
  }
  return { tensors, metadata, checksums };
}

/** Splits the input into its JSON header (parsed) and the offset of the data section. */
function parseHeader(bytes: Uint8Array, where: string): { header: unknown; dataStart: number } {
  if (bytes.length < 8) {
    throw new RangeError(
      `${where}: truncated: ${bytes.length} bytes, less than the 8-byte header length`,
    );
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new RangeError(
      `${where}: header length ${headerLength} is over the ${MAX_HEADER_BYTES}-byte limit ` +
        "(not a safetensors file?)",
    );
  }
  const n = Number(headerLength);
  if (8 + n > bytes.length) {
    throw new RangeError(
      `${where}: header length ${n} runs past the end of the input ` +
        `(${bytes.length} bytes: 8 + at most ${bytes.length - 8}); truncated file?`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw new TypeError(`${where}: header is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (error) {
    throw new TypeError(`${where}: header is not valid JSON: ${(error as Error).message}`);
  }
  return { header, dataStart: 8 + n };
}

interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/** The metadata and the tensor entries of a parsed header, each checked on its own. */
function readHeader(
  header: unknown,
  where: string,
): { metadata: Record<string, string>; infos: TensorInfo[] } {
  if (!isObject(header)) throw new TypeError(`${where}: header is not a JSON object`);
  const entries: [string, string][] = [];
  const rawMetadata = header[METADATA_KEY];
  if (rawMetadata !== undefined && rawMetadata !== null) {
    if (!isObject(rawMetadata)) {
      throw new TypeError(`${where}: ${METADATA_KEY} is not an object of strings`);
    }
    for (const [key, value] of Object.entries(rawMetadata)) {
      if (typeof value !== "string") {
        throw new TypeError(
          `${where}: ${METADATA_KEY}.${key} is ${JSON.stringify(value)}, not a string`,
        );
      }
      entries.push([key, value]);
    }
  }
  // fromEntries defines "__proto__" as a plain key instead of calling the setter.
  const metadata: Record<string, string> = Object.fromEntries(entries);

  const infos: TensorInfo[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    const at = `${where}: tensor ${JSON.stringify(name)}`;
    if (!isObject(info)) {
      throw new TypeError(`${at}: entry is not an object with dtype, shape and data_offsets`);
    }
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new TypeError(
        typeof dtype === "string" && SAFETENSORS_DTYPES.has(dtype)
          ? `${at}: dtype ${dtype} is not supported (only F32 and I64 are)`
          : `${at}: unknown dtype ${JSON.stringify(dtype)} (only F32 and I64 are supported)`,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw new TypeError(`${at}: shape ${JSON.stringify(shape)} is not a list of sizes`);
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) ||
      offsets[0] > offsets[1]
    ) {
      throw new TypeError(
        `${at}: data_offsets ${JSON.stringify(offsets)} is not [begin, end] with begin <= end`,
      );
    }
    const [begin, end] = offsets as number[];
    const needed = shape.reduce((a: number, b: number) => a * b, 1) * DTYPE_BYTES[dtype];
    if (end - begin !== needed) {
      throw new RangeError(
        `${at}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes, ` +
          `${dtype} shape ${formatShape(shape)} needs ${needed}`,
      );
    }
    infos.push({ name, dtype, shape, begin, end });
  }
  return { metadata, infos };
}

/** Checks `header_crc32` and `crc32` when present; true when both were there and matched. */
function verifyChecksums(
  bytes: Uint8Array,
  dataStart: number,
  metadata: Record<string, string>,
  infos: TensorInfo[],
  where: string,
): boolean {
  const headerCrc = metadata[HEADER_CRC_KEY];
  if (headerCrc !== undefined) {
    const actual = headerChecksum(metadata, infos);
    if (actual !== headerCrc) {
      throw new RangeError(
        `${where}: header checksum mismatch (${HEADER_CRC_KEY} ${
          JSON.stringify(headerCrc)
        }, header content ${actual}): the metadata, a name, dtype or shape was altered or is corrupt`,
      );
    }
  }
  const listed = metadata[CRC_KEY];
  if (listed === undefined) return false;
  let crcs: unknown;
  try {
    crcs = JSON.parse(listed);
  } catch {
    crcs = null;
  }
  if (!isObject(crcs) || !Object.values(crcs).every((v) => typeof v === "string")) {
    throw new TypeError(`${where}: ${METADATA_KEY}.${CRC_KEY} is not a JSON object of checksums`);
  }
  const names = new Set(infos.map((t) => t.name));
  const unknown = Object.keys(crcs).filter((name) => !names.has(name));
  if (unknown.length > 0) {
    throw new RangeError(
      `${where}: ${CRC_KEY} lists ${unknown.map((n) => JSON.stringify(n)).join(", ")}, ` +
        "which the header does not hold",
    );
  }
  for (const t of infos) {
    const expected = crcs[t.name];
    if (expected === undefined) {
      throw new RangeError(`${where}: tensor ${JSON.stringify(t.name)} has no ${CRC_KEY} entry`);
    }
    const actual = crc32(bytes.subarray(dataStart + t.begin, dataStart + t.end));
    if (actual !== expected) {
      throw new RangeError(
        `${where}: tensor ${JSON.stringify(t.name)}: checksum mismatch (stored ${
          JSON.stringify(expected)
        }, data ${actual}): the file is corrupt or its tensors were moved`,
      );
    }
  }
  return headerCrc !== undefined;
}

/** `count` little-endian int64 values at byte `begin`, as the nearest floats. */
function int64ToFloat32(bytes: Uint8Array, begin: number, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset + begin, count * 8);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(i * 8, true));
  return out;
}

// ------------------------------------------------------------------ the model

/** Options of {@link modelCheckpoint}. */
export interface CheckpointOptions {
  /**
   * Include (save) or require (load) the optimizer state and step count.
   * Save default: false. Load default: restore it when the checkpoint has it.
   */
  withOptimizer?: boolean;
}

/** Options of {@link loadCheckpoint}. */
export interface LoadCheckpointOptions extends CheckpointOptions {
  /**
   * The file the bytes came from, named in every error. Default: the path
   * {@link readCheckpoint} read them from, else none.
   */
  source?: string;
}

/** `format` metadata value of checkpoints written by {@link modelCheckpoint}. */
export const CHECKPOINT_FORMAT = "denorec-mmoe";

/** `format` of the optimizer file of a training checkpoint directory. */
const OPTIMIZER_FORMAT = "denorec-mmoe-optimizer";

/** Name prefix of optimizer state tensors in a single-file checkpoint (`optimizer.<param>.exp_avg`). */
const OPTIMIZER_PREFIX = "optimizer.";

/** Prefix of tzrec's state_dict names (its training wrapper holds the model as `model`). */
const TZREC_MODEL_PREFIX = "model.";

interface ModelTensor {
  name: string;
  shape: number[];
  offset: number;
  dtype?: "f32" | "i64" | "u8" | "f16";
}

/** Refuses a model with int8 embedding tables (a serving model: see `src/io/serving.ts`). */
function assertFloatTables(model: CheckpointModel, action: string): void {
  const quantized = model.parameters.find((p) => p.dtype === "u8" || p.dtype === "f16");
  if (quantized) {
    throw new TypeError(
      `cannot ${action} a model with int8 embedding tables (${quantized.name}): checkpoints ` +
        "hold f32 tables; quantized models come from and go to serving artifacts",
    );
  }
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

/** Index and value of the first NaN or infinity of `data`, or null. */
function firstNonFinite(data: Float32Array): { index: number; value: number } | null {
  for (let i = 0; i < data.length; i++) {
    // x - x is 0 for every finite x and NaN for NaN and both infinities.
    if (data[i] - data[i] !== 0) return { index: i, value: data[i] };
  }
  return null;
}

/**
 * The first tensor of `model` holding NaN or infinity: parameters and buffers,
 * then the optimizer state (unless `withOptimizer` is false), or null. The
 * trainer checks this before it saves a step.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { firstNonFiniteTensor } from "./checkpoint.ts";
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
 * });
 * const model = new MMoEModel(config, { maxBatch: 1 });
 * assert.equal(firstNonFiniteTensor(model), null);
 * model.parameter("mmoe.gate_finals.0.bias")[1] = -Infinity;
 * assert.deepEqual(firstNonFiniteTensor(model), { name: "mmoe.gate_finals.0.bias", index: 1, value: -Infinity });
 * ```
 */
export function firstNonFiniteTensor(
  model: CheckpointModel,
  withOptimizer = true,
): { name: string; index: number; value: number } | null {
  const tensors: readonly ModelTensor[] = withOptimizer
    ? [...model.parameters, ...model.optimizerState()]
    : model.parameters;
  for (const t of tensors) {
    if (t.dtype !== undefined && t.dtype !== "f32") continue; // counters, int8 tables
    const bad = firstNonFinite(model.view(t.offset, sizeOf(t.shape)));
    if (bad) return { name: t.name, ...bad };
  }
  return null;
}

/** An int64 tensor of the model (BatchNorm's `num_batches_tracked`). */
const isCounter = (t: ModelTensor): boolean => t.dtype === "i64";

/** The model's tensors as views for the encoder; refuses NaN and infinity, naming the tensor. */
function tensorsToSave(model: CheckpointModel, list: readonly ModelTensor[], prefix: string) {
  return list.map((t) => {
    if (isCounter(t)) {
      return {
        name: prefix + t.name,
        shape: t.shape,
        data: model.int64View(t.offset, sizeOf(t.shape)),
      };
    }
    const data = model.view(t.offset, sizeOf(t.shape)); // encodeSafetensors copies
    const bad = firstNonFinite(data);
    if (bad) {
      const name = JSON.stringify(prefix + t.name);
      throw new RangeError(
        `not saving a diverged model: tensor ${name} holds ${bad.value} at index ${bad.index} ` +
          `(step ${model.step})`,
      );
    }
    return { name: prefix + t.name, shape: t.shape, data };
  });
}

/**
 * The model as safetensors bytes: every parameter and buffer (BatchNorm
 * running stats) under its tzrec state_dict name and PyTorch shape and, with
 * `withOptimizer`, the optimizer state as `optimizer.<param>.exp_avg`,
 * `.exp_avg_sq` (Adam) or `.sum` (Adagrad). Metadata: `format`
 * (`denorec-mmoe`), `step`, `with_optimizer` (so `step` is restored for
 * SGD too, which has no state tensors), `optimizer` kinds,
 * `fingerprint`, a hash of the parameter names and shapes, and the checksums
 * ({@link encodeSafetensors}). A model holding NaN or infinity is refused
 * with a {@link RangeError} naming the tensor: a diverged model is never
 * written.
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
 *
 * model.parameter("_task_tower.0.linear.bias")[0] = NaN;
 * assert.throws(() => modelCheckpoint(model), /tensor "_task_tower\.0\.linear\.bias" holds NaN/);
 * ```
 */
export function modelCheckpoint(
  model: CheckpointModel,
  options: CheckpointOptions = {},
): Uint8Array {
  const withOptimizer = options.withOptimizer ?? false;
  assertFloatTables(model, "checkpoint");
  const tensors = tensorsToSave(model, model.parameters, "");
  if (withOptimizer) {
    tensors.push(...tensorsToSave(model, model.optimizerState(), OPTIMIZER_PREFIX));
  }
  return encodeSafetensors(tensors, {
    format: CHECKPOINT_FORMAT,
    step: String(model.step),
    with_optimizer: String(withOptimizer),
    optimizer: optimizerKinds(model),
    fingerprint: architectureFingerprint(model),
  });
}

/** The optimizer file of a training checkpoint: state tensors by `<param>.<state>`, and where training stands. */
function optimizerCheckpoint(model: CheckpointModel, state: TrainingState): Uint8Array {
  return encodeSafetensors(tensorsToSave(model, model.optimizerState(), ""), {
    format: OPTIMIZER_FORMAT,
    step: String(model.step),
    epoch: String(state.position.epoch),
    batches_in_epoch: String(state.position.batchesInEpoch),
    seed: String(state.seed),
    optimizer: optimizerKinds(model),
    fingerprint: architectureFingerprint(model),
  });
}

/** A decoded checkpoint file and the name its errors use ("" when unknown). */
interface LoadedFile {
  decoded: DecodedSafetensors;
  source: string;
}

/**
 * Loads checkpoint bytes into `model`. Every expected tensor name and shape
 * is checked before anything is written, so a refused checkpoint leaves the
 * model unchanged; the {@link RangeError} starts with the file
 * ({@link LoadCheckpointOptions.source}) and lists the missing names, the
 * unexpected names, each shape mismatch, e.g.
 * `_task_tower.0.linear.weight: checkpoint shape [1, 64], model [1, 128]`,
 * and each tensor holding NaN or infinity. Corrupt bytes fail the checksums
 * ({@link decodeSafetensors}).
 *
 * tzrec's state_dict loads as it is: a name may carry the `model.` prefix of
 * tzrec's checkpoints, and an I64 tensor (BatchNorm's `num_batches_tracked`)
 * is accepted and kept as a float. A safetensors file without `format`
 * metadata (e.g. a PyTorch state_dict saved with
 * `safetensors.torch.save_file`) is accepted when its names and shapes match.
 *
 * With optimizer state (asked for, or by default when the checkpoint has it)
 * the optimizer tensors and the step count are restored too, so
 * training resumes exactly; without it they are left as they are.
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
 *   () => loadCheckpoint(narrow, modelCheckpoint(wide), { source: "wide.safetensors" }),
 *   /^RangeError: wide\.safetensors: checkpoint does not match the model:[^]*_task_tower\.0\.linear\.weight: checkpoint shape \[1, 16\], model \[1, 8\]/,
 * );
 * ```
 */
export function loadCheckpoint(
  model: CheckpointModel,
  bytes: Uint8Array,
  options: LoadCheckpointOptions = {},
): void {
  const source = options.source ?? sources.get(bytes) ?? "";
  assertFloatTables(model, "load a checkpoint into");
  const decoded = decodeSafetensors(bytes, source ? { source } : {});
  loadFiles(model, { decoded, source }, null, options.withOptimizer);
}

/**
 * Matches the model's tensors against a checkpoint (one file, or a model file
 * and an optimizer file), then writes them, and the step count with the
 * optimizer state.
 */
function loadFiles(
  model: CheckpointModel,
  modelFile: LoadedFile,
  optimizerFile: LoadedFile | null,
  withOptimizerOption: boolean | undefined,
): void {
  const { tensors, metadata } = modelFile.decoded;
  const at = (file: LoadedFile) => (file.source ? `${file.source}: ` : "");
  if (metadata.format !== undefined && metadata.format !== CHECKPOINT_FORMAT) {
    throw new TypeError(
      `${at(modelFile)}checkpoint format is ${
        JSON.stringify(metadata.format)
      }, expected "${CHECKPOINT_FORMAT}"`,
    );
  }
  if (optimizerFile && optimizerFile.decoded.metadata.format !== OPTIMIZER_FORMAT) {
    throw new TypeError(
      `${at(optimizerFile)}optimizer file format is ${
        JSON.stringify(optimizerFile.decoded.metadata.format ?? null)
      }, expected "${OPTIMIZER_FORMAT}"`,
    );
  }
  const names = [...tensors.keys()];
  // SGD has no state tensors, so our checkpoints also say so in metadata.
  const hasOptimizer = optimizerFile !== null || metadata.with_optimizer === "true" ||
    names.some((name) => name.startsWith(OPTIMIZER_PREFIX));
  const withOptimizer = withOptimizerOption ?? hasOptimizer;
  const loadOptimizer = withOptimizer && hasOptimizer;

  const writes: { tensor: ModelTensor; data: Float32Array }[] = [];
  const missing: string[] = [], shapes: string[] = [], nonFinite: string[] = [];
  const other: string[] = [];
  const used = new Set<string>();
  const take = (t: ModelTensor, name: string, found?: { shape: number[]; data: Float32Array }) => {
    if (!found) {
      missing.push(name);
    } else if (formatShape(found.shape) !== formatShape(t.shape)) {
      shapes.push(
        `${name}: checkpoint shape ${formatShape(found.shape)}, model ${formatShape(t.shape)}`,
      );
    } else {
      const bad = firstNonFinite(found.data);
      if (bad) nonFinite.push(`${name} (${bad.value} at index ${bad.index})`);
      else if (isCounter(t) && !found.data.every((v) => Number.isInteger(v) && v >= 0)) {
        nonFinite.push(`${name} (a counter holding ${found.data.find((v) => !(v >= 0))})`);
      }
      writes.push({ tensor: t, data: found.data });
    }
  };

  for (const p of model.parameters) {
    const prefixed = TZREC_MODEL_PREFIX + p.name;
    if (tensors.has(p.name) && tensors.has(prefixed)) {
      other.push(`both ${p.name} and ${prefixed} are in the checkpoint`);
      used.add(prefixed);
    }
    const name = tensors.has(p.name) || !tensors.has(prefixed) ? p.name : prefixed;
    used.add(name);
    take(p, name, tensors.get(name));
  }
  if (loadOptimizer && optimizerFile) {
    const state = optimizerFile.decoded.tensors, source = optimizerFile.source;
    const expected = model.optimizerState();
    const expectedNames = new Set(expected.map((s) => s.name));
    const absent = expected.filter((s) => !state.has(s.name)).map((s) => s.name);
    const extra = [...state.keys()].filter((name) => !expectedNames.has(name));
    if (absent.length > 0) other.push(`missing from ${source}: ${absent.join(", ")}`);
    if (extra.length > 0) other.push(`in ${source} but not the model's: ${extra.join(", ")}`);
    for (const s of expected) if (state.has(s.name)) take(s, s.name, state.get(s.name));
  } else if (loadOptimizer) {
    for (const s of model.optimizerState()) {
      const name = OPTIMIZER_PREFIX + s.name;
      used.add(name);
      take(s, name, tensors.get(name));
    }
  }
  const unexpected = names.filter((name) =>
    !used.has(name) && (loadOptimizer || !name.startsWith(OPTIMIZER_PREFIX))
  );
  const problems: string[] = [];
  if (missing.length > 0) problems.push(`missing from the checkpoint: ${missing.join(", ")}`);
  if (unexpected.length > 0) problems.push(`not in the model: ${unexpected.join(", ")}`);
  problems.push(...shapes, ...other);
  if (nonFinite.length > 0) {
    problems.push(`NaN or infinity (a diverged model) in ${nonFinite.join(", ")}`);
  }
  if (withOptimizer && !hasOptimizer) {
    problems.push("no optimizer state in the checkpoint (saved without withOptimizer)");
  }
  let step: number | null = null;
  if (loadOptimizer) {
    const stepText = optimizerFile ? optimizerFile.decoded.metadata.step : metadata.step;
    step = /^\d+$/.test(stepText ?? "") ? Number(stepText) : NaN;
    if (!isCount(step)) {
      problems.push(`metadata step ${JSON.stringify(stepText ?? null)} is not a step count`);
    } else if (optimizerFile && metadata.step !== undefined && metadata.step !== stepText) {
      problems.push(
        `the model file is of step ${metadata.step}, the optimizer file of step ${stepText}`,
      );
    }
  }
  if (problems.length > 0) {
    const context: string[] = [];
    const fingerprint = architectureFingerprint(model);
    if (metadata.fingerprint !== undefined && metadata.fingerprint !== fingerprint) {
      context.push(`fingerprint: checkpoint ${metadata.fingerprint}, model ${fingerprint}`);
    }
    const kinds = optimizerFile ? optimizerFile.decoded.metadata.optimizer : metadata.optimizer;
    if (withOptimizer && kinds !== undefined && kinds !== optimizerKinds(model)) {
      context.push(`optimizer: checkpoint ${kinds}, model ${optimizerKinds(model)}`);
    }
    throw new RangeError(
      `${at(modelFile)}checkpoint does not match the model: ${
        [...problems, ...context].join("; ")
      }`,
    );
  }

  for (const { tensor, data } of writes) {
    const count = sizeOf(tensor.shape);
    if (!isCounter(tensor)) model.view(tensor.offset, count).set(data);
    else model.int64View(tensor.offset, count).set(Array.from(data, BigInt));
  }
  model.parametersChanged();
  if (step !== null) model.step = step;
}

// ------------------------------------------------------------------- files

/** Temporary files of {@link saveCheckpoint}: `.<name>.<8 hex>.tmp` beside the target. */
const temporaryName = (name: string, suffix: string) => `.${name}.${suffix}.tmp`;

const isTemporaryOf = (entry: string, name: string): boolean =>
  entry.length === name.length + 14 && entry.startsWith(`.${name}.`) &&
  /^\.[0-9a-f]{8}\.tmp$/.test(entry.slice(name.length + 1));

const randomSuffix = (): string => crypto.randomUUID().slice(0, 8);

/** Writes `bytes` to a new file `path` and fsyncs it. */
async function writeSynced(path: string, bytes: Uint8Array): Promise<void> {
  const { open } = await nodeFs();
  const file = await open(path, "wx");
  try {
    await file.writeFile(bytes);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Fsyncs a directory so that a rename in it is durable. */
async function syncDirectory(directory: string): Promise<void> {
  const { open } = await nodeFs();
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
 * Writes `bytes` to `path` atomically: into a temporary file in the same
 * directory, fsynced, then renamed over `path` (rename within a directory is
 * atomic on POSIX and NTFS), and the directory fsynced so the rename is
 * durable. A crash leaves the old file or the new one, never a torn one; on
 * an error the temporary file is removed and the error names `path`. Temporary
 * files that a killed process left behind (`.<name>.<8 hex>.tmp`) are removed
 * first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { readCheckpoint, saveCheckpoint } from "./checkpoint.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "model.safetensors");
 * await writeFile(join(dir, ".model.safetensors.0badf00d.tmp"), "left by a kill -9");
 * await saveCheckpoint(path, Uint8Array.of(1, 2, 3));
 * await saveCheckpoint(path, Uint8Array.of(4, 5));
 * assert.deepEqual(await readCheckpoint(path), Uint8Array.of(4, 5));
 * assert.deepEqual(await readdir(dir), ["model.safetensors"]);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function saveCheckpoint(path: string, bytes: Uint8Array): Promise<void> {
  const [{ readdir, rename, rm }, { basename, dirname, join }] = await Promise.all([
    nodeFs(),
    nodePath(),
  ]);
  const directory = dirname(path), name = basename(path);
  const temporary = join(directory, temporaryName(name, randomSuffix()));
  try {
    const stale = (await readdir(directory)).filter((entry) => isTemporaryOf(entry, name));
    for (const entry of stale) await rm(join(directory, entry), { force: true });
    await writeSynced(temporary, bytes);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true }).catch(() => {});
    throw new Error(`saving checkpoint ${path}: ${(error as Error).message}`, { cause: error });
  }
  await syncDirectory(directory);
}

/**
 * Reads a checkpoint file's bytes (decode them with {@link loadCheckpoint}
 * or {@link decodeSafetensors}, whose errors then name `path`).
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
  const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  sources.set(bytes, path);
  return bytes;
}

// ------------------------------------------------------- training checkpoints

/** Where training stands: the next batch is batch `batchesInEpoch` (0-based) of `epoch`. */
export interface TrainingPosition {
  /** 1-based epoch. */
  epoch: number;
  /** Batches of that epoch already trained. */
  batchesInEpoch: number;
}

/** What a training checkpoint records besides the tensors, to resume the same run. */
export interface TrainingState {
  /** Position in the training data. */
  position: TrainingPosition;
  /** The run's seed (parameter init, dropout, shuffle of epoch e seeded from (seed, e)). */
  seed: number;
}

/** What {@link readCheckpointState} and {@link restoreCheckpoint} return. */
export interface CheckpointState {
  /** Optimizer steps taken (0 for weights without optimizer state). */
  step: number;
  /** Training state, or null for a checkpoint without one (e.g. a bare state_dict). */
  training: TrainingState | null;
}

/** Options of {@link saveTrainingCheckpoint}. */
export interface SaveTrainingOptions extends TrainingState {
  /** Keep the newest this many `model.ckpt-*` directories, 0 = all (train_config.keep_checkpoint_max). */
  keepCheckpointMax?: number;
}

/** A checkpoint directory name: `model.ckpt-<step>` in tzrec's numbering. */
const CHECKPOINT_DIR = /^model\.ckpt-(\d+)$/;
/** Temporary and retired checkpoint directories: `.model.ckpt-<step>.<8 hex>.tmp`. */
const CHECKPOINT_TEMP = /^\.model\.ckpt-\d+\.[0-9a-f]{8}\.tmp$/;
const MODEL_FILE = "model.safetensors";
const OPTIMIZER_FILE = "optimizer.safetensors";

/** The `model.ckpt-*` directories of `modelDir`, oldest first. */
async function checkpointDirectories(modelDir: string): Promise<string[]> {
  const { readdir } = await nodeFs();
  let entries;
  try {
    entries = await readdir(modelDir, { withFileTypes: true });
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === "ENOENT") return [];
    if (code === "ENOTDIR") throw new Error(`model_dir ${modelDir} is a file, not a directory`);
    throw error;
  }
  return entries.filter((e) => e.isDirectory() && CHECKPOINT_DIR.test(e.name))
    .map((e) => e.name)
    .sort((a, b) => Number(CHECKPOINT_DIR.exec(a)![1]) - Number(CHECKPOINT_DIR.exec(b)![1]));
}

/**
 * Saves a training checkpoint in tzrec's layout: the directory
 * `<modelDir>/model.ckpt-<step>` (step counted from 0, as tzrec's `global_step`:
 * the checkpoint after N optimizer steps is `model.ckpt-<N-1>`) holding
 * `model.safetensors` ({@link modelCheckpoint}: parameters and buffers) and
 * `optimizer.safetensors` (optimizer state, the step count, the position in
 * the data and the seed), as tzrec's checkpoint holds `model/` and
 * `optimizer/`. Returns the directory.
 *
 * The directory is written as `.model.ckpt-<step>.<8 hex>.tmp`, its files
 * fsynced, then renamed into place, so {@link latestCheckpoint} only ever sees
 * complete checkpoints; temporary directories of an earlier killed save are
 * removed first. With `keepCheckpointMax` only the newest that many
 * checkpoints are kept (tzrec's `keep_checkpoint_max`). A model holding NaN or
 * infinity is refused before anything is written.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, readdir, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { latestCheckpoint, restoreCheckpoint, saveTrainingCheckpoint } from "./checkpoint.ts";
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
 * });
 * const batch = { size: 2, features: [{ values: Float32Array.of(-1, 1) }], columns: { clk: Float32Array.of(0, 1) } };
 * const model = new MMoEModel(config, { maxBatch: 2, seed: 7 });
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * for (let i = 1; i <= 3; i++) {
 *   model.trainStep(batch);
 *   await saveTrainingCheckpoint(dir, model, {
 *     position: { epoch: i + 1, batchesInEpoch: 0 },
 *     seed: 7,
 *     keepCheckpointMax: 2,
 *   });
 * }
 * assert.deepEqual((await readdir(dir)).sort(), ["model.ckpt-1", "model.ckpt-2"]);
 * const latest = (await latestCheckpoint(dir))!;
 * assert.equal(latest, join(dir, "model.ckpt-2"));
 * const resumed = new MMoEModel(config, { maxBatch: 2, seed: 7 });
 * const state = await restoreCheckpoint(resumed, latest);
 * assert.deepEqual(state, { step: 3, training: { position: { epoch: 4, batchesInEpoch: 0 }, seed: 7 } });
 * assert.equal(resumed.trainStep(batch).total, model.trainStep(batch).total);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function saveTrainingCheckpoint(
  modelDir: string,
  model: CheckpointModel,
  options: SaveTrainingOptions,
): Promise<string> {
  const { mkdir, readdir, rename, rm } = await nodeFs();
  const { join } = await nodePath();
  if (model.step < 1) {
    throw new RangeError(`saving a training checkpoint: the model has not trained (step 0)`);
  }
  const keep = options.keepCheckpointMax ?? 0;
  if (!isCount(keep)) {
    throw new RangeError(`keepCheckpointMax must be a non-negative integer, got ${keep}`);
  }
  // Both encoded before the directory is touched: a diverged model throws here.
  const modelBytes = modelCheckpoint(model);
  const optimizerBytes = optimizerCheckpoint(model, options);
  const name = `model.ckpt-${model.step - 1}`;
  const target = join(modelDir, name);
  const temporary = join(modelDir, temporaryName(name, randomSuffix()));
  try {
    await mkdir(modelDir, { recursive: true });
    for (const entry of await readdir(modelDir)) {
      if (CHECKPOINT_TEMP.test(entry)) {
        await rm(join(modelDir, entry), { recursive: true, force: true });
      }
    }
    await mkdir(temporary);
    await writeSynced(join(temporary, MODEL_FILE), modelBytes);
    await writeSynced(join(temporary, OPTIMIZER_FILE), optimizerBytes);
    await syncDirectory(temporary);
    // A checkpoint of this step already there (a run redone from an earlier
    // one) is retired under a temporary name first: rename cannot replace a
    // non-empty directory.
    const retired = join(modelDir, temporaryName(name, randomSuffix()));
    const replacing = await rename(target, retired).then(() => true, () => false);
    await rename(temporary, target);
    await syncDirectory(modelDir);
    if (replacing) await rm(retired, { recursive: true, force: true });
  } catch (error) {
    await rm(temporary, { recursive: true, force: true }).catch(() => {});
    throw new Error(`saving checkpoint ${target}: ${(error as Error).message}`, { cause: error });
  }
  if (keep > 0) {
    const all = await checkpointDirectories(modelDir);
    for (const old of all.slice(0, Math.max(0, all.length - keep))) {
      if (old === name) continue;
      // Retired by a rename first, so a kill mid-removal leaves a temporary
      // directory (removed by the next save), never a torn checkpoint.
      const retired = join(modelDir, temporaryName(old, randomSuffix()));
      await rename(join(modelDir, old), retired);
      await rm(retired, { recursive: true, force: true });
    }
  }
  return target;
}

/**
 * The newest checkpoint under `modelDir`, as tzrec's `latest_checkpoint`
 * finds it: the `model.ckpt-<step>` directory with the largest step, else
 * `modelDir` itself when it holds a `model.safetensors` (a model exported by
 * `examples/train.ts`, or a tzrec state_dict converted to safetensors), else
 * null (also when `modelDir` does not exist). A `modelDir` that is a file is
 * an error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { latestCheckpoint } from "./checkpoint.ts";
 * assert.equal(await latestCheckpoint("no/such/model_dir"), null);
 * ```
 */
export async function latestCheckpoint(modelDir: string): Promise<string | null> {
  const [{ stat }, { join }] = await Promise.all([nodeFs(), nodePath()]);
  const directories = await checkpointDirectories(modelDir);
  if (directories.length > 0) return join(modelDir, directories[directories.length - 1]);
  const exported = await stat(join(modelDir, MODEL_FILE)).then((s) => s.isFile(), () => false);
  return exported ? modelDir : null;
}

/** The header's metadata of a safetensors file, reading only the header (checked when it carries `header_crc32`). */
async function readMetadata(path: string): Promise<Record<string, string>> {
  const { open } = await nodeFs();
  const file = await open(path, "r");
  try {
    const length = new Uint8Array(8);
    const { bytesRead: lengthRead } = await file.read(length, 0, 8, 0);
    const n = lengthRead < 8 ? 0n : new DataView(length.buffer).getBigUint64(0, true);
    const size = n > BigInt(MAX_HEADER_BYTES) ? 0 : Number(n);
    const bytes = new Uint8Array(8 + size);
    bytes.set(length);
    const { bytesRead } = size > 0 ? await file.read(bytes, 8, size, 8) : { bytesRead: 0 };
    const { header } = parseHeader(bytes.subarray(0, lengthRead + bytesRead), path);
    const { metadata, infos } = readHeader(header, path);
    const headerCrc = metadata[HEADER_CRC_KEY];
    if (headerCrc !== undefined && headerChecksum(metadata, infos) !== headerCrc) {
      throw new RangeError(`${path}: header checksum mismatch: the header is corrupt`);
    }
    return metadata;
  } finally {
    await file.close();
  }
}

/** A non-negative integer metadata value, or an error naming the file and key. */
function countIn(metadata: Record<string, string>, key: string, path: string): number {
  const text = metadata[key];
  if (text === undefined || !/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new RangeError(`${path}: metadata ${key} ${JSON.stringify(text ?? null)} is not a count`);
  }
  return Number(text);
}

function stateOf(metadata: Record<string, string>, path: string): CheckpointState {
  if (metadata.format !== OPTIMIZER_FORMAT) {
    // A model file alone: weights, with a step count when saved with its optimizer.
    const step = metadata.with_optimizer === "true" ? countIn(metadata, "step", path) : 0;
    return { step, training: null };
  }
  const epoch = countIn(metadata, "epoch", path);
  if (epoch < 1) throw new RangeError(`${path}: metadata epoch 0 is not a 1-based epoch`);
  return {
    step: countIn(metadata, "step", path),
    training: {
      position: { epoch, batchesInEpoch: countIn(metadata, "batches_in_epoch", path) },
      seed: countIn(metadata, "seed", path),
    },
  };
}

/** The files of a checkpoint directory (`optimizer` null when it has none). */
async function checkpointFiles(path: string): Promise<{ model: string; optimizer: string | null }> {
  const [{ stat }, { join }] = await Promise.all([nodeFs(), nodePath()]);
  const model = join(path, MODEL_FILE), optimizer = join(path, OPTIMIZER_FILE);
  if (!await stat(model).then((s) => s.isFile(), () => false)) {
    throw new Error(`${path}: no ${MODEL_FILE} (not a checkpoint directory)`);
  }
  return {
    model,
    optimizer: await stat(optimizer).then((s) => s.isFile(), () => false) ? optimizer : null,
  };
}

/**
 * The step count and training state of the checkpoint directory `path`
 * (e.g. from {@link latestCheckpoint}), from the files' headers only: what a
 * resumed run needs (its seed) before it builds the model.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readCheckpointState } from "./checkpoint.ts";
 * await assert.rejects(readCheckpointState("no/such/model.ckpt-9"), /no model\.safetensors/);
 * ```
 */
export async function readCheckpointState(path: string): Promise<CheckpointState> {
  const files = await checkpointFiles(path);
  const file = files.optimizer ?? files.model;
  return stateOf(await readMetadata(file), file);
}

/**
 * Loads the checkpoint directory `path` (a `model.ckpt-<step>` of
 * {@link saveTrainingCheckpoint}, or any directory holding a
 * `model.safetensors`) into `model`, with its optimizer state unless
 * `withOptimizer` is false, and returns its step count and training state.
 * Errors name the file and tensor ({@link loadCheckpoint}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { resolveConfig } from "../config/config.ts";
 * import { MMoEModel } from "../model/mmoe.ts";
 * import { modelCheckpoint, restoreCheckpoint, saveCheckpoint } from "./checkpoint.ts";
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
 * });
 * // A weights-only model.safetensors in a directory restores as step 0.
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * await saveCheckpoint(join(dir, "model.safetensors"), modelCheckpoint(new MMoEModel(config, { maxBatch: 1, seed: 3 })));
 * const model = new MMoEModel(config, { maxBatch: 1 });
 * assert.deepEqual(await restoreCheckpoint(model, dir), { step: 0, training: null });
 * await rm(dir, { recursive: true });
 * ```
 */
export async function restoreCheckpoint(
  model: CheckpointModel,
  path: string,
  options: CheckpointOptions = {},
): Promise<CheckpointState> {
  const files = await checkpointFiles(path);
  const modelBytes = await readCheckpoint(files.model);
  const modelFile = { decoded: decodeSafetensors(modelBytes), source: files.model };
  let optimizerFile: LoadedFile | null = null;
  if (files.optimizer && options.withOptimizer !== false) {
    const bytes = await readCheckpoint(files.optimizer);
    optimizerFile = { decoded: decodeSafetensors(bytes), source: files.optimizer };
  }
  loadFiles(model, modelFile, optimizerFile, options.withOptimizer);
  const training = optimizerFile
    ? stateOf(optimizerFile.decoded.metadata, files.optimizer!).training
    : null;
  return { step: model.step, training };
}

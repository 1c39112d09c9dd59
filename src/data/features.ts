/**
 * Raw records -> the {@link EncodedBatch} that {@link MMoEModel} trains on,
 * with tzrec's feature semantics for the config's `data_config.fg_mode`, and
 * record batching with a seeded shuffle buffer.
 *
 * FG_NONE (tzrec's default; `tzrec/features/feature.py`
 * `_parse_fg_encoded_*`): the column named by `feature_name` holds values
 * that are already encoded. Every sparse feature (`num_buckets`,
 * `hash_bucket_size`, `vocab_list`, `raw_feature` with `boundaries`) holds
 * integer table rows in `[0, rows)` (out of range: an error, or a counted
 * clamp with `outOfRange: "clamp"`); a dense `raw_feature` holds `value_dim`
 * numbers. Multi-values are joined by `data_config.fg_encoded_multival_sep`
 * (`\x03`). A missing value is `fg_encoded_default_value` when set; else no
 * id (sparse) or an error (dense: tzrec would read NaN).
 *
 * FG_DAG / FG_NORMAL (pyfg): the expression's column (`user:user_id` reads
 * `user_id`) holds raw values, encoded per feature kind (tzrec
 * `feature.proto`, `id_feature.py`, `raw_feature.py`):
 *
 * - `num_buckets`: the value is an integer id used as the table row;
 * - `hash_bucket_size`: row = {@link stringHash64}(UTF-8 of the value) mod
 *   size. That is the hash pyfg uses by default (libstdc++ `std::hash`), so
 *   rows equal tzrec's; numbers are hashed by their decimal string.
 * - `vocab_list`: value i -> row i + 2; an unknown value -> row 1 (`<OOV>`);
 *   row 0 is tzrec's `default_value` row, unused since the default is `""`.
 * - `raw_feature` with `boundaries`: row = number of boundaries <= x, both in
 *   f32 (tzrec's `repeated float boundaries`, fg `value_type: float`); a
 *   missing value is tzrec's `default_value` "0", bucketized.
 * - dense `raw_feature`: `value_dim` floats; missing -> zeros (tzrec's
 *   `default_value` "0").
 *
 * Multi-value strings are split on the feature's `separator` (`\x1d`).
 *
 * In both modes arrays (Parquet, JSON) are multi-valued as they are, a
 * missing id value (`""`, `null`, `undefined`, `[]`) gives no id (an empty
 * CSR row, pooled to the zero vector), a weighted `id_feature` reads
 * `id:weight` pairs into {@link SparseInput.weights}, and a raw number that
 * is not finite (`Infinity`, `NaN`, `inf`) is an error unless
 * `nonFinite: "zero"`.
 *
 * @example FG_NONE: encoded ids and numbers in columns named by feature_name
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { FeatureEncoder } from "./features.ts";
 * const config = resolveConfig({
 *   featureConfigs: [
 *     { idFeature: { featureName: "tags", numBuckets: 10, embeddingDim: 4 } },
 *     { idFeature: { featureName: "shop", hashBucketSize: 50, embeddingDim: 4, weighted: true } },
 *     { rawFeature: { featureName: "price" } },
 *   ],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["tags", "shop", "price"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const batch = new FeatureEncoder(config).encode([
 *   { record: { tags: "3\x037", shop: "4:2.5\x0349:0.5", price: "9.5", clk: "1" }, location: "train.csv:2" },
 *   { record: { tags: "", shop: "", price: "0", clk: "0" }, location: "train.csv:3" },
 * ]);
 * assert.deepEqual(batch.features[0], { ids: Int32Array.of(3, 7), offsets: Int32Array.of(0, 2, 2) });
 * assert.deepEqual(batch.features[1], {
 *   ids: Int32Array.of(4, 49),
 *   offsets: Int32Array.of(0, 2, 2),
 *   weights: Float32Array.of(2.5, 0.5),
 * });
 * assert.deepEqual(batch.features[2], { values: Float32Array.of(9.5, 0) });
 * assert.deepEqual(batch.columns.clk, Float32Array.of(1, 0));
 * ```
 * @module
 */
import type {
  FeatureKind,
  ResolvedConfig,
  ResolvedFeature,
  ResolvedMetric,
  ResolvedMLP,
  ResolvedOptimizer,
  ResolvedTable,
  ResolvedTower,
} from "../config/config.ts";
import type { DenseInput, EncodedBatch, SparseInput } from "../core/batch.ts";
import type { LocatedRecord, RawRecord, RawValue } from "../core/records.ts";
import { mulberry32 } from "../core/random.ts";

// The types in this module's signatures, so that its docs are complete.
export type {
  DenseInput,
  EncodedBatch,
  FeatureKind,
  LocatedRecord,
  RawRecord,
  RawValue,
  ResolvedConfig,
  ResolvedFeature,
  ResolvedMetric,
  ResolvedMLP,
  ResolvedOptimizer,
  ResolvedTable,
  ResolvedTower,
  SparseInput,
};

// ------------------------------------------------------------------- errors

/**
 * A record (or a file header) cannot be encoded. `location` is the record's
 * `file:line` (or the file for a missing column), `column` the input column.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FeatureError } from "./features.ts";
 * const error = new FeatureError("train.csv:2: column 'clk': label is missing", "train.csv:2", "clk");
 * assert.equal(error.column, "clk");
 * ```
 */
export class FeatureError extends Error {
  /** `file:line` of the record, or the file for header errors. */
  readonly location: string;
  /** The input column. */
  readonly column: string;
  /** Creates the error with its full message. */
  constructor(message: string, location: string, column: string) {
    super(message);
    this.name = "FeatureError";
    this.location = location;
    this.column = column;
  }
}

function fail(location: string, column: string, detail: string): never {
  throw new FeatureError(`${location}: column '${column}': ${detail}`, location, column);
}

function show(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

// --------------------------------------------------------------------- hash

// libstdc++ std::_Hash_bytes (64-bit size_t), i.e. MurmurHash64A with seed
// 0xc70f6907: the default hash of pyfg's `hash_bucket_size` (tzrec
// docs/source/feature/feature.md: set USE_FARM_HASH_TO_BUCKETIZE=true in
// tzrec for TensorFlow's FarmHash instead). 64-bit words are (hi, lo) pairs
// of uint32 so that no BigInt is needed in the hot loop.
/** Rows an Int32Array id can address. */
const MAX_ROWS = 2 ** 31 - 1;
const MUL_HI = 0xc6a4a793 | 0, MUL_LO = 0x5bd1e995 | 0, SEED_LO = 0xc70f6907 | 0;

/**
 * High word of (hi:lo) * 0xc6a4a7935bd1e995 mod 2^64 (the low word is
 * Math.imul(lo, MUL_LO)). 16-bit limbs keep every partial product below 2^32,
 * so nothing leaves int32/uint32 and no HeapNumber is allocated.
 */
function mulMurmurHi(hi: number, lo: number): number {
  const a0 = lo & 0xffff, a1 = lo >>> 16;
  const t = a0 * 0xe995; // MUL_LO & 0xffff
  const m1 = a1 * 0xe995 + (t >>> 16);
  const m2 = a0 * 0x5bd1 + (m1 & 0xffff); // MUL_LO >>> 16
  const carry = a1 * 0x5bd1 + (m1 >>> 16) + (m2 >>> 16); // high word of lo * MUL_LO
  return (carry + Math.imul(hi, MUL_LO) + Math.imul(lo, MUL_HI)) | 0;
}

let utf8 = new Uint8Array(256);
/** The last hash as [hi, lo] words. */
const hashWords = new Uint32Array(2);

/** UTF-8 of text[start, end) into `utf8` (grown if needed); returns the byte count. */
function encodeUtf8(text: string, start: number, end: number): number {
  if ((end - start) * 3 > utf8.length) utf8 = new Uint8Array((end - start) * 3 * 2);
  const out = utf8;
  let n = 0;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) out[n++] = c;
    else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 63);
    } else if (c >= 0xd800 && c < 0xdc00 && i + 1 < end) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        const p = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        out[n++] = 0xf0 | (p >> 18);
        out[n++] = 0x80 | ((p >> 12) & 63);
        out[n++] = 0x80 | ((p >> 6) & 63);
        out[n++] = 0x80 | (p & 63);
        i++;
      } else {
        out[n++] = 0xef, out[n++] = 0xbf, out[n++] = 0xbd; // lone surrogate -> U+FFFD
      }
    } else if (c >= 0xd800 && c < 0xe000) {
      out[n++] = 0xef, out[n++] = 0xbf, out[n++] = 0xbd;
    } else {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 63);
      out[n++] = 0x80 | (c & 63);
    }
  }
  return n;
}

/** Hash of the UTF-8 of text[start, end) -> hashWords. */
function hashRange(text: string, start: number, end: number): void {
  const n = encodeUtf8(text, start, end);
  const b = utf8;
  // h = seed ^ (n * m)
  let hHi = mulMurmurHi(0, n), hLo = Math.imul(n, MUL_LO) ^ SEED_LO;
  const blocks = n & ~7;
  for (let i = 0; i < blocks; i += 8) {
    // k = shift_mix(word * m) * m; h = (h ^ k) * m
    const wLo = b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
    const wHi = b[i + 4] | (b[i + 5] << 8) | (b[i + 6] << 16) | (b[i + 7] << 24);
    let kHi = mulMurmurHi(wHi, wLo), kLo = Math.imul(wLo, MUL_LO);
    kLo ^= kHi >>> 15;
    const k2Hi = mulMurmurHi(kHi, kLo);
    kLo = Math.imul(kLo, MUL_LO), kHi = k2Hi;
    hHi ^= kHi, hLo ^= kLo;
    const h2Hi = mulMurmurHi(hHi, hLo);
    hLo = Math.imul(hLo, MUL_LO), hHi = h2Hi;
  }
  const tail = n & 7;
  if (tail !== 0) {
    // h = (h ^ little-endian tail bytes) * m
    let tHi = 0, tLo = 0;
    for (let j = tail - 1; j >= 4; j--) tHi = (tHi << 8) | b[blocks + j];
    for (let j = Math.min(tail, 4) - 1; j >= 0; j--) tLo = (tLo << 8) | b[blocks + j];
    hHi ^= tHi, hLo ^= tLo;
    const h2Hi = mulMurmurHi(hHi, hLo);
    hLo = Math.imul(hLo, MUL_LO), hHi = h2Hi;
  }
  // h = shift_mix(shift_mix(h) * m)
  hLo ^= hHi >>> 15;
  const h2Hi = mulMurmurHi(hHi, hLo);
  hLo = Math.imul(hLo, MUL_LO), hHi = h2Hi;
  hashWords[0] = hHi;
  hashWords[1] = hLo ^ (hHi >>> 15);
}

/**
 * x mod size for integers 0 <= x < 2^53 without Float64Mod (a C call in V8):
 * the floored quotient is off by at most one, and q * size is exact.
 */
function modExact(x: number, size: number): number {
  const r = x - Math.floor(x / size) * size;
  return r < 0 ? r + size : r >= size ? r - size : r;
}

/** (hi * 2^32 + lo) mod size for uint32 words, exact for size < 2^37. */
function mod64(hi: number, lo: number, size: number): number {
  if (size <= 2097152) return modExact(modExact(hi, size) * 4294967296 + lo, size);
  const r = modExact(modExact(hi, size) * 65536 + (lo >>> 16), size);
  return modExact(r * 65536 + (lo & 0xffff), size);
}

/**
 * The 64-bit hash of `text`'s UTF-8 bytes that tzrec's feature generator
 * (pyfg) uses for `hash_bucket_size`: libstdc++ `std::hash<std::string>`
 * (`std::_Hash_bytes`, MurmurHash64A with seed `0xc70f6907`). It reproduces
 * tzrec's own test vectors (`id_feature_test.py`: "abc", "efg", "hij", "xyz",
 * 1, 2, 3, 4 -> 33, 44, 66, 13, 95, 70, 13, 56 with 100 buckets).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stringHash64 } from "./features.ts";
 * assert.equal(stringHash64("abc") % 100n, 33n);
 * ```
 */
export function stringHash64(text: string): bigint {
  hashRange(text, 0, text.length);
  return (BigInt(hashWords[0]) << 32n) | BigInt(hashWords[1]);
}

/**
 * The `hash_bucket_size` row of `text`: {@link stringHash64} mod `size`
 * (unsigned, as pyfg does), computed without BigInt.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hashBucket } from "./features.ts";
 * assert.deepEqual(["abc", "efg", "hij", "1"].map((s) => hashBucket(s, 100)), [33, 44, 66, 95]);
 * ```
 */
export function hashBucket(text: string, size: number): number {
  if (!Number.isInteger(size) || size <= 0 || size > MAX_ROWS) {
    throw new RangeError(`size must be an integer in [1, ${MAX_ROWS}], got ${size}`);
  }
  hashRange(text, 0, text.length);
  return mod64(hashWords[0], hashWords[1], size);
}

// ------------------------------------------------------------------ encoder

/** Options of a {@link FeatureEncoder}. */
export interface EncoderOptions {
  /**
   * An id outside `[0, rows)` (a `num_buckets` id, or any FG_NONE id):
   * `"error"` (default) throws a {@link FeatureError}; `"clamp"` moves it to
   * 0 or `rows - 1` and counts it in {@link FeatureEncoder.clampCounts}.
   */
  outOfRange?: "error" | "clamp";
  /**
   * A raw value (dense value, value to bucketize, id weight) that is
   * `Infinity`, `-Infinity` or `NaN`: `"error"` (default) throws a
   * {@link FeatureError}; `"zero"` uses 0 instead and counts it in
   * {@link FeatureEncoder.nonFiniteCounts}.
   */
  nonFinite?: "error" | "zero";
  /**
   * Read the label, task-space indicator, sample-weight and grouping-key
   * columns (default true). False for inference requests, which carry
   * features only.
   */
  labels?: boolean;
}

/** An input column the encoder reads, and what needs it (for error messages). */
export interface RequiredColumn {
  /** Column name. */
  column: string;
  /** `feature brand`, `tower ctr label`, `data_config.label_fields`, ... */
  neededBy: string;
}

const NUM_BUCKETS = 0, HASH = 1, VOCAB = 2, BOUNDARIES = 3, DENSE = 4;
const KINDS = {
  num_buckets: NUM_BUCKETS,
  hash_bucket: HASH,
  vocab: VOCAB,
  boundaries: BOUNDARIES,
  dense: DENSE,
};
/** tzrec vocab_list without default_bucketize_value: row 1 is `<OOV>`. */
const UNKNOWN_ROW = 1;
/** tzrec RawFeature `default_value` "0": what a missing raw value becomes (FG_DAG). */
const RAW_DEFAULT = 0;

/** Per-feature encoding state; one shape for every kind (monomorphic hot loop). */
interface Slot {
  name: string;
  column: string;
  /** Encoding; FG_NONE ids of every sparse kind are read as NUM_BUCKETS (already rows). */
  kind: number;
  encoded: boolean;
  rows: number;
  width: number;
  /** Multi-value separator, or "" for none. */
  separator: string;
  /** The separator's char code if it is one UTF-16 unit, else -1. */
  separatorCode: number;
  boundaries: Float32Array;
  vocab: Map<string, number>;
  weighted: boolean;
  /** FG_NONE fg_encoded_default_value: ids or values of a missing value; null when unset. */
  encodedDefault: number[] | null;
  clamp: boolean;
  clamped: number;
  zeroNonFinite: boolean;
  nonFinite: number;
  /** Bucket of a missing raw value (FG_DAG boundaries kind). */
  missingBucket: number;
  /** Reused id buffer; encode copies the used prefix out. */
  scratch: Int32Array;
  /** Reused weight buffer of weighted features (parallel to scratch). */
  weightScratch: Float32Array;
  /** Ids written so far in the current encode. */
  count: number;
  /** Offsets output of the current encode (sparse kinds). */
  offsets: Int32Array;
  /** Values output of the current encode (dense). */
  values: Float32Array;
}

const EMPTY_I32 = new Int32Array(0), EMPTY_F32 = new Float32Array(0);

/** Number of boundaries <= x (binary search; a value on a boundary goes up). */
function bucketOf(boundaries: Float32Array, x: number): number {
  let lo = 0, hi = boundaries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (boundaries[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const POWERS_OF_TEN = Float64Array.from({ length: 23 }, (_, k) => 10 ** k);

/**
 * `[-+]digits[.digits]` with at most 15 digits, parsed exactly as Number()
 * does (an integer below 2^53 divided by an exact power of ten rounds once:
 * Clinger's fast path); NaN for anything else, which then goes to Number().
 */
function parseSimpleDecimal(text: string): number {
  const length = text.length;
  let i = 0, mantissa = 0, digits = 0, scale = 0, negative = false;
  const first = text.charCodeAt(0);
  if (first === 45 || first === 43) negative = first === 45, i = 1;
  for (; i < length; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit >= 0 && digit <= 9) {
      mantissa = mantissa * 10 + digit;
      digits++;
      if (scale > 0) scale++;
    } else if (digit === -2 && scale === 0) scale = 1; // "."
    else return NaN;
  }
  if (digits === 0 || digits > 15) return NaN;
  const x = scale > 1 ? mantissa / POWERS_OF_TEN[scale - 1] : mantissa;
  return negative ? -x : x;
}

/**
 * The number a text holds: Number(text), plus the spellings of non-finite
 * values that CSV writers use (`inf`, `-inf`, `nan`, any case); undefined
 * for text that is not a number ("", " ", "abc").
 */
function parseNumber(text: string): number | undefined {
  const simple = parseSimpleDecimal(text);
  if (simple === simple) return simple;
  const x = +text;
  if (x === x) return x === 0 && text.trim() === "" ? undefined : x;
  const word = text.trim().toLowerCase();
  if (word === "nan" || word === "+nan" || word === "-nan") return NaN;
  if (word === "inf" || word === "+inf") return Infinity;
  if (word === "-inf") return -Infinity;
  return undefined;
}

/**
 * A raw number that must be a finite float32 (what the model reads): the
 * number, or 0 (counted) under `nonFinite: "zero"`.
 */
function finite(slot: Slot, x: number, location: string, what: string): number {
  if (Number.isFinite(Math.fround(x))) return x;
  if (!slot.zeroNonFinite) fail(location, slot.column, `${what} is not a finite float32`);
  slot.nonFinite++;
  return 0;
}

/** A raw value of a feature as a number, or a FeatureError naming it. */
function numberOf(slot: Slot, text: string, location: string, what: string): number {
  const x = parseNumber(text);
  if (x === undefined) fail(location, slot.column, `${JSON.stringify(text)} is not a number`);
  return finite(slot, x, location, what);
}

/** An id outside [0, rows): an error, or the nearest row, counted. */
function outOfRange(slot: Slot, id: number, text: string, location: string): number {
  if (!slot.clamp) fail(location, slot.column, `id ${text} is out of range [0, ${slot.rows})`);
  slot.clamped++;
  return id < 0 ? 0 : slot.rows - 1;
}

function grow(slot: Slot): void {
  const bigger = new Int32Array(slot.scratch.length * 2);
  bigger.set(slot.scratch);
  slot.scratch = bigger;
  if (slot.weighted) {
    const weights = new Float32Array(bigger.length);
    weights.set(slot.weightScratch);
    slot.weightScratch = weights;
  }
}

/** Appends the id of text[start, end) (non-empty) at ids[n]; returns n + 1. */
function appendPiece(
  slot: Slot,
  text: string,
  start: number,
  end: number,
  n: number,
  location: string,
): number {
  if (n === slot.scratch.length) grow(slot);
  let id: number;
  switch (slot.kind) {
    case NUM_BUCKETS: {
      let i = start, negative = false;
      const sign = text.charCodeAt(i);
      if (sign === 45 || sign === 43) negative = sign === 45, i++;
      let value = 0;
      if (i === end) value = NaN;
      for (; i < end; i++) {
        const digit = text.charCodeAt(i) - 48;
        if (digit < 0 || digit > 9) {
          value = NaN;
          break;
        }
        value = value * 10 + digit;
      }
      if (negative) value = -value;
      if (value >= 0 && value < slot.rows) id = value;
      else {
        const piece = text.slice(start, end);
        if (value !== value) {
          fail(location, slot.column, `${JSON.stringify(piece)} is not an integer id`);
        }
        id = outOfRange(slot, value, piece, location);
      }
      break;
    }
    case HASH:
      hashRange(text, start, end);
      id = mod64(hashWords[0], hashWords[1], slot.rows);
      break;
    case VOCAB:
      id = slot.vocab.get(start === 0 && end === text.length ? text : text.slice(start, end)) ??
        UNKNOWN_ROW;
      break;
    default: {
      const piece = start === 0 && end === text.length ? text : text.slice(start, end);
      id = bucketOf(slot.boundaries, Math.fround(numberOf(slot, piece, location, "value")));
    }
  }
  slot.scratch[n] = id;
  return n + 1;
}

/** Appends the id of a number, bigint or boolean; returns the new count. */
function appendScalar(
  slot: Slot,
  value: number | bigint | boolean,
  n: number,
  location: string,
): number {
  if (slot.kind === HASH || slot.kind === VOCAB) {
    const text = String(value);
    return appendPiece(slot, text, 0, text.length, n, location);
  }
  if (n === slot.scratch.length) grow(slot);
  const x = typeof value === "number" ? value : Number(value);
  if (slot.kind === NUM_BUCKETS) {
    if (!Number.isInteger(x)) fail(location, slot.column, `${show(value)} is not an integer id`);
    slot.scratch[n] = x >= 0 && x < slot.rows ? x : outOfRange(slot, x, String(value), location);
  } else {
    const y = finite(slot, x, location, "value");
    slot.scratch[n] = bucketOf(slot.boundaries, Math.fround(y));
  }
  return n + 1;
}

/**
 * The num_buckets fast path: the ids of a string with a one-character
 * separator, parsed in one pass without slicing; returns the new count.
 */
function appendIntegers(slot: Slot, text: string, n: number, location: string): number {
  const length = text.length, separator = slot.separatorCode, rows = slot.rows;
  let start = 0;
  while (start < length) {
    let i = start, value = 0, negative = false, valid = true;
    const first = text.charCodeAt(i);
    if (first === 45 || first === 43) negative = first === 45, i++;
    const digitsFrom = i;
    for (; i < length; i++) {
      const c = text.charCodeAt(i);
      if (c === separator) break;
      const digit = c - 48;
      if (digit < 0 || digit > 9) valid = false;
      value = value * 10 + digit;
    }
    if (i > start) {
      if (!valid || i === digitsFrom) {
        fail(location, slot.column, `${JSON.stringify(text.slice(start, i))} is not an integer id`);
      }
      if (negative) value = -value;
      if (n === slot.scratch.length) grow(slot);
      slot.scratch[n++] = value >= 0 && value < rows
        ? value
        : outOfRange(slot, value, text.slice(start, i), location);
    }
    start = i + 1;
  }
  return n;
}

/** Whether a raw value is missing: `""`, `null`, `undefined` or `[]`. */
function isMissing(value: RawValue): boolean {
  return value === undefined || value === null || value === "" ||
    (typeof value === "object" && value.length === 0);
}

/** Appends the ids of one raw value (all of a multi-value); returns the new count. */
function appendValue(slot: Slot, value: RawValue, n: number, location: string): number {
  if (typeof value === "string") {
    const length = value.length;
    if (length === 0) return n;
    if (slot.kind === NUM_BUCKETS && slot.separatorCode >= 0) {
      return appendIntegers(slot, value, n, location);
    }
    const separator = slot.separator;
    let next = separator === "" ? -1 : value.indexOf(separator);
    if (next < 0) return appendPiece(slot, value, 0, length, n, location);
    let start = 0;
    for (;;) {
      const end = next < 0 ? length : next;
      if (end > start) n = appendPiece(slot, value, start, end, n, location);
      if (next < 0) return n;
      start = next + separator.length;
      next = value.indexOf(separator, start);
    }
  }
  if (value === null || value === undefined) return n;
  if (typeof value !== "object") return appendScalar(slot, value, n, location);
  for (let i = 0; i < value.length; i++) {
    const item = value[i] as string | number | bigint | null | undefined;
    if (item === null || item === undefined || item === "") continue;
    n = typeof item === "string"
      ? appendPiece(slot, item, 0, item.length, n, location)
      : appendScalar(slot, item, n, location);
  }
  return n;
}

/** Appends one `id:weight` piece of a weighted feature; returns the new count. */
function appendWeightedPiece(slot: Slot, piece: string, n: number, location: string): number {
  const colon = piece.lastIndexOf(":");
  if (colon <= 0 || colon === piece.length - 1) {
    fail(location, slot.column, `${JSON.stringify(piece)} is not id:weight (weighted feature)`);
  }
  const weight = numberOf(slot, piece.slice(colon + 1), location, "weight");
  const next = appendPiece(slot, piece, 0, colon, n, location);
  slot.weightScratch[n] = weight;
  return next;
}

/**
 * Appends the `id:weight` pairs of one raw value of a weighted feature (tzrec
 * `id_feature.weighted`: FG_NONE `4:2.3\x035:2.4`, FG_DAG `4:0.1\x1d5:0.2`,
 * or a list of `id:weight` strings); returns the new count.
 */
function appendWeighted(slot: Slot, value: RawValue, n: number, location: string): number {
  if (value === null || value === undefined) return n;
  if (typeof value === "string") {
    if (value === "") return n;
    const separator = slot.separator;
    let start = 0;
    for (;;) {
      const next = value.indexOf(separator, start);
      const end = next < 0 ? value.length : next;
      if (end > start) n = appendWeightedPiece(slot, value.slice(start, end), n, location);
      if (next < 0) return n;
      start = next + separator.length;
    }
  }
  if (typeof value !== "object") {
    fail(location, slot.column, `${show(value)} is not id:weight (weighted feature)`);
  }
  for (const item of value) {
    if (item === null || item === undefined || item === "") continue;
    if (typeof item !== "string") {
      fail(location, slot.column, `${show(item)} is not id:weight (weighted feature)`);
    }
    n = appendWeightedPiece(slot, item, n, location);
  }
  return n;
}

/** Appends the FG_NONE default ids of a missing value (weight 1); returns the new count. */
function appendDefault(slot: Slot, n: number): number {
  for (const id of slot.encodedDefault!) {
    if (n === slot.scratch.length) grow(slot);
    slot.scratch[n] = id;
    if (slot.weighted) slot.weightScratch[n] = 1;
    n++;
  }
  return n;
}

/** Writes one dense value (width floats) at out[base..]. */
function fillDense(
  slot: Slot,
  value: RawValue,
  out: Float32Array,
  base: number,
  location: string,
): void {
  const width = slot.width;
  if (isMissing(value)) {
    if (slot.encodedDefault !== null) out.set(slot.encodedDefault, base);
    else if (slot.encoded) {
      fail(
        location,
        slot.column,
        "value is missing (FG_NONE reads encoded values; set fg_encoded_default_value for missing ones)",
      );
    }
    return; // FG_DAG: tzrec's default_value "0" (the output is zero-filled)
  }
  if (typeof value === "string") {
    const separator = slot.separator;
    let count = 0, start = 0;
    for (;;) {
      const next = separator === "" ? -1 : value.indexOf(separator, start);
      const piece = next < 0 && start === 0
        ? value
        : value.slice(start, next < 0 ? value.length : next);
      const x = numberOf(slot, piece, location, "value");
      if (count < width) out[base + count] = x;
      count++;
      if (next < 0) break;
      start = next + separator.length;
    }
    if (count !== width) {
      fail(
        location,
        slot.column,
        `expected ${width} value${width === 1 ? "" : "s"}` +
          (width > 1 ? ` separated by ${JSON.stringify(separator)}` : "") + `, got ${count}`,
      );
    }
    return;
  }
  if (typeof value !== "object") {
    if (width !== 1) fail(location, slot.column, `expected ${width} values, got 1`);
    out[base] = finite(slot, Number(value), location, "value");
    return;
  }
  if (value!.length !== width) {
    fail(location, slot.column, `expected ${width} values, got ${value!.length}`);
  }
  for (let i = 0; i < width; i++) {
    const item = value![i];
    out[base + i] = typeof item === "string"
      ? numberOf(slot, item, location, "value")
      : finite(slot, Number(item), location, "value");
  }
}

/** Resets a slot's outputs for a batch of B rows. */
function beginSlot(slot: Slot, B: number): void {
  slot.count = 0;
  if (slot.kind === DENSE) slot.values = new Float32Array(B * slot.width);
  else slot.offsets = new Int32Array(B + 1);
}

/** Encodes one record's value of a slot's feature as row b. */
function encodeSlot(slot: Slot, value: RawValue, b: number, location: string): void {
  if (slot.kind === DENSE) {
    fillDense(slot, value, slot.values, b * slot.width, location);
    return;
  }
  let n = slot.count;
  if (isMissing(value) && (slot.encodedDefault !== null || slot.kind === BOUNDARIES)) {
    if (slot.encodedDefault !== null) n = appendDefault(slot, n);
    else {
      // FG_DAG raw_feature: tzrec's default_value "0", bucketized.
      if (n === slot.scratch.length) grow(slot);
      slot.scratch[n++] = slot.missingBucket;
    }
  } else if (slot.weighted) n = appendWeighted(slot, value, n, location);
  else n = appendValue(slot, value, n, location);
  slot.count = n;
  slot.offsets[b + 1] = n;
}

/** What a label, indicator or sample-weight column must hold, from every tower that reads it. */
interface LabelRule {
  column: string;
  /** Binary cross-entropy labels: in [0, 1]. */
  binary: string | null;
  /** Labels of a binary metric (AUC, accuracy): 0 or 1. */
  zeroOne: string | null;
  /** Softmax labels: integer class ids in [0, classes). */
  classes: number;
  classesNeededBy: string | null;
  /** Sample weights: >= 0. */
  weight: string | null;
}

/** A label / indicator / sample weight as a finite f32 checked against its rule. */
function labelValue(value: RawValue, rule: LabelRule, location: string): number {
  const column = rule.column;
  let y: number;
  if (typeof value === "number") y = value;
  else if (typeof value === "string") {
    if (value === "") fail(location, column, "value is missing");
    const x = parseNumber(value);
    if (x === undefined) fail(location, column, `${JSON.stringify(value)} is not a number`);
    y = x;
  } else if (typeof value === "bigint" || typeof value === "boolean") y = Number(value);
  else if (value === null || value === undefined) fail(location, column, "value is missing");
  else fail(location, column, `expected one number, got a list of ${value.length}`);
  if (!Number.isFinite(Math.fround(y))) {
    fail(location, column, `value ${show(value)} is not a finite float32`);
  }
  if (rule.binary !== null && !(y >= 0 && y <= 1)) {
    fail(location, column, `label ${y} is outside [0, 1] (${rule.binary})`);
  }
  if (rule.zeroOne !== null && y !== 0 && y !== 1) {
    fail(location, column, `label ${y} is not 0 or 1 (${rule.zeroOne})`);
  }
  if (rule.classesNeededBy !== null && !(Number.isInteger(y) && y >= 0 && y < rule.classes)) {
    fail(
      location,
      column,
      `label ${y} is not a class id in [0, ${rule.classes}) (${rule.classesNeededBy})`,
    );
  }
  if (rule.weight !== null && y < 0) {
    fail(location, column, `sample weight ${y} is negative (${rule.weight})`);
  }
  return y;
}

/**
 * Encodes raw records into {@link EncodedBatch}es for {@link MMoEModel}: one
 * CSR `{ids, offsets}` (plus `weights` for a weighted feature) per embedded
 * feature and `{values}` per dense feature, in the group's order, every
 * label, task-space indicator and sample-weight column the towers and
 * `data_config` name (checked against the towers' losses and metrics: BCE
 * labels in [0, 1], labels of a binary AUC or accuracy 0 or 1, softmax labels
 * class ids, everything finite, sample weights >= 0),
 * and the grouping keys of `grouped_auc` metrics. Built once per config;
 * `encode` allocates only its outputs.
 *
 * Input semantics follow the config's `fg_mode`: FG_NONE (tzrec's default)
 * reads the column named by `feature_name` and takes its values as encoded
 * (ids are table rows, multi-values split on `fg_encoded_multival_sep`);
 * FG_DAG / FG_NORMAL read the expression's column and encode raw values
 * (hashing, vocabulary, bucketizing) as pyfg does.
 *
 * @example Clamp out-of-range ids and count them
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { FeatureEncoder, FeatureError } from "./features.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "user_id", numBuckets: 100, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["user_id"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const rows = [{ record: { user_id: "120", clk: "1" }, location: "train.csv:2" }];
 * assert.throws(
 *   () => new FeatureEncoder(config).encode(rows),
 *   (e) => e instanceof FeatureError && e.message === "train.csv:2: column 'user_id': id 120 is out of range [0, 100)",
 * );
 * const clamping = new FeatureEncoder(config, { outOfRange: "clamp" });
 * assert.deepEqual(clamping.encode(rows).features[0], { ids: Int32Array.of(99), offsets: Int32Array.of(0, 1) });
 * assert.deepEqual(clamping.clampCounts, { user_id: 1 });
 * ```
 */
export class FeatureEncoder {
  /** Label, indicator and sample-weight columns each batch carries, in order. */
  readonly columns: readonly string[];
  /** Every input column read and what needs it (features first). */
  readonly requiredColumns: readonly RequiredColumn[];
  private readonly slots: Slot[];
  private readonly rules: LabelRule[];
  /** Slots of grouping keys: a group feature's index, or -1 - index into `keySlots`. */
  private readonly groupKeys: { name: string; slot: number }[];
  private readonly keySlots: Slot[];

  /** Prepares per-feature state from a resolved config. */
  constructor(config: ResolvedConfig, options: EncoderOptions = {}) {
    const outOfRange = options.outOfRange ?? "error";
    if (outOfRange !== "error" && outOfRange !== "clamp") {
      throw new TypeError(
        `outOfRange must be "error" or "clamp", got ${JSON.stringify(outOfRange)}`,
      );
    }
    const nonFinite = options.nonFinite ?? "error";
    if (nonFinite !== "error" && nonFinite !== "zero") {
      throw new TypeError(`nonFinite must be "error" or "zero", got ${JSON.stringify(nonFinite)}`);
    }
    const labels = options.labels ?? true;
    const makeSlot = (f: ResolvedFeature): Slot => {
      const boundaries = Float32Array.from(f.boundaries); // tzrec: repeated float
      return {
        name: f.name,
        column: f.column,
        kind: f.encoded && f.kind !== "dense" ? NUM_BUCKETS : KINDS[f.kind],
        encoded: f.encoded,
        rows: f.rows,
        width: f.width,
        separator: f.separator,
        separatorCode: f.separator.length === 1 ? f.separator.charCodeAt(0) : -1,
        boundaries,
        vocab: f.vocab,
        weighted: f.weighted,
        encodedDefault: f.encodedDefault,
        clamp: outOfRange === "clamp",
        clamped: 0,
        zeroNonFinite: nonFinite === "zero",
        nonFinite: 0,
        missingBucket: bucketOf(boundaries, RAW_DEFAULT),
        scratch: new Int32Array(1024),
        weightScratch: f.weighted ? new Float32Array(1024) : EMPTY_F32,
        count: 0,
        offsets: EMPTY_I32,
        values: EMPTY_F32,
      };
    };
    this.slots = config.features.map(makeSlot);
    const keyFeatures = labels ? config.groupingFeatures : [];
    this.keySlots = keyFeatures.map(makeSlot);
    const required: RequiredColumn[] = [...config.features, ...keyFeatures].map((f) => ({
      column: f.column,
      neededBy: `feature ${f.name}`,
    }));
    this.groupKeys = [];
    if (labels) {
      for (const tower of config.towers) {
        for (const metric of tower.metrics) {
          if (metric.kind !== "grouped_auc") continue;
          if (this.groupKeys.some((k) => k.name === metric.groupingKey)) continue;
          const inGroup = config.features.findIndex((f) => f.name === metric.groupingKey);
          this.groupKeys.push({
            name: metric.groupingKey,
            slot: inGroup >= 0
              ? inGroup
              : -1 - keyFeatures.findIndex((f) => f.name === metric.groupingKey),
          });
        }
      }
    }
    const rules: LabelRule[] = [];
    const need = (column: string | null, neededBy: string): LabelRule | null => {
      if (column === null) return null;
      let rule = rules.find((r) => r.column === column);
      if (rule === undefined) {
        rule = {
          column,
          binary: null,
          zeroOne: null,
          classes: Infinity,
          classesNeededBy: null,
          weight: null,
        };
        rules.push(rule);
        required.push({ column, neededBy });
      }
      return rule;
    };
    if (labels) {
      for (const tower of config.towers) {
        const label = need(tower.label, `tower ${tower.name} label`)!;
        for (const loss of tower.losses) {
          if (loss.kind === "binary_cross_entropy") label.binary ??= loss.name;
          if (loss.kind === "softmax_cross_entropy" && tower.numClass < label.classes) {
            label.classes = tower.numClass;
            label.classesNeededBy = loss.name;
          }
        }
        // Binary metrics (torchmetrics binary AUROC / accuracy) take labels 0 or 1.
        for (const metric of tower.metrics) {
          const binary = metric.kind === "auc" || metric.kind === "exact_auc" ||
            metric.kind === "grouped_auc" || (metric.kind === "accuracy" && metric.numClass === 1);
          if (binary && tower.numClass === 1) label.zeroOne ??= metric.name;
        }
        need(tower.taskSpaceIndicatorLabel, `tower ${tower.name} task_space_indicator_label`);
        const weight = need(tower.sampleWeightName, `tower ${tower.name} sample_weight_name`);
        if (weight !== null) weight.weight ??= `sample_weight_name of tower ${tower.name}`;
      }
      for (const column of config.data.labelFields) need(column, "data_config.label_fields");
      for (const column of config.data.sampleWeightFields) {
        need(column, "data_config.sample_weight_fields")!.weight ??=
          "data_config.sample_weight_fields";
      }
    }
    this.rules = rules;
    this.columns = rules.map((r) => r.column);
    this.requiredColumns = required;
  }

  /**
   * Number of clamped ids per sparse feature since construction (always 0
   * with `outOfRange: "error"`).
   */
  get clampCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const slot of this.slots) if (slot.kind === NUM_BUCKETS) counts[slot.name] = slot.clamped;
    return counts;
  }

  /**
   * Number of non-finite raw values replaced by 0 per feature since
   * construction (always 0 with `nonFinite: "error"`).
   */
  get nonFiniteCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const slot of this.slots) if (slot.nonFinite > 0) counts[slot.name] = slot.nonFinite;
    return counts;
  }

  /**
   * Throws a {@link FeatureError} naming every column the encoder reads that
   * `header` lacks, on one line (`train.csv: missing column 'brand' (needed by
   * feature brand)`, or `train.csv: missing 3 columns: 'brand', ...`), so a
   * bad file fails before training starts.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { resolveConfig } from "../config/config.ts";
   * import { FeatureEncoder } from "./features.ts";
   * const config = resolveConfig({
   *   featureConfigs: [{ idFeature: { featureName: "brand", numBuckets: 10, embeddingDim: 4 } }],
   *   modelConfig: {
   *     featureGroups: [{ groupName: "all", featureNames: ["brand"] }],
   *     mmoe: {
   *       expertMlp: { hiddenUnits: [4] },
   *       numExpert: 2,
   *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
   *     },
   *   },
   * });
   * const encoder = new FeatureEncoder(config);
   * encoder.checkColumns(["brand", "clk"], "train.csv");
   * assert.throws(() => encoder.checkColumns(["clk"], "train.csv"), {
   *   message: "train.csv: missing column 'brand' (needed by feature brand)",
   * });
   * ```
   */
  checkColumns(header: readonly string[], file: string): void {
    const present = new Set(header);
    const missing = new Map<string, string>();
    for (const { column, neededBy } of this.requiredColumns) {
      if (!present.has(column) && !missing.has(column)) missing.set(column, neededBy);
    }
    if (missing.size === 0) return;
    const [first, neededBy] = [...missing][0];
    const message = missing.size === 1
      ? `${file}: missing column '${first}' (needed by ${neededBy})`
      : `${file}: missing ${missing.size} columns: ${
        [...missing.keys()].map((c) => `'${c}'`).join(", ")
      } (the first needed by ${neededBy})`;
    throw new FeatureError(message, file, first);
  }

  /**
   * Encodes `records` (one batch) into the model's input. Throws a
   * {@link FeatureError} naming the record's location, the column and the
   * value for an id that is not an integer or out of range, a raw value that
   * is not a finite number, or a label that is missing or does not fit its
   * tower's loss.
   *
   * @example Multi-value raw ids (FG_DAG) from a string, an array and a missing value
   * ```ts
   * import assert from "node:assert/strict";
   * import { resolveConfig } from "../config/config.ts";
   * import { FeatureEncoder } from "./features.ts";
   * const config = resolveConfig({
   *   dataConfig: { fgMode: "FG_DAG" },
   *   featureConfigs: [{ idFeature: { featureName: "cate", expression: "item:cate", vocabList: ["a", "b"], embeddingDim: 4 } }],
   *   modelConfig: {
   *     featureGroups: [{ groupName: "all", featureNames: ["cate"] }],
   *     mmoe: {
   *       expertMlp: { hiddenUnits: [4] },
   *       numExpert: 2,
   *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
   *     },
   *   },
   * });
   * const batch = new FeatureEncoder(config, { labels: false }).encode([
   *   { record: { cate: "a\x1dzzz" }, location: "request row 0" },
   *   { record: { cate: ["b"] }, location: "request row 1" },
   *   { record: { cate: null }, location: "request row 2" },
   * ]);
   * // "a" -> 2, "b" -> 3, unknown -> 1 (tzrec's <OOV> row); null -> no id.
   * assert.deepEqual(batch.features[0], { ids: Int32Array.of(2, 1, 3), offsets: Int32Array.of(0, 2, 3, 3) });
   * ```
   */
  encode(records: readonly LocatedRecord[]): EncodedBatch {
    const B = records.length;
    const slots = this.slots, S = slots.length, keySlots = this.keySlots;
    for (const slot of slots) beginSlot(slot, B);
    for (const slot of keySlots) beginSlot(slot, B);
    const rules = this.rules, C = rules.length;
    const labels = rules.map(() => new Float32Array(B));
    // Row-major: each record's fields are read while it is in cache.
    for (let b = 0; b < B; b++) {
      const row = records[b], record = row.record;
      for (let s = 0; s < S; s++) {
        encodeSlot(slots[s], record[slots[s].column], b, row.location);
      }
      for (const slot of keySlots) encodeSlot(slot, record[slot.column], b, row.location);
      for (let c = 0; c < C; c++) {
        labels[c][b] = labelValue(record[rules[c].column], rules[c], row.location);
      }
    }
    const output = (slot: Slot): SparseInput | DenseInput => {
      if (slot.kind === DENSE) return { values: slot.values };
      const input: SparseInput = { ids: slot.scratch.slice(0, slot.count), offsets: slot.offsets };
      if (slot.weighted) input.weights = slot.weightScratch.slice(0, slot.count);
      return input;
    };
    const features = slots.map(output);
    const keys = keySlots.map(output) as SparseInput[];
    for (const slot of [...slots, ...keySlots]) slot.values = EMPTY_F32, slot.offsets = EMPTY_I32;
    const columns: Record<string, Float32Array> = {};
    rules.forEach((rule, c) => columns[rule.column] = labels[c]);
    const batch: EncodedBatch = { size: B, features, columns };
    if (this.groupKeys.length > 0) {
      // tzrec: base_sparse_feat[grouping_key].to_padded_dense(1)[:, 0], the first id or 0.
      batch.groups = {};
      for (const { name, slot } of this.groupKeys) {
        const { ids, offsets } = slot >= 0 ? features[slot] as SparseInput : keys[-1 - slot];
        const first = new Int32Array(B);
        for (let b = 0; b < B; b++) first[b] = offsets[b + 1] > offsets[b] ? ids[offsets[b]] : 0;
        batch.groups[name] = first;
      }
    }
    return batch;
  }
}

// ----------------------------------------------------------------- batching

/** Options of {@link batchRecords}. */
export interface BatchOptions {
  /** Records per batch. */
  batchSize: number;
  /** Drop the last partial batch (tzrec `drop_remainder`). Default false. */
  dropRemainder?: boolean;
  /**
   * Shuffle through a buffer of this many records (tf.data `shuffle`:
   * bounded memory, a uniformly random buffered record leaves as each new one
   * arrives). 0 (default) keeps input order.
   */
  shuffleBufferSize?: number;
  /** Seed of the shuffle; pass e.g. `seed + epoch` for a new order per epoch. Default 0. */
  seed?: number;
}

/**
 * Groups records into encoded batches of `batchSize` (the last partial batch
 * is kept unless `dropRemainder`), optionally shuffled through a seeded,
 * bounded buffer: the same seed gives the same order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { batchRecords, FeatureEncoder } from "./features.ts";
 * const config = resolveConfig({
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 10, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const rows = Array.from({ length: 5 }, (_, i) => ({ record: { item: i, clk: 0 }, location: `row ${i}` }));
 * const sizes: number[] = [];
 * for await (const batch of batchRecords(rows, new FeatureEncoder(config), { batchSize: 2 })) {
 *   sizes.push(batch.size);
 * }
 * assert.deepEqual(sizes, [2, 2, 1]);
 * ```
 */
export async function* batchRecords(
  source: AsyncIterable<LocatedRecord> | Iterable<LocatedRecord>,
  encoder: FeatureEncoder,
  options: BatchOptions,
): AsyncGenerator<EncodedBatch> {
  const { batchSize, dropRemainder = false, shuffleBufferSize = 0, seed = 0 } = options;
  if (!Number.isInteger(batchSize) || batchSize <= 0) {
    throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  }
  if (!Number.isInteger(shuffleBufferSize) || shuffleBufferSize < 0) {
    throw new RangeError(
      `shuffleBufferSize must be a non-negative integer, got ${shuffleBufferSize}`,
    );
  }
  const random = mulberry32(seed);
  const buffer: LocatedRecord[] = [];
  const pending: LocatedRecord[] = [];
  /** Takes the next input record; returns true when a batch is full. */
  const take = (record: LocatedRecord): boolean => {
    if (shuffleBufferSize > 0) {
      if (buffer.length < shuffleBufferSize) {
        buffer.push(record);
        return false;
      }
      const j = Math.floor(random() * shuffleBufferSize);
      const out = buffer[j];
      buffer[j] = record;
      record = out;
    }
    pending.push(record);
    return pending.length === batchSize;
  };
  const flush = (): EncodedBatch => {
    const batch = encoder.encode(pending);
    pending.length = 0;
    return batch;
  };
  if (Symbol.asyncIterator in source) {
    for await (const record of source) if (take(record)) yield flush();
  } else {
    for (const record of source) if (take(record)) yield flush();
  }
  // Drain the buffer in random order (tf.data: uniform picks from what is left).
  while (buffer.length > 0) {
    const j = Math.floor(random() * buffer.length);
    const record = buffer[j];
    buffer[j] = buffer[buffer.length - 1];
    buffer.pop();
    pending.push(record);
    if (pending.length === batchSize) yield flush();
  }
  if (pending.length > 0 && !dropRemainder) yield flush();
}

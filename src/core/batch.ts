/**
 * The encoded batch: the contract between the data side (feature encoder,
 * readers) and the model. It lives below both, so data never imports the
 * model or the kernels.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { EncodedBatch } from "./batch.ts";
 * const batch: EncodedBatch = {
 *   size: 2,
 *   features: [{ ids: Int32Array.of(3, 1, 4), offsets: Int32Array.of(0, 2, 3) }],
 *   columns: { clk: Float32Array.of(1, 0) },
 * };
 * assert.equal(batch.features.length, 1);
 * ```
 * @module
 */

/** One sparse feature of a batch: CSR ids (table rows) per row. */
export interface SparseInput {
  /** Table row of every id, rows concatenated. */
  ids: Int32Array;
  /** size + 1 entries: row b owns ids[offsets[b] .. offsets[b+1]). */
  offsets: Int32Array;
  /** Weighted features only (tzrec `id_feature.weighted`): one weight per id. */
  weights?: Float32Array;
}

/** One dense feature of a batch: size x width values. */
export interface DenseInput {
  /** Row-major values. */
  values: Float32Array;
}

/** An encoded batch: features in group order, plus label/weight columns. */
export interface EncodedBatch {
  /** Rows. */
  size: number;
  /** One entry per feature of the group, in group order. */
  features: (SparseInput | DenseInput)[];
  /** Label, indicator and sample-weight columns by name (size values each). */
  columns: Record<string, Float32Array>;
  /**
   * Keys of `grouped_auc` metrics by grouping feature: the feature's first
   * id per row, 0 when it has none (tzrec `to_padded_dense(1)[:, 0]`).
   */
  groups?: Record<string, Int32Array>;
}

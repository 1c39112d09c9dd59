/**
 * Raw input records shared by the data readers (CSV, Parquet), the feature
 * encoder and the inference API.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { LocatedRecord } from "./records.ts";
 * const row: LocatedRecord = { record: { user_id: "17", price: "9.9", clk: "1" }, location: "train.csv:2" };
 * assert.equal(row.record.user_id, "17");
 * ```
 * @module
 */

/**
 * One raw value as a reader produced it: CSV gives strings (empty string =
 * missing); Parquet and JSON give numbers, bigints, strings, booleans, null
 * (missing) or arrays (multi-value).
 */
export type RawValue =
  | string
  | number
  | bigint
  | boolean
  | null
  | undefined
  | readonly (string | number | bigint)[];

/** One input row: column name -> raw value. */
export type RawRecord = Record<string, RawValue>;

/** A record with where it came from, for error messages (`data/train.csv:17`). */
export interface LocatedRecord {
  /** The values. */
  record: RawRecord;
  /** `file:line` (or `request row 3`) naming the record in errors. */
  location: string;
}

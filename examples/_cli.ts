// Shared pieces of the example CLIs (train.ts, eval.ts, predict.ts): input
// reading by extension, column checks before any work, progress output.
import process from "node:process";
import { inputColumns, readRecords } from "../src/data/readers.ts";
import type { FeatureEncoder } from "../src/data/features.ts";
import type { LocatedRecord } from "../src/core/records.ts";

/** CSV (with the config's delimiter) or Parquet records, skipping and counting bad CSV rows if asked. */
export function records(
  path: string,
  delimiter: string,
  skipBadRows: boolean,
): AsyncIterable<LocatedRecord> {
  let skipped = 0;
  return readRecords(path, {
    delimiter,
    skipBadRows,
    onBadRow: (location, message) => {
      if (skipped++ < 5) console.error(`skipped bad row ${location}: ${message}`);
      else if (skipped === 6) console.error("(more bad rows skipped; not listed)");
    },
  });
}

/** Fails before any training or scoring when an input lacks a column the model needs. */
export async function checkColumns(paths: string[], encoder: FeatureEncoder, delimiter: string) {
  for (const path of paths) {
    const header = new Set(await inputColumns(path, { delimiter }));
    const missing = encoder.requiredColumns.filter(({ column }) => !header.has(column));
    if (missing.length > 0) {
      throw new Error(
        missing.map(({ column, neededBy }) =>
          `${path}: missing column '${column}' (needed by ${neededBy})`
        )
          .join("\n"),
      );
    }
  }
}

/** A live status line on a terminal, plain lines otherwise. */
export function status(line: string, final = false): void {
  if (process.stdout.isTTY) process.stdout.write(`\r\x1b[2K${line}${final ? "\n" : ""}`);
  else console.log(line);
}

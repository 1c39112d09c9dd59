// Rows/s of the Parquet reader (hyparquet) on generated Taobao-schema rows,
// next to the CSV reader on the same rows. `deno task bench:report
// bench/parquet_bench.ts` prints rows/s.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readCsv, readParquet, writeParquet } from "../src/data/readers.ts";
import { TAOBAO_COLUMNS, taobaoRows, writeTaobaoCsv } from "../src/data/synthetic.ts";

const ROWS = 200_000;
const dir = mkdtempSync(join(tmpdir(), "denorec-parquet-bench-"));
const csvPath = join(dir, "taobao.csv");
const parquetPath = join(dir, "taobao.parquet");
writeTaobaoCsv(csvPath, { rows: ROWS, seed: 1 });
// Numbers as numbers (what a Parquet file from pandas/pyarrow holds), pid as a string.
await writeParquet(
  parquetPath,
  TAOBAO_COLUMNS,
  (function* () {
    for (const { record } of taobaoRows({ rows: ROWS, seed: 1 })) {
      const row: Record<string, string | number> = {};
      for (const column of TAOBAO_COLUMNS) {
        row[column] = column === "pid" ? String(record[column]) : Number(record[column]);
      }
      yield row;
    }
  })(),
);

async function count(rows: AsyncIterable<unknown>): Promise<void> {
  let n = 0;
  for await (const _ of rows) n++;
  if (n !== ROWS) throw new Error(`read ${n} rows, expected ${ROWS}`);
}

Deno.bench({
  name: `readCsv [${ROWS} rows]`,
  group: "readers",
  baseline: true,
  n: 3,
  warmup: 1,
  fn: async () => await count(readCsv(csvPath)),
});
Deno.bench({
  name: `readParquet [${ROWS} rows]`,
  group: "readers",
  n: 3,
  warmup: 1,
  fn: async () => await count(readParquet(parquetPath)),
});

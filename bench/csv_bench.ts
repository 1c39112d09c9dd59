// CSV parsing throughput on a 1M-row Taobao-schema file (18 columns, ~76 MB,
// generated once into the OS temp dir): each candidate streams the file from
// node:fs in 1 MiB chunks and yields one `Record<string, string>` per row from
// an async generator, which is how `readCsv` consumes a parser. The baseline is
// a hand-written splitter that ignores quoting (a lower bound on the work: it
// is only correct because this data has no quotes). `deno task bench:report
// bench/csv_bench.ts` prints rows/s. The choice it informed is noted at the top
// of src/data.ts.
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import Papa from "papaparse";
import { parse as csvParse } from "csv-parse";
import csvParser from "csv-parser";
import { parse as fastCsvParse } from "@fast-csv/parse";
import { inferSchema, initParser } from "udsv";
import { readCsv } from "../src/data/readers.ts";
import { TAOBAO_COLUMNS } from "../src/data/synthetic.ts";

const ROWS = 1_000_000;
const CHUNK_BYTES = 1 << 20;
const COLUMNS = [...TAOBAO_COLUMNS];

/** Writes the benchmark file unless it already exists; returns its path. */
function taobaoCsv(rows: number): string {
  const dir = join(tmpdir(), "denorec-csv-bench");
  const path = join(dir, `taobao_${rows}.csv`);
  if (existsSync(path)) return path;
  mkdirSync(dir, { recursive: true });
  let state = 12345;
  const rand = (n: number) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
  // Missing pvalue_level / new_user_class_level / brand occur in the real
  // Taobao sample; the empty fields exercise the same path here.
  const maybe = (n: number, pMissing: number) => rand(100) < pMissing ? "" : String(rand(n));
  const fd = openSync(`${path}.tmp`, "w");
  const encoder = new TextEncoder();
  let block = COLUMNS.join(",") + "\n";
  for (let i = 0; i < rows; i++) {
    const clk = rand(100) < 5 ? 1 : 0;
    block += `${clk},${clk && rand(100) < 10 ? 1 : 0},${rand(1141730)},${rand(98)},${rand(14)},` +
      `${1 + rand(2)},${rand(7)},${maybe(4, 50)},${1 + rand(3)},${rand(2)},${maybe(5, 30)},` +
      `${rand(846812)},${rand(12961)},${rand(423438)},${rand(255877)},${maybe(461498, 25)},` +
      `${(rand(100000) / 100).toFixed(1)},${rand(2) ? "430548_1007" : "430539_1007"}\n`;
    if (block.length > CHUNK_BYTES) {
      writeSync(fd, encoder.encode(block));
      block = "";
    }
  }
  writeSync(fd, encoder.encode(block));
  closeSync(fd);
  Deno.renameSync(`${path}.tmp`, path);
  return path;
}

function zip(header: string[], fields: string[]): Record<string, string> {
  const record: Record<string, string> = {};
  for (let i = 0; i < header.length; i++) record[header[i]] = fields[i];
  return record;
}

function chunks(path: string): Readable {
  return createReadStream(path, { highWaterMark: CHUNK_BYTES, encoding: "utf8" });
}

async function* handSplit(path: string): AsyncGenerator<Record<string, string>> {
  let header: string[] | undefined;
  let rest = "";
  for await (const chunk of chunks(path)) {
    const text = rest + chunk;
    let start = 0;
    for (let end = text.indexOf("\n"); end !== -1; end = text.indexOf("\n", start)) {
      const fields = text.slice(start, end).split(",");
      start = end + 1;
      if (header === undefined) header = fields;
      else yield zip(header, fields);
    }
    rest = text.slice(start);
  }
}

async function* fromArrays(
  rows: AsyncIterable<string[]>,
): AsyncGenerator<Record<string, string>> {
  let header: string[] | undefined;
  for await (const fields of rows) {
    if (header === undefined) header = fields;
    else yield zip(header, fields);
  }
}

// papaparse's core parser fed by our chunk loop, as readCsv uses it. Its
// NODE_STREAM_INPUT duplex is left out: it re-parses the rest of a chunk after
// each backpressure pause (~40 s per 100k rows with 1 MiB chunks).
async function* papaparse(path: string): AsyncGenerator<Record<string, string>> {
  const parser = new Papa.Parser({ delimiter: ",", newline: "\n" });
  let header: string[] | undefined;
  let rest = "";
  const rows = (text: string, last: boolean) => {
    const result = parser.parse(text, 0, !last) as { data: string[][]; meta: { cursor: number } };
    rest = text.slice(result.meta.cursor);
    return result.data;
  };
  for await (const chunk of chunks(path)) {
    for (const fields of rows(rest + chunk, false)) {
      if (header === undefined) header = fields;
      else yield zip(header, fields);
    }
  }
  for (const fields of rows(rest, true)) yield zip(header!, fields);
}

function csvParseNode(path: string) {
  return fromArrays(chunks(path).pipe(csvParse({ relax_column_count: true })));
}

async function* csvParserObjects(path: string): AsyncGenerator<Record<string, string>> {
  yield* chunks(path).pipe(csvParser());
}

function fastCsv(path: string) {
  return fromArrays(chunks(path).pipe(fastCsvParse({ headers: false })));
}

async function* udsv(path: string): AsyncGenerator<Record<string, string>> {
  // Schema fixed up front: inferring the quote char from the first chunk would
  // disable quoting for a file whose first quoted field comes later.
  const schema = inferSchema(COLUMNS.join(",") + "\n", { col: ",", row: "\n", encl: '"' });
  const parser = initParser(schema);
  let batch: string[][] = [];
  for await (const chunk of chunks(path)) {
    parser.chunk<string[]>(chunk, parser.stringArrs, (row) => {
      batch.push(row);
    });
    for (const fields of batch) yield zip(COLUMNS, fields);
    batch = [];
  }
  for (const fields of parser.end<string[]>() ?? []) yield zip(COLUMNS, fields);
}

async function* denorecReadCsv(path: string): AsyncGenerator<Record<string, string>> {
  for await (const { record } of readCsv(path)) yield record as Record<string, string>;
}

const path = taobaoCsv(ROWS);
const candidates: [string, (path: string) => AsyncIterable<Record<string, string>>][] = [
  ["hand-written split, no quoting", handSplit],
  ["papaparse 5.7.1", papaparse],
  ["csv-parse 7.0.3", csvParseNode],
  ["csv-parser 3.2.1", csvParserObjects],
  ["@fast-csv/parse 5.0.8", fastCsv],
  ["udsv 0.7.3", udsv],
  ["denorec readCsv (records + locations)", denorecReadCsv],
];
for (const [label, rows] of candidates) {
  Deno.bench({
    name: `${label} [${ROWS} rows]`,
    group: "csv",
    baseline: rows === handSplit,
    n: 3,
    warmup: 1,
    fn: async () => {
      let count = 0;
      let clicks = 0;
      for await (const record of rows(path)) {
        count++;
        if (record.clk === "1") clicks++;
      }
      if (count !== ROWS || clicks === 0) {
        throw new Error(`${label}: ${count} rows, ${clicks} clicks`);
      }
    },
  });
}

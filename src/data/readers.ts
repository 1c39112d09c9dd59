/**
 * Training data on disk: streaming CSV and Parquet readers that yield
 * {@link LocatedRecord}s (`file:line` locations for error messages), and
 * atomic CSV and Parquet writers for generated data and predictions. All file
 * access goes through `node:fs/promises`, so the same code runs in Deno, Bun
 * and Node; memory stays bounded by the read chunk (CSV) or one row group
 * (Parquet), whatever the file size.
 *
 * - {@link readCsv}, {@link csvHeader}: RFC 4180 CSV with a header row
 *   (tzrec `CsvDataset`), parsed by papaparse's core `Papa.Parser`.
 * - {@link readParquet}: Parquet via hyparquet, one row group at a time.
 * - {@link writeCsv}, {@link writeParquet}: temporary file + rename.
 * - {@link expandPaths}: `*` / `?` globs in the last path segment.
 *
 * CSV parser choice, by `bench/csv_bench.ts` (1M Taobao-schema rows, 18
 * columns, 76 MB; each candidate streams 1 MiB chunks from node:fs and yields
 * one record object per row from an async generator; Deno 2.9.6, one run on
 * 2 cores shared with other jobs, so +-20%):
 *
 * | parser                                      | rows/s |
 * | ------------------------------------------- | ------ |
 * | hand-written split, no quoting (baseline)   | 596k   |
 * | papaparse 5.7.1 `Papa.Parser` (chosen)      | 607k   |
 * | udsv 0.7.3                                  | 400k   |
 * | csv-parser 3.2.1 (Node Transform)           | 182k   |
 * | csv-parse 7.0.3 (Node Transform)            | 171k   |
 * | @fast-csv/parse 5.0.8 (Node Transform)      | 55k    |
 * | `readCsv` (papaparse + lines, checks, UTF-8 validation) | 341k |
 *
 * papaparse parses as fast as a split that ignores quoting, so nothing
 * hand-written is kept. It is used through `Papa.Parser` (its exported core
 * parser) fed by our own chunk loop: its `NODE_STREAM_INPUT` duplex re-parses
 * the rest of a chunk after every backpressure pause and took ~40 s per 100k
 * rows with 1 MiB chunks, in Deno, Bun and Node alike. udsv fixes the row
 * delimiter per file (CRLF leaves `\r` in fields unless told) and the others
 * go through Node streams; none reports where a row starts, which `readCsv`
 * derives by counting the line breaks inside quoted fields. The `readCsv`
 * row pays for an extra generator hop in the harness; run side by side in
 * one process it is within 5% of the bare papaparse row (2.18 s vs 2.08 s).
 *
 * @example Write a CSV, read it back with locations
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { readCsv, writeCsv } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "train.csv");
 * await writeCsv(path, ["clk", "user_id", "pid"], [
 *   { clk: 1, user_id: 17, pid: "430548_1007" },
 *   { clk: 0, user_id: 18, pid: null },
 * ]);
 * const rows = [];
 * for await (const row of readCsv(path)) rows.push(row);
 * assert.deepEqual(rows, [
 *   { record: { clk: "1", user_id: "17", pid: "430548_1007" }, location: `${path}:2` },
 *   { record: { clk: "0", user_id: "18", pid: "" }, location: `${path}:3` },
 * ]);
 * await rm(dir, { recursive: true });
 * ```
 * @module
 */
import { randomUUID } from "node:crypto";
import { type FileHandle, open, readdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import Papa from "papaparse";
import {
  type AsyncBuffer,
  type FileMetaData,
  parquetMetadataAsync,
  parquetReadObjects,
} from "hyparquet";
import type { SchemaElement } from "hyparquet";
import { ByteWriter, parquetWriteRows } from "hyparquet-writer";
import type { LocatedRecord, RawRecord, RawValue } from "../core/records.ts";
import type { ResolvedConfig } from "../config/config.ts";

export type { LocatedRecord, RawRecord, RawValue, ResolvedConfig };

/** Default bytes per file read (1 MiB). */
const CHUNK_BYTES = 1 << 20;
/**
 * Longest row (in UTF-16 units) the CSV reader buffers. A stray opening quote
 * makes the rest of the file one field; this stops it at 16 Mi characters
 * (32 MB of string) instead of reading the whole file into memory.
 */
const MAX_ROW_CHARS = 1 << 24;

// ---------------------------------------------------------------- paths

/**
 * Throws a `TypeError` when an input path is a MaxCompute (ODPS) table,
 * which only tzrec's OdpsDataset reads: one line saying how to get the data
 * here. Every reader calls it; call it yourself before doing anything else
 * with the paths (e.g. generating data into them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkLocalPaths } from "./readers.ts";
 * checkLocalPaths(["data/train.csv", "data/eval.parquet"]);
 * assert.throws(() => checkLocalPaths("odps://project/tables/train"), {
 *   message: /^odps:\/\/project\/tables\/train: a MaxCompute \(ODPS\) table cannot be read here/,
 * });
 * ```
 */
export function checkLocalPaths(paths: string | readonly string[]): void {
  for (const path of typeof paths === "string" ? [paths] : paths) {
    if (/^odps:\/\//i.test(path)) {
      throw new TypeError(
        `${path}: a MaxCompute (ODPS) table cannot be read here; export it to Parquet or CSV ` +
          "and pass the files with --train_input_path / --eval_input_path",
      );
    }
  }
}

const WILDCARD = /[*?]/;

/**
 * Expands `*` (any run of characters) and `?` (one character) in the last
 * path segment of each pattern into the matching files, sorted by name
 * (code-unit order, so `part-10` sorts before `part-2`: zero-pad part
 * numbers). Names starting with `.` match only a pattern that starts with
 * `.`, so the temporary files of the writers here are never picked up.
 * Patterns without wildcards are kept as given (a missing file fails when it
 * is opened); the result keeps the pattern order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { expandPaths } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * for (const name of ["part-1.csv", "part-0.csv", "part-0.txt", "eval.csv"]) {
 *   await writeFile(join(dir, name), "a\n1\n");
 * }
 * assert.deepEqual(await expandPaths(join(dir, "part-?.csv")), [
 *   join(dir, "part-0.csv"),
 *   join(dir, "part-1.csv"),
 * ]);
 * await assert.rejects(expandPaths(join(dir, "test-*.csv")), /no files match/);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function expandPaths(paths: string | readonly string[]): Promise<string[]> {
  const patterns = typeof paths === "string" ? [paths] : paths;
  if (patterns.length === 0) throw new TypeError("no input files given");
  const files: string[] = [];
  for (const pattern of patterns) {
    const name = basename(pattern);
    const directory = dirname(pattern);
    if (WILDCARD.test(directory)) {
      throw new TypeError(`${pattern}: wildcards are only supported in the last path segment`);
    }
    if (!WILDCARD.test(name)) {
      files.push(pattern);
      continue;
    }
    let entries;
    try {
      entries = await readdir(directory, { withFileTypes: true });
    } catch (error) {
      throw new TypeError(`${pattern}: cannot list ${directory}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const matcher = globRegExp(name);
    // Keep the pattern's own spelling of the directory (`./data/`) in the names.
    const prefix = pattern.slice(0, pattern.length - name.length);
    const matches = entries
      .filter((entry) => !entry.isDirectory() && matcher.test(entry.name))
      .map((entry) => entry.name)
      .sort();
    if (matches.length === 0) throw new TypeError(`no files match ${pattern}`);
    for (const match of matches) files.push(prefix + match);
  }
  return files;
}

function globRegExp(name: string): RegExp {
  const body = name.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", ".*").replaceAll(
    "?",
    ".",
  );
  return new RegExp(name.startsWith(".") ? `^${body}$` : `^(?!\\.)${body}$`, "su");
}

async function openForReading(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r");
  } catch (error) {
    throw new TypeError(`${path}: cannot open: ${(error as Error).message}`, { cause: error });
  }
}

// ------------------------------------------------------------------ CSV

/** Options of {@link readCsv} and {@link csvHeader}. */
export interface CsvReadOptions {
  /**
   * Field delimiter (tzrec `data_config.delimiter`), any string without
   * quotes or line breaks. Default `","`.
   */
  delimiter?: string;
  /**
   * Skip malformed rows (wrong field count, broken quoting) instead of
   * throwing. Each one is passed to `onBadRow`, or, without it, counted and
   * reported once per file with `console.warn`. Default false.
   */
  skipBadRows?: boolean;
  /** Called with the `file:line` and the problem of each skipped row. */
  onBadRow?: (location: string, message: string) => void;
  /**
   * Bytes per file read (default 1 MiB). Memory per open file is about this
   * plus the longest row; small values are for tests.
   */
  chunkBytes?: number;
  /**
   * Column names of files without a header row (tzrec `with_header: false`
   * with `input_fields`); by default the first row of each file is its
   * header.
   */
  columns?: readonly string[];
}

/** The subset of papaparse's `Papa.Parser` used here (its result is untyped). */
interface PapaResult {
  data: string[][];
  errors: { code: string; row: number; index: number }[];
  meta: { cursor: number };
}

/** Rows of one chunk with the 1-based line each starts on and its quoting problems. */
interface CsvBatch {
  rows: string[][];
  lines: number[];
  problems: Map<number, string>;
}

function csvOptions(
  options: CsvReadOptions,
): Required<Omit<CsvReadOptions, "onBadRow" | "columns">> & { columns?: string[] } {
  const { delimiter = ",", skipBadRows = false, chunkBytes = CHUNK_BYTES } = options;
  const columns = options.columns === undefined ? undefined : [...options.columns];
  if (columns !== undefined) checkColumns("CSV columns", columns);
  if (typeof delimiter !== "string" || delimiter === "" || /["\r\n\ufeff]/.test(delimiter)) {
    throw new TypeError(
      `CSV delimiter ${
        JSON.stringify(delimiter)
      } must be a non-empty string without quotes or line breaks`,
    );
  }
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1) {
    throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  }
  return { delimiter, skipBadRows, chunkBytes, columns };
}

const MALFORMED_QUOTES = "malformed quoted field (text after its closing quote)";

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function countLineBreaks(text: string): number {
  let count = 0;
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) count++;
  return count;
}

/**
 * UTF-8 text of whole lines; on a bad byte, a TypeError naming the file and
 * the line holding it (`firstLine()` is the line `bytes` starts on).
 */
function decodeLines(bytes: Uint8Array, path: string, firstLine: () => number): string {
  try {
    return UTF8.decode(bytes);
  } catch (error) {
    let offset = 0, line = firstLine();
    for (;;) {
      const next = bytes.indexOf(10, offset);
      try {
        UTF8.decode(bytes.subarray(offset, next < 0 ? bytes.length : next));
      } catch {
        break;
      }
      if (next < 0) break;
      offset = next + 1;
      line++;
    }
    throw new TypeError(`${path}:${line}: not valid UTF-8`, { cause: error });
  }
}

/**
 * Parses one CSV file into batches of rows, one batch per read chunk. The
 * line ending (`\n` or `\r\n`) is taken from the first line; a UTF-8 BOM is
 * dropped. Each row's start line is counted from the line
 * breaks of the rows before it: one per row plus those inside quoted fields
 * (in LF files a chunk without quotes has none, which skips the count).
 *
 * A quoted field with text after its closing quote (`"x"y`) makes papaparse
 * read on to the next usable quote, possibly the end of the file. Such a row
 * is cut at the end of the line holding the bad quote instead, returned as
 * an empty row with a problem, and parsing resumes on the next line: strict
 * readers fail at once, skipping readers lose one row, not the rest of the
 * file.
 */
async function* csvBatches(
  path: string,
  delimiter: string,
  chunkBytes: number,
): AsyncGenerator<CsvBatch> {
  const file = await openForReading(path);
  try {
    const bytes = new Uint8Array(chunkBytes);
    let config: { delimiter: string; newline: "\n" | "\r\n"; quoteChar: '"' } | undefined;
    let parser: Papa.Parser | undefined;
    let pending = "";
    let line = 1;
    /** Bytes of the last, unfinished line of the previous chunk (decoded with the next). */
    let carry = new Uint8Array(0);
    let first = true;
    for (;;) {
      const { bytesRead } = await file.read(bytes, 0, chunkBytes, null);
      const end = bytesRead === 0;
      // Decode whole lines only, so that a bad byte is found on its own line.
      let data = bytes.subarray(0, bytesRead);
      if (carry.length > 0) {
        const joined = new Uint8Array(carry.length + data.length);
        joined.set(carry);
        joined.set(data, carry.length);
        data = joined;
      }
      const cut = end ? data.length : data.lastIndexOf(10) + 1;
      let lines = data.subarray(0, cut);
      const bom = lines.length >= 3 && lines[0] === 0xef && lines[1] === 0xbb && lines[2] === 0xbf;
      if (first && bom) lines = lines.subarray(3);
      if (cut > 0) first = false;
      pending += decodeLines(lines, path, () => line + countLineBreaks(pending));
      carry = data.slice(cut);
      if (carry.length > 4 * MAX_ROW_CHARS) {
        throw new TypeError(
          `${path}:${line + countLineBreaks(pending)}: line longer than ${4 * MAX_ROW_CHARS} bytes`,
        );
      }
      if (config === undefined) {
        const lf = pending.indexOf("\n");
        if (lf === -1 && !end) continue;
        const newline = lf > 0 && pending[lf - 1] === "\r" ? "\r\n" : "\n";
        config = { delimiter, newline, quoteChar: '"' };
        parser = new Papa.Parser(config);
      }
      while (pending !== "") {
        const result = parser!.parse(pending, 0, !end) as PapaResult;
        let rows = result.data;
        let consumed = result.meta.cursor;
        let badRow = -1;
        const bad = result.errors.find((error) => error.code === "InvalidQuotes");
        if (bad !== undefined) {
          // An error on the unfinished last row may come from a cut at the
          // chunk end (`"x"\r|\n`): act only once its line is complete.
          const resume = afterBadQuote(pending, bad.index, config.newline, end);
          if (resume !== -1) {
            badRow = bad.row;
            rows = rows.slice(0, badRow);
            consumed = resume;
          }
        }
        const countBreaks = config.newline === "\r\n" || pending.includes('"');
        const lines = new Array<number>(rows.length);
        for (let i = 0; i < rows.length; i++) {
          lines[i] = line;
          line += 1 + (countBreaks ? lineBreaks(rows[i]) : 0);
        }
        const problems = new Map<number, string>();
        for (const { code, row } of result.errors) {
          if (code === "MissingQuotes" && row < rows.length) {
            problems.set(row, "unterminated quoted field");
          }
        }
        if (badRow !== -1) {
          const rowStart = badRow === 0 ? 0 : (new Papa.Parser({ ...config, preview: badRow })
            .parse(pending, 0, false) as PapaResult).meta.cursor;
          problems.set(rows.length, MALFORMED_QUOTES);
          lines.push(line);
          rows.push([]);
          line += lineBreaks([pending.slice(rowStart, consumed)]);
        }
        yield { rows, lines, problems };
        pending = pending.slice(consumed);
        if (badRow === -1) break;
      }
      if (end) return;
      if (pending.length > MAX_ROW_CHARS) {
        throw new TypeError(
          `${path}:${line}: row longer than ${MAX_ROW_CHARS} characters (unterminated quoted field?)`,
        );
      }
    }
  } finally {
    await file.close();
  }
}

/**
 * Where parsing resumes after a malformed quoted field whose content starts
 * at `from`: past the line break that follows its closing quote (the first
 * quote that is not doubled), or -1 if that line is not complete yet.
 */
function afterBadQuote(text: string, from: number, newline: string, end: boolean): number {
  let quote = text.indexOf('"', from);
  while (quote !== -1 && text[quote + 1] === '"') quote = text.indexOf('"', quote + 2);
  const lineEnd = quote === -1 ? -1 : text.indexOf(newline, quote + 1);
  if (lineEnd !== -1) return lineEnd + newline.length;
  return end ? text.length : -1;
}

function lineBreaks(fields: string[]): number {
  let count = 0;
  for (const field of fields) {
    for (let i = field.indexOf("\n"); i !== -1; i = field.indexOf("\n", i + 1)) count++;
  }
  return count;
}

/** Validates a header row; returns the column names. */
function checkHeader(path: string, fields: string[] | undefined, problem?: string): string[] {
  if (fields === undefined) throw new TypeError(`${path}: empty file, a header row is required`);
  if (problem !== undefined) throw new TypeError(`${path}:1: header row: ${problem}`);
  if (fields.length === 1 && fields[0] === "") {
    throw new TypeError(`${path}:1: empty first line, a header row is required`);
  }
  const seen = new Set<string>();
  for (const name of fields) {
    if (seen.has(name)) {
      throw new TypeError(`${path}:1: column ${JSON.stringify(name)} appears twice`);
    }
    if (name === "__proto__") {
      throw new TypeError(`${path}:1: column name "__proto__" is not supported`);
    }
    seen.add(name);
  }
  return fields;
}

function compareHeaders(path: string, header: string[], firstPath: string, first: string[]): void {
  const missing = first.filter((name) => !header.includes(name));
  const extra = header.filter((name) => !first.includes(name));
  if (missing.length === 0 && extra.length === 0) return;
  throw new TypeError(
    `${path}:1: columns differ from ${firstPath}` +
      (missing.length > 0 ? `; missing: ${missing.join(", ")}` : "") +
      (extra.length > 0 ? `; extra: ${extra.join(", ")}` : ""),
  );
}

/**
 * Streams the records of one or more CSV files (globs expanded by
 * {@link expandPaths}, files in order). Every file needs a header row naming
 * the columns, and all files the same set of columns (in any order), unless
 * `columns` names them for files without a header row. Values
 * are the field strings as written, with `""` for an empty field (missing);
 * quoted fields may hold the delimiter, line breaks and doubled quotes
 * (RFC 4180). LF and CRLF files are read alike, a UTF-8 BOM is dropped, and
 * blank lines are skipped (in a one-column file a blank line is an empty
 * value). `location` is `file:line` with the 1-based line on which the
 * record starts. A row whose field count differs from the header's, or with
 * broken quoting, throws `TypeError("data/train.csv:17: expected 18 fields,
 * got 17")`, or is skipped with `skipBadRows`.
 *
 * The result can be iterated more than once (each pass reads the files
 * again, e.g. once per epoch). Options are checked when it is called.
 *
 * @example Skip and count malformed rows
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { readCsv } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "train.csv");
 * await writeFile(path, 'clk;title\n1;"a; b"\n0\n1;"two\nlines"\n');
 * const bad: string[] = [];
 * const titles = [];
 * for await (const { record, location } of readCsv(path, {
 *   delimiter: ";",
 *   skipBadRows: true,
 *   onBadRow: (location, message) => bad.push(`${location}: ${message}`),
 * })) titles.push([record.title, location.slice(dir.length + 1)]);
 * assert.deepEqual(titles, [["a; b", "train.csv:2"], ["two\nlines", "train.csv:4"]]);
 * assert.deepEqual(bad, [`${path}:3: expected 2 fields, got 1`]);
 * await assert.rejects(async () => {
 *   for await (const _ of readCsv(path, { delimiter: ";" }));
 * }, { message: `${path}:3: expected 2 fields, got 1` });
 * await rm(dir, { recursive: true });
 * ```
 */
export function readCsv(
  paths: string | readonly string[],
  options: CsvReadOptions = {},
): AsyncIterable<LocatedRecord> {
  checkLocalPaths(paths);
  const { delimiter, skipBadRows, chunkBytes, columns } = csvOptions(options);
  const { onBadRow } = options;
  return {
    async *[Symbol.asyncIterator]() {
      let first: { path: string; header: string[] } | undefined;
      for (const path of await expandPaths(paths)) {
        let header: string[] | undefined = columns;
        let skipped = 0;
        let firstSkipped = "";
        for await (const { rows, lines, problems } of csvBatches(path, delimiter, chunkBytes)) {
          for (let i = 0; i < rows.length; i++) {
            const fields = rows[i];
            if (header === undefined) {
              header = checkHeader(path, fields, problems.get(i));
              if (first === undefined) first = { path, header };
              else compareHeaders(path, header, first.path, first.header);
              continue;
            }
            if (fields.length === 1 && fields[0] === "" && header.length > 1) continue;
            const problem = problems.get(i) ??
              (fields.length === header.length
                ? undefined
                : `expected ${header.length} fields, got ${fields.length}`);
            if (problem !== undefined) {
              const location = `${path}:${lines[i]}`;
              if (!skipBadRows) throw new TypeError(`${location}: ${problem}`);
              if (onBadRow !== undefined) onBadRow(location, problem);
              else if (skipped === 0) firstSkipped = `${location}: ${problem}`;
              skipped++;
              continue;
            }
            const record: RawRecord = {};
            for (let c = 0; c < header.length; c++) record[header[c]] = fields[c];
            yield { record, location: `${path}:${lines[i]}` };
          }
        }
        if (header === undefined) checkHeader(path, undefined);
        if (skipped > 0 && onBadRow === undefined) {
          console.warn(`${path}: skipped ${skipped} bad rows (first: ${firstSkipped})`);
        }
      }
    },
  };
}

/**
 * Reads only the header row of a CSV file (of the first file a glob or list
 * names), to check the columns before training. Throws, naming the file, if
 * the file is empty or the header is blank or repeats a column. With
 * `columns` (files without a header row) it returns those.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { csvHeader } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * await writeFile(join(dir, "train.csv"), "\ufeffclk,buy,user_id\r\n1,0,17\r\n");
 * assert.deepEqual(await csvHeader(join(dir, "train.csv")), ["clk", "buy", "user_id"]);
 * await writeFile(join(dir, "empty.csv"), "");
 * await assert.rejects(csvHeader(join(dir, "empty.csv")), /empty\.csv: empty file/);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function csvHeader(
  paths: string | readonly string[],
  options: Pick<CsvReadOptions, "delimiter" | "chunkBytes" | "columns"> = {},
): Promise<string[]> {
  checkLocalPaths(paths);
  const { delimiter, chunkBytes, columns } = csvOptions(options);
  const [path] = await expandPaths(paths);
  if (columns !== undefined) return columns;
  for await (const { rows, problems } of csvBatches(path, delimiter, chunkBytes)) {
    if (rows.length > 0) return checkHeader(path, rows[0], problems.get(0));
  }
  return checkHeader(path, undefined);
}

// -------------------------------------------------------------- writing

/**
 * Writes a file atomically: into a temporary file next to `path` (named
 * `.<name>.<random>.tmp`, which {@link expandPaths} never matches), fsynced,
 * then renamed over `path`. On an error the temporary file is removed and
 * the error names `path`.
 */
async function writeAtomically(
  path: string,
  what: string,
  write: (file: FileHandle) => Promise<void>,
): Promise<void> {
  const temporary = join(dirname(path), `.${basename(path)}.${randomUUID().slice(0, 8)}.tmp`);
  try {
    const file = await open(temporary, "wx");
    try {
      await write(file);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true }).catch(() => {});
    throw new Error(`writing ${what} ${path}: ${(error as Error).message}`, { cause: error });
  }
}

async function writeAll(file: FileHandle, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length;) {
    const { bytesWritten } = await file.write(bytes, offset, bytes.length - offset);
    offset += bytesWritten;
  }
}

/** Options of {@link writeCsv}. */
export interface CsvWriteOptions {
  /** Field delimiter; default `","`. */
  delimiter?: string;
  /** Joins the items of a multi-value (array) field; default tzrec's `"\x1d"`. */
  listSeparator?: string;
  /** Write the header row (default true); false for tzrec's `with_header: false` files. */
  header?: boolean;
}

/**
 * Writes records as CSV with a header row, atomically (temporary file, then
 * rename), streaming: `rows` may be an array, a generator or an async
 * iterable (e.g. {@link readCsv} output). Each row gives the values of the
 * `header` columns; missing keys, `null` and `undefined` are written as
 * empty fields, numbers with full precision (`String(x)`), arrays joined by
 * `listSeparator`. Fields holding the delimiter, a quote or a line break are
 * quoted (RFC 4180). Lines end with `\n`. Resolves to the number of rows.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, readFile, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { writeCsv } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "predictions.csv");
 * async function* predictions() {
 *   yield { user_id: 17n, probs_ctr: 0.25, note: 'say "hi", then\nleave' };
 *   yield { user_id: 18n, probs_ctr: 0.5, tags: [3, 4] };
 * }
 * const rows = await writeCsv(path, ["user_id", "probs_ctr", "note", "tags"], predictions(), {
 *   listSeparator: "|",
 * });
 * assert.equal(rows, 2);
 * assert.equal(
 *   await readFile(path, "utf8"),
 *   'user_id,probs_ctr,note,tags\n17,0.25,"say ""hi"", then\nleave",\n18,0.5,,3|4\n',
 * );
 * await rm(dir, { recursive: true });
 * ```
 */
export async function writeCsv(
  path: string,
  header: readonly string[],
  rows: AsyncIterable<RawRecord> | Iterable<RawRecord>,
  options: CsvWriteOptions = {},
): Promise<number> {
  const { delimiter = ",", listSeparator = "\x1d", header: withHeader = true } = options;
  csvOptions({ delimiter });
  checkColumns(path, header);
  const needsQuotes = new RegExp(`["\\r\\n]|${delimiter.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`);
  const field = (value: RawValue): string => {
    const text = value === null || value === undefined
      ? ""
      : Array.isArray(value)
      ? value.join(listSeparator)
      : String(value);
    return needsQuotes.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const encoder = new TextEncoder();
  let count = 0;
  await writeAtomically(path, "CSV", async (file) => {
    let text = withHeader ? header.map(field).join(delimiter) + "\n" : "";
    for await (const row of rows) {
      for (let c = 0; c < header.length; c++) {
        if (c > 0) text += delimiter;
        text += field(row[header[c]]);
      }
      text += "\n";
      count++;
      if (text.length >= CHUNK_BYTES) {
        await writeAll(file, encoder.encode(text));
        text = "";
      }
    }
    await writeAll(file, encoder.encode(text));
  });
  return count;
}

function checkColumns(path: string, columns: readonly string[]): void {
  if (columns.length === 0) throw new TypeError(`${path}: no columns given`);
  const seen = new Set<string>();
  for (const name of columns) {
    if (seen.has(name)) {
      throw new TypeError(`${path}: column ${JSON.stringify(name)} appears twice`);
    }
    seen.add(name);
  }
}

// -------------------------------------------------------------- Parquet

/** Options of {@link readParquet}. */
export interface ParquetReadOptions {
  /** Read only these columns (default all); a missing one is an error. */
  columns?: readonly string[];
}

/**
 * A random-access view of an open file for hyparquet, which reads the footer
 * first and then only the column chunks of the row group it decodes.
 */
function fileBuffer(file: FileHandle, byteLength: number): AsyncBuffer {
  return {
    byteLength,
    async slice(start: number, end = byteLength): Promise<ArrayBuffer> {
      const bytes = new Uint8Array(end - start);
      for (let offset = 0; offset < bytes.length;) {
        const { bytesRead } = await file.read(bytes, offset, bytes.length - offset, start + offset);
        if (bytesRead === 0) {
          throw new RangeError(`unexpected end of file at byte ${start + offset}`);
        }
        offset += bytesRead;
      }
      return bytes.buffer;
    },
  };
}

/**
 * Converts one hyparquet value to a {@link RawValue}: INT64 bigints within
 * ±2^53 become numbers (larger ones stay bigint, exact), timestamps become
 * epoch milliseconds, lists become arrays with null items dropped, nulls
 * stay null. Structs, maps and binary values are not record values.
 */
function rawValue(value: unknown, path: string, column: string): RawValue {
  switch (typeof value) {
    case "string":
    case "number":
    case "boolean":
      return value;
    case "bigint":
      return value >= -0x1fffffffffffffn && value <= 0x1fffffffffffffn ? Number(value) : value;
    case "undefined":
      return null;
  }
  if (value === null) return null;
  if (value instanceof Date) return value.getTime();
  if (Array.isArray(value)) {
    const items: (string | number | bigint)[] = [];
    for (const item of value) {
      if (item === null || item === undefined) continue;
      const converted = rawValue(item, path, column);
      if (typeof converted === "boolean" || typeof converted === "object") {
        throw new TypeError(
          `${path}: column ${JSON.stringify(column)} holds lists of ${
            typeof item === "boolean" ? "booleans" : "lists or structs"
          }; only lists of numbers and strings are supported`,
        );
      }
      items.push(converted as string | number | bigint);
    }
    return items;
  }
  throw new TypeError(
    `${path}: column ${JSON.stringify(column)} holds ${
      value instanceof Uint8Array ? "binary values" : "structs or maps"
    }; only scalar and list columns are supported`,
  );
}

/**
 * Streams the records of one or more Parquet files (globs expanded by
 * {@link expandPaths}), one row group in memory at a time. Values are
 * numbers, strings, booleans, `null` (missing) and arrays (list columns,
 * i.e. multi-value features); INT64 values within ±2^53 are numbers, larger
 * ones bigints; timestamps are epoch milliseconds. `location` is
 * `file:row N` (1-based data row). Reads uncompressed and Snappy files (the
 * pyarrow and pandas default); other codecs fail with an error naming the
 * file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { readParquet, writeParquet } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "train.parquet");
 * await writeParquet(path, ["clk", "user_id", "tags"], [
 *   { clk: 1, user_id: 2n ** 60n, tags: ["a", "b"] },
 *   { clk: 0, user_id: 17n, tags: null },
 * ]);
 * const rows = [];
 * for await (const row of readParquet(path, { columns: ["user_id", "tags"] })) rows.push(row);
 * assert.deepEqual(rows, [
 *   { record: { user_id: 2n ** 60n, tags: ["a", "b"] }, location: `${path}:row 1` },
 *   { record: { user_id: 17, tags: null }, location: `${path}:row 2` },
 * ]);
 * await rm(dir, { recursive: true });
 * ```
 */
export function readParquet(
  paths: string | readonly string[],
  options: ParquetReadOptions = {},
): AsyncIterable<LocatedRecord> {
  checkLocalPaths(paths);
  const columns = options.columns === undefined ? undefined : [...options.columns];
  return {
    async *[Symbol.asyncIterator]() {
      for (const path of await expandPaths(paths)) {
        const file = await openForReading(path);
        try {
          const buffer = fileBuffer(file, (await file.stat()).size);
          let metadata: FileMetaData;
          try {
            metadata = await parquetMetadataAsync(buffer);
          } catch (error) {
            throw new TypeError(
              `${path}: not a readable Parquet file: ${(error as Error).message}`,
              {
                cause: error,
              },
            );
          }
          const available = topLevelColumns(metadata.schema);
          for (const name of columns ?? []) {
            if (!available.includes(name)) {
              throw new TypeError(
                `${path}: no column ${JSON.stringify(name)} (columns: ${available.join(", ")})`,
              );
            }
          }
          let rowStart = 0;
          for (const group of metadata.row_groups) {
            const rowEnd = rowStart + Number(group.num_rows);
            let rows: Record<string, unknown>[];
            try {
              rows = await parquetReadObjects({
                file: buffer,
                metadata,
                columns,
                rowStart,
                rowEnd,
              });
            } catch (error) {
              throw new TypeError(
                `${path}:row ${rowStart + 1}: cannot decode row group: ${(error as Error).message}`,
                { cause: error },
              );
            }
            for (let i = 0; i < rows.length; i++) {
              const row = rows[i];
              const record: RawRecord = {};
              for (const name in row) record[name] = rawValue(row[name], path, name);
              yield { record, location: `${path}:row ${rowStart + i + 1}` };
            }
            rowStart = rowEnd;
          }
        } finally {
          await file.close();
        }
      }
    },
  };
}

/** Names of the top-level columns of a flattened Parquet schema. */
function topLevelColumns(schema: SchemaElement[]): string[] {
  const names: string[] = [];
  let index = 1;
  const skip = (): void => {
    const children = schema[index++].num_children ?? 0;
    for (let i = 0; i < children; i++) skip();
  };
  for (let i = 0; i < (schema[0].num_children ?? 0); i++) {
    names.push(schema[index].name);
    skip();
  }
  return names;
}

/**
 * Column types {@link writeParquet} writes: INT64, DOUBLE, UTF-8 strings,
 * booleans, and 3-level LISTs of the first three (`[]`), every one nullable.
 */
export type ParquetColumnType =
  | "int64"
  | "double"
  | "string"
  | "boolean"
  | "int64[]"
  | "double[]"
  | "string[]";

const COLUMN_TYPES: readonly string[] = [
  "int64",
  "double",
  "string",
  "boolean",
  "int64[]",
  "double[]",
  "string[]",
] satisfies ParquetColumnType[];

/** Options of {@link writeParquet}. */
export interface ParquetWriteOptions {
  /**
   * Types of some or all columns. The others are inferred from the first row
   * group: integers (and bigints) -> `int64`, other numbers -> `double`,
   * strings, booleans, arrays -> lists of the same; all-null -> `string`.
   */
  types?: Readonly<Record<string, ParquetColumnType>>;
  /** Rows per row group (the reader's unit of memory); default 100,000. */
  rowGroupSize?: number;
}

const LEAVES: Record<string, Omit<SchemaElement, "name">> = {
  int64: { type: "INT64" },
  double: { type: "DOUBLE" },
  string: { type: "BYTE_ARRAY", converted_type: "UTF8" },
  boolean: { type: "BOOLEAN" },
};

function inferType(values: RawValue[]): ParquetColumnType {
  let kind: "int64" | "double" | "string" | "boolean" | undefined;
  let list = false;
  const see = (value: string | number | bigint | boolean): void => {
    const next = typeof value === "bigint"
      ? "int64"
      : typeof value === "number"
      ? Number.isInteger(value) ? "int64" : "double"
      : typeof value === "boolean"
      ? "boolean"
      : "string";
    if (kind === undefined || (kind === "int64" && next === "double")) kind = next;
  };
  for (const value of values) {
    if (value === null || value === undefined) continue;
    if (Array.isArray(value)) {
      list = true;
      for (const item of value) see(item);
    } else see(value as string | number | bigint | boolean);
  }
  if (list && kind === "boolean") kind = "string";
  return (list ? `${kind ?? "string"}[]` : kind ?? "string") as ParquetColumnType;
}

/** Converts a record value to what hyparquet-writer expects for `type`. */
function parquetValue(value: RawValue, type: ParquetColumnType, where: () => string): unknown {
  if (value === null || value === undefined) return null;
  if (type.endsWith("[]")) {
    if (!Array.isArray(value)) throw new TypeError(`${where()}: expected a list, got ${value}`);
    const item = type.slice(0, -2) as ParquetColumnType;
    return value.map((v) => parquetValue(v, item, where));
  }
  if (Array.isArray(value)) throw new TypeError(`${where()}: expected ${type}, got a list`);
  switch (type) {
    case "int64":
      if (typeof value === "bigint") return value;
      if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
      if (typeof value === "string" && value === "") return null;
      if (typeof value === "string" && /^\s*[-+]?\d+\s*$/.test(value)) return BigInt(value.trim());
      break;
    case "double":
      if (typeof value === "number") return value;
      if (typeof value === "bigint") return Number(value);
      if (typeof value === "string" && value === "") return null;
      if (typeof value === "string" && !Number.isNaN(Number(value))) return Number(value);
      break;
    case "string":
      return String(value);
    case "boolean":
      if (typeof value === "boolean") return value;
      if (value === "true" || value === "1" || value === 1) return true;
      if (value === "false" || value === "0" || value === 0) return false;
      if (value === "") return null;
      break;
  }
  throw new TypeError(`${where()}: ${JSON.stringify(String(value))} is not ${type}`);
}

/** A flat Parquet schema: nullable columns, lists as 3-level LISTs (as pyarrow writes them). */
function parquetSchema(columns: readonly string[], types: ParquetColumnType[]): SchemaElement[] {
  const schema: SchemaElement[] = [{ name: "root", num_children: columns.length }];
  columns.forEach((name, c) => {
    const leaf = LEAVES[types[c].replace("[]", "")];
    if (types[c].endsWith("[]")) {
      schema.push(
        { name, repetition_type: "OPTIONAL", converted_type: "LIST", num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", repetition_type: "OPTIONAL", ...leaf },
      );
    } else schema.push({ name, repetition_type: "OPTIONAL", ...leaf });
  });
  return schema;
}

/**
 * The hyparquet-writer sink for an open file: each row group is encoded into
 * the buffer, then written out, so memory holds one encoded row group.
 */
class FileByteWriter extends ByteWriter {
  constructor(private readonly file: FileHandle) {
    super(CHUNK_BYTES);
  }

  async flush(): Promise<void> {
    await writeAll(this.file, new Uint8Array(this.buffer, 0, this.index));
    this.index = 0;
  }

  override finish(): Promise<void> {
    return this.flush();
  }
}

/**
 * Writes records as a Snappy-compressed Parquet file, atomically (temporary
 * file, then rename), streaming one row group at a time from an array, a
 * generator or an async iterable. Column types come from `types` or are
 * inferred from the first row group (see {@link ParquetWriteOptions}); all
 * columns are nullable, and numeric strings convert to `int64` / `double`
 * columns, so CSV records can be written with explicit types. A value that
 * does not fit its column's type throws, naming the file, row and column.
 * Resolves to the number of rows.
 *
 * @example CSV records to Parquet with explicit types
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { readParquet, writeParquet } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "train.parquet");
 * const csvRecords = [{ clk: "1", price: "9.9", pid: "430548_1007" }, { clk: "0", price: "", pid: "x" }];
 * const count = await writeParquet(path, ["clk", "price", "pid"], csvRecords, {
 *   types: { clk: "int64", price: "double" },
 * });
 * assert.equal(count, 2);
 * const records = [];
 * for await (const { record } of readParquet(path)) records.push(record);
 * assert.deepEqual(records, [{ clk: 1, price: 9.9, pid: "430548_1007" }, { clk: 0, price: null, pid: "x" }]);
 * await assert.rejects(
 *   writeParquet(path, ["clk"], [{ clk: "yes" }], { types: { clk: "int64" } }),
 *   /row 1, column "clk": "yes" is not int64/,
 * );
 * await rm(dir, { recursive: true });
 * ```
 */
export async function writeParquet(
  path: string,
  columns: readonly string[],
  rows: AsyncIterable<RawRecord> | Iterable<RawRecord>,
  options: ParquetWriteOptions = {},
): Promise<number> {
  const { types = {}, rowGroupSize = 100_000 } = options;
  checkColumns(path, columns);
  if (!Number.isInteger(rowGroupSize) || rowGroupSize < 1) {
    throw new RangeError(`rowGroupSize must be a positive integer, got ${rowGroupSize}`);
  }
  for (const [name, type] of Object.entries(types)) {
    if (!columns.includes(name)) throw new TypeError(`${path}: types names unknown column ${name}`);
    if (!COLUMN_TYPES.includes(type)) {
      throw new TypeError(`${path}: column ${JSON.stringify(name)}: unknown type ${type}`);
    }
  }
  let count = 0;
  await writeAtomically(path, "Parquet", async (file) => {
    let resolved: ParquetColumnType[] | undefined;
    // Converts each group of raw rows once the first group has fixed the types.
    async function* converted(): AsyncGenerator<Record<string, unknown>> {
      let group: RawRecord[] = [];
      const flush = function* (): Generator<Record<string, unknown>> {
        resolved ??= columns.map((name) => types[name] ?? inferType(group.map((row) => row[name])));
        for (const row of group) {
          count++;
          const out: Record<string, unknown> = {};
          for (let c = 0; c < columns.length; c++) {
            const name = columns[c];
            out[name] = parquetValue(
              row[name],
              resolved[c],
              () => `row ${count}, column ${JSON.stringify(name)}`,
            );
          }
          yield out;
        }
        group = [];
      };
      for await (const row of rows) {
        group.push(row);
        if (group.length === rowGroupSize) yield* flush();
      }
      if (group.length > 0 || resolved === undefined) yield* flush();
    }
    const source = converted();
    // Pull the first row so that the types are known before the schema is built.
    const head = await source.next();
    async function* all(): AsyncGenerator<Record<string, unknown>> {
      if (!head.done) yield head.value;
      yield* source;
    }
    await parquetWriteRows({
      writer: new FileByteWriter(file),
      rows: all(),
      columns: columns.map((name) => ({ name })),
      schema: parquetSchema(columns, resolved!),
      rowGroupSize,
    });
  });
  return count;
}

// -------------------------------------------------------- either format

/** Whether `path` names Parquet input (by its `.parquet` / `.pq` extension). */
function isParquet(path: string): boolean {
  return /\.(parquet|pq)$/i.test(path);
}

/**
 * Reads CSV or Parquet input, chosen by the first path's extension
 * (`.parquet`/`.pq` is Parquet, anything else CSV with the given options,
 * e.g. {@link csvReadOptions} of a config). An `odps://` path (a MaxCompute
 * table, tzrec's OdpsDataset) throws at once, saying to export the table to
 * Parquet or CSV and pass the files with `--train_input_path` /
 * `--eval_input_path`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { readRecords, writeParquet } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * await writeFile(join(dir, "a.csv"), "clk,x\n1,2\n");
 * await writeParquet(join(dir, "a.parquet"), ["clk", "x"], [{ clk: 1, x: 2 }]);
 * for (const name of ["a.csv", "a.parquet"]) {
 *   const rows = [];
 *   for await (const { record } of readRecords(join(dir, name))) rows.push(record);
 *   assert.equal(Number(rows[0].x), 2);
 * }
 * await rm(dir, { recursive: true });
 * ```
 */
export function readRecords(
  paths: string | readonly string[],
  options: CsvReadOptions = {},
): AsyncIterable<LocatedRecord> {
  checkLocalPaths(paths);
  const first = typeof paths === "string" ? paths : paths[0] ?? "";
  return isParquet(first) ? readParquet(paths) : readCsv(paths, options);
}

/**
 * The CSV read options a resolved config implies: `data_config.delimiter`,
 * and the `input_fields` names as the columns of files without a header row
 * when `with_header` is false (tzrec's CsvDataset).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { csvReadOptions } from "./readers.ts";
 * const config = resolveConfig({
 *   dataConfig: { delimiter: "\t", inputFields: [{ inputName: "clk" }, { inputName: "user_id" }] },
 *   featureConfigs: [{ idFeature: { featureName: "user_id", numBuckets: 10, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["user_id"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * assert.deepEqual(csvReadOptions(config), { delimiter: "\t", columns: ["clk", "user_id"] });
 * ```
 */
export function csvReadOptions(config: Pick<ResolvedConfig, "data">): CsvReadOptions {
  const { delimiter, csvColumns } = config.data;
  return csvColumns === null ? { delimiter } : { delimiter, columns: csvColumns };
}

/**
 * The column names of CSV or Parquet input (the CSV header, or the columns of
 * the first Parquet record), to check before training that every needed
 * column is there.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { inputColumns } from "./readers.ts";
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * await writeFile(join(dir, "a.csv"), "clk,user_id\n1,2\n");
 * assert.deepEqual(await inputColumns(join(dir, "a.csv")), ["clk", "user_id"]);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function inputColumns(
  paths: string | readonly string[],
  options: Pick<CsvReadOptions, "delimiter" | "columns"> = {},
): Promise<string[]> {
  checkLocalPaths(paths);
  const first = typeof paths === "string" ? paths : paths[0] ?? "";
  if (!isParquet(first)) return await csvHeader(paths, options);
  for await (const { record } of readParquet(paths)) return Object.keys(record);
  return [];
}

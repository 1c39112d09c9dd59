// Fuzz cases for CSV input to examples/predict.ts (tests/fuzz_csv_test.ts):
// random tables of the fuzz model's columns (tests/_fuzz_http_cases.ts) in
// random dialects (column order, quoting, CRLF, BOM, blank lines, fields with
// the delimiter, quotes and line breaks, extra columns, huge fields), with
// at most one fault: another delimiter, a missing or renamed column, a row
// with the wrong field count (also with --skip_bad_rows), invalid UTF-8, an
// unterminated quote, or bad values. `predictFile` runs on each.
//
// The oracle knows the table it wrote and the line each record starts on:
// a run without a structural fault must write exactly the outputs of
// `Predictor.predict` on the intended rows (or, when that predictor refuses
// a row, fail with the message naming that row's file line); a structural
// fault must fail with an error naming the file and, for a row fault, the
// line. An error at another place is a crash; a success that should have
// failed, or with other outputs, is silently wrong.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { modelCheckpoint } from "../src/io/checkpoint.ts";
import { resolveConfig } from "../src/config/config.ts";
import { MMoEModel } from "../src/model/mmoe.ts";
import { PredictError, Predictor } from "../src/serve/inference.ts";
import type { RawRecord } from "../src/core/records.ts";
import { predictFile } from "../examples/predict.ts";
import { type CaseResult, type CaseRunner, draws } from "./_fuzz.ts";
import { FUZZ_CONFIG } from "./_fuzz_http_cases.ts";

const FEATURES = ["user_id", "item", "cate", "tags", "price", "score"];
const encoder = new TextEncoder();

/** A generated table: the header and the rows as the strings a CSV reader returns. */
interface Table {
  header: string[];
  rows: Record<string, string>[];
}

function table(random: () => number): Table {
  const { int, pick, chance } = draws(random);
  const header = [...FEATURES, "req", "clk", "note"];
  if (chance(0.5)) header.push("extra");
  for (let i = header.length - 1; i > 0; i--) {
    const j = int(i + 1);
    [header[i], header[j]] = [header[j], header[i]];
  }
  const text = () =>
    pick([
      "plain",
      "with, comma",
      'with "quotes"',
      "two\nlines",
      "crlf\r\nline",
      "ünï©ødé",
      "",
      " ",
    ]);
  const decimal = () => String(Math.round(random() * 2000) / 100);
  const rows = Array.from({ length: int(13) }, (_, k): Record<string, string> => ({
    req: `r${k}`,
    user_id: pick([String(int(50)), ""]),
    item: chance(0.05) ? "h".repeat(200_000) : pick([`item-${int(1000)}`, text()]),
    cate: pick(["a", "b", "c", "zzz", ""]),
    tags: Array.from({ length: int(4) }, () => String(int(10))).join("\x1d"),
    price: pick([decimal(), "", "-5", "10"]),
    score: pick([`${decimal()}\x1d${decimal()}`, ""]),
    clk: pick(["0", "1", ""]),
    note: text(),
    extra: text(),
  }));
  return { header, rows };
}

const EVIL = [
  "x7",
  "50",
  "-3",
  "1.5",
  "abc",
  "1e999",
  "NaN",
  "0x1F",
  " 7 ",
  "1".repeat(400),
  "7\x1d",
  "1\x1d2\x1d3",
];

interface Written {
  bytes: Uint8Array;
  /** The 1-based line each row starts on. */
  lines: number[];
}

/** CSV text of `header` and `rows`, with the line each row starts on. */
function serialize(
  header: string[],
  rows: string[][],
  delimiter: string,
  random: () => number,
): Written {
  const { chance } = draws(random);
  const newline = chance(0.3) ? "\r\n" : "\n";
  const quoteAll = chance(0.2);
  const field = (value: string) =>
    quoteAll || value.includes(delimiter) || /["\r\n]/.test(value)
      ? `"${value.replaceAll('"', '""')}"`
      : value;
  let text = (chance(0.2) ? "\ufeff" : "") + header.map(field).join(delimiter) + newline;
  let line = 2;
  const lines: number[] = [];
  for (const row of rows) {
    if (chance(0.1)) {
      text += newline; // a blank line, skipped by the reader
      line++;
    }
    const record = row.map(field).join(delimiter);
    lines.push(line);
    text += record + newline;
    line += 1 + (record.match(/\n/g)?.length ?? 0);
  }
  if (rows.length > 0 && chance(0.2)) text = text.slice(0, -newline.length); // no final newline
  return { bytes: encoder.encode(text), lines };
}

/** What must happen: these outputs for these rows, or an error whose message matches. */
type Expectation =
  | { kind: "success"; rows: Record<string, string>[] }
  | { kind: "error"; pattern: RegExp; why: string };

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Cases of predictFile over generated CSV files. */
export function createRunner(): Promise<CaseRunner> {
  const pipeline = parsePipelineConfig(FUZZ_CONFIG);
  const model = new MMoEModel(resolveConfig(pipeline), { maxBatch: 8, seed: 17 });
  const checkpoint = modelCheckpoint(model);
  model.close();
  const options = { maxBatch: 8, unknownColumns: "ignore" as const };
  const predictor = new Predictor(pipeline, checkpoint, options);
  const reference = new Predictor(pipeline, checkpoint, options);
  const dir = mkdtempSync(join(tmpdir(), "denorec-fuzz-csv-"));
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

  return Promise.resolve(async (i: number, random: () => number): Promise<CaseResult> => {
    const { int, pick, chance } = draws(random);
    const { header, rows } = table(random);
    const path = join(dir, `in-${i}.csv`), output = join(dir, `out-${i}.csv`);
    const at = (line: number) => new RegExp(`^${escape(path)}:${line}: `);
    const columns = header.slice();
    let cells = rows.map((row) => columns.map((c) => row[c]));
    let delimiter = ",";
    let skipBadRows = false;
    let expected: Expectation = { kind: "success", rows };
    const fault = rows.length === 0 ? pick(["none", "delimiter", "missing", "renamed"]) : pick([
      "none",
      "none",
      "values",
      "values",
      "delimiter",
      "missing",
      "renamed",
      "fields",
      "skip",
      "utf8",
      "quote",
    ]);
    const target = rows.length === 0 ? 0 : int(rows.length);
    let what = `${rows.length} rows, ${fault}`;
    if (fault === "values") {
      for (let n = 1 + int(2); n > 0; n--) {
        const r = int(rows.length), column = pick(FEATURES), value = pick(EVIL);
        rows[r][column] = value;
        what += `, row ${r} ${column}=${JSON.stringify(value.slice(0, 20))}`;
      }
      cells = rows.map((row) => columns.map((c) => row[c]));
    } else if (fault === "delimiter") {
      delimiter = pick([";", "\t", "|"]);
      expected = {
        kind: "error",
        // One giant column, or a header that does not parse (quoted names): both say why.
        pattern: new RegExp(`^${escape(path)}:1: .*the file seems delimited by`),
        why: "delimiter",
      };
    } else if (fault === "missing" || fault === "renamed") {
      const column = pick(FEATURES);
      const index = columns.indexOf(column);
      if (fault === "missing") {
        columns.splice(index, 1);
        cells = cells.map((row) => row.filter((_, c) => c !== index));
      } else columns[index] = pick(["userid", `${column} `, column.toUpperCase(), `${column}_`]);
      what += ` ${column}`;
      expected = {
        kind: "error",
        pattern: new RegExp(`^${escape(path)}: missing column '${column}' \\(needed by feature`),
        why: fault,
      };
    } else if (fault === "fields" || fault === "skip") {
      if (chance(0.5)) cells[target].pop();
      else cells[target].push("surplus");
      what += ` row ${target}`;
      skipBadRows = fault === "skip";
    }
    const serialized = serialize(columns, cells, delimiter, random);
    let bytes = serialized.bytes;
    const lines = serialized.lines;
    /** Inserts `insert` (or `quoted` where the line starts with a quote) at the start of `line`. */
    const atLine = (line: number, insert: number[], quoted = insert) => {
      let offset = 0;
      for (let l = 1; l < line; l++) offset = bytes.indexOf(0x0a, offset) + 1;
      const bytesIn = bytes[offset] === 0x22 ? quoted : insert;
      return Uint8Array.from([...bytes.subarray(0, offset), ...bytesIn, ...bytes.subarray(offset)]);
    };
    if (fault === "fields") {
      expected = { kind: "error", pattern: at(lines[target]), why: "field count" };
    } else if (fault === "skip") {
      expected = { kind: "success", rows: rows.filter((_, r) => r !== target) };
    } else if (fault === "utf8") {
      // A bad byte at the start of the target row's first line.
      bytes = atLine(lines[target], [pick([0xff, 0xc3, 0xed])]);
      expected = { kind: "error", pattern: at(lines[target]), why: "invalid UTF-8" };
      what += ` line ${lines[target]}`;
    } else if (fault === "quote") {
      // A quote opening the row's first field (unterminated, or closed by a later quote with
      // text after it); before a quoted field, a quoted field with text after its quote.
      bytes = atLine(lines[target], [0x22], [...encoder.encode('"x"y')]);
      expected = { kind: "error", pattern: at(lines[target]), why: "broken quote" };
      what += ` line ${lines[target]}`;
    }
    if (expected.kind === "success") {
      // Bad values: the independent predictor says which row fails first, if any.
      try {
        reference.predict(expected.rows as RawRecord[]);
      } catch (error) {
        if (!(error instanceof PredictError)) throw error;
        const row = error.row >= 0 ? error.row : 0;
        const line = lines[rows.indexOf(expected.rows[row])];
        expected = {
          kind: "error",
          pattern: error.row >= 0 ? at(line) : new RegExp(`^column '`),
          why: `value: ${error.message}`,
        };
      }
    }
    writeFileSync(path, bytes);

    let result: { written: number } | undefined;
    let failure: unknown;
    let written: string[] = [];
    try {
      result = await predictFile({
        predictor,
        inputPath: path,
        outputPath: output,
        reservedColumns: ["req"],
        skipBadRows,
      });
      written = readFileSync(output, "utf8").split("\n").filter((line) => line !== "");
    } catch (error) {
      failure = error;
    } finally {
      rmSync(path, { force: true });
      rmSync(output, { force: true });
    }
    const message = failure instanceof Error ? failure.message : String(failure);
    const detail = `${what}: ${failure !== undefined ? message.slice(0, 300) : "ok"}`;
    if (expected.kind === "error") {
      if (failure === undefined) {
        return { outcome: "silently wrong", detail: `no error for ${expected.why}: ${detail}` };
      }
      if (!(failure instanceof Error) || message.includes("\n")) {
        return { outcome: "crash", detail };
      }
      return expected.pattern.test(message)
        ? { outcome: "clear error", detail }
        : { outcome: "crash", detail: `expected ${expected.pattern} (${expected.why}): ${detail}` };
    }
    if (failure !== undefined) return { outcome: "wrongly refused", detail };
    const scores = reference.predict(expected.rows as RawRecord[]);
    const want = [
      ["req", ...predictor.outputs].join(","),
      ...expected.rows.map((row, r) =>
        [row.req, ...predictor.outputs.map((name) => String(scores[name][r]))].join(",")
      ),
    ];
    return result!.written === expected.rows.length &&
        JSON.stringify(written) === JSON.stringify(want)
      ? { outcome: "accepted correct", detail }
      : {
        outcome: "silently wrong",
        detail: `${detail}: wrote ${written.slice(0, 3).join(" / ")}`,
      };
  });
}

// Shared pieces of the example CLIs (train.ts, eval.ts, predict.ts,
// embed_model.ts): errors as one line and exit code 1 (`exitOnErrors`, from
// _cli_errors.ts), strict flags with typed values, input reading by
// extension, column checks before any work, progress output.
import { open } from "node:fs/promises";
import process from "node:process";
import { parseArgs } from "node:util";
import {
  type CsvReadOptions,
  FeatureError,
  inputColumns,
  type LocatedRecord,
  readRecords,
  type RequiredColumn,
} from "@denorec/mmoe";
import { DEBUG_FLAG, terminal } from "./_cli_errors.ts";

export { exitOnErrors } from "./_cli_errors.ts";

/** A flag taking a string: `--model_dir experiments/x` or `--model_dir=experiments/x`. */
export interface StringFlag {
  /** Kind. */
  type: "string";
  /** Value when the flag is absent. */
  default?: string;
  /** Whether the flag must be given. */
  required?: boolean;
}

/** A flag taking an integer of at least `min` (default 1). */
export interface IntegerFlag {
  /** Kind. */
  type: "integer";
  /** Value when the flag is absent. */
  default?: number;
  /** Smallest accepted value (default 1). */
  min?: number;
  /** Whether the flag must be given. */
  required?: boolean;
}

/** A flag without a value: present is true. */
export interface BooleanFlag {
  /** Kind. */
  type: "boolean";
}

/** One flag's definition. */
export type FlagSpec = StringFlag | IntegerFlag | BooleanFlag;

/** The parsed value of a flag: undefined when absent, unless it has a default or is required. */
export type FlagValue<F> = F extends { type: "boolean" } ? boolean
  : F extends { type: "integer" } ? F extends { default: number } | { required: true } ? number
    : number | undefined
  : F extends { default: string } | { required: true } ? string
  : string | undefined;

/**
 * Parses `args` strictly against `specs` (plus `--debug`, which
 * `exitOnErrors` reads): an unknown flag, a missing or extra value, a bad
 * integer, a missing required flag or more positional arguments than
 * `positionals[1]` throws a one-line error naming the flag.
 */
export function parseFlags<const S extends Record<string, FlagSpec>>(
  args: readonly string[],
  specs: S,
  positionals: readonly [min: number, max: number] = [0, 0],
): { flags: { [K in keyof S]: FlagValue<S[K]> }; positionals: string[] } {
  const known = Object.keys(specs).map((name) => `--${name}`).join(", ");
  const options = Object.fromEntries(
    Object.entries(specs).map((
      [name, spec],
    ) => [name, { type: spec.type === "boolean" ? "boolean" : "string" } as const]),
  );
  const { tokens } = parseArgs({
    args: [...args],
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const values: Record<string, string | number | boolean | undefined> = {};
  const rest: string[] = [];
  for (const token of tokens) {
    if (token.kind === "positional") {
      if (rest.length === positionals[1]) {
        throw new TypeError(
          `unexpected argument ${JSON.stringify(token.value)} (flags: ${known})`,
        );
      }
      rest.push(token.value);
      continue;
    }
    if (token.kind !== "option") continue;
    if (token.rawName === DEBUG_FLAG) continue;
    const spec: FlagSpec | undefined = Object.hasOwn(specs, token.name)
      ? specs[token.name]
      : undefined;
    if (spec === undefined || !token.rawName.startsWith("--")) {
      throw new TypeError(`unknown flag ${token.rawName} (flags: ${known}, --debug)`);
    }
    if (spec.type === "boolean") {
      if (token.inlineValue) throw new TypeError(`${token.rawName} takes no value`);
      values[token.name] = true;
      continue;
    }
    const value = token.value;
    if (value === undefined || (!token.inlineValue && /^-(-|[A-Za-z])/.test(value))) {
      throw new TypeError(`${token.rawName} needs a value`);
    }
    values[token.name] = spec.type === "integer" ? integer(token.rawName, value, spec.min) : value;
  }
  if (rest.length < positionals[0]) {
    throw new TypeError(
      `expected ${positionals[0]} positional argument${positionals[0] === 1 ? "" : "s"}, ` +
        `got ${rest.length}`,
    );
  }
  for (const [name, spec] of Object.entries(specs)) {
    if (values[name] !== undefined) continue;
    if (spec.type === "boolean") values[name] = false;
    else if (spec.required) throw new TypeError(`--${name} is required`);
    else values[name] = spec.default;
  }
  return { flags: values as { [K in keyof S]: FlagValue<S[K]> }, positionals: rest };
}

function integer(flag: string, text: string, min = 1): number {
  const value = Number(text);
  if (!/^\s*[-+]?\d+\s*$/.test(text) || !Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`${flag}: expected an integer >= ${min}, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** Rows skipped by {@link records} (when asked to skip bad rows). */
export interface SkipCounter {
  /** Bad rows skipped so far. */
  skipped: number;
}

/**
 * CSV (read as the config says: `csvReadOptions(config)`, its delimiter and,
 * for files without a header, its input_fields) or Parquet records, skipping
 * bad CSV rows if asked: the first five are listed, all are counted in
 * `counter`.
 */
export function records(
  path: string,
  csv: CsvReadOptions,
  skipBadRows: boolean,
  counter: SkipCounter = { skipped: 0 },
): AsyncIterable<LocatedRecord> {
  return readRecords(path, {
    ...csv,
    skipBadRows,
    onBadRow: (location, message) => {
      if (counter.skipped++ < 5) console.error(`skipped bad row ${location}: ${message}`);
      else if (counter.skipped === 6) console.error("(more bad rows skipped; not listed)");
    },
  });
}

const COMMON_DELIMITERS = [",", ";", "\t", "|"];

/**
 * When the first line of a CSV file holds another common delimiter and not
 * `delimiter`: what to say about it; else "".
 */
async function delimiterHint(path: string, delimiter: string): Promise<string> {
  if (/\.(parquet|pq)$/i.test(path)) return "";
  let first: string;
  try {
    const file = await open(path, "r");
    try {
      const bytes = new Uint8Array(1 << 16);
      const { bytesRead } = await file.read(bytes, 0, bytes.length, 0);
      first = new TextDecoder().decode(bytes.subarray(0, bytesRead)).split("\n")[0];
    } finally {
      await file.close();
    }
  } catch {
    return ""; // the reader reports the file itself
  }
  const other = COMMON_DELIMITERS.find((d) => d !== delimiter && first.includes(d));
  return other === undefined || first.includes(delimiter)
    ? ""
    : `the file seems delimited by ${JSON.stringify(other)}, not by ${
      JSON.stringify(delimiter)
    } (data_config.delimiter)`;
}

/**
 * Fails before any training or scoring when an input lacks a column the
 * model needs (every missing column named, with what needs it, and the
 * header), or one of `extra` (e.g. `--reserved_columns`). A CSV file whose
 * first line holds another common delimiter than the config's (read as one
 * giant column, or a header that does not parse) says so.
 */
export async function checkColumns(
  paths: string[],
  encoder: { checkColumns(header: readonly string[], file: string): void },
  csv: CsvReadOptions,
  extra: readonly RequiredColumn[] = [],
): Promise<void> {
  const delimiter = csv.delimiter ?? ",";
  for (const path of paths) {
    let header: string[];
    try {
      header = await inputColumns(path, csv);
    } catch (error) {
      const hint = await delimiterHint(path, delimiter);
      if (hint === "") throw error;
      throw new TypeError(`${(error as Error).message}: ${hint}`, { cause: error });
    }
    try {
      encoder.checkColumns(header, path);
      const missing = extra.find(({ column }) => !header.includes(column));
      if (missing !== undefined) {
        throw new FeatureError(
          `${path}: missing column '${missing.column}' (needed by ${missing.neededBy})`,
          path,
          missing.column,
        );
      }
    } catch (error) {
      if (!(error instanceof FeatureError)) throw error;
      const hint = header.length === 1 ? await delimiterHint(path, delimiter) : "";
      if (hint !== "") {
        throw new FeatureError(
          `${path}:1: the header is one column, ${JSON.stringify(header[0].slice(0, 80))}: ${hint}`,
          path,
          error.column,
        );
      }
      const columns = header.join(delimiter);
      throw new FeatureError(
        `${error.message} (header: ${
          columns.length > 200 ? columns.slice(0, 200) + "..." : columns
        })`,
        error.location,
        error.column,
      );
    }
  }
}

/** Prints the ids clamped into range per feature, if any (`--clamp_out_of_range`). */
export function reportClamped(counts: Record<string, number>): void {
  const clamped = Object.entries(counts).filter(([, n]) => n > 0);
  if (clamped.length > 0) {
    console.log(`clamped out-of-range ids: ${clamped.map(([f, n]) => `${f} ${n}`).join(", ")}`);
  }
}

/** A live status line on a terminal, plain lines otherwise. */
export function status(line: string, final = false): void {
  if (process.stdout.isTTY) {
    process.stdout.write(`\r\x1b[2K${line}${final ? "\n" : ""}`);
    terminal.lineOpen = !final;
  } else console.log(line);
}

/** Least time between two progress lines written to a file or pipe. */
const PLAIN_PROGRESS_MS = 5000;
let lastPlainProgress = -Infinity;

/**
 * A progress line (rows read so far): the live status line on a terminal;
 * to a file or pipe at most one line per {@link PLAIN_PROGRESS_MS}, so a
 * log holds a few lines, not one per batch.
 */
export function progress(line: string): void {
  if (!process.stdout.isTTY) {
    const now = performance.now();
    if (now - lastPlainProgress < PLAIN_PROGRESS_MS) return;
    lastPlainProgress = now;
  }
  status(line);
}

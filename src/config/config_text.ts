/**
 * Reads a TorchEasyRec (tzrec) `pipeline.config`, the protobuf text format of
 * tzrec's `EasyRecConfig`, into the typed {@link PipelineConfig}.
 *
 * The text is parsed by `@bufbuild/protobuf`'s `fromText` against tzrec's own
 * schema files (`proto/tzrec/protos/*.proto`: package, message names, field
 * names, field numbers and proto2 defaults; generated into `src/proto/` by
 * `deno task proto`), then every field that is set is copied into the typed
 * config: oneofs become `{ idFeature: ... }`, enums their names (`"DEEP"`),
 * 64-bit integers numbers, and `float` fields keep their float32 value
 * (`lr: 0.001` reads as `Math.fround(0.001)`, as in tzrec, whose Python
 * protobuf returns float fields as float32). Fields that are not set stay
 * unset, so that `resolveConfig` applies tzrec's defaults; as tzrec's
 * `text_format.Merge`, required fields may be missing here (`resolveConfig`
 * requires what it needs).
 *
 * Errors are {@link ConfigTextError}s whose message starts with
 * `source:line:column` and names the field by its tzrec path: syntax errors,
 * unknown fields, values of the wrong type. `fromText` reports none of that
 * position, so a second pass over the text (a tokenizer plus a walk along the
 * schema) finds the line of the field that failed. The config returned
 * remembers where each field is, so that `resolveConfig` names the
 * `file:line:column` of a field it refuses (not supported yet, out of range).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "./config.ts";
 * import { parsePipelineConfig } from "./config_text.ts";
 * const text = `
 *   feature_configs { id_feature { feature_name: "user_id" num_buckets: 100 embedding_dim: 8 } }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: "user_id" group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [16, 8] }
 *       num_expert: 2
 *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
 *     }
 *   }
 * `;
 * assert.equal(resolveConfig(parsePipelineConfig(text)).inputWidth, 8);
 * assert.throws(
 *   () => resolveConfig(parsePipelineConfig(text.replace("num_expert: 2", "num_expert: 0"), "my.config")),
 *   { message: "my.config:7:7: model_config.mmoe.num_expert: must be an integer >= 1, got 0" },
 * );
 * ```
 * @module
 */
import { type DescField, type DescMessage, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { fromText, toText } from "@bufbuild/protobuf/txtpb";
import { readFile } from "node:fs/promises";
import type { PipelineConfig } from "./config.ts";
import { ConfigError, ConfigTextError, registerLocator } from "./errors.ts";
import { EasyRecConfigSchema } from "../proto/tzrec/protos/pipeline_pb.ts";

// The types in this module's signatures, so that its docs are complete.
export { ConfigError, ConfigTextError };
export type { PipelineConfig };

// ---------------------------------------------------------------------- errors

/** An error found at a text offset; turned into a ConfigTextError at the API boundary. */
class TextProblem extends Error {
  constructor(readonly path: string, readonly offset: number, readonly detail: string) {
    super(detail);
  }
}

function position(text: string, offset: number): { line: number; column: number } {
  let line = 1, lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

// ------------------------------------------------------------------- tokenizer

interface Token {
  /** `punct` is one of `{}<>[]:,;-`; `error` (text = what is wrong) ends the stream. */
  kind: "ident" | "number" | "string" | "punct" | "error" | "eof";
  text: string;
  start: number;
  end: number;
}

const PUNCT = new Set(["{", "}", "<", ">", "[", "]", ":", ",", ";", "-"]);

/**
 * Splits the text into tokens with offsets, like txtpb's reader but lenient
 * inside numbers and string escapes: the values themselves are checked by
 * `fromText` on each field (see {@link Walker}). A lexical error becomes an
 * `error` token so that the walker reports it with the field it is in.
 */
function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  const isIdentStart = (c: string) => /[A-Za-z_]/.test(c);
  let i = 0;
  while (true) {
    while (i < text.length) {
      const c = text[i];
      if (c === "#") {
        while (i < text.length && text[i] !== "\n") i++;
      } else if (/\s/.test(c)) i++;
      else break;
    }
    if (i >= text.length) break;
    const start = i, c = text[i];
    if (isIdentStart(c) || (c === "-" && isIdentStart(text[i + 1] ?? ""))) {
      i++;
      while (i < text.length && /[A-Za-z0-9_]/.test(text[i])) i++;
      tokens.push({ kind: "ident", text: text.slice(start, i), start, end: i });
    } else if (/[0-9]/.test(c) || (c === "." && /[0-9]/.test(text[i + 1] ?? ""))) {
      i++;
      while (i < text.length) {
        const d = text[i];
        if (/[A-Za-z0-9_.]/.test(d)) i++;
        else if (
          (d === "+" || d === "-") && /[eE]/.test(text[i - 1]) &&
          !/^0[xX]/.test(text.slice(start, i))
        ) i++;
        else break;
      }
      tokens.push({ kind: "number", text: text.slice(start, i), start, end: i });
    } else if (c === '"' || c === "'") {
      i++;
      while (i < text.length && text[i] !== c && text[i] !== "\n") i += text[i] === "\\" ? 2 : 1;
      if (i >= text.length || text[i] !== c) {
        tokens.push({ kind: "error", text: "unterminated string", start, end: i });
        break;
      }
      i++;
      tokens.push({ kind: "string", text: text.slice(start, i), start, end: i });
    } else if (PUNCT.has(c)) {
      i++;
      tokens.push({ kind: "punct", text: c, start, end: i });
    } else {
      tokens.push({
        kind: "error",
        text: `unexpected ${JSON.stringify(c)}`,
        start,
        end: start + 1,
      });
      break;
    }
  }
  tokens.push({ kind: "eof", text: "", start: text.length, end: text.length });
  return tokens;
}

function describe(token: Token): string {
  if (token.kind === "eof") return "end of input";
  if (token.kind === "string") return "a string";
  return JSON.stringify(token.text);
}

// ---------------------------------------------------------------------- walker

/**
 * Walks the token stream along the schema, recording where each field path
 * starts (`feature_configs[3].id_feature.num_buckets` -> offset). With
 * `validate` it also finds the first error: structure, unknown or repeated
 * fields, and every value, which it hands to `fromText` as the one-field text
 * `name: value` of its message, so values are judged by txtpb's own rules.
 */
class Walker {
  readonly offsets = new Map<string, number>();
  private tokens: Token[] = [];
  private at = 0;
  /** Path of the field being read, for lexical errors. */
  private context = "";

  constructor(private readonly text: string, private readonly validate: boolean) {}

  walk(schema: DescMessage): void {
    this.offsets.set("", 0);
    this.tokens = tokenize(this.text);
    this.at = 0;
    this.fields(schema, "", null);
  }

  private peek(): Token {
    return this.tokens[this.at];
  }

  private next(): Token {
    const token = this.tokens[this.at];
    if (token.kind === "error") throw new TextProblem(this.context, token.start, token.text);
    if (token.kind !== "eof") this.at++;
    return token;
  }

  private isPunct(token: Token, text: string): boolean {
    return token.kind === "punct" && token.text === text;
  }

  /** Fields of one message until its close token (`open` = null: the top level, until the end). */
  private fields(desc: DescMessage, path: string, open: Token | null): void {
    const close = open === null ? null : open.text === "{" ? "}" : ">";
    const seenFields = new Set<number>(), seenOneofs = new Set<string>();
    const counts = new Map<string, number>();
    for (;;) {
      this.context = path;
      const token = this.next();
      if (token.kind === "eof") {
        if (open === null) return;
        throw new TextProblem(
          path,
          open.start,
          `"${open.text}" is never closed (unexpected end of input, expected "${close}")`,
        );
      }
      if (close !== null && this.isPunct(token, close)) return;
      if (token.kind !== "ident") {
        throw new TextProblem(path, token.start, `expected a field name, got ${describe(token)}`);
      }
      const name = token.text, fieldPath = join(path, name);
      this.context = fieldPath;
      const field = desc.fields.find((f) => f.name === name);
      if (field === undefined) {
        throw new TextProblem(
          fieldPath,
          token.start,
          `unknown field "${name}" for ${desc.typeName}`,
        );
      }
      if (field.fieldKind !== "list" && field.fieldKind !== "map") {
        if (field.oneof !== undefined) {
          if (seenOneofs.has(field.oneof.name)) {
            throw new TextProblem(
              fieldPath,
              token.start,
              `another field of oneof "${field.oneof.name}" is already set`,
            );
          }
          seenOneofs.add(field.oneof.name);
        }
        if (seenFields.has(field.number)) {
          throw new TextProblem(fieldPath, token.start, `non-repeated field "${name}" is repeated`);
        }
        seenFields.add(field.number);
      }
      const hasColon = this.isPunct(this.peek(), ":");
      if (hasColon) this.next();
      const colonOptional = field.fieldKind === "message" || field.fieldKind === "map" ||
        (field.fieldKind === "list" && field.listKind === "message");
      if (!hasColon && !colonOptional) {
        throw new TextProblem(fieldPath, token.start, `expected ":" after field name "${name}"`);
      }
      if (field.fieldKind === "message") {
        this.offsets.set(fieldPath, token.start);
        this.message(field.message, fieldPath);
      } else if (field.fieldKind === "scalar" || field.fieldKind === "enum") {
        this.offsets.set(fieldPath, token.start);
        const end = this.valueEnd();
        this.check(desc, this.text.slice(token.start, end), fieldPath, this.tokens[this.at - 1]);
      } else {
        // Repeated: one element, or a bracketed list of them.
        if (!this.offsets.has(fieldPath)) this.offsets.set(fieldPath, token.start);
        const element = () => {
          const index = counts.get(name) ?? 0;
          counts.set(name, index + 1);
          const elementPath = `${fieldPath}[${index}]`;
          const first = this.peek();
          this.offsets.set(elementPath, first.start);
          if (field.fieldKind === "list" && field.listKind === "message") {
            this.message(field.message, elementPath);
          } else if (field.fieldKind === "map") {
            const start = first.start;
            this.skipBlock(elementPath);
            this.check(
              desc,
              `${name} ${this.text.slice(start, this.tokens[this.at - 1].end)}`,
              elementPath,
              first,
            );
          } else {
            const start = first.start;
            const end = this.valueEnd();
            this.check(desc, `${name}: ${this.text.slice(start, end)}`, elementPath, first);
          }
        };
        if (this.isPunct(this.peek(), "[")) {
          this.next();
          if (this.isPunct(this.peek(), "]")) this.next();
          else {
            for (;;) {
              element();
              const separator = this.next();
              if (this.isPunct(separator, "]")) break;
              if (!this.isPunct(separator, ",")) {
                throw new TextProblem(
                  fieldPath,
                  separator.start,
                  `expected "," or "]" in list, got ${describe(separator)}`,
                );
              }
            }
          }
        } else {
          element();
        }
      }
      const separator = this.peek();
      if (this.isPunct(separator, ",") || this.isPunct(separator, ";")) this.next();
    }
  }

  /** `{ ... }` or `< ... >` of a message field. */
  private message(desc: DescMessage, path: string): void {
    const open = this.next();
    if (!this.isPunct(open, "{") && !this.isPunct(open, "<")) {
      throw new TextProblem(path, open.start, `expected "{" or "<", got ${describe(open)}`);
    }
    this.fields(desc, path, open);
  }

  /** Skips a balanced `{ ... }` / `< ... >` block: a map entry, which `check` then parses whole. */
  private skipBlock(path: string): void {
    const open = this.next();
    if (!this.isPunct(open, "{") && !this.isPunct(open, "<")) {
      throw new TextProblem(path, open.start, `expected "{" or "<", got ${describe(open)}`);
    }
    let depth = 1;
    while (depth > 0) {
      const token = this.next();
      if (token.kind === "eof") {
        throw new TextProblem(
          path,
          open.start,
          `"${open.text}" is never closed (unexpected end of input)`,
        );
      }
      if (this.isPunct(token, "{") || this.isPunct(token, "<")) depth++;
      if (this.isPunct(token, "}") || this.isPunct(token, ">")) depth--;
    }
  }

  /** Consumes one scalar value: an optional `-`, a token, adjacent strings. Returns its end offset. */
  private valueEnd(): number {
    if (this.isPunct(this.peek(), "-")) this.next();
    const token = this.next();
    let end = token.end;
    if (token.kind === "string") {
      while (this.peek().kind === "string") end = this.next().end;
    }
    return end;
  }

  /** Parses `snippet` (one field of `desc`) with fromText; a failure is the error at `at`. */
  private check(desc: DescMessage, snippet: string, path: string, at: Token): void {
    if (!this.validate) return;
    try {
      fromText(desc, snippet);
    } catch (e) {
      throw new TextProblem(path, at.start, txtpbDetail(e));
    }
  }
}

function join(path: string, name: string): string {
  return path === "" ? name : `${path}.${name}`;
}

/** txtpb's message without its `cannot decode field X from text format: ` prefix (the path says it). */
function txtpbDetail(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/^cannot decode field \S+ from text format: /, "");
}

// ------------------------------------------------------------------- converter

/**
 * Copies every set field of the parsed message into the typed shape: oneof
 * members by their own name, enums by value name, 64-bit integers as numbers.
 */
class Converter {
  constructor(private readonly offsets: Map<string, number>) {}

  /** Offset of `path`, or of its nearest recorded ancestor. */
  offsetOf(path: string): number {
    for (let p = path;; p = p.replace(/(\.[^.[\]]+|\[\d+\])$/, "")) {
      const offset = this.offsets.get(p);
      if (offset !== undefined) return offset;
      if (p === "") return 0;
    }
  }

  message(msg: ReflectMessage, path: string): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const field of msg.fields) {
      if (!msg.isSet(field)) continue;
      out[field.localName] = this.value(msg, field, join(path, field.name));
    }
    return out;
  }

  private value(msg: ReflectMessage, field: DescField, path: string): unknown {
    switch (field.fieldKind) {
      case "message":
        return this.message(msg.get(field) as ReflectMessage, path);
      case "list": {
        const items: unknown[] = [];
        let index = 0;
        for (const item of msg.get(field)) {
          const itemPath = `${path}[${index++}]`;
          items.push(
            field.listKind === "message"
              ? this.message(item as ReflectMessage, itemPath)
              : this.single(field, item, itemPath),
          );
        }
        return items;
      }
      case "map": {
        const out: Record<string, unknown> = {};
        for (const [key, item] of msg.get(field)) {
          out[String(key)] = field.mapKind === "message"
            ? this.message(item as ReflectMessage, `${path}[${JSON.stringify(String(key))}]`)
            : this.single(field, item, path);
        }
        return out;
      }
      default:
        return this.single(field, msg.get(field), path);
    }
  }

  /** A scalar or enum value: 64-bit integers become numbers, enums their names. */
  private single(field: DescField, value: unknown, path: string): unknown {
    if (field.enum !== undefined) {
      return field.enum.values.find((v) => v.number === value)?.name ?? String(value);
    }
    if (typeof value === "bigint") {
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new TextProblem(
          path,
          this.offsetOf(path),
          `${value} is too large (at most ${Number.MAX_SAFE_INTEGER})`,
        );
      }
      return Number(value);
    }
    return value;
  }
}

// ------------------------------------------------------------------------- API

/**
 * Parses a tzrec `pipeline.config` (protobuf text format) into a
 * {@link PipelineConfig}: every field that is set, and only those (so
 * `resolveConfig` applies tzrec's defaults). Oneofs become
 * `{ idFeature: ... }`, enums their names (`"DEEP"`), 64-bit integers
 * numbers; `float` fields keep their float32 value.
 *
 * Throws a {@link ConfigTextError} at `source:line:column` with the field path
 * for syntax errors, unknown fields and wrong value types. Whether the fields
 * are supported, in range and complete is `resolveConfig`'s check, which
 * names the same `source:line:column` for a config returned from here.
 *
 * @param text The config text.
 * @param source Name used in error messages, usually the file path.
 * @returns The typed config, ready for `resolveConfig`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "./config.ts";
 * import { parsePipelineConfig } from "./config_text.ts";
 * const config = parsePipelineConfig(`
 *   # comments and [a, b] lists are fine
 *   data_config { batch_size: 256 label_fields: ["clk", "buy"] }
 *   model_config { mmoe { expert_mlp { hidden_units: 8 hidden_units: 4 } } }
 * `);
 * assert.deepEqual(config.dataConfig, { batchSize: 256, labelFields: ["clk", "buy"] });
 * assert.deepEqual(config.modelConfig.mmoe?.expertMlp, { hiddenUnits: [8, 4] });
 * assert.throws(
 *   () => parsePipelineConfig("model_config {\n  mmoe { num_experts: 3 }\n}", "x.config"),
 *   /^ConfigTextError: x\.config:2:10: model_config\.mmoe\.num_experts: unknown field/,
 * );
 * assert.throws(
 *   () => resolveConfig(parsePipelineConfig("model_config {\n  dbmtl {}\n}", "x.config")),
 *   /^ConfigTextError: x\.config:2:3: model_config\.dbmtl: not supported yet \(the only model/,
 * );
 * ```
 */
export function parsePipelineConfig(text: string, source = "pipeline.config"): PipelineConfig {
  let message;
  try {
    message = fromText(EasyRecConfigSchema, text);
  } catch (e) {
    throw located(text, source, diagnose(text, e));
  }
  const walker = new Walker(text, false);
  try {
    walker.walk(EasyRecConfigSchema);
  } catch {
    // The text parsed, so the walk can only fail on syntax it does not model;
    // the offsets recorded so far still locate most fields.
  }
  const converter = new Converter(walker.offsets);
  let config: PipelineConfig;
  try {
    config = converter.message(
      reflect(EasyRecConfigSchema, message),
      "",
    ) as unknown as PipelineConfig;
  } catch (e) {
    if (e instanceof TextProblem) throw located(text, source, e);
    throw e;
  }
  registerLocator(config, source, (path) => position(text, converter.offsetOf(path)));
  return config;
}

/** Finds where `fromText` failed: the walker's first error, else the start of the text. */
function diagnose(text: string, error: unknown): TextProblem {
  try {
    new Walker(text, true).walk(EasyRecConfigSchema);
  } catch (e) {
    if (e instanceof TextProblem) return e;
    throw e;
  }
  return new TextProblem("", 0, `${txtpbDetail(error)} (position unknown)`);
}

function located(text: string, source: string, problem: TextProblem): ConfigTextError {
  const { line, column } = position(text, problem.offset);
  return new ConfigTextError(problem.path, problem.detail, source, line, column);
}

/**
 * Reads and parses a `pipeline.config` file (UTF-8); errors name `path` as
 * their source. Works in Deno (with `--allow-read`), Bun and Node.
 *
 * @param path File path.
 * @returns The typed config.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadPipelineConfig } from "./config_text.ts";
 * const config = await loadPipelineConfig("configs/mmoe_taobao.config");
 * assert.equal(config.featureConfigs.length, 16);
 * assert.equal(config.dataConfig?.batchSize, 8192);
 * ```
 */
export async function loadPipelineConfig(path: string): Promise<PipelineConfig> {
  return parsePipelineConfig(await readFile(path, "utf8"), path);
}

/**
 * Writes a {@link PipelineConfig} as tzrec protobuf text (two-space indent,
 * one field per line), which {@link parsePipelineConfig} and tzrec read back.
 * Throws a `ConfigError` if `config` has a field or value tzrec's schema
 * cannot hold.
 *
 * @param config The typed config.
 * @returns The `pipeline.config` text.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePipelineConfig, toPipelineConfigText } from "./config_text.ts";
 * const text = toPipelineConfigText({
 *   featureConfigs: [{ rawFeature: { featureName: "price" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["price"], groupType: "DEEP" }],
 *     mmoe: { expertMlp: { hiddenUnits: [4] }, numExpert: 2, taskTowers: [] },
 *   },
 * });
 * assert.match(text, /raw_feature: \{\n\s+feature_name: "price"/);
 * assert.equal(parsePipelineConfig(text).modelConfig.mmoe?.numExpert, 2);
 * ```
 */
export function toPipelineConfigText(config: PipelineConfig): string {
  let message;
  try {
    message = fromJson(EasyRecConfigSchema, config as unknown as JsonValue);
  } catch (e) {
    throw new ConfigError("", `cannot write the config as tzrec text: ${txtpbDetail(e)}`);
  }
  return toText(EasyRecConfigSchema, message);
}

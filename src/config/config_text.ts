/**
 * Reads a TorchEasyRec (tzrec) `pipeline.config`, the protobuf text format of
 * tzrec's `EasyRecConfig`, into the typed {@link PipelineConfig} of
 * `config.ts`.
 *
 * The text is parsed by `@bufbuild/protobuf`'s `fromText` against
 * `proto/tzrec/protos/*.proto`, tzrec's own schema files (package, message
 * names, field names, field numbers and proto2 defaults; generated into
 * `src/proto/` by `deno task proto`). The message is then
 * converted to the camelCase {@link PipelineConfig}, copying only the fields
 * that were set so that `resolveConfig` applies the defaults.
 *
 * Every error is a {@link ConfigTextError} (a `ConfigError`) whose message
 * starts with `source:line:column` and names the field by its tzrec path:
 * syntax errors, unknown fields, values of the wrong type, missing required
 * fields, and fields that tzrec has but this library does not run
 * (`model_config.dbmtl: is not supported yet`). `fromText` reports none of
 * that position, so a second pass over the text (a tokenizer plus a walk along
 * the schema) finds the line of the field that failed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "./config.ts";
 * import { parsePipelineConfig } from "./config_text.ts";
 * const config = parsePipelineConfig(`
 *   feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 100 embedding_dim: 8 } }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: "user_id" group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [16, 8] }
 *       num_expert: 2
 *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
 *     }
 *   }
 * `);
 * assert.equal(resolveConfig(config).inputWidth, 8);
 * ```
 * @module
 */
import { type DescField, type DescMessage, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { reflect, type ReflectMessage, scalarZeroValue } from "@bufbuild/protobuf/reflect";
import { fromText, toText } from "@bufbuild/protobuf/txtpb";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import { readFile } from "node:fs/promises";
import {
  ConfigError,
  type DataConfig,
  type FeatureConfig,
  type FeatureGroupConfig,
  type IdFeature,
  type LearningRateConfig,
  type LossConfig,
  type MetricConfig,
  type MLP,
  type MMoE,
  type ModelConfig,
  type OptimizerConfig,
  type PipelineConfig,
  type RawFeature,
  type TaskTower,
  type TrainConfig,
} from "./config.ts";
import { EasyRecConfigSchema } from "../proto/tzrec/protos/pipeline_pb.ts";

// The types in this module's signatures, so that its docs are complete.
export { ConfigError };
export type {
  DataConfig,
  FeatureConfig,
  FeatureGroupConfig,
  IdFeature,
  LearningRateConfig,
  LossConfig,
  MetricConfig,
  MLP,
  MMoE,
  ModelConfig,
  OptimizerConfig,
  PipelineConfig,
  RawFeature,
  TaskTower,
  TrainConfig,
};

// ------------------------------------------------------------------ the policy

/**
 * Fields copied into {@link PipelineConfig}, by message. A set field of the
 * schema that is in none of these tables is "not supported yet", unless it
 * holds tzrec's default value (then it changes nothing).
 */
const KEPT: Record<string, readonly string[]> = {
  "tzrec.protos.EasyRecConfig": [
    "train_input_path",
    "eval_input_path",
    "model_dir",
    "train_config",
    "eval_config",
    "data_config",
    "feature_configs",
    "model_config",
  ],
  "tzrec.protos.TrainConfig": [
    "sparse_optimizer",
    "dense_optimizer",
    "num_steps",
    "num_epochs",
    "log_step_count_steps",
  ],
  "tzrec.protos.EvalConfig": [],
  "tzrec.protos.DataConfig": [
    "batch_size",
    "label_fields",
    "sample_weight_fields",
    "delimiter",
    "shuffle",
    "drop_remainder",
  ],
  "tzrec.protos.FeatureConfig": ["id_feature", "raw_feature"],
  "tzrec.protos.IdFeature": [
    "feature_name",
    "expression",
    "embedding_dim",
    "num_buckets",
    "hash_bucket_size",
    "vocab_list",
    "embedding_name",
    "pooling",
    "separator",
  ],
  "tzrec.protos.RawFeature": [
    "feature_name",
    "expression",
    "boundaries",
    "embedding_dim",
    "value_dim",
    "embedding_name",
    "separator",
  ],
  "tzrec.protos.ModelConfig": ["feature_groups", "mmoe"],
  "tzrec.protos.FeatureGroupConfig": ["group_name", "feature_names", "group_type"],
  "tzrec.protos.MMoE": ["expert_mlp", "gate_mlp", "num_expert", "task_towers"],
  "tzrec.protos.MLP": ["hidden_units", "dropout_ratio", "activation", "use_bn", "bias", "use_ln"],
  "tzrec.protos.TaskTower": [
    "tower_name",
    "label_name",
    "metrics",
    "losses",
    "num_class",
    "mlp",
    "weight",
    "sample_weight_name",
    "task_space_indicator_label",
    "in_task_space_weight",
    "out_task_space_weight",
  ],
  "tzrec.protos.LossConfig": ["binary_cross_entropy", "l2_loss", "softmax_cross_entropy"],
  "tzrec.protos.BinaryCrossEntropy": ["label_smoothing"],
  "tzrec.protos.SoftmaxCrossEntropy": ["label_smoothing"],
  "tzrec.protos.L2Loss": [],
  "tzrec.protos.MetricConfig": [
    "auc",
    "exact_auc",
    "grouped_auc",
    "mean_absolute_error",
    "mean_squared_error",
    "accuracy",
  ],
  "tzrec.protos.AUC": ["thresholds"],
  "tzrec.protos.ExactAUC": [],
  "tzrec.protos.GroupedAUC": ["grouping_key"],
  "tzrec.protos.MeanAbsoluteError": [],
  "tzrec.protos.MeanSquaredError": [],
  "tzrec.protos.Accuracy": ["threshold"],
  "tzrec.protos.SparseOptimizer": [
    "sgd_optimizer",
    "adagrad_optimizer",
    "adam_optimizer",
    "constant_learning_rate",
    "exponential_decay_learning_rate",
  ],
  "tzrec.protos.DenseOptimizer": [
    "sgd_optimizer",
    "adagrad_optimizer",
    "adam_optimizer",
    "constant_learning_rate",
    "exponential_decay_learning_rate",
  ],
  "tzrec.protos.FusedSGDOptimizer": ["lr"],
  "tzrec.protos.FusedAdagradOptimizer": ["lr"],
  "tzrec.protos.FusedAdamOptimizer": ["lr", "beta1", "beta2", "weight_decay"],
  "tzrec.protos.SGDOptimizer": ["lr", "momentum", "weight_decay"],
  "tzrec.protos.AdagradOptimizer": ["lr", "weight_decay"],
  "tzrec.protos.AdamOptimizer": ["lr", "beta1", "beta2", "weight_decay"],
  "tzrec.protos.ConstantLR": [],
  "tzrec.protos.ExponentialDecayLR": [
    "decay_size",
    "decay_factor",
    "staircase",
    "min_learning_rate",
  ],
};

/**
 * Fields accepted with any value and dropped: they tune tzrec's GPU, logging
 * or MaxCompute machinery and change no number this library computes.
 */
const IGNORED: Record<string, readonly string[]> = {
  "tzrec.protos.TrainConfig": [
    "is_profiling",
    "use_tensorboard",
    "tensorboard_summaries",
    "cudnn_allow_tf32", // CUDA TF32 switches; the wasm kernels compute in f32
    "cuda_matmul_allow_tf32",
  ],
  "tzrec.protos.DataConfig": [
    "dataset_type", // only CsvDataset passes ACCEPTED_VALUES
    "num_workers",
    "pin_memory",
    "fg_threads",
    "is_orderby_partition",
    "odps_data_quota_name",
    "odps_data_compression",
  ],
  "tzrec.protos.ModelConfig": ["kernel"], // Triton / PyTorch / CUTLASS GPU kernels
};

/** Enum fields (kept or ignored) that accept only some of their values. */
const ACCEPTED_VALUES: Record<string, readonly string[]> = {
  "tzrec.protos.DataConfig.dataset_type": ["CsvDataset"],
  "tzrec.protos.FeatureGroupConfig.group_type": ["DEEP"],
};

/**
 * Kept fields that are written with tzrec's proto default when unset, because
 * tzrec's default is not the one `resolveConfig` would apply: required fields
 * with a `[default]` (tzrec reads the default, `resolveConfig` would reject the
 * missing value) and dense SGD's momentum (0.9 in tzrec, which this library
 * does not run and so must not silently replace by 0).
 */
const PROTO_DEFAULT_WHEN_UNSET = new Set(["tzrec.protos.SGDOptimizer.momentum"]);

/**
 * Required fields whose absence is not an error here: the paths can come from
 * the command line, the optimizers from `resolveConfig`'s defaults.
 */
const OPTIONAL_HERE = new Set([
  "tzrec.protos.EasyRecConfig.train_input_path",
  "tzrec.protos.EasyRecConfig.eval_input_path",
  "tzrec.protos.EasyRecConfig.model_dir",
  "tzrec.protos.TrainConfig.sparse_optimizer",
  "tzrec.protos.TrainConfig.dense_optimizer",
]);

/** Extra words for "not supported yet" of the model oneof. */
const MODEL_HINT = " (the only model this library runs is mmoe)";

// ---------------------------------------------------------------------- errors

/**
 * A {@link ConfigError} located in the config text: `message` reads
 * `source:line:column: path: what is wrong`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ConfigError } from "./config.ts";
 * import { ConfigTextError, parsePipelineConfig } from "./config_text.ts";
 * try {
 *   parsePipelineConfig("model_config {\n  mmoe { num_experts: 3 }\n}\n", "my.config");
 *   assert.fail("expected an error");
 * } catch (e) {
 *   assert.ok(e instanceof ConfigTextError && e instanceof ConfigError);
 *   assert.equal(e.line, 2);
 *   assert.equal(e.path, "model_config.mmoe.num_experts");
 *   assert.match(e.message, /^my\.config:2:10: model_config\.mmoe\.num_experts: unknown field/);
 * }
 * ```
 */
export class ConfigTextError extends ConfigError {
  /** Name of the text, usually its file path. */
  readonly source: string;
  /** 1-based line of the offending field or token. */
  readonly line: number;
  /** 1-based column (UTF-16 code units) of the offending field or token. */
  readonly column: number;
  /** What is wrong, without location or path. */
  readonly detail: string;

  /** Creates the error `${source}:${line}:${column}: ${path}: ${detail}`. */
  constructor(path: string, detail: string, source: string, line: number, column: number) {
    super(path, detail);
    this.name = "ConfigTextError";
    this.source = source;
    this.line = line;
    this.column = column;
    this.detail = detail;
    this.message = `${source}:${line}:${column}: ${path === "" ? "" : `${path}: `}${detail}`;
  }
}

/** An error found at a text offset; turned into a ConfigTextError at the API boundary. */
class TextProblem extends Error {
  constructor(readonly path: string, readonly offset: number, readonly detail: string) {
    super(detail);
  }
}

function locate(text: string, offset: number): { line: number; column: number } {
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

/** Converts the parsed message to the typed config, checking support and required fields. */
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

  private fail(path: string, detail: string): never {
    throw new TextProblem(path, this.offsetOf(path), detail);
  }

  message(msg: ReflectMessage, path: string): Record<string, unknown> {
    const typeName = msg.desc.typeName;
    const kept = KEPT[typeName] ?? [];
    const ignored = IGNORED[typeName] ?? [];
    const out: Record<string, unknown> = {};
    for (const field of msg.fields) {
      const fieldPath = join(path, field.name);
      const fullName = `${typeName}.${field.name}`;
      const isKept = kept.includes(field.name);
      if (!msg.isSet(field)) {
        if (!isKept) continue;
        const fallback = field.fieldKind === "scalar" || field.fieldKind === "enum"
          ? field.getDefaultValue()
          : undefined;
        if (field.presence === FeatureSet_FieldPresence.LEGACY_REQUIRED) {
          if (fallback !== undefined) {
            out[field.localName] = this.single(field, fallback, fieldPath);
          } else if (!OPTIONAL_HERE.has(fullName)) this.fail(fieldPath, "is required (missing)");
        } else if (PROTO_DEFAULT_WHEN_UNSET.has(fullName) && fallback !== undefined) {
          out[field.localName] = this.single(field, fallback, fieldPath);
        }
        continue;
      }
      const accepted = ACCEPTED_VALUES[fullName];
      if (accepted !== undefined && field.fieldKind === "enum") {
        const name = enumName(field, msg.get(field) as number);
        if (!accepted.includes(name)) {
          this.fail(fieldPath, `${name} is not supported yet (supported: ${accepted.join(", ")})`);
        }
      }
      if (ignored.includes(field.name)) continue;
      if (!isKept) {
        if (holdsDefault(msg, field)) continue;
        const hint = typeName === "tzrec.protos.ModelConfig" && field.oneof?.name === "model"
          ? MODEL_HINT
          : "";
        this.fail(fieldPath, `is not supported yet${hint}`);
      }
      out[field.localName] = this.value(msg, field, fieldPath);
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
      case "map":
        return this.fail(path, "maps are not supported yet");
      default:
        return this.single(field, msg.get(field), path);
    }
  }

  /** A scalar or enum value: 64-bit integers become numbers, enums their names. */
  private single(field: DescField, value: unknown, path: string): unknown {
    if (field.enum !== undefined) return enumName(field, value as number);
    if (typeof value === "bigint") {
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER)) {
        this.fail(path, `${value} is too large (at most ${Number.MAX_SAFE_INTEGER})`);
      }
      return Number(value);
    }
    return value;
  }
}

function enumName(field: DescField, value: number): string {
  return field.enum?.values.find((v) => v.number === value)?.name ?? String(value);
}

/** A set scalar or enum field equal to tzrec's default (explicit, or the zero value): a no-op. */
function holdsDefault(msg: ReflectMessage, field: DescField): boolean {
  if (field.fieldKind === "scalar") {
    const fallback = field.getDefaultValue() ?? scalarZeroValue(field.scalar, false);
    return String(msg.get(field)) === String(fallback);
  }
  if (field.fieldKind === "enum") {
    return msg.get(field) === (field.getDefaultValue() ?? field.enum.values[0].number);
  }
  return false;
}

// ------------------------------------------------------------------------- API

/**
 * Parses a tzrec `pipeline.config` (protobuf text format) into a
 * {@link PipelineConfig}: only fields that are set are copied (so
 * `resolveConfig` applies the defaults), oneofs become `{ idFeature: ... }`,
 * enums their names (`"DEEP"`), 64-bit integers numbers, and `float` fields
 * keep their float32 value (`lr: 0.001` reads as `Math.fround(0.001)`, as in
 * tzrec, whose Python protobuf returns float fields as float32).
 *
 * Exceptions to "only set fields": required tzrec fields with a default
 * (`num_expert` 3, optimizer `lr` 0.002, `group_type` DEEP) and dense SGD's
 * `momentum` (0.9, which `resolveConfig` then refuses) are written with
 * tzrec's default when unset.
 *
 * Throws a {@link ConfigTextError} at `source:line:column` with the field path
 * for syntax errors, unknown fields, wrong value types, missing required fields
 * and tzrec fields this library does not support (`is not supported yet`),
 * unless they hold tzrec's default value. GPU, logging and MaxCompute options
 * (e.g. `num_workers`, `use_tensorboard`, `cudnn_allow_tf32`) are accepted and
 * dropped; `data_config.dataset_type` must be `CsvDataset` when set.
 *
 * @param text The config text.
 * @param source Name used in error messages, usually the file path.
 * @returns The typed config, ready for `resolveConfig`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parsePipelineConfig } from "./config_text.ts";
 * const config = parsePipelineConfig(`
 *   # comments and [a, b] lists are fine
 *   data_config { batch_size: 256 label_fields: ["clk", "buy"] }
 *   model_config { mmoe { expert_mlp { hidden_units: 8 hidden_units: 4 } } }
 * `);
 * assert.deepEqual(config.dataConfig, { batchSize: 256, labelFields: ["clk", "buy"] });
 * assert.deepEqual(config.modelConfig.mmoe.expertMlp, { hiddenUnits: [8, 4] });
 * assert.equal(config.modelConfig.mmoe.numExpert, 3); // tzrec's default of a required field
 * assert.throws(
 *   () => parsePipelineConfig("model_config {\n  dbmtl {}\n}", "x.config"),
 *   /^ConfigTextError: x\.config:2:3: model_config\.dbmtl: is not supported yet/,
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
  try {
    const converter = new Converter(walker.offsets);
    return converter.message(
      reflect(EasyRecConfigSchema, message),
      "",
    ) as unknown as PipelineConfig;
  } catch (e) {
    if (e instanceof TextProblem) throw located(text, source, e);
    throw e;
  }
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
  const { line, column } = locate(text, problem.offset);
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
 *   featureConfigs: [{ rawFeature: { featureName: "price", expression: "item:price" } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["price"], groupType: "DEEP" }],
 *     mmoe: { expertMlp: { hiddenUnits: [4] }, numExpert: 2, taskTowers: [] },
 *   },
 * });
 * assert.match(text, /raw_feature: \{\n\s+feature_name: "price"/);
 * assert.equal(parsePipelineConfig(text).modelConfig.mmoe.numExpert, 2);
 * ```
 */
export function toPipelineConfigText(config: PipelineConfig): string {
  let message;
  try {
    message = fromJson(EasyRecConfigSchema, config as unknown as JsonValue);
  } catch (e) {
    throw new ConfigError("pipeline config", txtpbDetail(e));
  }
  return toText(EasyRecConfigSchema, message);
}

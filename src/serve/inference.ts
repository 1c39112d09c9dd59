/**
 * Serving: a {@link Predictor} built from bytes alone, no file system or
 * network, so it runs on Deno Deploy, in Bun and in a Deno program importing
 * the package from JSR with no permissions: a serving artifact
 * (`src/io/serving.ts`: the config as JSON and the parameters laid out as the
 * arena holds them; {@link readPredictor} reads one from a file straight into
 * the arena), or the typed config and safetensors checkpoint bytes.
 *
 * This module imports neither the protobuf text parser (`config_text.ts`,
 * `@bufbuild/protobuf`: importing it costs more than loading a small model)
 * nor Node modules: `loadPredictor` (`./load.ts`) takes `pipeline.config`
 * text.
 *
 * `predict(records)` takes raw records (objects keyed by input column, the
 * same values as the CSV or JSON numbers, booleans, `null` and arrays) and
 * returns tzrec's output names: `logits_<t>` and `probs_<t>` per
 * classification tower, `probs1_<t>` for a 2-class softmax tower, `y_<t>` per
 * regression tower.
 *
 * - The model is built with `inference: true`: its arena holds parameters and
 *   forward activations only, and is reused by every call.
 * - Requests larger than `maxBatch` rows are scored in `maxBatch` chunks;
 *   `maxRows` (unbounded by default) refuses larger requests.
 * - Bad input throws a {@link PredictError} naming the row and column:
 *   `row 3: column 'user_id': "abc" is not an integer id` (or the record's
 *   own location, e.g. `data.csv:17`, when `predict` is given locations). A
 *   record must be a plain object (a `Date` or a `Map` is refused, not read
 *   as a row of missing values). A column the model does not read is an
 *   error unless `unknownColumns: "ignore"` (label and sample-weight columns
 *   of the config are always accepted and ignored); a feature column that is
 *   absent or `null` is a missing value, as an empty CSV cell.
 * - Outputs are always finite: a row whose values overflow the model (a
 *   dense value of 1e38) is a {@link PredictError} naming it, and a model
 *   whose parameters are not finite throws a `RangeError` naming the
 *   parameter instead of returning NaN.
 *
 * @example Score two candidates with a freshly initialised model, exported as an artifact
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, parsePipelineConfig, Predictor, resolveConfig, servingArtifact } from "../../mod.ts";
 * const text = `
 *   data_config { fg_mode: FG_DAG }
 *   feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 100 embedding_dim: 4 } }
 *   feature_configs { raw_feature { feature_name: "price" expression: "item:price" } }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: ["user_id", "price"] group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [8] }
 *       num_expert: 2
 *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
 *     }
 *   }`;
 * const pipeline = parsePipelineConfig(text);
 * const trained = new MMoEModel(resolveConfig(pipeline), { maxBatch: 4, seed: 1 });
 * const predictor = new Predictor(servingArtifact(trained, pipeline));
 * const scores = predictor.predict([{ user_id: 7, price: 9.5 }, { user_id: "12", price: "" }]);
 * assert.deepEqual(Object.keys(scores), ["logits_ctr", "probs_ctr"]);
 * assert.equal(scores.probs_ctr.length, 2);
 * assert.throws(() => predictor.predict([{ user_id: "abc" }]), {
 *   message: `row 0: column 'user_id': "abc" is not an integer id`,
 * });
 * ```
 * @module
 */
import { loadCheckpoint } from "../io/checkpoint.ts";
import { readServingModel, servingModel, type ServingModelOptions } from "../io/serving.ts";
import { type PipelineConfig, resolveConfig, type ResolvedConfig } from "../config/config.ts";
import { FeatureEncoder, FeatureError } from "../data/features.ts";
import type { KernelVariant } from "../kernels/kernels.ts";
import type { DenseInput, EncodedBatch, SparseInput } from "../core/batch.ts";
import { MMoEModel, towerOutputs } from "../model/mmoe.ts";
import type { LocatedRecord, RawRecord } from "../core/records.ts";

/**
 * Options of a {@link Predictor}.
 *
 * @example A server's settings: one chunk per request, extra columns allowed
 * ```ts
 * import type { PredictorOptions } from "./inference.ts";
 * const options: PredictorOptions = { maxBatch: 256, maxRows: 256, unknownColumns: "ignore" };
 * ```
 */
export interface PredictorOptions {
  /**
   * Rows the arena scores per model call (default 1024). Larger requests are
   * split into chunks of this size; the arena never grows.
   */
  maxBatch?: number;
  /**
   * Rows one {@link Predictor.predict} call accepts (default unbounded);
   * more throws a {@link PredictError} with code `tooManyRows`.
   */
  maxRows?: number;
  /** Kernel build; default the fastest the runtime validates. */
  variant?: KernelVariant;
  /**
   * Average ids per row the arena holds per multi-value feature (default 4):
   * a chunk may carry up to `maxBatch * idsPerRow` ids per feature.
   */
  idsPerRow?: number;
  /**
   * A column the model does not read: `"error"` (default, catches misspelt
   * column names, which would otherwise score as missing values) or
   * `"ignore"`. Label, task-space indicator and sample-weight columns of the
   * config are always accepted and ignored.
   */
  unknownColumns?: "error" | "ignore";
  /**
   * A `num_buckets` id outside `[0, num_buckets)`: `"error"` (default) or
   * `"clamp"` to the nearest row (as `FeatureEncoder`).
   */
  outOfRange?: "error" | "clamp";
}

/**
 * What was wrong with a request; see {@link PredictError}: more rows than
 * `maxRows`, a row that is not a plain object, a column the model does not
 * read, a value of the wrong type or unparsable, more multi-value ids than
 * the arena holds, values that make the model's outputs overflow.
 *
 * @example
 * ```ts
 * import type { PredictErrorCode } from "./inference.ts";
 * const clientError: PredictErrorCode[] = ["badValue", "unknownColumn"];
 * ```
 */
export type PredictErrorCode =
  | "tooManyRows"
  | "notAnObject"
  | "unknownColumn"
  | "badValue"
  | "tooManyIds"
  | "nonFiniteOutput";

/**
 * Bad input to {@link Predictor.predict}: the message names the row (0-based
 * index in the request) and the column, e.g. `row 3: column 'user_id': "abc"
 * is not an integer id`. `row` is -1 and `column` "" when the error is about
 * the whole request (`tooManyRows`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { PredictError } from "./inference.ts";
 * const error = new PredictError("row 2: unknown column 'userid'", "unknownColumn", 2, "userid");
 * assert.ok(error instanceof Error);
 * assert.equal(error.code, "unknownColumn");
 * assert.equal(error.row, 2);
 * ```
 */
export class PredictError extends Error {
  /** The kind of problem. */
  readonly code: PredictErrorCode;
  /** 0-based row of the request, or -1. */
  readonly row: number;
  /** Input column, or "". */
  readonly column: string;
  /** Creates the error with its full message. */
  constructor(
    message: string,
    code: PredictErrorCode,
    row: number,
    column: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "PredictError";
    this.code = code;
    this.row = row;
    this.column = column;
  }
}

/** Cached `row <i>` location strings (the encoder's error prefix) for the first rows. */
const LOCATION_CACHE = 4096;
const EMPTY_RECORD: RawRecord = {};

/** An object literal, `JSON.parse` object or `Object.create(null)`: not a Date, Map, array or class instance. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** What a value that is not a string, finite number, boolean, bigint, null or flat array is. */
function describe(value: unknown): string {
  if (Array.isArray(value)) return "an array";
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (typeof value === "object") {
    if (isPlainObject(value)) return "an object";
    // The built-in tag ("Date", "RegExp", "Map", "Uint8Array"), read without calling getters.
    const tag = Object.prototype.toString.call(value).slice(8, -1);
    return tag === "Object" ? "an instance of a class" : `a ${tag}`;
  }
  if (typeof value === "number") return `the number ${value}`;
  return `a ${typeof value}`;
}

/** Why `value` cannot be a feature value, or "" when it can. */
function valueProblem(value: unknown): string {
  switch (typeof value) {
    case "string":
    case "boolean":
    case "bigint":
    case "undefined":
      return "";
    case "number":
      return Number.isFinite(value) ? "" : `${value} is not a finite number`;
    case "object": {
      if (value === null) return "";
      if (!Array.isArray(value)) {
        return "expected a string, number, boolean, null or an array of strings and numbers, " +
          `got ${describe(value)}`;
      }
      for (let i = 0; i < value.length; i++) {
        const item: unknown = value[i];
        const type = typeof item;
        if (type === "string" || type === "bigint" || item === null) continue;
        if (type === "number" && Number.isFinite(item)) continue;
        return `item ${i}: expected a string or a finite number, got ${describe(item)}`;
      }
      return "";
    }
    default:
      return `expected a string, number, boolean, null or an array, got ${describe(value)}`;
  }
}

/** The output names of a config's towers (tzrec's, over every loss of a tower), with values per row. */
function outputWidths(config: ResolvedConfig): Map<string, number> {
  const widths = new Map<string, number>();
  for (const t of config.towers) {
    for (const { name, from } of towerOutputs(t)) {
      widths.set(name, from === "probs1" ? 1 : t.numClass);
    }
  }
  return widths;
}

/** Checks the options a Predictor builds its model with. */
function modelOptions(options: PredictorOptions): ServingModelOptions {
  const maxBatch = options.maxBatch ?? 1024;
  const idsPerRow = options.idsPerRow ?? 4;
  if (!Number.isInteger(maxBatch) || maxBatch <= 0) {
    throw new RangeError(`maxBatch must be a positive integer, got ${maxBatch}`);
  }
  if (!Number.isInteger(idsPerRow) || idsPerRow <= 0) {
    throw new RangeError(`idsPerRow must be a positive integer, got ${idsPerRow}`);
  }
  return {
    maxBatch,
    idsPerRow,
    variant: options.variant,
    // One thread: requests of a few hundred rows are too small to split
    // (and an edge isolate has no workers); a pool's wake-up costs more.
    threads: 1,
  };
}

/**
 * A trained MMoE ready to score raw records, built from bytes: a serving
 * artifact (`src/io/serving.ts`: config and parameters in one file, read
 * with one copy into the arena; {@link readPredictor} reads it from a file
 * with none), or the typed {@link PipelineConfig} (`parsePipelineConfig` of
 * the `pipeline.config` text; `loadPredictor` in `./load.ts` takes the text
 * itself) and a safetensors checkpoint (`modelCheckpoint`; any optimizer
 * state in it is skipped), or an inference model already loaded. Throws a
 * `ConfigError` for a bad config, a `RangeError` listing the mismatches for a
 * checkpoint of another architecture and errors naming the artifact
 * (`source`) for one that is corrupt or of another version.
 *
 * @example Requests larger than maxBatch are split; maxRows refuses
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, modelCheckpoint, parsePipelineConfig, PredictError, Predictor, resolveConfig } from "../../mod.ts";
 * const config = parsePipelineConfig(`
 *   data_config { fg_mode: FG_DAG }
 *   feature_configs { id_feature { feature_name: "item" expression: "item:item" hash_bucket_size: 50 embedding_dim: 4 } }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: "item" group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [8] }
 *       num_expert: 2
 *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
 *       task_towers { tower_name: "cvr" label_name: "buy" losses { binary_cross_entropy {} } }
 *     }
 *   }`);
 * const bytes = modelCheckpoint(new MMoEModel(resolveConfig(config), { maxBatch: 8, seed: 3 }));
 * const predictor = new Predictor(config, bytes, { maxBatch: 4, maxRows: 10 });
 * const rows = Array.from({ length: 10 }, (_, i) => ({ item: `item-${i}`, clk: 1 }));
 * const all = predictor.predict(rows);
 * assert.equal(all.probs_cvr.length, 10);
 * assert.deepEqual(predictor.predict(rows.slice(8)).probs_cvr, all.probs_cvr.slice(8));
 * assert.throws(() => predictor.predict([...rows, ...rows]), (e) =>
 *   e instanceof PredictError && e.code === "tooManyRows" &&
 *   e.message === "too many rows: 20, the limit is 10 per request");
 * ```
 */
export class Predictor {
  /** The resolved config. */
  readonly config: ResolvedConfig;
  /** The inference model (its arena is reused by every call). */
  readonly model: MMoEModel;
  /** Rows per model call. */
  readonly maxBatch: number;
  /** Rows per {@link Predictor.predict} call (Infinity: unbounded). */
  readonly maxRows: number;
  /** Input columns the features read, in group order (duplicates removed). */
  readonly columns: readonly string[];
  /** Output names {@link Predictor.predict} returns, in order. */
  readonly outputs: readonly string[];

  readonly #encoder: FeatureEncoder;
  readonly #widths: Map<string, number>;
  /** Feature columns. */
  readonly #featureColumns: Set<string>;
  /** Label, indicator and sample-weight columns: accepted, not read. */
  readonly #ignoredColumns: Set<string>;
  readonly #rejectUnknown: boolean;
  readonly #idCapacity: number;
  readonly #idsPerRow: number;
  /** Reused encoder input: wrappers and the array handed to `encode`. */
  readonly #wrappers: LocatedRecord[] = [];
  readonly #located: LocatedRecord[] = [];
  readonly #locations: string[] = [];
  /** The first non-finite parameter ("" for none), found when an output is not finite. */
  #nonFiniteParameter: string | undefined;

  /**
   * Loads a serving artifact's bytes (`servingArtifact`, `examples/export.ts`):
   * one copy into the arena and an XXH32 check. `source` names the artifact in
   * errors (default "serving artifact").
   */
  constructor(artifact: Uint8Array, options?: PredictorOptions & { source?: string });
  /** Resolves the config, builds the inference arena and loads the safetensors checkpoint. */
  constructor(config: PipelineConfig, checkpoint: Uint8Array, options?: PredictorOptions);
  /**
   * Scores with `model` as it is (its maxBatch; `maxBatch`, `idsPerRow` and
   * `variant` of the options do not apply).
   */
  constructor(model: MMoEModel, options?: PredictorOptions);
  constructor(
    first: Uint8Array | PipelineConfig | MMoEModel,
    second?: Uint8Array | PredictorOptions & { source?: string },
    third: PredictorOptions = {},
  ) {
    const options: PredictorOptions & { source?: string } =
      (second instanceof Uint8Array ? third : second) ?? {};
    const maxRows = options.maxRows ?? Infinity;
    if (maxRows !== Infinity && (!Number.isInteger(maxRows) || maxRows < 0)) {
      throw new RangeError(`maxRows must be a non-negative integer or Infinity, got ${maxRows}`);
    }
    const unknown = options.unknownColumns ?? "error";
    if (unknown !== "error" && unknown !== "ignore") {
      throw new TypeError(
        `unknownColumns must be "error" or "ignore", got ${JSON.stringify(unknown)}`,
      );
    }
    if (first instanceof MMoEModel) {
      this.model = first;
    } else if (first instanceof Uint8Array) {
      this.model = servingModel(first, modelOptions(options), options.source);
    } else {
      if (typeof first !== "object" || first === null) {
        throw new TypeError(
          "config must be a typed PipelineConfig (use loadPredictor for pipeline.config text)",
        );
      }
      if (!(second instanceof Uint8Array)) {
        throw new TypeError("checkpoint must be the safetensors bytes as a Uint8Array");
      }
      // Every parameter comes from the checkpoint: drawing initial values would be wasted.
      const model = { ...modelOptions(options), inference: true, initialize: false };
      this.model = new MMoEModel(resolveConfig(first), model);
      loadCheckpoint(this.model, second, { withOptimizer: false });
    }
    this.config = this.model.config;
    this.maxBatch = this.model.maxBatch;
    this.maxRows = maxRows;
    // Every sparse feature holds maxBatch * idsPerRow ids per call.
    this.#idCapacity = this.model.plan.features.find((f) => f.table >= 0)?.capacity ?? 0;
    this.#idsPerRow = this.#idCapacity / this.maxBatch;
    this.#encoder = new FeatureEncoder(this.config, {
      labels: false,
      outOfRange: options.outOfRange ?? "error",
    });
    this.#featureColumns = new Set(this.config.features.map((f) => f.column));
    this.columns = [...this.#featureColumns];
    this.#ignoredColumns = new Set(new FeatureEncoder(this.config).columns);
    this.#rejectUnknown = unknown === "error";
    this.#widths = outputWidths(this.config);
    this.outputs = [...this.#widths.keys()];
  }

  /**
   * Ids clamped into range per `num_buckets` feature since construction
   * (with `outOfRange: "clamp"`; always 0 otherwise), as
   * `FeatureEncoder.clampCounts`.
   */
  get clampCounts(): Record<string, number> {
    return this.#encoder.clampCounts;
  }

  /**
   * Scores `records` (at most {@link Predictor.maxRows}): one value per row
   * (per class for multi-class towers, row-major) under each name of
   * {@link Predictor.outputs}, every value finite. Everything but the
   * returned arrays and the encoded batch is reused between calls. Throws a
   * {@link PredictError} for bad input, naming the row and column: `row 3`,
   * or `locations[3]` when given (e.g. the `file:line` a reader gave each
   * record).
   *
   * @example Bad records name the row (or their location) and column
   * ```ts
   * import assert from "node:assert/strict";
   * import { MMoEModel, modelCheckpoint, parsePipelineConfig, Predictor, resolveConfig } from "../../mod.ts";
   * const config = parsePipelineConfig(`
   *   feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 10 embedding_dim: 4 } }
   *   model_config {
   *     feature_groups { group_name: "all" feature_names: "user_id" group_type: DEEP }
   *     mmoe {
   *       expert_mlp { hidden_units: [4] }
   *       num_expert: 2
   *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
   *     }
   *   }`);
   * const bytes = modelCheckpoint(new MMoEModel(resolveConfig(config), { maxBatch: 2 }));
   * const predictor = new Predictor(config, bytes);
   * assert.throws(() => predictor.predict([{ user_id: 1 }, { userid: 2 }]), {
   *   message: "row 1: unknown column 'userid' (the model reads user_id; " +
   *     "label and weight columns clk are accepted and ignored)",
   * });
   * assert.throws(() => predictor.predict(JSON.parse('[{ "user_id": { "id": 1 } }]')), {
   *   message: "row 0: column 'user_id': expected a string, number, boolean, null or an array " +
   *     "of strings and numbers, got an object",
   * });
   * assert.throws(() => predictor.predict([{ user_id: 1 }, { user_id: 10 }], ["a.csv:2", "a.csv:3"]), {
   *   message: "a.csv:3: column 'user_id': id 10 is out of range [0, 10)",
   * });
   * assert.throws(() => predictor.predict([new Date() as never]), {
   *   message: "row 0: expected an object of column values, got a Date",
   * });
   * assert.equal(predictor.predict([{ user_id: 3, clk: 1 }, { user_id: null }]).probs_ctr.length, 2);
   * ```
   */
  predict(
    records: readonly RawRecord[],
    locations?: readonly string[],
  ): Record<string, Float32Array> {
    if (!Array.isArray(records)) {
      throw new TypeError(`records must be an array of records, got ${describe(records)}`);
    }
    const n = records.length;
    if (locations !== undefined && (!Array.isArray(locations) || locations.length !== n)) {
      throw new TypeError(`locations must be an array of ${n} strings, one per record`);
    }
    if (n > this.maxRows) {
      throw new PredictError(
        `too many rows: ${n}, the limit is ${this.maxRows} per request`,
        "tooManyRows",
        -1,
        "",
      );
    }
    for (let i = 0; i < n; i++) this.#check(records[i], i, locations);
    if (n <= this.maxBatch) {
      if (n === 0) {
        const empty: Record<string, Float32Array> = {};
        for (const name of this.outputs) empty[name] = new Float32Array(0);
        return empty;
      }
      return this.#score(records, 0, n, locations);
    }
    const result: Record<string, Float32Array> = {};
    for (const [name, width] of this.#widths) result[name] = new Float32Array(n * width);
    for (let start = 0; start < n; start += this.maxBatch) {
      const end = Math.min(n, start + this.maxBatch);
      const chunk = this.#score(records, start, end, locations);
      for (const [name, width] of this.#widths) result[name].set(chunk[name], start * width);
    }
    return result;
  }

  /** Type checks of one record: a plain object whose columns are known and whose feature values fit. */
  #check(record: unknown, row: number, locations: readonly string[] | undefined): void {
    if (!isPlainObject(record)) {
      throw new PredictError(
        `${this.#location(row, locations)}: expected an object of column values, got ${
          describe(record)
        }`,
        "notAnObject",
        row,
        "",
      );
    }
    for (const column in record) {
      if (this.#featureColumns.has(column)) {
        const problem = valueProblem(record[column]);
        if (problem !== "") {
          throw new PredictError(
            `${this.#location(row, locations)}: column '${column}': ${problem}`,
            "badValue",
            row,
            column,
          );
        }
      } else if (this.#rejectUnknown && !this.#ignoredColumns.has(column)) {
        const ignored = this.#ignoredColumns.size > 0
          ? `; label and weight columns ${[...this.#ignoredColumns].join(", ")} are accepted ` +
            "and ignored"
          : "";
        throw new PredictError(
          `${this.#location(row, locations)}: unknown column '${column}' (the model reads ${
            this.columns.join(", ")
          }${ignored})`,
          "unknownColumn",
          row,
          column,
        );
      }
    }
  }

  /** Encodes rows [start, end) (at most maxBatch) through the reused wrappers and scores them. */
  #score(
    records: readonly RawRecord[],
    start: number,
    end: number,
    locations: readonly string[] | undefined,
  ): Record<string, Float32Array> {
    const count = end - start;
    const wrappers = this.#wrappers, located = this.#located;
    while (wrappers.length < count) wrappers.push({ record: EMPTY_RECORD, location: "" });
    located.length = count;
    for (let i = 0; i < count; i++) {
      const wrapper = wrappers[i];
      wrapper.record = records[start + i];
      wrapper.location = this.#location(start + i, locations);
      located[i] = wrapper;
    }
    let batch: EncodedBatch;
    try {
      batch = this.#encoder.encode(located);
    } catch (error) {
      if (!(error instanceof FeatureError)) throw error;
      // The encoder names the record by its location; the first record with it is the row.
      const index = located.findIndex((wrapper) => wrapper.location === error.location);
      const row = index === -1 ? -1 : start + index;
      throw new PredictError(error.message, "badValue", row, error.column, { cause: error });
    } finally {
      // Do not keep the request's records alive until the next call.
      for (let i = 0; i < count; i++) wrappers[i].record = EMPTY_RECORD;
    }
    this.#checkBatch(batch, start, locations);
    const outputs = this.model.predict(batch);
    this.#checkOutputs(outputs, start, locations);
    return outputs;
  }

  /** Row `i`'s name in errors: `locations[i]`, else "row i" (the first ones cached). */
  #location(i: number, locations: readonly string[] | undefined): string {
    if (locations !== undefined) return String(locations[i]);
    if (i >= LOCATION_CACHE) return `row ${i}`;
    return this.#locations[i] ??= `row ${i}`;
  }

  /** Refuses what the encoder lets through but the arena cannot hold or should not score. */
  #checkBatch(batch: EncodedBatch, start: number, locations: readonly string[] | undefined): void {
    this.config.features.forEach((f, i) => {
      const input = batch.features[i];
      if (f.table >= 0) {
        const { ids } = input as SparseInput;
        if (ids.length > this.#idCapacity) {
          const first = this.#location(start, locations);
          const last = this.#location(start + batch.size - 1, locations);
          throw new PredictError(
            `column '${f.column}': ${ids.length} ids in ${batch.size} rows (${first} to ${last}) ` +
              `exceed the ${this.#idCapacity} the predictor holds per call (maxBatch ` +
              `${this.maxBatch} x idsPerRow ${this.#idsPerRow})`,
            "tooManyIds",
            -1,
            f.column,
          );
        }
        return;
      }
      // A string like "1e999" parses to Infinity, and 1e39 overflows f32: neither scores.
      const { values } = input as DenseInput;
      for (let j = 0; j < values.length; j++) {
        if (Number.isFinite(values[j])) continue;
        const row = start + Math.floor(j / f.width);
        throw new PredictError(
          `${this.#location(row, locations)}: column '${f.column}': value is not a finite float32`,
          "badValue",
          row,
          f.column,
        );
      }
    });
  }

  /**
   * Refuses non-finite outputs: from finite parameters they come from the
   * row's values (a dense value too large for the model); from non-finite
   * parameters (a bad checkpoint) every row has them.
   */
  #checkOutputs(
    outputs: Record<string, Float32Array>,
    start: number,
    locations: readonly string[] | undefined,
  ): void {
    for (const [name, width] of this.#widths) {
      const values = outputs[name];
      for (let j = 0; j < values.length; j++) {
        if (Number.isFinite(values[j])) continue;
        this.#nonFiniteParameter ??= this.#findNonFiniteParameter();
        if (this.#nonFiniteParameter !== "") {
          throw new RangeError(
            `the model cannot score: parameter ${this.#nonFiniteParameter} has non-finite ` +
              "values (load a checkpoint saved before training diverged)",
          );
        }
        const row = start + Math.floor(j / width);
        throw new PredictError(
          `${this.#location(row, locations)}: output ${name} is ${values[j]}: the row's values ` +
            "overflow the model (check the magnitude of its numeric columns)",
          "nonFiniteOutput",
          row,
          "",
        );
      }
    }
  }

  /** The first parameter or buffer holding NaN or an infinity, or "". */
  #findNonFiniteParameter(): string {
    for (const { name, dtype } of this.model.parameters) {
      if (dtype !== "f32") continue; // BN's num_batches_tracked counts steps
      const values = this.model.parameter(name);
      for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return name;
    }
    return "";
  }
}

/**
 * A {@link Predictor} from the serving artifact at `path`: its header is
 * read, the inference model built, and its data section read from the file
 * straight into the arena (no copy of the parameters in between) and
 * checked. Errors name `path`. Under Deno it needs read access to `path`
 * only (no Node compatibility layer is loaded).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, rm, writeFile } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { MMoEModel, resolveConfig } from "../../mod.ts";
 * import { servingArtifact } from "../io/serving.ts";
 * import { readPredictor } from "./inference.ts";
 * const pipeline = {
 *   featureConfigs: [{ idFeature: { featureName: "item", expression: "item:item", numBuckets: 50, embeddingDim: 4 } }],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["item"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       numExpert: 2,
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * };
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const path = join(dir, "serving_model.bin");
 * await writeFile(path, servingArtifact(new MMoEModel(resolveConfig(pipeline), { maxBatch: 1 }), pipeline));
 * const predictor = await readPredictor(path, { maxBatch: 16 });
 * assert.equal(predictor.predict([{ item: 3 }]).probs_ctr.length, 1);
 * await writeFile(path, "not a model");
 * await assert.rejects(readPredictor(path), { message: `${path}: not a denorec serving artifact ` +
 *   "(no DENOREC magic; write one with examples/export.ts or servingArtifact)" });
 * await rm(dir, { recursive: true });
 * ```
 */
export async function readPredictor(
  path: string,
  options: PredictorOptions = {},
): Promise<Predictor> {
  return new Predictor(await readServingModel(path, modelOptions(options)), options);
}

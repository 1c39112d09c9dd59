/**
 * Synthetic data for any config: rows with the columns a resolved config
 * reads, in its `fg_mode`, and labels for its towers drawn from a planted
 * model, so that a run on them learns (to smoke-test a config before the
 * real data is at hand).
 *
 * Inputs, per feature of the model's group and per `grouped_auc` key:
 *
 * - FG_NONE (encoded, columns named by `feature_name`): sparse features hold
 *   table rows (`vocabulary` rows spread over `[0, rows)`), a weighted one
 *   1 to 3 `id:weight` pairs joined by `fg_encoded_multival_sep`, dense ones
 *   `value_dim` numbers;
 * - FG_DAG / FG_NORMAL (raw, columns named by the expression): `num_buckets`
 *   ids, `hash_bucket_size` strings `<feature>_<k>`, `vocab_list` entries
 *   (one draw in 20 an unknown value), values spread over a bucketized
 *   feature's boundaries, `value_dim` numbers; weighted pairs joined by the
 *   feature's `separator`.
 *
 * About one sparse value in 20 is missing. Each value carries a hidden
 * effect (a hashed standard normal per feature and value, the mean of a
 * multi-value's, a standardized number for a dense one), and each tower's
 * logit is a fixed random mix of the effects scaled to standard deviation
 * `signal` (default 2). Labels follow each tower's losses: binary
 * cross-entropy draws 0/1 from sigmoid(logit), softmax cross-entropy a class
 * from one logit per class, l2 the logit plus unit noise. Task-space
 * indicators are labels of other towers; sample weights are uniform in
 * [0.5, 1.5]. The oracle AUC of the true probabilities comes back with the
 * label counts, as the best a model can reach on the rows.
 *
 * @example Rows for an FG_NONE config, and what a model can reach on them
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { generateRows } from "./generate.ts";
 * const config = resolveConfig({
 *   featureConfigs: [
 *     { idFeature: { featureName: "user_id", numBuckets: 1000, embeddingDim: 8 } },
 *     { idFeature: { featureName: "tags", hashBucketSize: 50, embeddingDim: 8, weighted: true } },
 *     { rawFeature: { featureName: "price" } },
 *   ],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["user_id", "tags", "price"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [8] },
 *       taskTowers: [{ towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] }],
 *     },
 *   },
 * });
 * const { columns, rows, stats } = generateRows(config, { rows: 2000, seed: 1 });
 * assert.deepEqual(columns, ["user_id", "tags", "price", "clk"]);
 * const first = [...rows][0];
 * for (const pair of String(first.tags ?? "1:1").split("\x03")) assert.match(pair, /^\d+:[\d.]+$/);
 * assert.ok(stats().towers.ctr.oracleAuc > 0.75);
 * ```
 * @module
 */
import type { ResolvedConfig, ResolvedFeature, ResolvedTower } from "../config/config.ts";
import type { RawRecord, RawValue } from "../core/records.ts";
import { mulberry32 } from "../core/random.ts";
import { ExactAuc } from "../train/metrics.ts";
import { writeCsv, writeParquet } from "./readers.ts";

export type { RawRecord, RawValue, ResolvedConfig };

/** Options of {@link generateRows} and {@link writeGeneratedData}. */
export interface GenerateOptions {
  /** Rows to generate. */
  rows: number;
  /** Seed of the row stream (which values each row draws, and its labels). Default 0. */
  seed?: number;
  /**
   * Seed of the planted model (the effects and each tower's mix): train and
   * eval sets share it and differ in `seed`. Default 0.
   */
  world?: number;
  /**
   * Distinct values drawn per sparse feature (fewer if its table is smaller),
   * so that a short run sees each many times. Default 100.
   */
  vocabulary?: number;
  /** Standard deviation of each tower's logit: the strength of the planted signal. Default 2. */
  signal?: number;
  /**
   * Multi-values as lists (Parquet list columns) instead of strings joined by
   * the separator (CSV). Default false.
   */
  lists?: boolean;
}

/** What was generated, per tower. */
export interface GeneratedStats {
  /** Rows. */
  rows: number;
  /** Per tower: rows with label 1 (binary towers) and the oracle AUC of the true probability. */
  towers: Record<string, { positives: number; oracleAuc: number }>;
}

const MISSING = 0.05, UNKNOWN_VOCAB = 0.05;

/** 32-bit finaliser (Wellons' lowbias32), as `synthetic.ts`. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/** An approximately standard normal from (world, a, b): hashed Irwin-Hall of three 10-bit uniforms. */
function hashedNormal(world: number, a: number, b: number): number {
  const h = mix32(mix32(b + Math.imul(a, 0x9e3779b9)) ^ mix32(world + 0x632be5ab));
  return ((h & 1023) + ((h >>> 10) & 1023) + ((h >>> 20) & 1023) + 1.5) / 512 - 3;
}

/** Standard normal draw (Box-Muller) from a uniform generator. */
function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** How one input column is filled. */
interface Column {
  name: string;
  feature: ResolvedFeature;
  /** Index of the feature, salting its effects. */
  index: number;
  /** Distinct values drawn (sparse). */
  values: number;
}

const VOCAB_ENTRIES = new WeakMap<ResolvedFeature, string[]>();

/** A vocab feature's entries in row order. */
function vocabEntries(f: ResolvedFeature): string[] {
  let entries = VOCAB_ENTRIES.get(f);
  if (entries === undefined) VOCAB_ENTRIES.set(f, entries = [...f.vocab.keys()]);
  return entries;
}

/** One generated value of a column and its hidden effect. */
function draw(column: Column, random: () => number, world: number, lists: boolean) {
  const f = column.feature;
  if (f.kind === "dense") {
    const xs = Array.from({ length: f.width }, () => gaussian(random));
    const effect = xs.reduce((sum, x, i) => sum + x * hashedNormal(world, column.index, i), 0) /
      Math.sqrt(f.width);
    const rounded = xs.map((x) => Math.round(x * 1e4) / 1e4);
    const value: RawValue = f.width === 1
      ? rounded[0]
      : lists
      ? rounded
      : rounded.join(f.separator);
    return { value, effect };
  }
  if (random() < MISSING) return { value: null, effect: 0 };
  const one = (k: number): string | number => {
    if (f.encoded) {
      return f.rows > column.values ? Math.floor((k + 0.5) * f.rows / column.values) : k;
    }
    switch (f.kind) {
      case "hash_bucket":
        return `${f.name}_${k}`;
      case "vocab":
        return k < 0 ? `${f.name}_unknown` : vocabEntries(f)[k];
      case "boundaries": {
        // The middle of bucket k: between its boundaries, or beyond an end.
        const b = f.boundaries, last = b.length - 1;
        const low = k === 0 ? b[0] - 1 - Math.abs(b[0]) : b[k - 1];
        const high = k > last ? b[last] + 1 + Math.abs(b[last]) : b[k];
        return (low + high) / 2;
      }
      default:
        return k;
    }
  };
  const pick = () => {
    if (f.kind === "vocab" && !f.encoded && random() < UNKNOWN_VOCAB) return -1;
    return Math.floor(random() * column.values);
  };
  if (!f.weighted) {
    const k = pick();
    return { value: one(k), effect: k < 0 ? 0 : hashedNormal(world, column.index, k) };
  }
  const count = 1 + Math.floor(random() * 3);
  const pairs: string[] = [];
  let effect = 0, total = 0;
  for (let i = 0; i < count; i++) {
    const k = pick(), w = Math.round((0.5 + 1.5 * random()) * 100) / 100;
    pairs.push(`${one(k)}:${w}`);
    effect += k < 0 ? 0 : w * hashedNormal(world, column.index, k);
    total += w;
  }
  return { value: lists ? pairs : pairs.join(f.separator), effect: effect / total };
}

/** The input columns of a config: one per column its features (and grouping keys) read. */
function inputColumns(config: ResolvedConfig, vocabulary: number): Column[] {
  const columns: Column[] = [];
  [...config.features, ...config.groupingFeatures].forEach((feature, index) => {
    const values = feature.kind === "vocab" && !feature.encoded
      ? Math.min(vocabulary, feature.vocab.size)
      : feature.kind === "dense"
      ? 0
      : Math.max(1, Math.min(vocabulary, feature.rows));
    const existing = columns.find((c) => c.name === feature.column);
    if (existing === undefined) {
      columns.push({ name: feature.column, feature, index, values });
      return;
    }
    const numeric = (f: ResolvedFeature) =>
      f.encoded || f.kind === "num_buckets" || f.kind === "boundaries" || f.kind === "dense";
    if (!(numeric(existing.feature) && numeric(feature) && !feature.weighted)) {
      throw new TypeError(
        `generate: column ${
          JSON.stringify(feature.column)
        } is read by features ${existing.feature.name} ` +
          `and ${feature.name} in ways one generated value cannot serve`,
      );
    }
  });
  return columns;
}

/** Per tower: the label column it fills and how. */
interface LabelPlan {
  tower: ResolvedTower;
  kind: "binary" | "classes" | "regression";
  /** Mix of the column effects per output (one, or one per class). */
  mix: Float64Array[];
  auc: ExactAuc | null;
  positives: number;
}

/**
 * Generated rows for `config` (see the module doc): the column names (inputs
 * in order, then every label, indicator and sample-weight column), the rows
 * as a lazy iterable that can be read once, and the statistics of the rows
 * read so far.
 *
 * @example A softmax tower and an l2 tower with FG_DAG raw inputs
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveConfig } from "../config/config.ts";
 * import { generateRows } from "./generate.ts";
 * const config = resolveConfig({
 *   dataConfig: { fgMode: "FG_DAG" },
 *   featureConfigs: [
 *     { idFeature: { featureName: "pid", expression: "context:pid", hashBucketSize: 20, embeddingDim: 4 } },
 *     { rawFeature: { featureName: "price", expression: "item:price", boundaries: [1, 10], embeddingDim: 4 } },
 *   ],
 *   modelConfig: {
 *     featureGroups: [{ groupName: "all", featureNames: ["pid", "price"] }],
 *     mmoe: {
 *       expertMlp: { hiddenUnits: [4] },
 *       taskTowers: [
 *         { towerName: "grade", labelName: "grade", numClass: 3, losses: [{ softmaxCrossEntropy: {} }] },
 *         { towerName: "dwell", labelName: "dwell", losses: [{ l2Loss: {} }] },
 *       ],
 *     },
 *   },
 * });
 * const { columns, rows } = generateRows(config, { rows: 100 });
 * assert.deepEqual(columns, ["pid", "price", "grade", "dwell"]);
 * for (const row of rows) {
 *   assert.ok(row.pid === null || /^pid_\d+$/.test(String(row.pid)));
 *   assert.ok([0, 1, 2].includes(row.grade as number));
 * }
 * ```
 */
export function generateRows(
  config: ResolvedConfig,
  options: GenerateOptions,
): { columns: string[]; rows: Iterable<RawRecord>; stats: () => GeneratedStats } {
  const { rows, seed = 0, world = 0, vocabulary = 100, signal = 2, lists = false } = options;
  if (!Number.isInteger(rows) || rows < 0) {
    throw new RangeError(`rows must be a non-negative integer, got ${rows}`);
  }
  if (!Number.isInteger(vocabulary) || vocabulary < 1) {
    throw new RangeError(`vocabulary must be a positive integer, got ${vocabulary}`);
  }
  if (!(signal >= 0 && signal < Infinity)) {
    throw new RangeError(`signal must be a finite number >= 0, got ${signal}`);
  }
  const inputs = inputColumns(config, vocabulary);
  const grouping = new Set(config.groupingFeatures.map((f) => f.name));
  const plans: LabelPlan[] = config.towers.map((tower, t) => {
    const kinds = tower.losses.map((l) => l.kind);
    const kind = kinds.includes("softmax_cross_entropy")
      ? "classes"
      : kinds.includes("binary_cross_entropy")
      ? "binary"
      : "regression";
    const outputs = kind === "classes" ? tower.numClass : 1;
    const mix = Array.from({ length: outputs }, (_, o) => {
      const weights = Float64Array.from(
        inputs,
        (c, i) => grouping.has(c.feature.name) ? 0 : hashedNormal(world, 1000 + t * 64 + o, i),
      );
      const norm = Math.hypot(...weights) || 1;
      return weights.map((w) => w * signal / norm);
    });
    return {
      tower,
      kind,
      mix,
      auc: kind === "binary" ? new ExactAuc(tower.name) : null,
      positives: 0,
    };
  });
  const labelColumns: string[] = [];
  const add = (column: string | null) => {
    if (
      column !== null && !labelColumns.includes(column) && !inputs.some((c) => c.name === column)
    ) {
      labelColumns.push(column);
    }
  };
  for (const tower of config.towers) {
    add(tower.label);
    add(tower.taskSpaceIndicatorLabel);
    add(tower.sampleWeightName);
  }
  for (const column of config.data.labelFields) add(column);
  for (const column of config.data.sampleWeightFields) add(column);
  const weights = new Set([
    ...config.data.sampleWeightFields,
    ...config.towers.map((t) => t.sampleWeightName).filter((c) => c !== null),
  ]);
  let generated = 0;
  const random = mulberry32(mix32(seed + 0x51ed270b));
  const effects = new Float64Array(inputs.length);
  function* stream(): Generator<RawRecord> {
    const probs = new Float32Array(1), label = new Float32Array(1);
    for (let r = 0; r < rows; r++) {
      const record: RawRecord = {};
      inputs.forEach((column, i) => {
        const { value, effect } = draw(column, random, world, lists);
        record[column.name] = value;
        effects[i] = effect;
      });
      for (const plan of plans) {
        const logits = plan.mix.map((mix) => mix.reduce((sum, w, i) => sum + w * effects[i], 0));
        let y: number;
        if (plan.kind === "binary") {
          const p = 1 / (1 + Math.exp(-logits[0]));
          y = random() < p ? 1 : 0;
          probs[0] = p, label[0] = y;
          plan.auc!.update(probs, label);
          plan.positives += y;
        } else if (plan.kind === "classes") {
          const max = Math.max(...logits);
          const exp = logits.map((z) => Math.exp(z - max));
          let u = random() * exp.reduce((a, b) => a + b, 0);
          y = 0;
          while (y < exp.length - 1 && (u -= exp[y]) > 0) y++;
        } else y = Math.round((logits[0] + gaussian(random)) * 1e4) / 1e4;
        record[plan.tower.label] ??= y;
      }
      for (const column of labelColumns) {
        if (record[column] !== undefined) continue;
        record[column] = weights.has(column)
          ? Math.round((0.5 + random()) * 100) / 100
          : random() < 0.5
          ? 1
          : 0;
      }
      generated++;
      yield record;
    }
  }
  return {
    columns: [...inputs.map((c) => c.name), ...labelColumns],
    rows: { [Symbol.iterator]: stream },
    stats: () => ({
      rows: generated,
      towers: Object.fromEntries(
        plans.map((p) => [p.tower.name, {
          positives: p.positives,
          oracleAuc: p.auc === null ? NaN : p.auc.compute(),
        }]),
      ),
    }),
  };
}

/**
 * Writes {@link generateRows} to a CSV file (the config's delimiter; no
 * header row when the config reads headerless files by `input_fields`) or,
 * for a `.parquet` path, a Parquet file with list columns for multi-values.
 * Resolves to the statistics of the rows.
 *
 * @example Train and eval files from one planted model
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtemp, readFile, rm } from "node:fs/promises";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { loadPipelineConfig } from "../config/config_text.ts";
 * import { resolveConfig } from "../config/config.ts";
 * import { writeGeneratedData } from "./generate.ts";
 * const config = resolveConfig(await loadPipelineConfig("configs/mmoe_taobao_small.config"));
 * const dir = await mkdtemp(join(tmpdir(), "denorec-"));
 * const train = await writeGeneratedData(join(dir, "train.csv"), config, { rows: 1000, seed: 1 });
 * await writeGeneratedData(join(dir, "eval.parquet"), config, { rows: 200, seed: 2 });
 * assert.equal(train.rows, 1000);
 * assert.match(await readFile(join(dir, "train.csv"), "utf8"), /^user_id,cms_segid,/);
 * await rm(dir, { recursive: true });
 * ```
 */
export async function writeGeneratedData(
  path: string,
  config: ResolvedConfig,
  options: GenerateOptions,
): Promise<GeneratedStats> {
  const parquet = /\.(parquet|pq)$/i.test(path);
  const { columns, rows, stats } = generateRows(config, { lists: parquet, ...options });
  const csvColumns = config.data.csvColumns;
  if (parquet) await writeParquet(path, columns, rows);
  else if (csvColumns !== null) {
    const missing = columns.filter((c) => !csvColumns.includes(c));
    if (missing.length > 0) {
      throw new TypeError(
        `generate: data_config.input_fields lacks ${missing.join(", ")}, which the config reads`,
      );
    }
    await writeCsv(path, csvColumns, rows, { delimiter: config.data.delimiter, header: false });
  } else await writeCsv(path, columns, rows, { delimiter: config.data.delimiter });
  return stats();
}

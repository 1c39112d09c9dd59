/**
 * Synthetic rows with the exact schema of the Taobao example config
 * (`configs/mmoe_taobao.config`: 14 id features, `price` bucketized by 98
 * boundaries, `pid` hashed into 20 buckets, labels `clk` and `buy`), drawn
 * from a hidden teacher whose true probabilities come with every row, so a
 * trained model can be compared with the best possible AUC on the same rows
 * (the *oracle* AUC).
 *
 * Two seeds: `world` fixes everything a model could learn (which ids are
 * popular, each user's profile, each ad's campaign/customer/brand/category/
 * price, the teacher's weights and its intercepts); `seed` fixes the row
 * stream (who sees which ad, and the sampled labels). Train and eval sets are
 * the same world with different seeds.
 *
 * The world, per id, from 32-bit hashes of `(world, id)`, so 1.1M users need
 * no per-id tables (a world holds about 9 MB: category factors, two
 * codebooks and direct-mapped caches of per-user and per-ad derivations):
 * - Popularity: users and ads are drawn by rank from a Zipf-Mandelbrot law
 *   p(r) ∝ 1 / (r + q) (q = 100 users, 50 ads), ranks mapped to ids by an
 *   affine permutation. About half the impressions come from the top 10k
 *   users and the top 6.5k ads, so their embeddings see repeated rows.
 * - User profile from the user id: gender 1/2, age_level 0..6,
 *   cms_group_id = 7 (gender - 1) + age_level, cms_segid (mostly 0),
 *   pvalue_level 1..3, shopping_level 1..3, occupation 0/1,
 *   new_user_class_level 1..4, with roughly the real data's frequencies.
 * - Ad attributes from the ad id: campaign = hash(ad), customer =
 *   hash(campaign), brand (Zipf) from the customer, cate_id (Zipf, a few
 *   hundred categories carry most rows) from the campaign, price from the
 *   category's price level and the ad, spread over the config's boundaries
 *   (0.3% .. 1.7% of rows in each of the 99 buckets, prices 0.5 .. 20000),
 *   rounded like shop prices.
 * - pid: the real data's `430548_1007` (60%) and `430539_1007` (34%), and two
 *   rarer invented slots of the same shape.
 *
 * The teacher (K = 8 latent factors; every `n(.)` an approximately standard
 * normal hashed from the world and the id; `code(.)` a K-vector of them
 * picked by hash from a codebook of 16384, so even 1.1M users need no
 * per-id memory; lp = ln(price / 100); pid(.) = +0.1, -0.15, +0.2, -0.3 for
 * the four slots in order):
 *
 *     u = 0.9 demo(age_level, final_gender_code) + 0.45 code(user_id)
 *     v = 0.9 cate(cate_id) + 0.45 code(adgroup_id)
 *     click logit = b + 0.6 u.v / sqrt(K)
 *                 + 0.25 n(user_id) + 0.25 n(adgroup_id) + 0.4 n(cate_id)
 *                 + (-0.15 + 0.06 (pvalue_level - 2)) lp + pid(pid)
 *                 + 0.1 (shopping_level - 2) + 0.1 n(cms_segid)
 *     buy logit   = c + 0.3 u.v / sqrt(K) - 0.45 lp
 *                 + 0.5 (shopping_level - 2) + 0.4 (pvalue_level - 2)
 *                 + 0.3 n'(cate_id) + 0.2 n'(user_id) + 0.15 n'(adgroup_id)
 *                 + 0.15 occupation + 0.1 (new_user_class_level - 2.5)
 *     p(click) = sigmoid(click logit)
 *     p(buy)   = p(click) sigmoid(buy logit)      (buy logit: given a click)
 *
 * Most of the click signal is learnable from a few hundred thousand rows
 * (the demographic x category term demo . cate, category, price, level and
 * pid effects); the per-user and per-ad terms only for the popular ids, as
 * in real data. The conversion side leans on low-cardinality inputs (price,
 * shopping and pvalue levels) so that ~1000 buys (~50k clicks) carry a
 * learnable signal. The intercepts b and c are solved when a world is first
 * used (on 20k rows of it) so that the mean p(click) is `clickRate` (default
 * 0.05, Taobao's 5.1%) and the click-weighted mean p(buy | click) is
 * `conversionRate` (default 0.02, so p(buy) is about 0.1%). `buy` is 1 only
 * on clicked rows.
 *
 * With the defaults, 300k rows have oracle AUCs near 0.725 (ctr) and 0.85
 * (cvr over all rows; about ±0.01 between seeds with ~300 buys). For scale, a
 * hashed one-hot logistic regression with an age x gender x category cross,
 * evaluated on 200k other rows, reaches ctr 0.62 after 300k train rows and
 * 0.64 after 1M, and cvr 0.68 after 1M (tzrec's MMoE on the real 26M rows:
 * 0.634 and 0.785).
 *
 * @example Oracle AUCs of a small eval set
 * ```ts
 * import assert from "node:assert/strict";
 * import { oracleAuc, taobaoRows } from "./synthetic.ts";
 * const stats = oracleAuc(taobaoRows({ seed: 2, rows: 20000 }));
 * assert.equal(stats.rows, 20000);
 * assert.ok(stats.aucCtr > 0.6 && stats.aucCtr < 0.8);
 * ```
 * @module
 */
import { randomUUID } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { ExactAuc } from "../train/metrics.ts";
import type { RawRecord, RawValue } from "../core/records.ts";

export type { RawRecord, RawValue };

/**
 * The CSV header of the generated data, in column order: the labels, the
 * user side, the ad side, then `pid`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TAOBAO_COLUMNS } from "./synthetic.ts";
 * assert.equal(TAOBAO_COLUMNS.length, 18);
 * assert.deepEqual(TAOBAO_COLUMNS.slice(0, 3), ["clk", "buy", "user_id"]);
 * ```
 */
export const TAOBAO_COLUMNS: readonly string[] = Object.freeze([
  "clk",
  "buy",
  "user_id",
  "cms_segid",
  "cms_group_id",
  "final_gender_code",
  "age_level",
  "pvalue_level",
  "shopping_level",
  "occupation",
  "new_user_class_level",
  "adgroup_id",
  "cate_id",
  "campaign_id",
  "customer",
  "brand",
  "price",
  "pid",
]);

/**
 * `num_buckets` of each id feature in the example config: every generated
 * id is in `[0, buckets)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TAOBAO_ID_BUCKETS, taobaoRows } from "./synthetic.ts";
 * for (const { record } of taobaoRows({ rows: 100 })) {
 *   assert.ok(Number(record.adgroup_id) < TAOBAO_ID_BUCKETS.adgroup_id);
 * }
 * ```
 */
export const TAOBAO_ID_BUCKETS: Readonly<Record<string, number>> = Object.freeze({
  user_id: 1141730,
  cms_segid: 98,
  cms_group_id: 14,
  final_gender_code: 3,
  age_level: 8,
  pvalue_level: 5,
  shopping_level: 5,
  occupation: 3,
  new_user_class_level: 6,
  adgroup_id: 846812,
  cate_id: 12961,
  campaign_id: 423438,
  customer: 255877,
  brand: 461498,
});

/**
 * The `price` boundaries of the example config (98 values, 99 buckets).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TAOBAO_PRICE_BOUNDARIES } from "./synthetic.ts";
 * assert.equal(TAOBAO_PRICE_BOUNDARIES.length, 98);
 * assert.equal(TAOBAO_PRICE_BOUNDARIES[97], 8720);
 * ```
 */
export const TAOBAO_PRICE_BOUNDARIES: readonly number[] = Object.freeze([
  1.1,
  2.2,
  3.6,
  5.2,
  7.39,
  9.5,
  10.5,
  12.9,
  15,
  17.37,
  19,
  20,
  23.8,
  25.8,
  28,
  29.8,
  31.5,
  34,
  36,
  38,
  39,
  40,
  45,
  48,
  49,
  51.6,
  55.2,
  58,
  59,
  63.8,
  68,
  69,
  72,
  78,
  79,
  85,
  88,
  90,
  97.5,
  98,
  99,
  100,
  108,
  115,
  118,
  124,
  128,
  129,
  138,
  139,
  148,
  155,
  158,
  164,
  168,
  171.8,
  179,
  188,
  195,
  198,
  199,
  216,
  228,
  238,
  248,
  258,
  268,
  278,
  288,
  298,
  299,
  316,
  330,
  352,
  368,
  388,
  398,
  399,
  439,
  478,
  499,
  536,
  580,
  599,
  660,
  699,
  780,
  859,
  970,
  1080,
  1280,
  1480,
  1776,
  2188,
  2798,
  3680,
  5160,
  8720,
]);

/**
 * The `pid` values (ad slots) generated, with their shares of rows: the real
 * data's two slots, then two rarer invented ones of the same shape.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TAOBAO_PIDS } from "./synthetic.ts";
 * assert.equal(TAOBAO_PIDS[0].pid, "430548_1007");
 * assert.equal(TAOBAO_PIDS.reduce((sum, p) => sum + p.share, 0), 1);
 * ```
 */
export const TAOBAO_PIDS: readonly { readonly pid: string; readonly share: number }[] = Object
  .freeze([
    { pid: "430548_1007", share: 0.6 },
    { pid: "430539_1007", share: 0.34 },
    { pid: "430542_1007", share: 0.04 },
    { pid: "430545_1007", share: 0.02 },
  ]);

/**
 * Options of {@link taobaoRows} and {@link writeTaobaoCsv}.
 *
 * @example
 * ```ts
 * import type { TaobaoOptions } from "./synthetic.ts";
 * const train: TaobaoOptions = { seed: 1, rows: 300_000 };
 * const evaluation: TaobaoOptions = { seed: 2, rows: 50_000 }; // same world
 * void train, evaluation;
 * ```
 */
export interface TaobaoOptions {
  /** Number of rows (a non-negative integer). */
  rows: number;
  /** Seed of the row stream, an integer in [0, 2^32); default 1. */
  seed?: number;
  /**
   * Seed of the world (popularity, profiles, ad attributes, teacher), an
   * integer in [0, 2^32); default 0. Train and eval must share it.
   */
  world?: number;
  /** Target mean p(click), in (0, 1); default 0.05. */
  clickRate?: number;
  /** Target mean p(buy | click) over clicks, in (0, 1); default 0.02. */
  conversionRate?: number;
}

/**
 * One generated row: the record as a CSV reader would produce it (every value
 * a string, keys {@link TAOBAO_COLUMNS}), and the teacher's true
 * probabilities, which are not columns.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type TaobaoRow, taobaoRows } from "./synthetic.ts";
 * const [row]: TaobaoRow[] = [...taobaoRows({ rows: 1 })];
 * assert.equal(typeof row.record.price, "string");
 * assert.ok(row.pBuy <= row.pClick);
 * ```
 */
export interface TaobaoRow {
  /** Column name -> value as a string (`"0"`/`"1"` labels, decimal ids, `"49.9"`). */
  record: RawRecord;
  /** True p(clk = 1). */
  pClick: number;
  /** True p(buy = 1) = pClick * pBuyGivenClick (what `auc_cvr` over all rows ranks). */
  pBuy: number;
  /** True p(buy = 1 | clk = 1), for click-space cvr evaluation. */
  pBuyGivenClick: number;
}

/**
 * Label counts and oracle AUCs (exact AUC, ties averaged, of the true
 * probabilities against the sampled labels): the best AUC a model can
 * expect on these rows, up to sampling noise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { oracleAuc, type TaobaoStats, taobaoRows } from "./synthetic.ts";
 * const stats: TaobaoStats = oracleAuc(taobaoRows({ rows: 5000 }));
 * assert.ok(stats.buys <= stats.clicks);
 * ```
 */
export interface TaobaoStats {
  /** Rows. */
  rows: number;
  /** Rows with clk = 1. */
  clicks: number;
  /** Rows with buy = 1 (all of them clicked). */
  buys: number;
  /** Oracle AUC of pClick against clk over all rows; NaN without both labels. */
  aucCtr: number;
  /** Oracle AUC of pBuy against buy over all rows (as `auc_cvr` is measured); NaN without both labels. */
  aucCvr: number;
}

// ------------------------------------------------------------------ hashing

/** 32-bit finaliser (Wellons' lowbias32): a bijection with full avalanche. */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Hash of (salt, tag, id); salt is the mixed world seed. */
function hashId(salt: number, tag: number, id: number): number {
  return mix32(mix32(id + Math.imul(tag, 0x9e3779b9)) ^ salt);
}

const TWO_POW_32 = 4294967296;

/** A hash as a uniform in [0, 1). */
function unit(h: number): number {
  return h / TWO_POW_32;
}

/**
 * A hash as an approximately standard normal: three 10-bit uniforms summed
 * (Irwin-Hall, variance 3/12), centred and scaled by 2; bounded by ±3.
 */
function normal(h: number): number {
  return ((h & 1023) + ((h >>> 10) & 1023) + ((h >>> 20) & 1023) + 1.5) / 512 - 3;
}

// Hash tags, one per quantity (latent factors use tag + k).
const TAG_USER_RANK = 1, TAG_AD_RANK = 2, TAG_CATE_RANK = 3, TAG_BRAND_RANK = 4;
const TAG_PROFILE_A = 10, TAG_PROFILE_B = 11, TAG_SEGID = 12;
const TAG_CAMPAIGN = 20, TAG_CUSTOMER = 21, TAG_BRAND = 22, TAG_CATE = 23, TAG_PRICE = 24;
const TAG_USER_CODE = 25, TAG_AD_CODE = 26;
const TAG_USER_CLICK = 30, TAG_AD_CLICK = 31, TAG_CATE_CLICK = 32, TAG_SEGID_CLICK = 33;
const TAG_USER_BUY = 40, TAG_AD_BUY = 41, TAG_CATE_BUY = 42, TAG_CATE_PRICE = 43;
const TAG_USER_VEC = 100, TAG_AD_VEC = 200, TAG_CATE_VEC = 300, TAG_DEMO_VEC = 400;

// ------------------------------------------------------------------ the world

/** Latent factor dimension of the teacher. */
const K = 8;
const INV_SQRT_K = 1 / Math.sqrt(K);
/**
 * Users and ads get their personal factor from a codebook of this many
 * random K-vectors (by hash): per-id factors without per-id memory.
 */
const CODES = 16384;
const LN_PRICE_MID = Math.log(100);
/** Zipf-Mandelbrot offsets q: the head is about sqrt(q N) ids. */
const USER_Q = 100, AD_Q = 50, CATE_Q = 3, BRAND_Q = 30;
/** Rows drawn to solve the intercepts. */
const CALIBRATION_ROWS = 20_000;

/** Teacher weights (see the module doc for the formula). */
const TEACHER = {
  demoFactor: 0.9,
  userFactor: 0.45,
  cateFactor: 0.9,
  adFactor: 0.45,
  clickDot: 0.6,
  clickUser: 0.25,
  clickAd: 0.25,
  clickCate: 0.4,
  clickPrice: -0.15,
  clickPricePvalue: 0.06,
  clickShopping: 0.1,
  clickSegid: 0.1,
  clickPid: [0.1, -0.15, 0.2, -0.3],
  buyDot: 0.3,
  buyPrice: -0.45,
  buyShopping: 0.5,
  buyPvalue: 0.4,
  buyCate: 0.3,
  buyUser: 0.2,
  buyAd: 0.15,
  buyOccupation: 0.15,
  buyCity: 0.1,
} as const;

const B = TAOBAO_ID_BUCKETS;
const USERS = B.user_id, ADS = B.adgroup_id, CATES = B.cate_id, CAMPAIGNS = B.campaign_id;
const CUSTOMERS = B.customer, BRANDS = B.brand, SEGIDS = B.cms_segid;

/** Price bucket edges: 0.5, the 98 boundaries, 20000 (99 buckets), as logs. */
const LOG_PRICE_EDGES = Float64Array.from([0.5, ...TAOBAO_PRICE_BOUNDARIES, 20000], Math.log);

/** Cumulative shares of categorical profile fields (values from 0 or 1). */
const AGE_CDF = cumulative([0.02, 0.1, 0.24, 0.3, 0.2, 0.11, 0.03]); // 0..6
const PVALUE_CDF = cumulative([0.3, 0.55, 0.15]); // 1..3
const SHOPPING_CDF = cumulative([0.08, 0.15, 0.77]); // 1..3
const CITY_CDF = cumulative([0.1, 0.35, 0.35, 0.2]); // 1..4
const PID_CDF = cumulative(TAOBAO_PIDS.map((p) => p.share));

function cumulative(shares: readonly number[]): Float64Array {
  const out = new Float64Array(shares.length);
  let sum = 0;
  for (let i = 0; i < shares.length; i++) out[i] = sum += shares[i];
  out[shares.length - 1] = 1;
  return out;
}

/** Index of the first cumulative share above u. */
function pick(cdf: Float64Array, u: number): number {
  let i = 0;
  while (i < cdf.length - 1 && u >= cdf[i]) i++;
  return i;
}

/** 10 bits of a hash (chunk 0, 1 or 2) as a uniform in [0, 1). */
function unit10(h: number, chunk: number): number {
  return ((h >>> (10 * chunk)) & 1023) / 1024;
}

/**
 * Rank in [0, n) with p(r) ∝ 1 / (r + q) (continuous Zipf-Mandelbrot with
 * exponent 1, inverted exactly): r = q (exp(u ln(1 + n / q)) - 1).
 */
function zipfRank(u: number, logSpan: number, q: number, n: number): number {
  const r = Math.floor(q * Math.expm1(u * logSpan));
  return r < n ? r : n - 1;
}

/** An affine bijection on [0, n): rank -> (a rank + c) mod n, gcd(a, n) = 1. */
interface Permutation {
  a: number;
  c: number;
  n: number;
}

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

function permutation(salt: number, tag: number, n: number): Permutation {
  let a = hashId(salt, tag, 0) % n;
  while (a < n / 4 || gcd(a, n) !== 1) a = (a + 1) % n;
  return { a, c: hashId(salt, tag, 1) % n, n };
}

/** Exact in doubles: a, c, rank < n < 2^21 keep a rank + c < 2^53. */
function permute(p: Permutation, rank: number): number {
  return (p.a * rank + p.c) % p.n;
}

/** K hashed normals per row of `rows`, times `scale`. */
function factorTable(salt: number, tag: number, rows: number, scale: number): Float32Array {
  const out = new Float32Array(rows * K);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < K; k++) out[r * K + k] = scale * normal(hashId(salt, tag + k, r));
  }
  return out;
}

/** One hashed normal per id in [0, n), times `scale`. */
function biasTable(salt: number, tag: number, n: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * normal(hashId(salt, tag, i));
  return out;
}

/** Everything fixed by the world seed; intercepts solved by calibration. */
interface World {
  salt: number;
  users: Permutation;
  ads: Permutation;
  cates: Permutation;
  brands: Permutation;
  /** (age_level * 3 + final_gender_code) x K demographic factors. */
  demoFactors: Float32Array;
  /** CODES x K personal factors of users, and of ads. */
  userCodes: Float32Array;
  adCodes: Float32Array;
  /** cate_id x K category factors, and per-category effects. */
  cateFactors: Float32Array;
  cateClick: Float32Array;
  cateBuy: Float32Array;
  catePrice: Float32Array;
  segidClick: Float32Array;
  /** Caches of per-user and per-ad derivations (see deriveUser, deriveAd). */
  userKeys: Int32Array;
  userInts: Int32Array;
  userFloats: Float64Array;
  adKeys: Int32Array;
  adInts: Int32Array;
  adFloats: Float64Array;
  clickIntercept: number;
  buyIntercept: number;
}

const LOG_USERS = Math.log1p(USERS / USER_Q), LOG_ADS = Math.log1p(ADS / AD_Q);
const LOG_CATES = Math.log1p(CATES / CATE_Q), LOG_BRANDS = Math.log1p(BRANDS / BRAND_Q);

function createWorld(seed: number, clickRate: number, conversionRate: number): World {
  const salt = mix32(seed ^ 0x5bd1e995);
  const t = TEACHER;
  const world: World = {
    salt,
    users: permutation(salt, TAG_USER_RANK, USERS),
    ads: permutation(salt, TAG_AD_RANK, ADS),
    cates: permutation(salt, TAG_CATE_RANK, CATES),
    brands: permutation(salt, TAG_BRAND_RANK, BRANDS),
    demoFactors: factorTable(salt, TAG_DEMO_VEC, 8 * 3, t.demoFactor),
    userCodes: factorTable(salt, TAG_USER_VEC, CODES, t.userFactor),
    adCodes: factorTable(salt, TAG_AD_VEC, CODES, t.adFactor),
    cateFactors: factorTable(salt, TAG_CATE_VEC, CATES, t.cateFactor),
    cateClick: biasTable(salt, TAG_CATE_CLICK, CATES, t.clickCate),
    cateBuy: biasTable(salt, TAG_CATE_BUY, CATES, t.buyCate),
    catePrice: biasTable(salt, TAG_CATE_PRICE, CATES, Math.SQRT1_2),
    segidClick: biasTable(salt, TAG_SEGID_CLICK, SEGIDS, t.clickSegid),
    userKeys: new Int32Array(CACHE).fill(-1),
    userInts: new Int32Array(CACHE * USER_INTS),
    userFloats: new Float64Array(CACHE * USER_FLOATS),
    adKeys: new Int32Array(CACHE).fill(-1),
    adInts: new Int32Array(CACHE * AD_INTS),
    adFloats: new Float64Array(CACHE * AD_FLOATS),
    clickIntercept: 0,
    buyIntercept: 0,
  };
  calibrate(world, clickRate, conversionRate);
  return world;
}

/**
 * Solves the intercepts on CALIBRATION_ROWS rows of the world (a fixed
 * stream): mean sigmoid(z + b) = clickRate, then sum p(click) sigmoid(z' + c)
 * / sum p(click) = conversionRate, each by bisection (both sides increase).
 */
function calibrate(world: World, clickRate: number, conversionRate: number): void {
  const sampler = new RowSampler(world, 0x9e3779b9);
  const clickLogit = new Float64Array(CALIBRATION_ROWS);
  const buyLogit = new Float64Array(CALIBRATION_ROWS);
  for (let i = 0; i < CALIBRATION_ROWS; i++) {
    sampler.next();
    clickLogit[i] = sampler.clickLogit;
    buyLogit[i] = sampler.buyLogit;
  }
  world.clickIntercept = bisect((b) => {
    let sum = 0;
    for (let i = 0; i < CALIBRATION_ROWS; i++) sum += sigmoid(clickLogit[i] + b);
    return sum / CALIBRATION_ROWS;
  }, clickRate);
  const pClick = new Float64Array(CALIBRATION_ROWS);
  let clicks = 0;
  for (let i = 0; i < CALIBRATION_ROWS; i++) {
    clicks += pClick[i] = sigmoid(clickLogit[i] + world.clickIntercept);
  }
  world.buyIntercept = bisect((c) => {
    let sum = 0;
    for (let i = 0; i < CALIBRATION_ROWS; i++) sum += pClick[i] * sigmoid(buyLogit[i] + c);
    return sum / clicks;
  }, conversionRate);
}

/** x in [-30, 30] with increasing f(x) = target, to 1e-7. */
function bisect(f: (x: number) => number, target: number): number {
  let lo = -30, hi = 30;
  while (hi - lo > 1e-7) {
    const mid = 0.5 * (lo + hi);
    if (f(mid) < target) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

const worlds = new Map<string, World>();

function getWorld(seed: number, clickRate: number, conversionRate: number): World {
  const key = `${seed}/${clickRate}/${conversionRate}`;
  let world = worlds.get(key);
  if (world === undefined) {
    // Keep the last few worlds (about 9 MB each).
    if (worlds.size >= 4) worlds.delete(worlds.keys().next().value!);
    world = createWorld(seed, clickRate, conversionRate);
    worlds.set(key, world);
  }
  return world;
}

// ------------------------------------------------------------------ rows

/**
 * Direct-mapped caches (slot = id mod CACHE) of what is derived per user and
 * per ad: popular ids recur, and a row costs a few array reads instead of a
 * dozen hashes. They memoise pure functions of the id, so they never change
 * a row.
 */
const CACHE = 1 << 16, CACHE_MASK = CACHE - 1;
/** Per user: segid, gender, age, pvalue, shopping, occupation, city, code row; click, buy. */
const USER_INTS = 8, USER_FLOATS = 2;
/** Per ad: campaign, customer, brand, cate, code row; price, lp, click, buy. */
const AD_INTS = 5, AD_FLOATS = 4;

/** Fills the user's cache slot: profile from 10-bit chunks of two hashes. */
function deriveUser(w: World, user: number, slot: number): void {
  const salt = w.salt, t = TEACHER;
  const profileA = hashId(salt, TAG_PROFILE_A, user);
  const profileB = hashId(salt, TAG_PROFILE_B, user);
  const segU = unit(hashId(salt, TAG_SEGID, user));
  const at = slot * USER_INTS, u = w.userInts;
  u[at] = segU < 0.85 ? 0 : 1 + Math.floor((segU - 0.85) / 0.15 * (SEGIDS - 1));
  u[at + 1] = unit10(profileA, 0) < 0.35 ? 1 : 2;
  u[at + 2] = pick(AGE_CDF, unit10(profileA, 1));
  u[at + 3] = 1 + pick(PVALUE_CDF, unit10(profileA, 2));
  u[at + 4] = 1 + pick(SHOPPING_CDF, unit10(profileB, 0));
  u[at + 5] = unit10(profileB, 1) < 0.06 ? 1 : 0;
  u[at + 6] = 1 + pick(CITY_CDF, unit10(profileB, 2));
  u[at + 7] = (hashId(salt, TAG_USER_CODE, user) & (CODES - 1)) * K;
  w.userFloats[slot * USER_FLOATS] = t.clickUser * normal(hashId(salt, TAG_USER_CLICK, user));
  w.userFloats[slot * USER_FLOATS + 1] = t.buyUser * normal(hashId(salt, TAG_USER_BUY, user));
  w.userKeys[slot] = user;
}

/**
 * Fills the ad's cache slot: ad -> campaign -> customer -> brand, campaign ->
 * category; the price quantile from the category's level and the ad (half
 * the variance each) through the logistic approximation of the normal CDF,
 * then log-linear inside that bucket of the extended boundaries.
 */
function deriveAd(w: World, ad: number, slot: number): void {
  const salt = w.salt, t = TEACHER;
  const campaign = hashId(salt, TAG_CAMPAIGN, ad) % CAMPAIGNS;
  const customer = hashId(salt, TAG_CUSTOMER, campaign) % CUSTOMERS;
  const brandU = unit(hashId(salt, TAG_BRAND, customer));
  const cate = permute(
    w.cates,
    zipfRank(unit(hashId(salt, TAG_CATE, campaign)), LOG_CATES, CATE_Q, CATES),
  );
  const priceZ = w.catePrice[cate] + Math.SQRT1_2 * normal(hashId(salt, TAG_PRICE, ad));
  const position = 99 / (1 + Math.exp(-1.702 * priceZ));
  const bucket = Math.min(98, Math.floor(position));
  const logPrice = LOG_PRICE_EDGES[bucket] +
    (position - bucket) * (LOG_PRICE_EDGES[bucket + 1] - LOG_PRICE_EDGES[bucket]);
  const price = shopPrice(Math.exp(logPrice));
  let at = slot * AD_INTS;
  const a = w.adInts, f = w.adFloats;
  a[at] = campaign;
  a[at + 1] = customer;
  a[at + 2] = permute(w.brands, zipfRank(brandU, LOG_BRANDS, BRAND_Q, BRANDS));
  a[at + 3] = cate;
  a[at + 4] = (hashId(salt, TAG_AD_CODE, ad) & (CODES - 1)) * K;
  at = slot * AD_FLOATS;
  f[at] = price;
  f[at + 1] = Math.log(price) - LN_PRICE_MID;
  f[at + 2] = t.clickAd * normal(hashId(salt, TAG_AD_CLICK, ad));
  f[at + 3] = t.buyAd * normal(hashId(salt, TAG_AD_BUY, ad));
  w.adKeys[slot] = ad;
}

/** "0" .. "127": the strings of small ids without a number conversion. */
const SMALL = Array.from({ length: 128 }, (_, i) => String(i));

/**
 * Draws rows of one world into its numeric fields (no allocation per row):
 * `next()` samples a user and an ad by popularity and a pid, derives their
 * attributes, evaluates the teacher and samples the labels.
 */
class RowSampler {
  clk = 0;
  buy = 0;
  userId = 0;
  cmsSegid = 0;
  cmsGroupId = 0;
  gender = 0;
  ageLevel = 0;
  pvalueLevel = 0;
  shoppingLevel = 0;
  occupation = 0;
  cityLevel = 0;
  adgroupId = 0;
  cateId = 0;
  campaignId = 0;
  customer = 0;
  brand = 0;
  price = 0;
  pid = 0;
  clickLogit = 0;
  buyLogit = 0;
  pClick = 0;
  pBuyGivenClick = 0;
  #world: World;
  #state: number;

  constructor(world: World, seed: number) {
    this.#world = world;
    this.#state = mix32(seed ^ world.salt);
  }

  /** mulberry32: period 2^32, five draws per row. */
  #uniform(): number {
    const s = this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / TWO_POW_32;
  }

  next(): void {
    const w = this.#world, t = TEACHER;
    const user = permute(w.users, zipfRank(this.#uniform(), LOG_USERS, USER_Q, USERS));
    const ad = permute(w.ads, zipfRank(this.#uniform(), LOG_ADS, AD_Q, ADS));
    const pid = pick(PID_CDF, this.#uniform());

    // User profile and ad attributes, with their teacher terms, through the
    // world's caches.
    let slot = user & CACHE_MASK;
    if (w.userKeys[slot] !== user) deriveUser(w, user, slot);
    let at = slot * USER_INTS;
    const u = w.userInts;
    const segid = u[at], gender = u[at + 1], age = u[at + 2], pvalue = u[at + 3];
    const shopping = u[at + 4], occupation = u[at + 5], city = u[at + 6];
    const userCode = u[at + 7];
    const userClick = w.userFloats[slot * USER_FLOATS];
    const userBuy = w.userFloats[slot * USER_FLOATS + 1];
    slot = ad & CACHE_MASK;
    if (w.adKeys[slot] !== ad) deriveAd(w, ad, slot);
    at = slot * AD_INTS;
    const a = w.adInts;
    const campaign = a[at], customer = a[at + 1], brand = a[at + 2], cate = a[at + 3];
    const adCode = a[at + 4];
    at = slot * AD_FLOATS;
    const price = w.adFloats[at], lp = w.adFloats[at + 1];
    const adClick = w.adFloats[at + 2], adBuy = w.adFloats[at + 3];

    // Teacher: u = demo + user code, v = category + ad code.
    const demo = (age * 3 + gender) * K, cateRow = cate * K;
    let dot = 0;
    for (let k = 0; k < K; k++) {
      dot += (w.demoFactors[demo + k] + w.userCodes[userCode + k]) *
        (w.cateFactors[cateRow + k] + w.adCodes[adCode + k]);
    }
    dot *= INV_SQRT_K;
    const clickLogit = t.clickDot * dot + userClick + adClick + w.cateClick[cate] +
      (t.clickPrice + t.clickPricePvalue * (pvalue - 2)) * lp +
      t.clickPid[pid] +
      t.clickShopping * (shopping - 2) +
      w.segidClick[segid];
    const buyLogit = t.buyDot * dot + userBuy + adBuy + w.cateBuy[cate] +
      t.buyPrice * lp +
      t.buyShopping * (shopping - 2) +
      t.buyPvalue * (pvalue - 2) +
      t.buyOccupation * occupation +
      t.buyCity * (city - 2.5);
    const pClick = sigmoid(clickLogit + w.clickIntercept);
    const pBuyGivenClick = sigmoid(buyLogit + w.buyIntercept);
    const clk = this.#uniform() < pClick ? 1 : 0;
    const buyDraw = this.#uniform(); // drawn on every row: one stream position per row
    const buy = clk === 1 && buyDraw < pBuyGivenClick ? 1 : 0;

    this.clk = clk;
    this.buy = buy;
    this.userId = user;
    this.cmsSegid = segid;
    this.cmsGroupId = 7 * (gender - 1) + age;
    this.gender = gender;
    this.ageLevel = age;
    this.pvalueLevel = pvalue;
    this.shoppingLevel = shopping;
    this.occupation = occupation;
    this.cityLevel = city;
    this.adgroupId = ad;
    this.cateId = cate;
    this.campaignId = campaign;
    this.customer = customer;
    this.brand = brand;
    this.price = price;
    this.pid = pid;
    this.clickLogit = clickLogit;
    this.buyLogit = buyLogit;
    this.pClick = pClick;
    this.pBuyGivenClick = pBuyGivenClick;
  }

  /** The current row as a CSV reader would give it. */
  record(): RawRecord {
    return {
      clk: SMALL[this.clk],
      buy: SMALL[this.buy],
      user_id: String(this.userId),
      cms_segid: SMALL[this.cmsSegid],
      cms_group_id: SMALL[this.cmsGroupId],
      final_gender_code: SMALL[this.gender],
      age_level: SMALL[this.ageLevel],
      pvalue_level: SMALL[this.pvalueLevel],
      shopping_level: SMALL[this.shoppingLevel],
      occupation: SMALL[this.occupation],
      new_user_class_level: SMALL[this.cityLevel],
      adgroup_id: String(this.adgroupId),
      cate_id: String(this.cateId),
      campaign_id: String(this.campaignId),
      customer: String(this.customer),
      brand: String(this.brand),
      price: String(this.price),
      pid: TAOBAO_PIDS[this.pid].pid,
    };
  }

  /** Appends the current row as a CSV line in {@link TAOBAO_COLUMNS} order, with "\n". */
  csvLine(out: AsciiWriter): void {
    out.int(this.clk), out.byte(COMMA), out.int(this.buy), out.byte(COMMA);
    out.int(this.userId), out.byte(COMMA), out.int(this.cmsSegid), out.byte(COMMA);
    out.int(this.cmsGroupId), out.byte(COMMA), out.int(this.gender), out.byte(COMMA);
    out.int(this.ageLevel), out.byte(COMMA), out.int(this.pvalueLevel), out.byte(COMMA);
    out.int(this.shoppingLevel), out.byte(COMMA), out.int(this.occupation), out.byte(COMMA);
    out.int(this.cityLevel), out.byte(COMMA), out.int(this.adgroupId), out.byte(COMMA);
    out.int(this.cateId), out.byte(COMMA), out.int(this.campaignId), out.byte(COMMA);
    out.int(this.customer), out.byte(COMMA), out.int(this.brand), out.byte(COMMA);
    out.price(this.price), out.byte(COMMA), out.bytes(PID_BYTES[this.pid]), out.byte(NEWLINE);
  }
}

const COMMA = 44, NEWLINE = 10, DOT = 46, ZERO = 48;
const PID_BYTES = TAOBAO_PIDS.map(({ pid }) => new TextEncoder().encode(pid));

/**
 * ASCII text built straight into bytes: the CSV writer formats numbers digit
 * by digit instead of building strings and encoding them.
 */
class AsciiWriter {
  buffer: Uint8Array;
  length = 0;

  constructor(capacity: number) {
    this.buffer = new Uint8Array(capacity);
  }

  byte(c: number): void {
    this.buffer[this.length++] = c;
  }

  bytes(b: Uint8Array): void {
    this.buffer.set(b, this.length);
    this.length += b.length;
  }

  /** A non-negative integer in decimal, as `String(n)` writes it. */
  int(n: number): void {
    let digits = 1;
    for (let p = 10; p <= n; p *= 10) digits++;
    const buffer = this.buffer, end = this.length + digits;
    for (let i = end - 1; i >= this.length; i--) {
      const q = Math.floor(n / 10);
      buffer[i] = ZERO + n - 10 * q;
      n = q;
    }
    this.length = end;
  }

  /** A price with at most two decimals, as `String(price)` writes it ("0.59", "49.9", "128"). */
  price(p: number): void {
    const cents = Math.round(p * 100), whole = Math.floor(cents / 100), frac = cents - 100 * whole;
    this.int(whole);
    if (frac === 0) return;
    this.byte(DOT);
    this.byte(ZERO + Math.floor(frac / 10));
    if (frac % 10 !== 0) this.byte(ZERO + (frac % 10));
  }
}

/** Rounds like shop prices: cents below 10, dimes below 100, whole above. */
function shopPrice(p: number): number {
  if (p < 10) return Math.max(0.01, Math.round(p * 100) / 100);
  if (p < 100) return Math.round(p * 10) / 10;
  return Math.round(p);
}

function checkSeed(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value >= TWO_POW_32) {
    throw new RangeError(`${name} must be an integer in [0, 2^32), got ${value}`);
  }
  return value;
}

function checkRate(name: string, value: number): number {
  if (!(value > 0 && value < 1)) {
    throw new RangeError(`${name} must be in (0, 1), got ${value}`);
  }
  return value;
}

/** Validates options once and builds the sampler. */
function createSampler(options: TaobaoOptions): { sampler: RowSampler; rows: number } {
  const { rows, seed = 1, world = 0, clickRate = 0.05, conversionRate = 0.02 } = options;
  if (!Number.isSafeInteger(rows) || rows < 0) {
    throw new RangeError(`rows must be a non-negative integer, got ${rows}`);
  }
  const w = getWorld(
    checkSeed("world", world),
    checkRate("clickRate", clickRate),
    checkRate("conversionRate", conversionRate),
  );
  return { sampler: new RowSampler(w, checkSeed("seed", seed)), rows };
}

/**
 * Generates `rows` rows of the Taobao schema, deterministic in
 * `(world, seed, clickRate, conversionRate)`. Values are strings, as the
 * CSV reader gives them, so generated rows take the same encoding path as a
 * file. Options are checked when called (RangeError), before the first row.
 * The first call for a world spends a few tens of milliseconds calibrating it;
 * worlds are cached for the process.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { taobaoRows, TAOBAO_COLUMNS } from "./synthetic.ts";
 * const rows = [...taobaoRows({ seed: 7, rows: 3 })];
 * assert.deepEqual(Object.keys(rows[0].record), TAOBAO_COLUMNS);
 * assert.deepEqual(rows, [...taobaoRows({ seed: 7, rows: 3 })]);
 * assert.throws(() => taobaoRows({ rows: -1 }), RangeError);
 * ```
 */
export function taobaoRows(options: TaobaoOptions): IterableIterator<TaobaoRow> {
  const { sampler, rows } = createSampler(options);
  return generateRows(sampler, rows);
}

function* generateRows(sampler: RowSampler, rows: number): Generator<TaobaoRow, void, undefined> {
  for (let i = 0; i < rows; i++) {
    sampler.next();
    const pClick = sampler.pClick, pBuyGivenClick = sampler.pBuyGivenClick;
    yield { record: sampler.record(), pClick, pBuy: pClick * pBuyGivenClick, pBuyGivenClick };
  }
}

/** Streams labels and true probabilities into two exact AUCs. */
class OracleAccumulator {
  static readonly CHUNK = 65536;
  #ctr = new ExactAuc("oracle_auc_ctr");
  #cvr = new ExactAuc("oracle_auc_cvr");
  #pClick = new Float32Array(OracleAccumulator.CHUNK);
  #pBuy = new Float32Array(OracleAccumulator.CHUNK);
  #clk = new Float32Array(OracleAccumulator.CHUNK);
  #buy = new Float32Array(OracleAccumulator.CHUNK);
  #fill = 0;
  rows = 0;
  clicks = 0;
  buys = 0;

  add(clk: number, buy: number, pClick: number, pBuy: number): void {
    const i = this.#fill;
    this.#clk[i] = clk;
    this.#buy[i] = buy;
    this.#pClick[i] = pClick;
    this.#pBuy[i] = pBuy;
    this.rows++;
    this.clicks += clk;
    this.buys += buy;
    if (++this.#fill === OracleAccumulator.CHUNK) this.#flush();
  }

  #flush(): void {
    const n = this.#fill;
    this.#ctr.update(this.#pClick.subarray(0, n), this.#clk.subarray(0, n));
    this.#cvr.update(this.#pBuy.subarray(0, n), this.#buy.subarray(0, n));
    this.#fill = 0;
  }

  stats(): TaobaoStats {
    this.#flush();
    return {
      rows: this.rows,
      clicks: this.clicks,
      buys: this.buys,
      aucCtr: this.#ctr.compute(),
      aucCvr: this.#cvr.compute(),
    };
  }
}

/**
 * Counts labels and computes the oracle AUCs of generated rows (consumes
 * the iterable). Labels are read from `record.clk` / `record.buy` (`"0"`/
 * `"1"` or numbers). Probabilities are rounded to float32, as
 * {@link ExactAuc} stores them. O(rows) memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { oracleAuc, taobaoRows } from "./synthetic.ts";
 * const stats = oracleAuc(taobaoRows({ seed: 3, rows: 10000 }));
 * assert.ok(stats.clicks > 300 && stats.clicks < 700); // about 5%
 * assert.ok(stats.aucCvr > stats.aucCtr);
 * ```
 */
export function oracleAuc(rows: Iterable<TaobaoRow>): TaobaoStats {
  const oracle = new OracleAccumulator();
  for (const { record, pClick, pBuy } of rows) {
    oracle.add(Number(record.clk), Number(record.buy), pClick, pBuy);
  }
  return oracle.stats();
}

/** writeSync until every byte is written (a write may be partial). */
function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done);
}

/**
 * Writes generated rows as a CSV file with a {@link TAOBAO_COLUMNS} header
 * (no quoting: no value holds a comma) and returns their label counts and
 * oracle AUCs. The rows are exactly those of {@link taobaoRows} with the same
 * options. Creates the parent directory; writes a temporary file beside
 * `path`, syncs it and renames it over `path`, so readers never see a partial
 * file. Uses `node:fs` (Deno needs `--allow-read --allow-write`).
 *
 * @example Train and eval files from one world
 * ```ts
 * import assert from "node:assert/strict";
 * import { mkdtempSync, readFileSync, rmSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * import { writeTaobaoCsv } from "./synthetic.ts";
 * const dir = mkdtempSync(join(tmpdir(), "denorec-"));
 * const train = writeTaobaoCsv(join(dir, "train.csv"), { seed: 1, rows: 2000 });
 * writeTaobaoCsv(join(dir, "eval.csv"), { seed: 2, rows: 500 });
 * const lines = readFileSync(join(dir, "train.csv"), "utf8").trimEnd().split("\n");
 * assert.equal(lines[0], "clk,buy,user_id,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,new_user_class_level,adgroup_id,cate_id,campaign_id,customer,brand,price,pid");
 * assert.equal(lines.length, 2001);
 * assert.equal(train.rows, 2000);
 * rmSync(dir, { recursive: true });
 * ```
 */
export function writeTaobaoCsv(path: string, options: TaobaoOptions): TaobaoStats {
  const { sampler, rows } = createSampler(options);
  const directory = dirname(path);
  const temporary = join(directory, `.${basename(path)}.${randomUUID().slice(0, 8)}.tmp`);
  const oracle = new OracleAccumulator();
  try {
    mkdirSync(directory, { recursive: true });
    const fd = openSync(temporary, "wx");
    try {
      const out = new AsciiWriter(1 << 20);
      out.bytes(new TextEncoder().encode(TAOBAO_COLUMNS.join(",") + "\n"));
      for (let i = 0; i < rows; i++) {
        sampler.next();
        sampler.csvLine(out);
        oracle.add(
          sampler.clk,
          sampler.buy,
          sampler.pClick,
          sampler.pClick * sampler.pBuyGivenClick,
        );
        // A line is under 200 bytes.
        if (out.length > out.buffer.length - 256) {
          writeAll(fd, out.buffer.subarray(0, out.length));
          out.length = 0;
        }
      }
      writeAll(fd, out.buffer.subarray(0, out.length));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    try {
      rmSync(temporary, { force: true });
    } catch {
      // The temporary was never created (e.g. the directory is a file).
    }
    throw new Error(`writing ${path}: ${(error as Error).message}`, { cause: error });
  }
  return oracle.stats();
}

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  oracleAuc,
  TAOBAO_COLUMNS,
  TAOBAO_ID_BUCKETS,
  TAOBAO_PIDS,
  TAOBAO_PRICE_BOUNDARIES,
  type TaobaoRow,
  taobaoRows,
  writeTaobaoCsv,
} from "../src/data/synthetic.ts";

const ROWS = 100_000;
let cached: TaobaoRow[] | undefined;
/** 100k rows of the default world, generated once for the whole file. */
function sample(): TaobaoRow[] {
  return cached ??= [...taobaoRows({ seed: 11, rows: ROWS })];
}

const str = (row: TaobaoRow, column: string) => row.record[column] as string;

test("same seed gives identical rows, another seed or world different ones", () => {
  const a = [...taobaoRows({ seed: 5, rows: 2000 })];
  assert.deepEqual(a, [...taobaoRows({ seed: 5, rows: 2000 })]);
  // A longer stream starts with the shorter one.
  assert.deepEqual([...taobaoRows({ seed: 5, rows: 2100 })].slice(0, 2000), a);
  const differing = (b: TaobaoRow[]) =>
    a.filter((row, i) => row.record.user_id !== b[i].record.user_id).length;
  assert.ok(differing([...taobaoRows({ seed: 6, rows: 2000 })]) > 1900);
  assert.ok(differing([...taobaoRows({ seed: 5, rows: 2000, world: 1 })]) > 1900);
});

test("every column is present, in order, well-formed and in range", () => {
  const pids = new Set(TAOBAO_PIDS.map((p) => p.pid));
  const decimal = /^(0|[1-9][0-9]*)$/, price = /^(0|[1-9][0-9]*)(\.[0-9]{1,2})?$/;
  const idColumns = Object.entries(TAOBAO_ID_BUCKETS);
  const columns = TAOBAO_COLUMNS.join();
  // Collected, then asserted once: an assert per value would dominate the time.
  const problems: string[] = [];
  const problem = (i: number, what: string, row: TaobaoRow) =>
    problems.length < 5 && problems.push(`row ${i}: ${what}: ${JSON.stringify(row)}`);
  sample().forEach((row, i) => {
    const { record } = row;
    if (Object.keys(record).join() !== columns) problem(i, "columns", row);
    for (const [column, buckets] of idColumns) {
      const value = record[column] as string;
      if (!decimal.test(value) || Number(value) >= buckets) problem(i, column, row);
    }
    if (record.clk !== "0" && record.clk !== "1") problem(i, "clk", row);
    if (record.buy !== "0" && record.buy !== "1") problem(i, "buy", row);
    if (!price.test(str(row, "price")) || !(Number(record.price) > 0)) problem(i, "price", row);
    if (!pids.has(str(row, "pid"))) problem(i, "pid", row);
    if (!(row.pClick > 0 && row.pClick < 1)) problem(i, "pClick", row);
    if (!(row.pBuyGivenClick > 0 && row.pBuyGivenClick < 1)) problem(i, "pBuyGivenClick", row);
    if (row.pBuy !== row.pClick * row.pBuyGivenClick) problem(i, "pBuy", row);
    // cms_group_id is the (gender, age) group, as in the real profile table.
    const group = 7 * (Number(record.final_gender_code) - 1) + Number(record.age_level);
    if (Number(record.cms_group_id) !== group) problem(i, "cms_group_id", row);
  });
  assert.deepEqual(problems, []);
  // Every value the schema allows for the small fields shows up.
  const distinct = (column: string) => new Set(sample().map((row) => str(row, column))).size;
  assert.equal(distinct("final_gender_code"), 2);
  assert.equal(distinct("age_level"), 7);
  assert.equal(distinct("cms_group_id"), 14);
  assert.equal(distinct("pid"), TAOBAO_PIDS.length);
  assert.ok(distinct("cms_segid") > 90);
});

test("profiles are fixed per user and attributes per ad, across seeds", () => {
  const users = new Map<string, string>(), ads = new Map<string, string>();
  const customers = new Map<string, string>(), brands = new Map<string, string>();
  let repeats = 0, mismatches = 0;
  /** Counts a key seen before and whether its value changed. */
  const same = (seen: Map<string, string>, key: string, value: string) => {
    const before = seen.get(key);
    if (before === undefined) seen.set(key, value);
    else repeats++, mismatches += before === value ? 0 : 1;
  };
  const check = (rows: Iterable<TaobaoRow>) => {
    for (const { record: r } of rows) {
      same(
        users,
        r.user_id as string,
        `${r.cms_segid},${r.cms_group_id},${r.final_gender_code},${r.age_level},${r.pvalue_level},${r.shopping_level},${r.occupation},${r.new_user_class_level}`,
      );
      same(
        ads,
        r.adgroup_id as string,
        `${r.cate_id},${r.campaign_id},${r.customer},${r.brand},${r.price}`,
      );
      // A campaign always has the same customer, a customer the same brand.
      same(customers, r.campaign_id as string, r.customer as string);
      same(brands, r.customer as string, r.brand as string);
    }
  };
  check(sample());
  check(taobaoRows({ seed: 12, rows: 20_000 })); // an eval set of the same world
  assert.equal(mismatches, 0);
  assert.ok(repeats > 200_000, `${repeats}`);
  // Rows of one ad agree, but ads differ: attributes are not constant.
  assert.ok(new Set(ads.values()).size > 0.9 * ads.size);
});

test("popularity: a head of users and ads recurs, with a long tail", () => {
  const count = (column: string) => {
    const counts = new Map<string, number>();
    for (const row of sample()) {
      counts.set(str(row, column), (counts.get(str(row, column)) ?? 0) + 1);
    }
    const values = [...counts.values()];
    return {
      distinct: counts.size,
      max: Math.max(...values),
      rowsOfRepeated: values.filter((c) => c >= 5).reduce((a, b) => a + b, 0) / ROWS,
    };
  };
  const users = count("user_id"), ads = count("adgroup_id"), cates = count("cate_id");
  assert.ok(users.distinct > 30_000 && users.distinct < 70_000, JSON.stringify(users));
  assert.ok(users.max > 30 && users.max < 1000, JSON.stringify(users));
  assert.ok(users.rowsOfRepeated > 0.25, JSON.stringify(users));
  assert.ok(ads.distinct > 25_000 && ads.distinct < 70_000, JSON.stringify(ads));
  assert.ok(ads.rowsOfRepeated > 0.3, JSON.stringify(ads));
  assert.ok(cates.distinct > 2000 && cates.max > 1000, JSON.stringify(cates));
});

test("prices spread over every bucket of the config's boundaries", () => {
  const buckets = new Array(TAOBAO_PRICE_BOUNDARIES.length + 1).fill(0);
  for (const row of sample()) {
    const price = Number(row.record.price);
    // tzrec's bucket: the number of boundaries <= price (binary search).
    let lo = 0, hi = TAOBAO_PRICE_BOUNDARIES.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (TAOBAO_PRICE_BOUNDARIES[mid] <= price) lo = mid + 1;
      else hi = mid;
    }
    buckets[lo]++;
  }
  assert.ok(Math.min(...buckets) > 0.001 * ROWS, `${buckets}`);
  assert.ok(Math.max(...buckets) < 0.03 * ROWS, `${buckets}`);
});

test("click and buy rates are Taobao-like and buy needs a click", () => {
  let clicks = 0, buys = 0, pClicks = 0;
  for (const row of sample()) {
    const clk = Number(row.record.clk), buy = Number(row.record.buy);
    clicks += clk;
    buys += buy;
    pClicks += row.pClick;
    if (buy === 1) assert.equal(clk, 1);
  }
  assert.ok(clicks > 0.045 * ROWS && clicks < 0.055 * ROWS, `clicks ${clicks}`);
  assert.ok(buys > 0.0006 * ROWS && buys < 0.0015 * ROWS, `buys ${buys}`);
  assert.ok(buys / clicks > 0.01 && buys / clicks < 0.03, `conversion ${buys / clicks}`);
  // The labels follow the returned probabilities.
  assert.ok(Math.abs(clicks - pClicks) < 4 * Math.sqrt(pClicks), `${clicks} vs ${pClicks}`);
});

test("the rate options move the calibrated rates", () => {
  const stats = oracleAuc(
    taobaoRows({ seed: 3, rows: 20_000, clickRate: 0.2, conversionRate: 0.1 }),
  );
  assert.ok(Math.abs(stats.clicks / stats.rows - 0.2) < 0.015, `${stats.clicks}`);
  assert.ok(Math.abs(stats.buys / stats.clicks - 0.1) < 0.02, `${stats.buys}`);
});

test("oracle AUCs are in a realistic range, cvr above ctr", () => {
  const stats = oracleAuc(sample());
  assert.equal(stats.rows, ROWS);
  assert.ok(stats.aucCtr > 0.68 && stats.aucCtr < 0.75, `aucCtr ${stats.aucCtr}`);
  assert.ok(stats.aucCvr > 0.76 && stats.aucCvr < 0.9, `aucCvr ${stats.aucCvr}`);
  assert.ok(stats.aucCvr > stats.aucCtr);
  // Shuffled probabilities carry no signal: the oracle is the teacher's doing.
  const shuffled = sample().map((row, i, rows) => ({
    ...row,
    pClick: rows[(i * 7919) % rows.length].pClick,
  }));
  assert.ok(Math.abs(oracleAuc(shuffled).aucCtr - 0.5) < 0.03);
});

test("writeTaobaoCsv writes the header and exactly the rows of taobaoRows, atomically", () => {
  const dir = mkdtempSync(join(tmpdir(), "denorec-synthetic-"));
  try {
    const path = join(dir, "nested", "train.csv");
    const options = { seed: 4, rows: 5000 };
    const stats = writeTaobaoCsv(path, options);
    const lines = readFileSync(path, "utf8").split("\n");
    assert.equal(lines.pop(), ""); // ends with a newline
    assert.equal(lines.length, 5001);
    assert.equal(lines[0], TAOBAO_COLUMNS.join(","));
    const rows = [...taobaoRows(options)];
    rows.forEach((row, i) => {
      assert.equal(lines[i + 1], TAOBAO_COLUMNS.map((c) => row.record[c]).join(","));
    });
    assert.deepEqual(stats, oracleAuc(rows));
    // Overwriting replaces the file and leaves no temporary behind.
    writeTaobaoCsv(path, { seed: 4, rows: 10 });
    assert.equal(readFileSync(path, "utf8").trimEnd().split("\n").length, 11);
    assert.deepEqual(readdirSync(join(dir, "nested")), ["train.csv"]);
    // A failed write leaves the old file alone.
    assert.throws(() => writeTaobaoCsv(join(path, "x.csv"), options), /writing/);
    assert.equal(readFileSync(path, "utf8").trimEnd().split("\n").length, 11);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test("bad options are RangeErrors naming the option", () => {
  assert.throws(() => taobaoRows({ rows: -1 }), /rows must be/);
  assert.throws(() => taobaoRows({ rows: 1.5 }), RangeError);
  assert.throws(() => taobaoRows({ rows: 1, seed: -1 }), /seed must be/);
  assert.throws(() => taobaoRows({ rows: 1, seed: 2 ** 32 }), RangeError);
  assert.throws(() => taobaoRows({ rows: 1, world: 0.5 }), /world must be/);
  assert.throws(() => taobaoRows({ rows: 1, clickRate: 0 }), /clickRate must be/);
  assert.throws(() => taobaoRows({ rows: 1, conversionRate: 1 }), /conversionRate must be/);
  assert.throws(() => writeTaobaoCsv("unused.csv", { rows: NaN }), RangeError);
  assert.deepEqual([...taobaoRows({ rows: 0 })], []);
});

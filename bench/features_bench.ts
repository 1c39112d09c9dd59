// Feature encoding throughput on the Taobao schema (configs/mmoe_taobao.config:
// 14 num_buckets ids, pid hashed into 20 buckets, price bucketized by 98
// boundaries) with every value a string, as the CSV reader gives them.
// 100,000 synthetic records, encoded as one call and as batches of 8192 via
// batchRecords; the baseline is the obvious encoder (split, Number, push,
// BigInt hash). `deno run -A bench/report.ts bench/features_bench.ts` prints
// rows/s.
import { resolveConfig, type ResolvedConfig } from "../src/config/config.ts";
import { batchRecords, FeatureEncoder } from "../src/data/features.ts";
import type { EncodedBatch } from "../src/model/mmoe.ts";
import type { LocatedRecord, RawValue } from "../src/core/records.ts";
import { taobaoConfig } from "./taobao.ts";
import { mulberry32 } from "../src/core/random.ts";

const ROWS = 100_000;
const config = resolveConfig(taobaoConfig(8192));

function syntheticRecords(count: number, seed: number): LocatedRecord[] {
  const random = mulberry32(seed);
  const pids = ["430548_1007", "430539_1007"];
  return Array.from({ length: count }, (_, i) => {
    const record: Record<string, string> = {};
    for (const f of config.features) {
      if (f.kind === "num_buckets") record[f.column] = String(Math.floor(random() * f.rows));
    }
    record.pid = pids[i & 1];
    record.price = (random() * 2000).toFixed(2);
    record.clk = random() < 0.05 ? "1" : "0";
    record.buy = random() < 0.003 ? "1" : "0";
    return { record, location: `data/taobao_train.csv:${i + 2}` };
  });
}

const records = syntheticRecords(ROWS, 1);
const encoder = new FeatureEncoder(config);

// The obvious encoder: split every value, Number() every piece, grow JS
// arrays, BigInt MurmurHash64A over TextEncoder bytes.
const MUL = 0xc6a4a7935bd1e995n, MASK = (1n << 64n) - 1n;
const utf8 = new TextEncoder();
function naiveHash(text: string): bigint {
  const bytes = utf8.encode(text);
  let h = (0xc70f6907n ^ (BigInt(bytes.length) * MUL)) & MASK;
  const blocks = bytes.length & ~7;
  for (let i = 0; i < blocks; i += 8) {
    let k = 0n;
    for (let j = 7; j >= 0; j--) k = (k << 8n) | BigInt(bytes[i + j]);
    k = (k * MUL) & MASK;
    k ^= k >> 47n;
    k = (k * MUL) & MASK;
    h = ((h ^ k) * MUL) & MASK;
  }
  if (bytes.length & 7) {
    let t = 0n;
    for (let j = bytes.length - 1; j >= blocks; j--) t = (t << 8n) | BigInt(bytes[j]);
    h = ((h ^ t) * MUL) & MASK;
  }
  h ^= h >> 47n;
  h = (h * MUL) & MASK;
  return h ^ (h >> 47n);
}

function naiveEncode(config: ResolvedConfig, rows: readonly LocatedRecord[]): EncodedBatch {
  const features = config.features.map((f) => {
    if (f.kind === "dense") {
      return { values: Float32Array.from(rows, (r) => Number(r.record[f.column] ?? 0)) };
    }
    const ids: number[] = [], offsets = [0];
    for (const row of rows) {
      const value = row.record[f.column] as RawValue;
      for (const piece of value == null || value === "" ? [] : String(value).split(f.separator)) {
        let id: number;
        if (f.kind === "num_buckets") id = Number(piece);
        else if (f.kind === "hash_bucket") id = Number(naiveHash(piece) % BigInt(f.rows));
        else if (f.kind === "vocab") id = f.vocab.get(piece) ?? 1;
        else id = f.boundaries.filter((b) => b <= Number(piece)).length;
        if (!(Number.isInteger(id) && id >= 0 && id < f.rows)) {
          throw new RangeError(`${row.location}: bad id`);
        }
        ids.push(id);
      }
      offsets.push(ids.length);
    }
    return { ids: Int32Array.from(ids), offsets: Int32Array.from(offsets) };
  });
  const columns: Record<string, Float32Array> = {};
  for (const name of ["clk", "buy"]) {
    columns[name] = Float32Array.from(rows, (r) => Number(r.record[name]));
  }
  return { size: rows.length, features, columns };
}

Deno.bench({
  name: `encode taobao strings [${ROWS} rows]`,
  group: "encode",
  n: 10,
  warmup: 2,
  fn: () => {
    encoder.encode(records);
  },
});

Deno.bench({
  name: `naive encode taobao strings [${ROWS} rows]`,
  group: "encode",
  baseline: true,
  n: 3,
  warmup: 1,
  fn: () => {
    naiveEncode(config, records);
  },
});

Deno.bench({
  name: `batchRecords 8192, shuffle buffer 8192 [${ROWS} rows]`,
  group: "batch",
  n: 10,
  warmup: 2,
  fn: async () => {
    for await (
      const _ of batchRecords(records, encoder, { batchSize: 8192, shuffleBufferSize: 8192 })
    ) {
      // consume
    }
  },
});

Deno.bench({
  name: `batchRecords 8192, no shuffle [${ROWS} rows]`,
  group: "batch",
  baseline: true,
  n: 10,
  warmup: 2,
  fn: async () => {
    for await (const _ of batchRecords(records, encoder, { batchSize: 8192 })) {
      // consume
    }
  },
});

// Synthetic Taobao rows (src/synthetic.ts) on 100k rows of the default
// world, calibrated before timing: the rows as string records (what the
// encoder reads; the baseline) and the CSV writer (bytes formatted digit by
// digit, streamed to disk, plus both oracle AUCs). `deno task bench:report bench/synthetic_bench.ts` prints rows/s;
// the target is > 300k rows/s.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { taobaoRows, writeTaobaoCsv } from "../src/data/synthetic.ts";

const ROWS = 100_000;
const group = "synthetic taobao rows";
const dir = mkdtempSync(join(tmpdir(), "denorec-synthetic-bench-"));
globalThis.addEventListener("unload", () => rmSync(dir, { recursive: true, force: true }));
for (const _ of taobaoRows({ rows: 1 })); // creates and calibrates the world

Deno.bench({
  name: `taobaoRows records [${ROWS} rows]`,
  group,
  baseline: true,
  n: 10,
  warmup: 2,
  fn: () => {
    let clicks = 0;
    for (const { record } of taobaoRows({ seed: 1, rows: ROWS })) {
      clicks += record.clk === "1" ? 1 : 0;
    }
    if (clicks === 0) throw new Error("no clicks");
  },
});

Deno.bench({
  name: `writeTaobaoCsv + oracle AUCs [${ROWS} rows]`,
  group,
  n: 10,
  warmup: 2,
  fn: () => {
    writeTaobaoCsv(join(dir, "train.csv"), { seed: 1, rows: ROWS });
  },
});

/**
 * Runs `deno bench --json` on the given bench files and prints a table with
 * throughput from each bench's best time (timings on shared machines are
 * noisy: the best of N is the figure, the average is beside it): GFLOP/s
 * for names containing an `MxKxN` GEMM shape or `[N flop]`, items/s for
 * names containing `[N items]` (N samples, rows or values per call).
 *
 * GFLOP/s figures of a kernel build are also given as a share of that
 * build's peak, when the run measured it (bench/_peak.ts). GEMM benches
 * named `<NN|NT|TN> <M>x<K>x<N> <implementation>` are then pivoted into one
 * row per shape and op, one column per implementation. The load average
 * before and after the run says how quiet the machine was.
 *
 * `--runs N` runs the benches N times and keeps each one's best time (and
 * the mean of its averages).
 *
 * Usage: deno run -A bench/report.ts [--runs N] bench/gemm_bench.ts [...]
 */
import { parsePeakBench } from "./_peak.ts";

const args = [...Deno.args];
const runsAt = args.findIndex((a) => a.startsWith("--runs"));
let runs = 1;
if (runsAt >= 0) {
  const [flag, value] = args[runsAt].split("=");
  runs = Number(value ?? args[runsAt + 1]);
  args.splice(runsAt, value === undefined ? 2 : 1);
  if (!Number.isInteger(runs) || runs < 1) throw new RangeError(`${flag}: expected a count >= 1`);
}
const files = args.length > 0 ? args : ["bench/"];

interface BenchResult {
  name: string;
  group?: string;
  results: { ok?: { avg: number; min: number } }[];
}

// Each bench's best time over every run, and its average time averaged over runs.
const loadBefore = Deno.loadavg();
const merged = new Map<string, { avg: number; min: number; runs: number }>();
for (let run = 0; run < runs; run++) {
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: ["bench", "-A", "--json", ...files],
    stderr: "inherit",
  }).output();
  if (!success) Deno.exit(1);
  const { benches } = JSON.parse(new TextDecoder().decode(stdout)) as { benches: BenchResult[] };
  for (const bench of benches) {
    const ok = bench.results[0]?.ok;
    if (!ok) continue;
    const seen = merged.get(bench.name);
    merged.set(bench.name, {
      avg: (seen?.avg ?? 0) + ok.avg,
      min: Math.min(seen?.min ?? Infinity, ok.min),
      runs: (seen?.runs ?? 0) + 1,
    });
  }
}
const loadAfter = Deno.loadavg();
const benches = [...merged].map(([name, r]) => ({ name, avg: r.avg / r.runs, min: r.min }));

const format = (seconds: number) =>
  seconds >= 1e-3 ? `${(seconds * 1e3).toFixed(3)} ms` : `${(seconds * 1e6).toFixed(1)} µs`;

/** GFLOP/s of a bench from its name and best time, or null. */
function gflops(name: string, seconds: number): number | null {
  const shape = name.match(/(\d+)x(\d+)x(\d+)/);
  if (shape) {
    const [m, k, n] = shape.slice(1).map(Number);
    return 2 * m * k * n / seconds / 1e9;
  }
  const flops = name.match(/\[(\d+) flop\]/);
  return flops ? Number(flops[1]) / seconds / 1e9 : null;
}

/** The kernel build a bench name refers to ("relaxed-simd" or "simd"), if any. */
const variantOf = (name: string) =>
  name.includes("relaxed-simd") ? "relaxed-simd" : /\bsimd\b/.test(name) ? "simd" : null;

const peaks = new Map<string, number>();
for (const bench of benches) {
  const peak = parsePeakBench(bench.name);
  if (peak) peaks.set(peak.variant, peak.flops / (bench.min / 1e9) / 1e9);
}
const share = (name: string, value: number) => {
  const variant = variantOf(name);
  const peak = variant ? peaks.get(variant) : undefined;
  return peak ? (value / peak).toFixed(2) : "";
};

const rows: string[][] = [["bench", "avg", "best", "throughput", "share of peak"]];
for (const bench of benches) {
  const seconds = bench.min / 1e9;
  let throughput = "", ofPeak = "";
  const g = gflops(bench.name, seconds);
  const items = bench.name.match(/\[(\d+) (\w+)\]/);
  if (g !== null) {
    throughput = `${g.toFixed(1)} GFLOP/s`;
    if (!parsePeakBench(bench.name)) ofPeak = share(bench.name, g);
  } else if (items) {
    throughput = `${(Number(items[1]) / seconds).toExponential(3)} ${items[2]}/s`;
  }
  rows.push([bench.name, format(bench.avg / 1e9), format(seconds), throughput, ofPeak]);
}
printTable(rows);

// GEMM pivot: shape, op, then "GFLOP/s (share of peak)" per implementation.
const gemm = new Map<string, Map<string, string>>();
const columns: string[] = [];
for (const bench of benches) {
  const match = bench.name.match(/^(NN|NT|TN) (\d+x\d+x\d+) (.+)$/);
  if (!match) continue;
  const [, op, shape, implementation] = match;
  const g = gflops(bench.name, bench.min / 1e9)!;
  const ofPeak = share(bench.name, g);
  if (!columns.includes(implementation)) columns.push(implementation);
  const key = `${shape} ${op}`;
  if (!gemm.has(key)) gemm.set(key, new Map());
  gemm.get(key)!.set(implementation, ofPeak ? `${g.toFixed(1)} (${ofPeak})` : g.toFixed(1));
}
if (gemm.size > 0) {
  console.log(
    `\nGEMM, GFLOP/s (share of the build's peak) from the best time of ${runs} run(s); peak ${
      [...peaks].map(([v, p]) => `${v} ${p.toFixed(1)}`).join(", ")
    } GFLOP/s; load average ${loadBefore.map((l) => l.toFixed(2)).join(" ")} before, ${
      loadAfter.map((l) => l.toFixed(2)).join(" ")
    } after`,
  );
  const table = [["shape M x K x N", "op", ...columns]];
  for (const [key, cells] of gemm) {
    const [shape, op] = key.split(" ");
    table.push([shape, op, ...columns.map((c) => cells.get(c) ?? "")]);
  }
  printTable(table);
}

function printTable(table: string[][]): void {
  const widths = table[0].map((_, i) => Math.max(...table.map((r) => (r[i] ?? "").length)));
  for (const row of table) {
    console.log(row.map((cell, i) => (cell ?? "").padEnd(widths[i])).join("  ").trimEnd());
  }
}

/**
 * Runs `deno bench --json` on the given bench files and prints a table with
 * throughput: GFLOP/s for names containing an `MxKxN` GEMM shape, items/s for
 * names containing `[N items]` (N samples, rows or values per call).
 *
 * Usage: deno run -A bench/report.ts bench/gemm_bench.ts [...]
 */
const files = Deno.args.length > 0 ? Deno.args : ["bench/"];
const { stdout, success } = await new Deno.Command(Deno.execPath(), {
  args: ["bench", "-A", "--json", ...files],
  stderr: "inherit",
}).output();
if (!success) Deno.exit(1);

interface BenchResult {
  name: string;
  group?: string;
  results: { ok?: { avg: number; p75: number } }[];
}
const { benches } = JSON.parse(new TextDecoder().decode(stdout)) as { benches: BenchResult[] };
const rows: string[][] = [["bench", "avg", "throughput"]];
for (const bench of benches) {
  const ok = bench.results[0]?.ok;
  if (!ok) continue;
  const seconds = ok.avg / 1e9;
  let throughput = "";
  const shape = bench.name.match(/(\d+)x(\d+)x(\d+)/);
  const items = bench.name.match(/\[(\d+) (\w+)\]/);
  if (shape) {
    const [m, k, n] = shape.slice(1).map(Number);
    throughput = `${(2 * m * k * n / seconds / 1e9).toFixed(1)} GFLOP/s`;
  } else if (items) {
    throughput = `${(Number(items[1]) / seconds).toExponential(3)} ${items[2]}/s`;
  }
  const avg = seconds >= 1e-3
    ? `${(seconds * 1e3).toFixed(3)} ms`
    : `${(seconds * 1e6).toFixed(1)} µs`;
  rows.push([bench.name, avg, throughput]);
}
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
for (const row of rows) console.log(row.map((cell, i) => cell.padEnd(widths[i])).join("  "));

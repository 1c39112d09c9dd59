/**
 * Serving side by side: our `Predictor` / `examples/serve.ts` against
 * onnxruntime-web 1.30 (wasm execution provider, 1 thread) running our
 * `exportOnnx` graph of the same model, in one run, alternating, on Deno.
 *
 *   deno run -A bench/serve_load.ts --peak 50 [--rounds 5] [--round-ms 1000]
 *       [--candidates 1,10,100,1000] [--spawns 7] [--loads 3] [--requests 1000]
 *       [--concurrency 32] [--skip-full] [--skip-package]
 *
 * The model: `configs/mmoe_taobao.config` with every `num_buckets` capped
 * at 10000 (2.0M parameters, 8 MB: what one deploys to an edge isolate),
 * freshly initialised (seed 1), saved as `pipeline.config` +
 * `model.safetensors` (ours) and `model.onnx` (ORT) in a temporary
 * directory; the full vocabularies (3.14M rows, 196 MB of parameters) for
 * the load row. Requests are Taobao-schema candidates: one user and
 * context, N ads. Both sides score the same rows and must agree to 1e-4.
 *
 * What it prints (every side-by-side figure measured in this run):
 * 1. latency, in process, 1 thread: rows (parsed JSON) in, probabilities
 *    out: ours `Predictor.predict`; ORT our `FeatureEncoder` + `onnxFeeds`
 *    + `session.run` (`bench/_ort_scorer.ts`). Per candidate count, after
 *    a warm-up, `--rounds` rounds in which the two take turns (each timing
 *    single calls for `--round-ms`); p50 / p99 over every call; the cost
 *    per candidate and the model's GFLOP/s (2.07 MFLOP a candidate) as a
 *    share of `--peak` (GFLOP/s per core, `bench/_ceiling.ts`);
 * 2. cold start: process spawn to the first answered POST /predict (1
 *    candidate) of `deno serve` with least permissions, ours
 *    `examples/serve.ts` (`--allow-read=<dir> --allow-env=DENOREC_MODEL_DIR`)
 *    and ORT `bench/_ort_serve.ts` (the same, plus read access to ORT's
 *    .wasm); `--spawns` alternating spawns each after one warm-up (module
 *    cache), best and median; then the in-process breakdown of a cold start
 *    (`bench/_serve_child.ts`: Deno boot, importing the serving module,
 *    reading the model, building it, the first prediction);
 * 3. full-vocabulary load (`--skip-full` skips it): the same breakdown in
 *    fresh processes, `--loads` alternating runs, median; ours also from a
 *    checkpoint with optimizer state, as `examples/train.ts` writes it;
 * 4. loopback load: both servers up, `--requests` POST /predict of 100
 *    candidates per side at `--concurrency` connections (Deno's fetch in
 *    this process is the client, on the same 2 cores), in 4 alternating
 *    rounds: requests/s, p50/p99, errors (must be 0), server RSS after the
 *    warm-up and at the end;
 * 5. package sizes (`--skip-package` skips the `deno publish --dry-run`):
 *    our published files and Wasm module, ORT's npm closure and the .wasm
 *    it loads;
 * 6. the summary table with ratios and the goals.
 *
 * Our API is touched in one place (the "our model" section below, and
 * `bench/_serve_child.ts`): model files from `MMoEModel` +
 * `modelCheckpoint` + `exportOnnx`, scoring by `loadPredictor`.
 * The default run takes about 5 minutes.
 * @module
 */
import { parseArgs } from "node:util";
import { realpathSync } from "node:fs";
import { MMoEModel } from "../src/model/mmoe.ts";
import { resolveConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { modelCheckpoint } from "../src/io/checkpoint.ts";
import { exportOnnx } from "../src/io/onnx.ts";
import { loadPredictor } from "../src/serve/load.ts";
import { RELAXED_SIMD_WASM } from "../src/kernels/kernels_wasm.ts";
import type { RawRecord } from "../src/core/records.ts";
import { loadOrtScorer } from "./_ort_scorer.ts";
import { formatShare, modelFlops, parsePeak } from "./_ceiling.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    peak: { type: "string" },
    rounds: { type: "string", default: "5" },
    "round-ms": { type: "string", default: "1000" },
    candidates: { type: "string", default: "1,10,100,1000" },
    spawns: { type: "string", default: "7" },
    loads: { type: "string", default: "3" },
    requests: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "32" },
    "skip-full": { type: "boolean", default: false },
    "skip-package": { type: "boolean", default: false },
  },
});
const positive = (flag: string, value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new RangeError(`--${flag}: not a positive integer: ${value}`);
  }
  return n;
};
const PEAK = parsePeak(flags.peak);
const ROUNDS = positive("rounds", flags.rounds);
const ROUND_MS = positive("round-ms", flags["round-ms"]);
const COUNTS = flags.candidates.split(",").map((c) => positive("candidates", c));
const SPAWNS = positive("spawns", flags.spawns);
const LOADS = positive("loads", flags.loads);
const REQUESTS = positive("requests", flags.requests);
const CONCURRENCY = positive("concurrency", flags.concurrency);
const LOAD_ROUNDS = 4;
const CAP = 10_000;

const ROOT = new URL("../", import.meta.url).pathname;
const DENO = Deno.execPath();
/** The .wasm onnxruntime-web reads at start (its real path: node_modules may be a symlink). */
const ORT_WASM = realpathSync(
  `${ROOT}node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm`,
);

// ------------------------------------------------------------------ requests and statistics

/** The Taobao-schema candidates of one request: one user and context, `count` ads, ids inside `buckets`. */
function candidates(count: number, buckets: Map<string, number>, seed: number): RawRecord[] {
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const id = (name: string) => Math.floor(random() * buckets.get(name)!);
  const user = {
    user_id: id("user_id"),
    cms_segid: id("cms_segid"),
    cms_group_id: id("cms_group_id"),
    final_gender_code: id("final_gender_code"),
    age_level: id("age_level"),
    pvalue_level: id("pvalue_level"),
    shopping_level: id("shopping_level"),
    occupation: id("occupation"),
    new_user_class_level: id("new_user_class_level"),
    pid: random() < 0.5 ? "430548_1007" : "430539_1007",
  };
  return Array.from({ length: count }, () => ({
    ...user,
    adgroup_id: id("adgroup_id"),
    cate_id: id("cate_id"),
    campaign_id: id("campaign_id"),
    customer: id("customer"),
    brand: id("brand"),
    price: Math.round(random() * 50000) / 100,
  }));
}

/** `num_buckets` per feature of a pipeline.config text. */
function bucketsOf(configText: string): Map<string, number> {
  const buckets = new Map<string, number>();
  const pattern = /feature_name: "(\w+)"\s+expression: "\w+:\w+"\s+num_buckets: (\d+)/g;
  for (const m of configText.matchAll(pattern)) buckets.set(m[1], Number(m[2]));
  return buckets;
}

/** The q-quantile of `values` (nearest rank). */
function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
const median = (values: number[]) => quantile(values, 0.5);

/** VmRSS of a process in MiB (Linux), or NaN. */
function rssOf(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(status.match(/VmRSS:\s+(\d+) kB/)![1]) / 1024;
  } catch {
    return NaN;
  }
}

function machine(): string {
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1];
  const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  return `${cpu}, ${navigator.hardwareConcurrency} cores, load average ${load}`;
}

const ms = (x: number, digits = 2) => x.toFixed(digits);

// ------------------------------------------------------------------ our model (our API)

const TAOBAO = Deno.readTextFileSync(`${ROOT}configs/mmoe_taobao.config`);
const capped = (cap: number) =>
  TAOBAO.replace(/num_buckets: (\d+)/g, (_, n) => `num_buckets: ${Math.min(Number(n), cap)}`);

/**
 * `dir/pipeline.config`, `model.safetensors` (parameters; with optimizer
 * state, as examples/train.ts writes it, when `withOptimizer`) and
 * `model.onnx`; returns the parameter count.
 */
async function writeModelDir(dir: string, text: string, withOptimizer = false): Promise<number> {
  await Deno.mkdir(dir, { recursive: true });
  const model = new MMoEModel(resolveConfig(parsePipelineConfig(text)), {
    maxBatch: 1,
    seed: 1,
    inference: !withOptimizer,
    threads: 1,
  });
  await Deno.writeTextFile(`${dir}/pipeline.config`, text);
  await Deno.writeFile(`${dir}/model.safetensors`, modelCheckpoint(model, { withOptimizer }));
  if (!withOptimizer) await Deno.writeFile(`${dir}/model.onnx`, exportOnnx(model));
  return model.parameters.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
}

type Scores = Record<string, Float32Array>;

/** Ours in process, as examples/serve.ts builds it. */
async function loadOurs(dir: string): Promise<(rows: RawRecord[]) => Promise<Scores>> {
  const predictor = await loadPredictor(
    await Deno.readTextFile(`${dir}/pipeline.config`),
    await Deno.readFile(`${dir}/model.safetensors`),
    { maxBatch: 1024, maxRows: 1024 },
  );
  if (predictor.model.threads !== 1) throw new Error("ours must score on 1 thread, as ORT does");
  return (rows) => Promise.resolve(predictor.predict(rows));
}

/** Published files of the package, from `deno publish --dry-run` (bytes). */
async function publishedBytes(): Promise<{ files: number; bytes: number }> {
  const { stdout, stderr, success } = await new Deno.Command(DENO, {
    args: ["publish", "--dry-run", "--allow-dirty", "--no-check"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(stdout) + new TextDecoder().decode(stderr);
  if (!success) throw new Error(`deno publish --dry-run failed:\n${text}`);
  const units: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6 };
  let files = 0, bytes = 0;
  for (const m of text.matchAll(/file:\/\/\S+ \(([\d.]+)(B|KB|MB)\)/g)) {
    files++;
    bytes += Number(m[1]) * units[m[2]];
  }
  return { files, bytes };
}

// ------------------------------------------------------------------ servers and children

type Side = "ours" | "ort";
const SIDES: Side[] = ["ours", "ort"];
const NAME: Record<Side, string> = { ours: "ours", ort: "ORT-web" };

interface Server {
  url: string;
  pid: number;
  /** ms from spawn to the "Listening on" line. */
  listening: number;
  spawned: number;
  stop(): Promise<void>;
}

/** `deno serve` of our examples/serve.ts or bench/_ort_serve.ts on `dir`, least permissions. */
async function startServer(side: Side, dir: string): Promise<Server> {
  const read = side === "ours" ? dir : `${dir},${ORT_WASM}`;
  const entry = side === "ours" ? "examples/serve.ts" : "bench/_ort_serve.ts";
  const spawned = performance.now();
  const child = new Deno.Command(DENO, {
    args: [
      "serve",
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      `--allow-read=${read}`,
      "--allow-env=DENOREC_MODEL_DIR",
      entry,
    ],
    cwd: ROOT,
    env: { DENOREC_MODEL_DIR: dir, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const decoder = new TextDecoder();
  const port = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${entry}: no listening line:\n${output}`)),
      60000,
    );
    for (const stream of [child.stdout, child.stderr]) {
      (async () => {
        for await (const chunk of stream) {
          output += decoder.decode(chunk);
          const match = output.match(/Listening on http:\/\/[\d.]+:(\d+)/);
          if (match) {
            clearTimeout(timer);
            resolve(match[1]);
          }
        }
      })();
    }
  });
  const listening = performance.now() - spawned;
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid,
    listening,
    spawned,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** POST /predict; throws unless 200 with `count` probabilities. */
async function predict(url: string, body: string, count: number): Promise<void> {
  const response = await fetch(`${url}/predict`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json" },
  });
  const scores = await response.json();
  if (response.status !== 200 || scores.probs_ctr?.length !== count) {
    throw new Error(`status ${response.status}: ${JSON.stringify(scores).slice(0, 200)}`);
  }
}

/** Spawn to the first answered /predict (ms), and spawn to listening. */
async function coldStart(side: Side, dir: string, body: string) {
  const server = await startServer(side, dir);
  try {
    await predict(server.url, body, 1);
    return { answered: performance.now() - server.spawned, listening: server.listening };
  } finally {
    await server.stop();
  }
}

/** One bench/_serve_child.ts run: its breakdown plus `wall` (spawn to exit). */
async function childRun(side: Side, dir: string, rows: string): Promise<Record<string, number>> {
  const read = side === "ours" ? dir : `${dir},${ORT_WASM}`;
  const started = performance.now();
  const { success, stdout, stderr } = await new Deno.Command(DENO, {
    args: ["run", `--allow-read=${read}`, `${ROOT}bench/_serve_child.ts`, side, dir, rows],
    env: { NO_COLOR: "1" },
  }).output();
  const wall = performance.now() - started;
  if (!success) throw new Error(`_serve_child.ts ${side}: ${new TextDecoder().decode(stderr)}`);
  return { ...JSON.parse(new TextDecoder().decode(stdout)), wall };
}

// ------------------------------------------------------------------ main

const work = await Deno.makeTempDir({ prefix: "denorec-serve-bench-" });
console.log(`machine: ${machine()}`);
console.log(
  `runtime: Deno ${Deno.version.deno} (V8 ${Deno.version.v8}); onnxruntime-web ` +
    JSON.parse(Deno.readTextFileSync(`${ROOT}node_modules/onnxruntime-web/package.json`)).version,
);
const cappedDir = `${work}/capped`, cappedText = capped(CAP);
const cappedParams = await writeModelDir(cappedDir, cappedText);
const buckets = bucketsOf(cappedText);
const FLOP = modelFlops(resolveConfig(parsePipelineConfig(cappedText))).forward;
console.log(
  `model: Taobao MMoE, num_buckets <= ${CAP}: ${(cappedParams / 1e6).toFixed(2)}M parameters, ` +
    `${
      ((await Deno.stat(`${cappedDir}/model.safetensors`)).size / 1e6).toFixed(1)
    } MB safetensors, ` +
    `${((await Deno.stat(`${cappedDir}/model.onnx`)).size / 1e6).toFixed(1)} MB onnx; ` +
    `${(FLOP / 1e6).toFixed(2)} MFLOP per candidate`,
);
console.log(
  PEAK === null
    ? "share of the peak: not computed, pass --peak <GFLOP/s per core> (bench/_peak.ts)"
    : `peak: ${PEAK} GFLOP/s per core (--peak)`,
);

// 1. latency in process, alternating.
const score: Record<Side, (rows: RawRecord[]) => Promise<Scores>> = {
  ours: await loadOurs(cappedDir),
  ort: await (async () => {
    const onnx = await Deno.readFile(`${cappedDir}/model.onnx`);
    const scorer = await loadOrtScorer(parsePipelineConfig(cappedText), onnx);
    return (rows: RawRecord[]) => scorer.score(rows);
  })(),
};
{
  const rows = candidates(100, buckets, 7);
  const [a, b] = [await score.ours(rows), await score.ort(rows)];
  for (const name of Object.keys(a)) {
    const diff = Math.max(...a[name].map((x, i) => Math.abs(x - b[name][i])));
    if (!(diff <= 1e-4)) throw new Error(`ours and ORT disagree on ${name}: max |diff| ${diff}`);
  }
}
interface Latency {
  p50: number;
  p99: number;
  calls: number;
}
const latency = new Map<number, Record<Side, Latency>>();
console.log(
  `\n# latency, in process, 1 thread (ms; ${ROUNDS} alternating rounds of ~${ROUND_MS} ms each)`,
);
console.log(
  "| candidates | ours p50 | ours p99 | ORT p50 | ORT p99 | ORT/ours p50 | ORT/ours p99 | " +
    "ours µs/cand | ours GFLOP/s | share | ORT µs/cand | ORT GFLOP/s | share |",
);
console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const count of COUNTS) {
  const requests = Array.from({ length: 16 }, (_, i) => candidates(count, buckets, 100 + i));
  const times: Record<Side, number[]> = { ours: [], ort: [] };
  const callsPerRound = {} as Record<Side, number>;
  let next = 0;
  for (const side of SIDES) {
    const start = performance.now();
    let calls = 0;
    while (calls < 20 || performance.now() - start < 500) {
      await score[side](requests[next++ % requests.length]);
      calls++;
    }
    callsPerRound[side] = Math.max(5, Math.ceil(ROUND_MS / ((performance.now() - start) / calls)));
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const side of r % 2 === 0 ? SIDES : [...SIDES].reverse()) {
      for (let i = 0; i < callsPerRound[side]; i++) {
        const rows = requests[next++ % requests.length];
        const t = performance.now();
        await score[side](rows);
        times[side].push(performance.now() - t);
      }
    }
  }
  const stats = (side: Side): Latency => ({
    p50: quantile(times[side], 0.5),
    p99: quantile(times[side], 0.99),
    calls: times[side].length,
  });
  const entry = { ours: stats("ours"), ort: stats("ort") };
  latency.set(count, entry);
  const perCandidate = (l: Latency) => (l.p50 * 1000 / count).toFixed(1);
  const gflops = (l: Latency) => count * FLOP / (l.p50 / 1000) / 1e9;
  const share = (l: Latency) => formatShare(PEAK === null ? null : gflops(l) / PEAK);
  console.log(
    `| ${count} | ${ms(entry.ours.p50, 3)} | ${ms(entry.ours.p99, 3)} | ${ms(entry.ort.p50, 3)} | ${
      ms(entry.ort.p99, 3)
    } | ${(entry.ort.p50 / entry.ours.p50).toFixed(2)}x | ${
      (entry.ort.p99 / entry.ours.p99).toFixed(2)
    }x | ${perCandidate(entry.ours)} | ${gflops(entry.ours).toFixed(2)} | ${share(entry.ours)} | ${
      perCandidate(entry.ort)
    } | ${gflops(entry.ort).toFixed(2)} | ${share(entry.ort)} |`,
  );
}
console.log(
  "(calls per side: " +
    [...latency].map(([c, e]) => `${c}: ${e.ours.calls}/${e.ort.calls}`).join(", ") + ")",
);

// 2. cold start: spawn to the first answered /predict, then the in-process breakdown.
const oneRow = JSON.stringify({ rows: candidates(1, buckets, 1) });
const oneRowArray = JSON.stringify(candidates(1, buckets, 1));
const spawnTimes: Record<Side, { answered: number; listening: number }[]> = { ours: [], ort: [] };
for (const side of SIDES) await coldStart(side, cappedDir, oneRow); // module cache
for (let i = 0; i < SPAWNS; i++) {
  for (const side of i % 2 === 0 ? SIDES : [...SIDES].reverse()) {
    spawnTimes[side].push(await coldStart(side, cappedDir, oneRow));
  }
}
console.log(
  `\n# cold start: spawn -> first answered POST /predict, deno serve, least permissions (ms, ${SPAWNS} spawns)`,
);
console.log("| side | best | median | worst | spawn -> listening (median) |");
console.log("|---|---:|---:|---:|---:|");
for (const side of SIDES) {
  const answered = spawnTimes[side].map((t) => t.answered);
  console.log(
    `| ${NAME[side]} | ${ms(Math.min(...answered), 0)} | ${ms(median(answered), 0)} | ${
      ms(Math.max(...answered), 0)
    } | ${ms(median(spawnTimes[side].map((t) => t.listening)), 0)} |`,
  );
}

const KEYS = ["boot", "import", "read", "parse", "build", "first", "total", "wall"];
/** Alternating child runs on `dir`: the median of each step. */
async function breakdown(sides: [Side, string][], runs: number) {
  const results = sides.map(() => [] as Record<string, number>[]);
  for (const [side, dir] of sides) await childRun(side, dir, oneRowArray); // module cache
  for (let i = 0; i < runs; i++) {
    for (let s = 0; s < sides.length; s++) {
      const k = (s + i) % sides.length;
      results[k].push(await childRun(sides[k][0], sides[k][1], oneRowArray));
    }
  }
  return results.map((rs) =>
    Object.fromEntries([...KEYS, "rssMB"].map((k) => [k, median(rs.map((r) => r[k]))]))
  );
}
const cold = await breakdown([["ours", cappedDir], ["ort", cappedDir]], SPAWNS);
console.log(`\n# cold start in process, capped model (ms, median of ${SPAWNS} fresh processes)`);
console.log(
  "boot = process start to the script's first line; import = the serving module; read = model " +
    "files; parse = pipeline.config text (importing the parser included); build = ours: arena " +
    "and checkpoint (new Predictor), ORT: encoder and InferenceSession.create; first = first " +
    "prediction; total = import..first; wall = spawn to exit",
);
console.log(`| side | ${KEYS.join(" | ")} | RSS MB |`);
console.log(`|---|${KEYS.map(() => "---:").join("|")}|---:|`);
SIDES.forEach((side, i) =>
  console.log(
    `| ${NAME[side]} | ${KEYS.map((k) => ms(cold[i][k], 1)).join(" | ")} | ${
      ms(cold[i].rssMB, 0)
    } |`,
  )
);

// 3. full vocabularies.
let full: Record<string, number>[] | null = null;
let fullParams = 0;
if (!flags["skip-full"]) {
  const fullDir = `${work}/full`, trainDir = `${work}/full_with_optimizer`;
  fullParams = await writeModelDir(fullDir, TAOBAO);
  await writeModelDir(trainDir, TAOBAO, true);
  const sizes = await Promise.all(
    [`${fullDir}/model.safetensors`, `${trainDir}/model.safetensors`, `${fullDir}/model.onnx`].map(
      async (p) => ((await Deno.stat(p)).size / 1e6).toFixed(0),
    ),
  );
  full = await breakdown([["ours", fullDir], ["ours", trainDir], ["ort", fullDir]], LOADS);
  console.log(
    `\n# full vocabularies (${(fullParams / 1e6).toFixed(1)}M parameters; safetensors ${
      sizes[0]
    } MB, ` +
      `with optimizer state ${sizes[1]} MB, onnx ${
        sizes[2]
      } MB): load in a fresh process (ms, median of ${LOADS})`,
  );
  console.log(`| side | ${KEYS.join(" | ")} | RSS MB |`);
  console.log(`|---|${KEYS.map(() => "---:").join("|")}|---:|`);
  ["ours", "ours, train.ts's dir (optimizer state)", "ORT-web"].forEach((name, i) =>
    console.log(
      `| ${name} | ${KEYS.map((k) => ms(full![i][k], 0)).join(" | ")} | ${ms(full![i].rssMB, 0)} |`,
    )
  );
}

// 4. loopback load.
const servers = {
  ours: await startServer("ours", cappedDir),
  ort: await startServer("ort", cappedDir),
};
const bodies = Array.from(
  { length: 64 },
  (_, i) => JSON.stringify({ rows: candidates(100, buckets, 1000 + i) }),
);
const load: Record<
  Side,
  { seconds: number; latencies: number[]; errors: number; before: number; after: number }
> = {
  ours: { seconds: 0, latencies: [], errors: 0, before: 0, after: 0 },
  ort: { seconds: 0, latencies: [], errors: 0, before: 0, after: 0 },
};
try {
  for (const side of SIDES) {
    for (let i = 0; i < 50; i++) await predict(servers[side].url, bodies[i % 64], 100);
    load[side].before = rssOf(servers[side].pid);
  }
  for (let r = 0; r < LOAD_ROUNDS; r++) {
    for (const side of r % 2 === 0 ? SIDES : [...SIDES].reverse()) {
      const total = Math.ceil(REQUESTS / LOAD_ROUNDS);
      let next = 0;
      const started = performance.now();
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        while (next < total) {
          const body = bodies[next++ % bodies.length];
          const t = performance.now();
          try {
            await predict(servers[side].url, body, 100);
          } catch {
            load[side].errors++;
          }
          load[side].latencies.push(performance.now() - t);
        }
      }));
      load[side].seconds += (performance.now() - started) / 1000;
    }
  }
  for (const side of SIDES) load[side].after = rssOf(servers[side].pid);
} finally {
  for (const side of SIDES) await servers[side].stop();
}
const rate = (side: Side) => load[side].latencies.length / load[side].seconds;
console.log(
  `\n# loopback load: POST /predict x 100 candidates, ${CONCURRENCY} connections, ` +
    `${
      Math.ceil(REQUESTS / LOAD_ROUNDS) * LOAD_ROUNDS
    } requests per side in ${LOAD_ROUNDS} alternating rounds`,
);
console.log(
  "| server | req/s | candidates/s | p50 ms | p99 ms | errors | RSS MB after warm-up | at the end |",
);
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const side of SIDES) {
  const l = load[side];
  console.log(
    `| ${NAME[side]} | ${rate(side).toFixed(0)} | ${(rate(side) * 100).toFixed(0)} | ${
      ms(quantile(l.latencies, 0.5), 1)
    } | ${ms(quantile(l.latencies, 0.99), 1)} | ${l.errors} | ${ms(l.before, 0)} | ${
      ms(l.after, 0)
    } |`,
  );
}

// 5. package sizes.
async function treeBytes(path: string): Promise<number> {
  let bytes = 0;
  for await (const entry of Deno.readDir(path)) {
    const child = `${path}/${entry.name}`;
    if (entry.isDirectory) bytes += await treeBytes(child);
    else if (entry.isFile) bytes += (await Deno.stat(child)).size;
  }
  return bytes;
}
/** onnxruntime-web and its dependencies, transitively, as npm installs them. */
async function npmClosure(name: string, seen = new Set<string>()): Promise<number> {
  if (seen.has(name)) return 0;
  seen.add(name);
  const dir = `${ROOT}node_modules/${name}`;
  const pkg = JSON.parse(await Deno.readTextFile(`${dir}/package.json`));
  let bytes = await treeBytes(dir);
  for (const dep of Object.keys(pkg.dependencies ?? {})) bytes += await npmClosure(dep, seen);
  return bytes;
}
const ortNpm = await npmClosure("onnxruntime-web");
const ortWasm = (await Deno.stat(ORT_WASM)).size;
const ourWasm = atob(RELAXED_SIMD_WASM).length;
const published = flags["skip-package"] ? null : await publishedBytes();
console.log("\n# package");
console.log(
  `ours: ${
    published
      ? `${(published.bytes / 1e3).toFixed(0)} KB in ${published.files} published files`
      : "(--skip-package)"
  }` +
    `, Wasm module ${
      (ourWasm / 1e3).toFixed(0)
    } KB (relaxed-simd, unshared; 4 builds are inlined as base64)`,
);
console.log(
  `ORT-web: ${(ortNpm / 1e6).toFixed(0)} MB npm (onnxruntime-web and its dependencies), ` +
    `${(ortWasm / 1e6).toFixed(1)} MB .wasm loaded`,
);

// 6. summary.
console.log(`\n# summary (machine: ${machine()})`);
console.log("| | ours | ORT-web | ours better by |");
console.log("|---|---|---|---|");
for (const [count, e] of latency) {
  console.log(
    `| p50 / p99, ${count} candidate${count > 1 ? "s" : ""} | ${ms(e.ours.p50)} / ${
      ms(e.ours.p99)
    } ms | ${ms(e.ort.p50)} / ${ms(e.ort.p99)} ms | ${(e.ort.p50 / e.ours.p50).toFixed(2)}x / ${
      (e.ort.p99 / e.ours.p99).toFixed(2)
    }x |`,
  );
}
const answered = (side: Side) => spawnTimes[side].map((t) => t.answered);
console.log(
  `| spawn -> first /predict answered (deno serve, least permissions), best / median | ${
    ms(Math.min(...answered("ours")), 0)
  } / ${ms(median(answered("ours")), 0)} ms | ${ms(Math.min(...answered("ort")), 0)} / ${
    ms(median(answered("ort")), 0)
  } ms | ${(median(answered("ort")) / median(answered("ours"))).toFixed(2)}x |`,
);
console.log(
  `| import + read + parse + build + first predict, in process | ${ms(cold[0].total, 0)} ms | ${
    ms(cold[1].total, 0)
  } ms | ${((cold[1].total) / (cold[0].total)).toFixed(2)}x |`,
);
if (full) {
  const t = (i: number) => full![i].total;
  console.log(
    `| full-vocabulary model (${(fullParams * 4 / 2 ** 20).toFixed(0)} MiB parameters) load | ${
      ms(t(0) / 1000)
    } s (${ms(t(1) / 1000)} s from train.ts's dir) | ${ms(t(2) / 1000)} s | ${
      (t(2) / t(0)).toFixed(2)
    }x (${(t(2) / t(1)).toFixed(2)}x) |`,
  );
}
console.log(
  `| loopback load, ${CONCURRENCY} connections, 100 candidates | ${
    rate("ours").toFixed(0)
  } req/s, p99 ${ms(quantile(load.ours.latencies, 0.99), 0)} ms, ${load.ours.errors} errors | ${
    rate("ort").toFixed(0)
  } req/s, p99 ${ms(quantile(load.ort.latencies, 0.99), 0)} ms, ${load.ort.errors} errors | ${
    (rate("ours") / rate("ort")).toFixed(2)
  }x |`,
);
console.log(
  `| package | ${published ? `${(published.bytes / 1e3).toFixed(0)} KB published, ` : ""}wasm ${
    (ourWasm / 1e3).toFixed(0)
  } KB | ${(ortNpm / 1e6).toFixed(0)} MB npm, ${(ortWasm / 1e6).toFixed(0)} MB wasm | ${
    published ? `${(ortNpm / published.bytes).toFixed(0)}x` : "-"
  } |`,
);

console.log("\ngoals (issue: edge serving faster than onnxruntime-web, cold start under 150 ms):");
for (const [count, e] of latency) {
  const ok = e.ours.p50 < e.ort.p50 && e.ours.p99 < e.ort.p99;
  console.log(`  ${count} candidate(s): p50 and p99 better than ORT-web: ${ok ? "yes" : "no"}`);
}
console.log(`  spawn -> first /predict <= 150 ms: median ${ms(median(answered("ours")), 0)} ms`);
console.log(
  `  src/serve/inference.ts import + model load + first predict <= 50 ms: ${
    ms(cold[0].total, 0)
  } ms (import ${ms(cold[0].import, 0)}, read ${ms(cold[0].read, 0)}, parse ${
    ms(cold[0].parse, 0)
  }, build ${ms(cold[0].build, 0)}, first ${ms(cold[0].first, 0)})`,
);
if (full) {
  console.log(
    `  full-vocabulary int8 model loads in <= 1 s: no int8 model yet; f32 ${
      ms((full[0].total) / 1000)
    } s`,
  );
}
console.log(
  `  loopback >= 1.5x ORT's requests/s, no errors, RSS flat: ${
    (rate("ours") / rate("ort")).toFixed(2)
  }x, ` +
    `${load.ours.errors} errors, RSS ${ms(load.ours.before, 0)} -> ${ms(load.ours.after, 0)} MB`,
);
console.log(`machine at the end: ${machine()}`);
await Deno.remove(work, { recursive: true });

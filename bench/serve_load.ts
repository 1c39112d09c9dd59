/**
 * Serving side by side: our `Predictor` / `examples/serve.ts` on serving
 * artifacts (f32 and int8 tables) against onnxruntime-web 1.30 (wasm
 * execution provider, 1 thread) running our `exportOnnx` graph of the same
 * model, in one run, alternating, on Deno.
 *
 *   deno run -A bench/serve_load.ts [--peak 50] [--rounds 5] [--round-ms 1000]
 *       [--candidates 1,10,100,1000] [--spawns 7] [--loads 3] [--requests 1000]
 *       [--concurrency 32] [--skip-full] [--skip-package]
 *
 * The model: `configs/mmoe_taobao.config` with every `num_buckets` capped
 * at 10000 (2.0M parameters, 8 MB: what one deploys to an edge isolate),
 * freshly initialised (seed 1), written to a temporary directory as ours
 * reads it (`serving_model.bin`: `servingArtifact`, f32; and an int8 one in
 * a second directory) and as ORT reads it (`model.onnx` and the typed config
 * as JSON, `pipeline.json`: neither side parses protobuf text); the full
 * vocabularies (3.14M rows, 201 MB of f32 parameters) for the load rows.
 * Requests are Taobao-schema candidates: one user and context, N ads. Ours
 * f32 and ORT must agree to 1e-4; the int8 model's largest difference is
 * printed.
 *
 * What it prints (every side-by-side figure measured in this run):
 * 1. latency, in process, 1 thread: rows (parsed JSON) in, probabilities
 *    out: ours `Predictor.predict` (f32 and int8 artifacts); ORT our
 *    `FeatureEncoder` + `onnxFeeds` + `session.run` (`bench/_ort_scorer.ts`).
 *    Per candidate count, after a warm-up, `--rounds` rounds in which the
 *    three take turns (each timing single calls for `--round-ms`); p50 / p99
 *    over every call; the cost per candidate and the model's GFLOP/s (2.07
 *    MFLOP a candidate) as a share of this core's peak (GFLOP/s, measured
 *    in this process before the sides start, or `--peak`; `bench/_ceiling.ts`);
 * 2. cold start: process spawn to the first answered POST /predict (1
 *    candidate) of `deno serve` with least permissions: ours from the model
 *    dir (`--allow-read=<dir> --allow-env=DENOREC_MODEL_DIR`), ours with the
 *    model embedded (`examples/model_embedded.bin`, written for the run and
 *    emptied after it; no permissions at all) and ORT `bench/_ort_serve.ts`
 *    (the dir plus ORT's .wasm); `--spawns` alternating spawns each after one
 *    warm-up (module cache), best and median; then the in-process breakdown
 *    (`bench/_serve_child.ts`: Deno boot, importing the serving modules,
 *    loading the model, the first prediction), for ours also from a generated
 *    TypeScript module holding the artifact as base64 (the fallback where
 *    bytes imports are missing);
 * 3. full-vocabulary load (`--skip-full` skips it): the same breakdown in
 *    fresh processes, `--loads` alternating runs, median: ours f32 and int8,
 *    ORT;
 * 4. loopback load: both servers up, `--requests` POST /predict of 100
 *    candidates per side at `--concurrency` connections (Deno's fetch in
 *    this process is the client, on the same 2 cores), in 4 alternating
 *    rounds: requests/s, p50/p99, errors (must be 0), server RSS after a
 *    warm-up at the same concurrency and after each round;
 * 5. package sizes (`--skip-package` skips the `deno publish --dry-run`):
 *    our published files and Wasm module, ORT's npm closure and the .wasm
 *    it loads;
 * 6. the summary table with ratios and the goals.
 *
 * Our API is touched in the "our model" section below and in
 * `bench/_serve_child.ts`: `MMoEModel` + `servingArtifact` + `exportOnnx`
 * write the files, `readPredictor` scores. The default run takes about 6
 * minutes.
 * @module
 */
import { parseArgs } from "node:util";
import { realpathSync } from "node:fs";
import { MMoEModel } from "../src/model/mmoe.ts";
import { resolveConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { exportOnnx } from "../src/io/onnx.ts";
import { servingArtifact } from "../src/io/serving.ts";
import { readPredictor } from "../src/serve/inference.ts";
import { RELAXED_SIMD_WASM } from "../src/kernels/kernels_wasm.ts";
import type { RawRecord } from "../src/core/records.ts";
import { loadOrtScorer } from "./_ort_scorer.ts";
import { ceilingPeak, formatShare, modelFlops } from "./_ceiling.ts";

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
// Measured first, before any side has started: this core's Wasm SIMD peak (or --peak).
const PEAK_RUN = ceilingPeak(flags.peak);
const PEAK: number | null = PEAK_RUN.gflops;
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
 * `dir` as each side reads it: `serving_model.bin` (ours, f32), `model.onnx`
 * and `pipeline.json` (ORT), and `int8Dir/serving_model.bin` (ours, int8
 * tables). Returns the parameter count and the artifacts' data bytes.
 */
async function writeModelDirs(dir: string, int8Dir: string, text: string) {
  for (const d of [dir, int8Dir]) await Deno.mkdir(d, { recursive: true });
  const pipeline = parsePipelineConfig(text);
  const model = new MMoEModel(resolveConfig(pipeline), {
    maxBatch: 1,
    seed: 1,
    inference: true,
    threads: 1,
  });
  const f32 = servingArtifact(model, pipeline);
  const int8 = servingArtifact(model, pipeline, { embeddings: "int8" });
  await Deno.writeFile(`${dir}/serving_model.bin`, f32);
  await Deno.writeFile(`${int8Dir}/serving_model.bin`, int8);
  await Deno.writeTextFile(`${dir}/pipeline.json`, JSON.stringify(pipeline));
  await Deno.writeFile(`${dir}/model.onnx`, exportOnnx(model));
  const parameters = model.parameters.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  return { parameters, f32: f32.length, int8: int8.length };
}

type Scores = Record<string, Float32Array>;

/** Ours in process, as examples/serve.ts builds it. */
async function loadOurs(dir: string): Promise<(rows: RawRecord[]) => Promise<Scores>> {
  const predictor = await readPredictor(`${dir}/serving_model.bin`, {
    maxBatch: 1024,
    maxRows: 1024,
  });
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

type Side = "ours" | "int8" | "ort";
const SIDES: Side[] = ["ours", "int8", "ort"];
const NAME: Record<string, string> = {
  ours: "ours",
  int8: "ours, int8",
  embedded: "ours, embedded",
  module: "ours, TS module",
  ort: "ORT-web",
};

interface Server {
  url: string;
  pid: number;
  /** ms from spawn to the "Listening on" line. */
  listening: number;
  spawned: number;
  stop(): Promise<void>;
}

/** The embedded model's file: written for the embedded spawns, emptied afterwards. */
const EMBEDDED = `${ROOT}examples/model_embedded.bin`;

/**
 * `deno serve` with least permissions: our examples/serve.ts on `dir`, or
 * with the embedded model (no permissions), or bench/_ort_serve.ts on `dir`.
 */
async function startServer(kind: "ours" | "embedded" | "ort", dir: string): Promise<Server> {
  const permissions = kind === "embedded" ? [] : [
    `--allow-read=${kind === "ours" ? dir : `${dir},${ORT_WASM}`}`,
    "--allow-env=DENOREC_MODEL_DIR",
  ];
  const entry = kind === "ort" ? "bench/_ort_serve.ts" : "examples/serve.ts";
  const spawned = performance.now();
  const child = new Deno.Command(DENO, {
    args: ["serve", "--host", "127.0.0.1", "--port", "0", ...permissions, entry],
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
async function coldStart(kind: "ours" | "embedded" | "ort", dir: string, body: string) {
  const server = await startServer(kind, dir);
  try {
    await predict(server.url, body, 1);
    return { answered: performance.now() - server.spawned, listening: server.listening };
  } finally {
    await server.stop();
  }
}

/** One bench/_serve_child.ts run: its breakdown plus `wall` (spawn to exit). */
async function childRun(
  side: "ours" | "ours-module" | "ort",
  path: string,
  read: string,
  rows: string,
): Promise<Record<string, number>> {
  const started = performance.now();
  const { success, stdout, stderr } = await new Deno.Command(DENO, {
    args: ["run", `--allow-read=${read}`, `${ROOT}bench/_serve_child.ts`, side, path, rows],
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
const cappedDir = `${work}/capped`, cappedInt8 = `${work}/capped_int8`, cappedText = capped(CAP);
const cappedModel = await writeModelDirs(cappedDir, cappedInt8, cappedText);
const buckets = bucketsOf(cappedText);
const FLOP = modelFlops(resolveConfig(parsePipelineConfig(cappedText))).forward;
const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
console.log(
  `model: Taobao MMoE, num_buckets <= ${CAP}: ${(cappedModel.parameters / 1e6).toFixed(2)}M ` +
    `parameters; serving artifact ${mb(cappedModel.f32)} MB (int8 tables: ${
      mb(cappedModel.int8)
    } MB), onnx ${mb((await Deno.stat(`${cappedDir}/model.onnx`)).size)} MB; ` +
    `${(FLOP / 1e6).toFixed(2)} MFLOP per candidate`,
);
console.log(
  `peak: ${PEAK_RUN.gflops.toFixed(1)} GFLOP/s per core (${PEAK_RUN.source})`,
);

// 1. latency in process, alternating.
const score: Record<Side, (rows: RawRecord[]) => Promise<Scores>> = {
  ours: await loadOurs(cappedDir),
  int8: await loadOurs(cappedInt8),
  ort: await (async () => {
    const onnx = await Deno.readFile(`${cappedDir}/model.onnx`);
    const scorer = await loadOrtScorer(parsePipelineConfig(cappedText), onnx);
    return (rows: RawRecord[]) => scorer.score(rows);
  })(),
};
let int8Difference = 0;
{
  const rows = candidates(100, buckets, 7);
  const [a, b, c] = [await score.ours(rows), await score.ort(rows), await score.int8(rows)];
  for (const name of Object.keys(a)) {
    const diff = Math.max(...a[name].map((x, i) => Math.abs(x - b[name][i])));
    if (!(diff <= 1e-4)) throw new Error(`ours and ORT disagree on ${name}: max |diff| ${diff}`);
    if (name.startsWith("probs")) {
      int8Difference = Math.max(int8Difference, ...a[name].map((x, i) => Math.abs(x - c[name][i])));
    }
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
  "| candidates | ours p50 | ours p99 | int8 p50 | int8 p99 | ORT p50 | ORT p99 | ORT/ours p50 | " +
    "ORT/ours p99 | ours µs/cand | ours GFLOP/s | share | ORT µs/cand | ORT GFLOP/s | share |",
);
console.log("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
for (const count of COUNTS) {
  const requests = Array.from({ length: 16 }, (_, i) => candidates(count, buckets, 100 + i));
  const times: Record<Side, number[]> = { ours: [], int8: [], ort: [] };
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
    // Each side goes first, middle and last in turn.
    const order = SIDES.map((_, i) => SIDES[(i + r) % SIDES.length]);
    for (const side of order) {
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
  const entry = { ours: stats("ours"), int8: stats("int8"), ort: stats("ort") };
  latency.set(count, entry);
  const perCandidate = (l: Latency) => (l.p50 * 1000 / count).toFixed(1);
  const gflops = (l: Latency) => count * FLOP / (l.p50 / 1000) / 1e9;
  const share = (l: Latency) => formatShare(PEAK === null ? null : gflops(l) / PEAK);
  const { ours, int8, ort } = entry;
  console.log(
    `| ${count} | ${ms(ours.p50, 3)} | ${ms(ours.p99, 3)} | ${ms(int8.p50, 3)} | ${
      ms(int8.p99, 3)
    } | ${ms(ort.p50, 3)} | ${ms(ort.p99, 3)} | ${(ort.p50 / ours.p50).toFixed(2)}x | ${
      (ort.p99 / ours.p99).toFixed(2)
    }x | ${perCandidate(ours)} | ${gflops(ours).toFixed(2)} | ${share(ours)} | ${
      perCandidate(ort)
    } | ${gflops(ort).toFixed(2)} | ${share(ort)} |`,
  );
}
console.log(
  "(calls per side, ours/int8/ORT: " +
    [...latency].map(([c, e]) => `${c}: ${e.ours.calls}/${e.int8.calls}/${e.ort.calls}`).join(
      ", ",
    ) +
    `; int8 vs f32 probabilities: max |diff| ${int8Difference.toExponential(1)} over 100 rows)`,
);

// 2. cold start: spawn to the first answered /predict, then the in-process breakdown.
const oneRow = JSON.stringify({ rows: candidates(1, buckets, 1) });
const oneRowArray = JSON.stringify(candidates(1, buckets, 1));
const KINDS = ["ours", "embedded", "ort"] as const;
type Kind = (typeof KINDS)[number];
const spawnTimes: Record<Kind, { answered: number; listening: number }[]> = {
  ours: [],
  embedded: [],
  ort: [],
};
await Deno.copyFile(`${cappedDir}/serving_model.bin`, EMBEDDED);
try {
  for (const kind of KINDS) await coldStart(kind, cappedDir, oneRow); // module cache
  for (let i = 0; i < SPAWNS; i++) {
    for (let k = 0; k < KINDS.length; k++) {
      const kind = KINDS[(k + i) % KINDS.length];
      spawnTimes[kind].push(await coldStart(kind, cappedDir, oneRow));
    }
  }
} finally {
  await Deno.writeFile(EMBEDDED, new Uint8Array(0));
}
console.log(
  `\n# cold start: spawn -> first answered POST /predict, deno serve, least permissions (ms, ${SPAWNS} spawns)`,
);
console.log("| server | permissions | best | median | worst | spawn -> listening (median) |");
console.log("|---|---|---:|---:|---:|---:|");
const PERMISSIONS: Record<Kind, string> = {
  ours: "read the model dir, env DENOREC_MODEL_DIR",
  embedded: "none (model_embedded.bin imported as bytes)",
  ort: "read the model dir and ORT's .wasm, env",
};
for (const kind of KINDS) {
  const answered = spawnTimes[kind].map((t) => t.answered);
  console.log(
    `| ${NAME[kind]} | ${PERMISSIONS[kind]} | ${ms(Math.min(...answered), 0)} | ${
      ms(median(answered), 0)
    } | ${ms(Math.max(...answered), 0)} | ${
      ms(median(spawnTimes[kind].map((t) => t.listening)), 0)
    } |`,
  );
}

const KEYS = ["boot", "import", "load", "first", "total", "wall"];
type ChildSpec = [name: string, side: "ours" | "ours-module" | "ort", path: string, read: string];
/** Alternating child runs: the median of each step. */
async function breakdown(specs: ChildSpec[], runs: number) {
  const results = specs.map(() => [] as Record<string, number>[]);
  for (const [, side, path, read] of specs) await childRun(side, path, read, oneRowArray); // cache
  for (let i = 0; i < runs; i++) {
    for (let s = 0; s < specs.length; s++) {
      const k = (s + i) % specs.length, [, side, path, read] = specs[k];
      results[k].push(await childRun(side, path, read, oneRowArray));
    }
  }
  return results.map((rs) =>
    Object.fromEntries(
      [...KEYS, "rssMB"].flatMap((k) => [
        [k, median(rs.map((r) => r[k]))],
        [`${k}Best`, Math.min(...rs.map((r) => r[k]))],
      ]),
    )
  );
}
function printBreakdown(specs: ChildSpec[], rows: Record<string, number>[], digits: number) {
  console.log(`| side | ${KEYS.join(" | ")} | best total | RSS MB |`);
  console.log(`|---|${KEYS.map(() => "---:").join("|")}|---:|---:|`);
  specs.forEach(([name], i) =>
    console.log(
      `| ${name} | ${KEYS.map((k) => ms(rows[i][k], digits)).join(" | ")} | ${
        ms(rows[i].totalBest, digits)
      } | ${ms(rows[i].rssMB, 0)} |`,
    )
  );
}
// The fallback where bytes imports are missing: the artifact as base64 in a generated module.
const modulePath = `${work}/model_embedded.ts`;
await Deno.writeTextFile(
  modulePath,
  `export default ${
    JSON.stringify(
      (Deno.readFileSync(`${cappedDir}/serving_model.bin`) as unknown as { toBase64(): string })
        .toBase64(),
    )
  };\n`,
);
const coldSpecs: ChildSpec[] = [
  ["ours", "ours", `${cappedDir}/serving_model.bin`, cappedDir],
  ["ours, int8", "ours", `${cappedInt8}/serving_model.bin`, cappedInt8],
  ["ours, TS module", "ours-module", modulePath, work],
  ["ORT-web", "ort", cappedDir, `${cappedDir},${ORT_WASM}`],
];
const cold = await breakdown(coldSpecs, SPAWNS);
console.log(`\n# cold start in process, capped model (ms, median of ${SPAWNS} fresh processes)`);
console.log(
  "boot = process start to the script's first line; import = the serving modules; load = model " +
    "bytes to a ready scorer (ours: header, arena, data read into it, XXH32; TS module: its " +
    "import and base64 decoding too; ORT: config JSON, encoder, InferenceSession.create); first = " +
    "first prediction; total = import + load + first; wall = spawn to exit",
);
printBreakdown(coldSpecs, cold, 1);

// 3. full vocabularies.
let full: Record<string, number>[] | null = null;
let fullModel = { parameters: 0, f32: 0, int8: 0 };
if (!flags["skip-full"]) {
  const fullDir = `${work}/full`, fullInt8 = `${work}/full_int8`;
  fullModel = await writeModelDirs(fullDir, fullInt8, TAOBAO);
  const onnxMB = mb((await Deno.stat(`${fullDir}/model.onnx`)).size);
  const fullSpecs: ChildSpec[] = [
    ["ours", "ours", `${fullDir}/serving_model.bin`, fullDir],
    ["ours, int8", "ours", `${fullInt8}/serving_model.bin`, fullInt8],
    ["ORT-web", "ort", fullDir, `${fullDir},${ORT_WASM}`],
  ];
  full = await breakdown(fullSpecs, LOADS);
  console.log(
    `\n# full vocabularies (${(fullModel.parameters / 1e6).toFixed(1)}M parameters; serving ` +
      `artifact ${mb(fullModel.f32)} MB, int8 tables ${
        mb(fullModel.int8)
      } MB, onnx ${onnxMB} MB): ` +
      `load in a fresh process (ms, median of ${LOADS})`,
  );
  printBreakdown(fullSpecs, full, 0);
}

// 4. loopback load.
const LOAD_SIDES = ["ours", "ort"] as const;
const servers = {
  ours: await startServer("ours", cappedDir),
  ort: await startServer("ort", cappedDir),
};
const bodies = Array.from(
  { length: 64 },
  (_, i) => JSON.stringify({ rows: candidates(100, buckets, 1000 + i) }),
);
const load: Record<
  "ours" | "ort",
  { seconds: number; latencies: number[]; errors: number; rss: number[] }
> = {
  ours: { seconds: 0, latencies: [], errors: 0, rss: [] },
  ort: { seconds: 0, latencies: [], errors: 0, rss: [] },
};
/** `count` POST /predict at `CONCURRENCY` connections; their latencies (ms), failures counted. */
async function hammer(side: "ours" | "ort", count: number, latencies: number[] = []) {
  let next = 0, errors = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < count) {
      const body = bodies[next++ % bodies.length];
      const t = performance.now();
      try {
        await predict(servers[side].url, body, 100);
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t);
    }
  }));
  return errors;
}
try {
  // Warm-up at the load's concurrency: the runtime sizes its heap and buffers for it.
  for (const side of LOAD_SIDES) {
    await hammer(side, 4 * CONCURRENCY);
    load[side].rss.push(rssOf(servers[side].pid));
  }
  for (let r = 0; r < LOAD_ROUNDS; r++) {
    for (const side of r % 2 === 0 ? LOAD_SIDES : [...LOAD_SIDES].reverse()) {
      const started = performance.now();
      load[side].errors += await hammer(
        side,
        Math.ceil(REQUESTS / LOAD_ROUNDS),
        load[side].latencies,
      );
      load[side].seconds += (performance.now() - started) / 1000;
      load[side].rss.push(rssOf(servers[side].pid));
    }
  }
} finally {
  for (const side of LOAD_SIDES) await servers[side].stop();
}
const rate = (side: "ours" | "ort") => load[side].latencies.length / load[side].seconds;
console.log(
  `\n# loopback load: POST /predict x 100 candidates, ${CONCURRENCY} connections, ` +
    `${
      Math.ceil(REQUESTS / LOAD_ROUNDS) * LOAD_ROUNDS
    } requests per side in ${LOAD_ROUNDS} alternating rounds`,
);
console.log(
  "| server | req/s | candidates/s | p50 ms | p99 ms | errors | RSS MB after warm-up, then after each round |",
);
console.log("|---|---:|---:|---:|---:|---:|---|");
for (const side of LOAD_SIDES) {
  const l = load[side];
  console.log(
    `| ${NAME[side]} | ${rate(side).toFixed(0)} | ${(rate(side) * 100).toFixed(0)} | ${
      ms(quantile(l.latencies, 0.5), 1)
    } | ${ms(quantile(l.latencies, 0.99), 1)} | ${l.errors} | ${
      l.rss.map((x) => ms(x, 0)).join(" -> ")
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
const [oursCold, int8Cold, moduleCold, ortCold] = cold;
console.log(`\n# summary (machine: ${machine()})`);
console.log("| | ours | ORT-web | ours better by |");
console.log("|---|---|---|---|");
for (const [count, e] of latency) {
  console.log(
    `| p50 / p99, ${count} candidate${count > 1 ? "s" : ""} | ${ms(e.ours.p50)} / ${
      ms(e.ours.p99)
    } ms (int8 ${ms(e.int8.p50)} / ${ms(e.int8.p99)}) | ${ms(e.ort.p50)} / ${ms(e.ort.p99)} ms | ${
      (e.ort.p50 / e.ours.p50).toFixed(2)
    }x / ${(e.ort.p99 / e.ours.p99).toFixed(2)}x |`,
  );
}
const answered = (kind: Kind) => spawnTimes[kind].map((t) => t.answered);
console.log(
  `| spawn -> first /predict answered (deno serve, least permissions), best / median | ${
    ms(Math.min(...answered("ours")), 0)
  } / ${ms(median(answered("ours")), 0)} ms (embedded ${
    ms(Math.min(...answered("embedded")), 0)
  } / ${ms(median(answered("embedded")), 0)}) | ${ms(Math.min(...answered("ort")), 0)} / ${
    ms(median(answered("ort")), 0)
  } ms | ${(median(answered("ort")) / median(answered("ours"))).toFixed(2)}x |`,
);
const serving = (c: Record<string, number>) => c.total;
console.log(
  `| import + load + first predict, in process (median) | ${ms(serving(oursCold), 0)} ms (import ${
    ms(oursCold.import, 0)
  }, load ${ms(oursCold.load, 0)}, first ${ms(oursCold.first, 0)}; int8 ${
    ms(serving(int8Cold), 0)
  }, TS module ${ms(serving(moduleCold), 0)}) | ${ms(serving(ortCold), 0)} ms | ${
    (serving(ortCold) / serving(oursCold)).toFixed(2)
  }x |`,
);
if (full) {
  const t = (i: number) => full![i].total;
  console.log(
    `| full-vocabulary model load (${mb(fullModel.f32)} MB f32, ${
      mb(fullModel.int8)
    } MB int8 artifact) | ${ms(t(0) / 1000)} s (int8 ${ms(t(1) / 1000)} s) | ${
      ms(t(2) / 1000)
    } s | ${(t(2) / t(0)).toFixed(2)}x (${(t(2) / t(1)).toFixed(2)}x) |`,
  );
}

console.log(
  `| loopback load, ${CONCURRENCY} connections, 100 candidates | ${
    rate("ours").toFixed(0)
  } req/s, p99 ${ms(quantile(load.ours.latencies, 0.99), 0)} ms, ${load.ours.errors} errors, RSS ${
    load.ours.rss.map((x) => ms(x, 0)).join(" -> ")
  } MB | ${rate("ort").toFixed(0)} req/s, p99 ${
    ms(quantile(load.ort.latencies, 0.99), 0)
  } ms, ${load.ort.errors} errors, RSS ${load.ort.rss.map((x) => ms(x, 0)).join(" -> ")} MB | ${
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
  const ok8 = e.int8.p50 < e.ort.p50 && e.int8.p99 < e.ort.p99;
  console.log(
    `  ${count} candidate(s): p50 and p99 better than ORT-web: ${ok ? "yes" : "no"} (int8: ${
      ok8 ? "yes" : "no"
    })`,
  );
}
console.log(
  `  spawn -> first /predict <= 150 ms: median ${ms(median(answered("ours")), 0)} ms, best ${
    ms(Math.min(...answered("ours")), 0)
  } (embedded: median ${ms(median(answered("embedded")), 0)}, best ${
    ms(Math.min(...answered("embedded")), 0)
  })`,
);
console.log(
  `  src/serve/inference.ts import + model load + first predict <= 50 ms: median ${
    ms(serving(oursCold), 0)
  } ms, best ${ms(oursCold.totalBest, 0)} (import ${ms(oursCold.import, 0)}, load ${
    ms(oursCold.load, 0)
  }, first ${ms(oursCold.first, 0)})`,
);
if (full) {
  console.log(
    `  full-vocabulary int8 model loads in <= 1 s and fits 64 MB of parameters: ${
      ms(full[1].total / 1000)
    } s, artifact ${mb(fullModel.int8)} MB (${(fullModel.int8 / 2 ** 20).toFixed(1)} MiB)`,
  );
}

console.log(
  `  loopback >= 1.5x ORT's requests/s, no errors, RSS flat: ${
    (rate("ours") / rate("ort")).toFixed(2)
  }x, ${load.ours.errors} errors, RSS ${load.ours.rss.map((x) => ms(x, 0)).join(" -> ")} MB`,
);
console.log(`machine at the end: ${machine()}`);
await Deno.remove(work, { recursive: true });

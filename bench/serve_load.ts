/**
 * Serving numbers for the Taobao-schema MMoE (configs/mmoe_taobao.config):
 *
 * 1. cold start in a fresh process: (a) the library through `mod.ts`:
 *    import, kernel compile, reading the model dir, `loadPredictor` (config
 *    text parse, arena, checkpoint), first prediction; (b) `examples/serve.ts`
 *    from import to its first /healthz answer, with the model dir in
 *    DENOREC_MODEL_DIR, and (c) with the model embedded by
 *    `examples/embed_model.ts` (typed config + base64: what Deno Deploy
 *    runs);
 * 2. scoring latency p50/p99 for 1 and 100 candidates, in process
 *    (`Predictor.predict`) and through the handler (JSON in and out);
 * 3. a bounded loopback load test: `deno serve` (and `bun run`) of
 *    examples/serve.ts on 127.0.0.1, a fixed number of POST /predict with 100
 *    candidates each at fixed concurrency: requests/s, errors (must be 0),
 *    server RSS before and after.
 *
 * Models are freshly initialised and saved to a temporary directory: the full
 * vocabularies (3.14M embedding rows x 16: 201 MB of parameters) and reduced
 * ones (each `num_buckets` capped), since cold start is dominated by the
 * tables.
 *
 *   deno run -A bench/serve_load.ts [--requests 2000] [--concurrency 8] [--skip-full]
 *
 * Nothing here imports the library statically, so the child processes time
 * the import itself.
 * @module
 */
import { parseArgs } from "node:util";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    child: { type: "string" },
    dir: { type: "string" },
    requests: { type: "string", default: "2000" },
    concurrency: { type: "string", default: "8" },
    runs: { type: "string", default: "7" },
    "skip-full": { type: "boolean", default: false },
  },
});

const ROOT = new URL("../", import.meta.url).pathname;

/** user_id .. brand, pid, price: one Taobao-schema candidate with ids inside `buckets`. */
function candidates(
  count: number,
  buckets: Map<string, number>,
  seed: number,
): Record<string, unknown>[] {
  let state = seed >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const id = (name: string) => Math.floor(random() * buckets.get(name)!);
  // One user (and context) per request, many ads.
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

function bucketsOf(configText: string): Map<string, number> {
  const buckets = new Map<string, number>();
  for (
    const m of configText.matchAll(
      /feature_name: "(\w+)"\s+expression: "\w+:\w+"\s+num_buckets: (\d+)/g,
    )
  ) {
    buckets.set(m[1], Number(m[2]));
  }
  return buckets;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
}

// ------------------------------------------------------------ child modes

if (flags.child === "library") {
  // Cold start through the library: everything a Deploy isolate does before its first answer.
  const boot = performance.now(); // since the process time origin: runtime start + this module
  const mod = await import("../mod.ts");
  const imported = performance.now();
  mod.kernelModule(mod.bestKernelVariant());
  const compiled = performance.now();
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(`${flags.dir}/pipeline.config`, "utf8");
  const bytes = await mod.readCheckpoint(`${flags.dir}/model.safetensors`);
  const read = performance.now();
  const predictor = await mod.loadPredictor(text, bytes, { maxBatch: 1024 });
  const loaded = performance.now();
  predictor.predict(candidates(1, bucketsOf(text), 1) as never);
  const first = performance.now();
  console.log(JSON.stringify({
    boot,
    import: imported - boot,
    compile: compiled - imported,
    read: read - compiled,
    load: loaded - read,
    first: first - loaded,
    total: first - boot,
    rssMB: Deno.memoryUsage().rss / 2 ** 20,
  }));
  Deno.exit(0);
}

if (flags.child === "serve") {
  // examples/serve.ts as `deno serve` loads it: import (model load starts), then /healthz.
  const boot = performance.now();
  const serve = await import("../examples/serve.ts");
  const imported = performance.now();
  const health = await serve.default.fetch(new Request("http://127.0.0.1/healthz"));
  const info = await health.json();
  const ready = performance.now();
  if (health.status !== 200) throw new Error(JSON.stringify(info));
  console.log(JSON.stringify({
    boot,
    import: imported - boot,
    ready: ready - imported,
    total: ready - boot,
    loadMs: info.loadMs,
    rssMB: Deno.memoryUsage().rss / 2 ** 20,
  }));
  Deno.exit(0);
}

/**
 * The embedded-model child: serve.ts and the generated module imported by
 * literal specifiers (so, as on Deploy, it runs with no permissions at all),
 * then the load and the first /healthz answer.
 */
function embeddedChild(): string {
  return `
const boot = performance.now();
const serve = await import(${JSON.stringify(`${ROOT}examples/serve.ts`)});
const { default: embedded } = await import("./model_embedded.json", { with: { type: "json" } });
const imported = performance.now();
const handler = serve.createHandler(
  Promise.resolve(serve.loadEmbeddedModel(embedded.config, embedded.checkpoint)),
);
const health = await handler(new Request("http://127.0.0.1/healthz"));
const info = await health.json();
const ready = performance.now();
if (health.status !== 200) throw new Error(JSON.stringify(info));
console.log(JSON.stringify({
  boot,
  import: imported - boot,
  ready: ready - imported,
  total: ready - boot,
  loadMs: info.loadMs,
  rssMB: Deno.memoryUsage().rss / 2 ** 20,
}));
Deno.exit(0);
`;
}

// ------------------------------------------------------------------ parent

const { mkdtemp, readFile, rm, writeFile } = await import("node:fs/promises");
const { tmpdir } = await import("node:os");
const { join } = await import("node:path");
const mod = await import("../mod.ts");

const TAOBAO = await readFile(join(ROOT, "configs/mmoe_taobao.config"), "utf8");
const capped = (cap: number) =>
  TAOBAO.replace(/num_buckets: (\d+)/g, (_, n) => `num_buckets: ${Math.min(Number(n), cap)}`);

const work = await mkdtemp(join(tmpdir(), "denorec-serve-bench-"));
const { embedModel } = await import("../examples/embed_model.ts");
const variants: {
  name: string;
  dir: string;
  text: string;
  paramsMB: number;
  fileMB: number;
  embedded: boolean;
}[] = [];
for (
  const [name, cap] of [["full", Infinity], ["cap 100k", 100_000], ["cap 10k", 10_000]] as const
) {
  if (cap === Infinity && flags["skip-full"]) continue;
  const text = cap === Infinity ? TAOBAO : capped(cap);
  const dir = join(work, name.replace(/\W+/g, "_"));
  await Deno.mkdir(dir);
  // A fresh model: inference arena (no optimizer state), default init, parameters-only checkpoint.
  const model = new mod.MMoEModel(mod.resolveConfig(mod.parsePipelineConfig(text)), {
    maxBatch: 1,
    seed: 1,
    inference: true,
  });
  const bytes = mod.modelCheckpoint(model);
  const params = model.parameters.reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  await writeFile(join(dir, "pipeline.config"), text);
  await writeFile(join(dir, "model.safetensors"), bytes);
  // 201 MB of tables as base64 JSON is no deployable module: embed the reduced ones only.
  const embedded = cap !== Infinity;
  if (embedded) {
    const json = JSON.stringify(embedModel(text, bytes, name), null, 2);
    await writeFile(join(dir, "model_embedded.json"), json);
    await writeFile(join(dir, "embedded_child.ts"), embeddedChild());
  }
  variants.push({
    name,
    dir,
    text,
    paramsMB: params * 4 / 2 ** 20,
    fileMB: bytes.length / 2 ** 20,
    embedded,
  });
}

// serve.ts loads its default model at import: point it at the smallest one.
Deno.env.set("DENOREC_MODEL_DIR", variants[variants.length - 1].dir);
const serve = await import("../examples/serve.ts");

const deno = Deno.execPath();
async function runChild(mode: string, dir: string): Promise<Record<string, number>> {
  const started = performance.now();
  // Each with the permissions it needs: none at all for the embedded model.
  const script = `${ROOT}bench/serve_load.ts`;
  const args = mode === "library"
    ? ["run", `--allow-read=${dir}`, script, "--child", mode, "--dir", dir]
    : mode === "serve"
    ? ["run", `--allow-read=${dir}`, "--allow-env=DENOREC_MODEL_DIR", script, "--child", mode]
    : ["run", join(dir, "embedded_child.ts")];
  const { success, stdout, stderr } = await new Deno.Command(deno, {
    args,
    env: { DENOREC_MODEL_DIR: dir },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wall = performance.now() - started;
  if (!success) throw new Error(new TextDecoder().decode(stderr));
  return { ...JSON.parse(new TextDecoder().decode(stdout)), wall };
}

console.log(`# cold start (fresh deno process, median of ${flags.runs} runs after a warm-up)`);
console.log(
  "ms; boot = runtime start to the script's first line (not in total); wall = spawn to exit",
);
const LABELS: Record<string, string> = {
  library: "(a) mod.ts, model dir     ",
  serve: "(b) serve.ts, model dir   ",
  embedded: "(c) serve.ts, embedded    ",
};
const KEYS: Record<string, string[]> = {
  library: ["boot", "import", "compile", "read", "load", "first", "total", "wall"],
  serve: ["boot", "import", "ready", "total", "wall"],
  embedded: ["boot", "import", "ready", "total", "wall"],
};
for (const v of variants) {
  console.log(`${v.name}: ${v.paramsMB.toFixed(1)} MB of parameters`);
  const modes = v.embedded ? ["library", "serve", "embedded"] : ["library", "serve"];
  for (const mode of modes) {
    await runChild(mode, v.dir); // warm the transpile cache
    const rows: Record<string, number>[] = [];
    for (let i = 0; i < Number(flags.runs); i++) rows.push(await runChild(mode, v.dir));
    const m = (key: string) => median(rows.map((r) => r[key]));
    const cells = KEYS[mode].map((k) => `${k} ${m(k).toFixed(1)}`).join(" | ");
    console.log(`  ${LABELS[mode]} ${cells} | RSS ${m("rssMB").toFixed(0)} MB`);
  }
}
console.log(
  "(import: (a) mod.ts; (b) serve.ts, which starts the model load; (c) serve.ts + the generated " +
    "module. ready: import to the first /healthz answer)\n",
);

// ----------------------------------------------------------------- latency

const fmt = (x: number, digits = 1) => x.toFixed(digits).padStart(7);

console.log("# scoring latency, one thread (ms)");
console.log("model      candidates | predict p50    p99 | handler (JSON) p50    p99");
for (const v of variants) {
  const bytes = await mod.readCheckpoint(join(v.dir, "model.safetensors"));
  const predictor = await mod.loadPredictor(v.text, bytes, { maxBatch: 1024 });
  const handler = serve.createHandler(
    Promise.resolve({ predictor, source: v.name, loadMs: 0 }),
  );
  const buckets = bucketsOf(v.text);
  for (const count of [1, 100]) {
    const requests = Array.from({ length: 64 }, (_, i) => candidates(count, buckets, i + 1));
    const bodies = requests.map((rows) => JSON.stringify({ rows }));
    const iterations = count === 1 ? 5000 : 2000;
    const times: number[] = [];
    for (let i = 0; i < iterations + 200; i++) {
      const t = performance.now();
      predictor.predict(requests[i % requests.length] as never);
      if (i >= 200) times.push(performance.now() - t);
    }
    const handlerTimes: number[] = [];
    for (let i = 0; i < iterations + 200; i++) {
      const request = new Request("http://127.0.0.1/predict", {
        method: "POST",
        body: bodies[i % bodies.length],
        headers: { "content-type": "application/json" },
      });
      const t = performance.now();
      const response = await handler(request);
      await response.arrayBuffer();
      if (i >= 200) handlerTimes.push(performance.now() - t);
      if (response.status !== 200) throw new Error(`status ${response.status}`);
    }
    times.sort((a, b) => a - b);
    handlerTimes.sort((a, b) => a - b);
    console.log(
      `${v.name.padEnd(10)} ${String(count).padStart(10)} | ${fmt(percentile(times, 0.5), 3)} ${
        fmt(percentile(times, 0.99), 3)
      } |              ${fmt(percentile(handlerTimes, 0.5), 3)} ${
        fmt(percentile(handlerTimes, 0.99), 3)
      }`,
    );
  }
}
console.log();

// --------------------------------------------------------------- load test

/** VmRSS of a process in MiB (Linux), or NaN. */
function rssOf(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(status.match(/VmRSS:\s+(\d+) kB/)![1]) / 1024;
  } catch {
    return NaN;
  }
}

async function startServer(
  runtime: "deno" | "bun",
  dir: string,
): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const bun = `${ROOT}node_modules/bun/bin/bun.exe`;
  const command = runtime === "deno"
    ? new Deno.Command(deno, {
      args: [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        `--allow-read=${dir}`,
        "--allow-env=DENOREC_MODEL_DIR",
        "examples/serve.ts",
      ],
      cwd: ROOT,
      env: { DENOREC_MODEL_DIR: dir },
      stdout: "piped",
      stderr: "piped",
    })
    : new Deno.Command(bun, {
      args: ["run", "examples/serve.ts"],
      cwd: ROOT,
      env: { DENOREC_MODEL_DIR: dir, HOST: "127.0.0.1", PORT: "0", NODE_ENV: "production" },
      stdout: "piped",
      stderr: "piped",
    });
  const child = command.spawn();
  let output = "";
  const decoder = new TextDecoder();
  const port = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line:\n${output}`)), 30000);
    for (const stream of [child.stdout, child.stderr]) {
      (async () => {
        for await (const chunk of stream) {
          output += decoder.decode(chunk);
          const match = output.match(/(?:Listening on|server:) http:\/\/[\w.]+:(\d+)/);
          if (match) {
            clearTimeout(timer);
            resolve(match[1]);
          }
        }
      })();
    }
  });
  const url = `http://127.0.0.1:${port}`;
  const health = await fetch(`${url}/healthz`);
  if (health.status !== 200) throw new Error(await health.text());
  await health.body?.cancel();
  return {
    url,
    pid: child.pid,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

const REQUESTS = Number(flags.requests), CONCURRENCY = Number(flags.concurrency);
console.log(
  `# loopback load test: ${REQUESTS} POST /predict x 100 candidates, concurrency ${CONCURRENCY}, 127.0.0.1`,
);
console.log(
  "server      model      |   req/s  cand/s | p50 ms  p99 ms | errors | RSS MB before  after",
);
const bunAvailable = await Deno.stat(`${ROOT}node_modules/bun/bin/bun.exe`).then(
  () => true,
  () => false,
);
for (const runtime of ["deno", "bun"] as const) {
  if (runtime === "bun" && !bunAvailable) continue;
  for (const v of variants) {
    if (runtime === "bun" && v.name === "cap 100k") continue;
    const server = await startServer(runtime, v.dir);
    try {
      const bodies = Array.from(
        { length: 64 },
        (_, i) => JSON.stringify({ rows: candidates(100, bucketsOf(v.text), 1000 + i) }),
      );
      // Warm-up (JIT), then measure.
      for (let i = 0; i < 50; i++) {
        const r = await fetch(`${server.url}/predict`, {
          method: "POST",
          body: bodies[i % 64],
          headers: { "content-type": "application/json" },
        });
        await r.arrayBuffer();
      }
      const before = rssOf(server.pid);
      let next = 0, errors = 0;
      const latencies: number[] = [];
      const started = performance.now();
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        while (next < REQUESTS) {
          const i = next++;
          const t = performance.now();
          try {
            const response = await fetch(`${server.url}/predict`, {
              method: "POST",
              body: bodies[i % bodies.length],
              headers: { "content-type": "application/json" },
            });
            const body = await response.json();
            if (response.status !== 200 || body.probs_ctr?.length !== 100) errors++;
          } catch {
            errors++;
          }
          latencies.push(performance.now() - t);
        }
      }));
      const seconds = (performance.now() - started) / 1000;
      const after = rssOf(server.pid);
      latencies.sort((a, b) => a - b);
      console.log(
        `${runtime.padEnd(11)} ${v.name.padEnd(10)} | ${fmt(REQUESTS / seconds, 0)} ${
          fmt(REQUESTS * 100 / seconds, 0)
        } | ${fmt(percentile(latencies, 0.5), 2)} ${fmt(percentile(latencies, 0.99), 2)} | ${
          String(errors).padStart(6)
        } |       ${fmt(before, 0)} ${fmt(after, 0)}`,
      );
    } finally {
      await server.stop();
    }
  }
}

await rm(work, { recursive: true });

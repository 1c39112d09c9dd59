/**
 * Side by side, in one process per thread count, alternating rounds: our
 * MMoE (Wasm SIMD kernels) against the same model written the usual
 * TensorFlow.js way on `@tensorflow/tfjs-backend-wasm`, and against PyTorch
 * (native, `tools/torch_bench.py`) when `/usr/bin/python3` has torch.
 *
 *   deno run -A bench/compare.ts [--peak 50] [--batches 1024,8192] [--rounds 5]
 *       [--warmup 2] [--round-ms 3000] [--vocab-cap ROWS] [--no-torch]
 *       [--torch-blas DIR] [--python /usr/bin/python3] [--threads N]
 *
 * Every line gives samples/s (best of `--rounds` rounds), the share of the
 * ceiling (FLOP per sample x samples/s / (peak GFLOP/s per core x threads),
 * `bench/_ceiling.ts`; the peak is this core's Wasm SIMD peak measured in the
 * same process by `bench/_peak.ts` before the sides start, or `--peak`) and
 * ours divided by each peer (best / best, with the
 * range of the per-round ratios). FLOP per sample is computed from the
 * config (GEMMs only: 2.07 M forward, 6.20 M per training sample for
 * Taobao).
 *
 * How it is measured: for each (mode, batch) every side first runs
 * `--warmup` steps (default 2; TF.js's first step includes its kernel set-up
 * and is never timed), which also sizes a round (enough steps for
 * `--round-ms` (default 3000), at least 1); then `--rounds` rounds
 * (default 5) in which the sides take turns, the order rotating each round,
 * so a slow moment of this shared machine hits every side alike. The 2-thread run also times our
 * model on 1 thread in the same rounds: the 2-threads/1-thread ratio comes
 * from one process. Without `--threads` the script runs itself once per
 * thread count (1, then 2) and prints one table: XNNPACK's pool is created
 * once when the tfjs wasm backend initialises, so each thread count needs a
 * fresh process. The default run (batch 1024, full vocabularies) takes about
 * 10 minutes; batch 8192 adds about 15 (TF.js trains at ~40 s a step there).
 *
 * The model (all sides): 16 features, embedding dim 16 (the Taobao
 * vocabularies, 3.14M rows, or `--vocab-cap`), concat to F = 256; 3
 * experts MLP [512, 256, 128] ReLU; 2 gates softmax(Linear(x)); mixture; 2
 * towers MLP [256, 128, 64] ReLU + Linear(1); sigmoid BCE (mean per tower,
 * summed); Adam for the dense parameters, Adagrad for the embeddings. Ours
 * and PyTorch update only the embedding rows a batch touches (PyTorch:
 * `nn.EmbeddingBag(sparse=True)` + `torch.optim.Adagrad` on the sparse
 * gradients, which is exact row-wise Adagrad, + `torch.optim.Adam`); tfjs
 * has no sparse gradients, so its Adagrad runs over the whole tables every
 * step (what a tfjs user gets). Random ids, uniform per table (PyTorch draws
 * its own with the same sizes).
 *
 * The tfjs side is what a tfjs user writes: `tf.variable`s, `tf.gather`,
 * `tf.fused.matMul` with bias and ReLU (what `tf.layers.dense` calls),
 * `tf.softmax`, `tf.losses.sigmoidCrossEntropy`, `tf.variableGrads` and
 * `tf.train.adam` / `tf.train.adagrad`. One deviation is forced: the
 * gradient of `tf.gather` (and so of `tf.layers.embedding`) needs the
 * `UnsortedSegmentSum` kernel, which tfjs-backend-wasm 4.22 does not have
 * ("Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'"); the
 * lookup is therefore a `tf.customGrad` whose gradient is
 * `tf.scatterND(ids, dy, tableShape)` (ScatterNd sums duplicate ids): the
 * same dense table gradient TF/Keras builds.
 *
 * tfjs-wasm under Deno: the Node build of the backend loads and runs
 * unchanged (it reads the .wasm file with `fs`; Deno's `process` global makes
 * tfjs take its Node path). Threads need three workarounds, all applied by
 * {@link initTfjsWasm} below, before `tf.setBackend("wasm")`:
 * 1. tfjs turns `WASM_HAS_MULTITHREAD_SUPPORT` off under Node (tfjs issue
 *    3830): set the flag to true so the backend instantiates
 *    `tfjs-backend-wasm-threaded-simd.wasm`.
 * 2. Emscripten's pthread pool (8 workers) then calls
 *    `new (require("worker_threads").Worker)(blobUrl)`, which Node and Deno
 *    reject (ERR_WORKER_PATH), and its worker script would `readFileSync` a
 *    blob URL. We replace `Worker` on the `node:worker_threads` module object
 *    (the one the bundle's `require` returns) with a subclass that starts a
 *    `.cjs` file we write to a temp directory: tfjs's worker script with
 *    `location`, `performance`, `self` and `postMessage` made writable on
 *    Deno's worker global (Deno has getter-only `location`), and the
 *    Emscripten factory taken from the package's
 *    `wasm-out/tfjs-backend-wasm-threaded-simd.js` instead of the blob (the
 *    blob holds the bundled factory, whose `require`s were renamed by the
 *    bundler). Emscripten also sets `globalThis.Worker` to the Node class; we
 *    put Deno's back after init.
 * 3. The backend caps its XNNPACK pool at `emscripten_num_logical_cores() /
 *    2` ("half the logical cores", `os.cpus().length` under Node): 1 on this
 *    2-core machine, whatever `setThreadsCount` asks. We make `os.cpus()`
 *    report 2 x N entries while the module initialises, then restore it.
 * With 1 thread the default (non-threaded) `tfjs-backend-wasm-simd.wasm`
 * build runs, as a Deno/Node user gets it.
 *
 * PyTorch: `tools/torch_bench.py` in a child process driven over
 * stdin/stdout (so its rounds alternate with ours), `torch.set_num_threads`
 * = the thread count, OMP/OPENBLAS_NUM_THREADS likewise, OPENBLAS_CORETYPE
 * and OPENBLAS_L2_SIZE removed. The table names the BLAS library torch
 * loaded: Debian's torch links `libblas.so.3`, and with only `libblas3`
 * installed that is the reference BLAS (~2 GFLOP/s), which is no fair
 * PyTorch figure; `--torch-blas DIR` puts a directory holding an OpenBLAS
 * `libblas.so.3` first on LD_LIBRARY_PATH (e.g. the
 * `usr/lib/x86_64-linux-gnu/openblas-openmp` of Debian's
 * `libopenblas0-openmp`, installed or unpacked with `dpkg -x`).
 *
 * GEMM: tf.matMul at 1024x256x512 NN, NT and TN as a share of the peak.
 * tfjs-wasm sends only the plain NN product to XNNPACK (packed weights
 * cached per weight tensor); any transposeA/transposeB goes to a scalar
 * 48-blocked triple loop on one thread, and training needs exactly those:
 * dX = dY W^T (NT) and dW = X^T dY (TN). `bench/gemm_bench.ts` has ours.
 * @module
 */
import os from "node:os";
import wt from "node:worker_threads";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import * as tfwasm from "@tensorflow/tfjs-backend-wasm";
import { resolveConfig, type ResolvedConfig } from "../src/config/config.ts";
import { type EncodedBatch, MMoEModel, type SparseInput } from "../src/model/mmoe.ts";
import { capConfig, makeBatches, taobaoConfig } from "./taobao.ts";
import {
  ceilingPeak,
  formatShare,
  type ModelFlops,
  modelFlops,
  parsePeak,
  shareOfPeak,
} from "./_ceiling.ts";

// ------------------------------------------------------------------ options

interface Options {
  threads: number | null;
  batches: number[];
  rounds: number;
  warmup: number;
  roundMs: number;
  vocabCap: number | null;
  peak: string | undefined;
  torch: boolean;
  torchBlas: string | null;
  python: string;
  json: string | null;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      threads: { type: "string" },
      batches: { type: "string", default: "1024" },
      rounds: { type: "string", default: "5" },
      warmup: { type: "string", default: "2" },
      // Rounds of 1 s held ours at 79% of the ceiling where 3 s read 88%
      // (TF.js 390 vs 423 samples/s): the first step after the other side's
      // turn runs on caches it evicted, and a short round is mostly that step.
      "round-ms": { type: "string", default: "3000" },
      "vocab-cap": { type: "string" },
      peak: { type: "string" },
      "no-torch": { type: "boolean", default: false },
      "torch-blas": { type: "string" },
      python: { type: "string", default: "/usr/bin/python3" },
      json: { type: "string" },
    },
  });
  parsePeak(values.peak); // a bad --peak fails here, before any run starts
  const positive = (flag: string, v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) {
      throw new RangeError(`--${flag}: not a positive integer: ${v}`);
    }
    return n;
  };
  return {
    threads: values.threads === undefined ? null : positive("threads", values.threads),
    batches: values.batches.split(",").map((b) => positive("batches", b)),
    rounds: positive("rounds", values.rounds),
    warmup: positive("warmup", values.warmup),
    roundMs: positive("round-ms", values["round-ms"]),
    vocabCap: values["vocab-cap"] === undefined ? null : positive("vocab-cap", values["vocab-cap"]),
    peak: values.peak,
    torch: !values["no-torch"],
    torchBlas: values["torch-blas"] ?? null,
    python: values.python,
    json: values.json ?? null,
  };
}

// ------------------------------------------------------------------ sides

type Mode = "train" | "infer";

/** One side of the comparison: runs steps of one mode and batch size, times them. */
interface Side {
  /** `ours`, `ours 1 thread`, `tfjs`, `torch`. */
  name: string;
  /** Threads it computes on. */
  threads: number;
  /** `steps` steps on pre-made batches of `batch` rows: wall seconds of the steps, last loss. */
  run(mode: Mode, batch: number, steps: number): Promise<{ seconds: number; loss: number }>;
  /** Frees workers and child processes. */
  close(): Promise<void>;
}

/** Times `steps` calls of a synchronous step. */
function timeSteps(steps: number, step: (i: number) => number): { seconds: number; loss: number } {
  let loss = NaN;
  const start = performance.now();
  for (let i = 0; i < steps; i++) loss = step(i);
  return { seconds: (performance.now() - start) / 1000, loss };
}

/**
 * Our model: the only place this script touches our API (`MMoEModel` with
 * its `threads` option, `ready`, `trainStep`, `predict`, `parameters`).
 */
async function oursSide(
  name: string,
  config: ResolvedConfig,
  threads: number,
  data: Map<number, EncodedBatch[]>,
): Promise<Side & { params: { dense: number; embedding: number } }> {
  const maxBatch = Math.max(...data.keys());
  const model = new MMoEModel(config, { maxBatch, seed: 1, threads });
  await model.ready();
  if (model.threads !== threads) {
    throw new Error(`${name}: asked for ${threads} threads, MMoEModel runs ${model.threads}`);
  }
  const params = { dense: 0, embedding: 0 };
  for (const p of model.parameters) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    if (p.kind === "dense") params.dense += size;
    if (p.kind === "embedding") params.embedding += size;
  }
  let next = 0;
  return {
    name,
    threads,
    params,
    run: (mode, batch, steps) => {
      const batches = data.get(batch)!;
      return Promise.resolve(timeSteps(steps, () => {
        const b = batches[next++ % batches.length];
        if (mode === "train") return model.trainStep(b).total;
        return model.predict(b).probs_ctr[0];
      }));
    },
    // Not model.close(): its workers are unref'd and Deno.exit ends them, while close() makes
    // Deno 2.9 print an uncaught TypeError from src/kernels/gemm_worker.ts (Deno's parentPort
    // has no close()).
    close: () => Promise.resolve(),
  };
}

// ------------------------------------------------------------------ tfjs-wasm setup

/** Temp directories to remove before exit. */
const tempDirs: string[] = [];

/** Initialises tfjs on the wasm backend with `threads` XNNPACK threads (see the file comment). */
async function initTfjsWasm(threads: number): Promise<{ threads: number; file: string }> {
  let restore = () => {};
  if (threads > 1) {
    const require = createRequire(import.meta.url);
    const pkg = "@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd";
    const { wasmWorkerContents } = require(`${pkg}.worker.js`) as { wasmWorkerContents: string };
    const factory = require.resolve(`${pkg}.js`);
    const dir = await Deno.makeTempDir({ prefix: "tfjs-pthread-" });
    tempDirs.push(dir);
    const shim = `${dir}/tfjs-pthread-worker.cjs`;
    await Deno.writeTextFile(
      shim,
      [
        "// tfjs-backend-wasm's pthread worker, adapted to Deno's node:worker_threads (bench/compare.ts).",
        'for (const k of ["location", "performance", "self", "postMessage"]) {',
        "  Object.defineProperty(globalThis, k, {",
        "    value: globalThis[k], writable: true, configurable: true, enumerable: true,",
        "  });",
        "}",
        `var WasmBackendModuleThreadedSimd = require(${JSON.stringify(factory)});`,
        // The same escaping tfjs applies before making its blob.
        wasmWorkerContents.replace(/\n/g, "\\n"),
        "// The factory is already loaded above: skip the blob URL the main thread sends.",
        "global.importScripts = function (f) {",
        '  if (!String(f).startsWith("blob:")) (0, eval)(require("fs").readFileSync(f, "utf8"));',
        "};",
        "",
      ].join("\n"),
    );
    const threads_ = wt as unknown as { Worker: typeof wt.Worker };
    const NodeWorker = threads_.Worker;
    threads_.Worker = class extends NodeWorker {
      constructor(url: string | URL, options?: ConstructorParameters<typeof NodeWorker>[1]) {
        super(String(url).startsWith("blob:") ? shim : url, options);
      }
    };
    const os_ = os as unknown as { cpus: typeof os.cpus };
    const cpus = os_.cpus;
    os_.cpus = () => {
      const real = cpus();
      return Array.from({ length: 2 * threads }, (_, i) => real[i % real.length]);
    };
    const denoWorker = globalThis.Worker;
    tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
    restore = () => {
      os_.cpus = cpus;
      threads_.Worker = NodeWorker;
      globalThis.Worker = denoWorker;
    };
  }
  tfwasm.setThreadsCount(threads);
  try {
    if (!await tf.setBackend("wasm")) throw new Error("tf.setBackend('wasm') failed");
    await tf.ready();
  } finally {
    restore();
  }
  const threaded = await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT");
  return {
    threads: tfwasm.getThreadsCount(),
    file: threaded ? "tfjs-backend-wasm-threaded-simd.wasm" : "tfjs-backend-wasm-simd.wasm",
  };
}

// ------------------------------------------------------------------ tfjs model

interface Linear {
  w: tf.Variable;
  b: tf.Variable;
}

type LookupFn = (table: tf.Tensor, ids: tf.Tensor) => tf.Tensor2D;

/** tf.gather whose gradient is a dense table built by ScatterNd (wasm has no UnsortedSegmentSum). */
const lookup = tf.customGrad(
  ((table: tf.Tensor, ids: tf.Tensor, save: tf.GradSaveFunc) => {
    save([ids]);
    return {
      value: tf.gather(table, ids),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
        tf.scatterND(tf.expandDims(saved[0], 1), dy, table.shape),
        tf.zerosLike(saved[0]),
      ],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0],
) as unknown as LookupFn;

class TfjsMMoE {
  readonly tables: tf.Variable[];
  readonly experts: Linear[][];
  readonly gates: Linear[];
  readonly towers: { mlp: Linear[]; out: Linear }[];
  readonly dense: tf.Variable[] = [];
  readonly adam: tf.Optimizer;
  readonly adagrad: tf.Optimizer;

  constructor(config: ResolvedConfig) {
    let n = 0;
    const linear = (inW: number, outW: number): Linear => {
      const a = 1 / Math.sqrt(inW); // PyTorch nn.Linear's default range
      const w = tf.variable(tf.randomUniform([inW, outW], -a, a), true, `dense${n}/kernel`);
      const b = tf.variable(tf.randomUniform([outW], -a, a), true, `dense${n++}/bias`);
      this.dense.push(w, b);
      return { w, b };
    };
    const mlp = (inW: number, units: number[]) =>
      units.map((u, i) => linear(i === 0 ? inW : units[i - 1], u));
    this.tables = config.tables.map((t) => {
      const a = Math.sqrt(1 / t.rows); // torchrec's default embedding init range
      return tf.variable(tf.randomUniform([t.rows, t.dim], -a, a), true, `${t.name}/embeddings`);
    });
    const F = config.inputWidth;
    const units = config.expertMlp.hiddenUnits;
    this.experts = Array.from({ length: config.numExpert }, () => mlp(F, units));
    this.gates = config.towers.map(() => linear(F, config.numExpert));
    const D = units[units.length - 1];
    this.towers = config.towers.map((t) => {
      const hidden = t.mlp?.hiddenUnits ?? [];
      return { mlp: mlp(D, hidden), out: linear(hidden.length ? hidden[hidden.length - 1] : D, 1) };
    });
    const { denseOptimizer: d, sparseOptimizer: s } = config;
    this.adam = tf.train.adam(d.lr, d.beta1, d.beta2, d.eps);
    this.adagrad = tf.train.adagrad(s.lr, 0); // torch's initial accumulator value
  }

  /** Logits [B, 1] per tower. */
  forward(ids: tf.Tensor1D[], featureTable: number[]): tf.Tensor2D[] {
    const x = tf.concat(ids.map((t, i) => lookup(this.tables[featureTable[i]], t)), 1);
    const mlp = (h: tf.Tensor, layers: Linear[]) =>
      layers.reduce<tf.Tensor>(
        (a, l) => tf.fused.matMul({ a, b: l.w, bias: l.b, activation: "relu" }),
        h,
      );
    const experts = tf.stack(this.experts.map((layers) => mlp(x, layers)), 1); // [B, E, D]
    return this.towers.map((tower, t) => {
      const g = this.gates[t];
      const gate = tf.softmax(tf.fused.matMul({ a: x, b: g.w, bias: g.b })); // [B, E]
      const mixed = tf.sum(tf.mul(experts, tf.expandDims(gate, 2)), 1) as tf.Tensor2D; // [B, D]
      const h = mlp(mixed, tower.mlp);
      return tf.fused.matMul({ a: h, b: tower.out.w, bias: tower.out.b }) as tf.Tensor2D;
    });
  }

  trainStep(batch: EncodedBatch, config: ResolvedConfig): number {
    const ids = batch.features.map((f) => tf.tensor1d((f as SparseInput).ids, "int32"));
    const labels = config.towers.map((t) => tf.tensor2d(batch.columns[t.label], [batch.size, 1]));
    const featureTable = config.features.map((f) => f.table);
    const { value, grads } = tf.variableGrads(() => {
      const logits = this.forward(ids, featureTable);
      return tf.addN(
        logits.map((l, t) => tf.losses.sigmoidCrossEntropy(labels[t], l)),
      ) as tf.Scalar;
    }, [...this.tables, ...this.dense]);
    const pick = (vars: tf.Variable[]) =>
      Object.fromEntries(vars.map((v) => [v.name, grads[v.name]]));
    this.adam.applyGradients(pick(this.dense));
    this.adagrad.applyGradients(pick(this.tables));
    const loss = value.dataSync()[0];
    tf.dispose([value, ...Object.values(grads), ...ids, ...labels]);
    return loss;
  }

  predict(batch: EncodedBatch, config: ResolvedConfig): Float32Array[] {
    const featureTable = config.features.map((f) => f.table);
    const probs = tf.tidy(() => {
      const ids = batch.features.map((f) => tf.tensor1d((f as SparseInput).ids, "int32"));
      return this.forward(ids, featureTable).map((l) => tf.sigmoid(l));
    });
    const out = probs.map((p) => p.dataSync() as Float32Array);
    tf.dispose(probs);
    return out;
  }

  counts(): { dense: number; embedding: number } {
    const size = (vs: tf.Variable[]) => vs.reduce((s, v) => s + v.size, 0);
    return { dense: size(this.dense), embedding: size(this.tables) };
  }
}

/** TF.js on its wasm backend (initialised before: {@link initTfjsWasm}). */
function tfjsSide(config: ResolvedConfig, threads: number, data: Map<number, EncodedBatch[]>) {
  const model = new TfjsMMoE(config);
  let next = 0;
  const side: Side = {
    name: "tfjs",
    threads,
    run: (mode, batch, steps) => {
      const batches = data.get(batch)!;
      return Promise.resolve(timeSteps(steps, () => {
        const b = batches[next++ % batches.length];
        return mode === "train" ? model.trainStep(b, config) : model.predict(b, config)[0][0];
      }));
    },
    close: () => Promise.resolve(),
  };
  return { side, params: model.counts() };
}

// ------------------------------------------------------------------ PyTorch

/** What tools/torch_bench.py reports once its model is built. */
interface TorchInfo {
  torch: string;
  threads: number;
  capability: string;
  blas: string;
  params: { dense: number; embedding: number };
  initSeconds: number;
}

/** The model message of tools/torch_bench.py (its docstring lists the fields). */
function torchModelSpec(config: ResolvedConfig) {
  const units = (mlp: { hiddenUnits: number[] } | null) =>
    mlp === null ? null : { hiddenUnits: mlp.hiddenUnits };
  return {
    tables: config.tables.map((t) => ({ name: t.name, rows: t.rows, dim: t.dim })),
    features: config.features.map((f) => f.table),
    expertMlp: units(config.expertMlp),
    gateMlp: units(config.gateMlp),
    numExpert: config.numExpert,
    towers: config.towers.map((t) => ({ name: t.name, numClass: t.numClass, mlp: units(t.mlp) })),
    adam: {
      lr: config.denseOptimizer.lr,
      beta1: config.denseOptimizer.beta1,
      beta2: config.denseOptimizer.beta2,
      eps: config.denseOptimizer.eps,
    },
    adagrad: { lr: config.sparseOptimizer.lr, eps: config.sparseOptimizer.eps },
  };
}

/** Lines of a byte stream. */
async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of stream) {
    buffer += decoder.decode(chunk, { stream: true });
    for (let end = buffer.indexOf("\n"); end >= 0; end = buffer.indexOf("\n")) {
      yield buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
    }
  }
}

/**
 * tools/torch_bench.py in a child process with `threads` threads, or the
 * reason it cannot run (no python, no torch): PyTorch is an optional peer.
 */
async function torchSide(
  config: ResolvedConfig,
  threads: number,
  options: Options,
): Promise<{ side: Side; info: TorchInfo } | string> {
  const script = new URL("../tools/torch_bench.py", import.meta.url).pathname;
  const env = Deno.env.toObject();
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  env.OMP_NUM_THREADS = env.OPENBLAS_NUM_THREADS = String(threads);
  if (options.torchBlas !== null) {
    env.LD_LIBRARY_PATH = [options.torchBlas, env.LD_LIBRARY_PATH].filter(Boolean).join(":");
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(options.python, {
      args: [script],
      env,
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    return `${options.python}: ${(error as Error).message}`;
  }
  let stderr = "";
  const stderrDone = (async () => {
    for await (const line of readLines(child.stderr)) stderr += line + "\n";
  })();
  const lines = readLines(child.stdout);
  const writer = child.stdin.getWriter();
  const encoder = new TextEncoder();
  const ask = async (message: unknown) => {
    await writer.write(encoder.encode(JSON.stringify(message) + "\n"));
    const { value, done } = await lines.next();
    if (done) {
      await stderrDone;
      const last = stderr.trim().split("\n").pop() ?? "";
      throw new Error(`tools/torch_bench.py exited: ${last}`);
    }
    const reply = JSON.parse(value);
    if (reply.error) throw new Error(`tools/torch_bench.py: ${reply.error}`);
    return reply;
  };
  let info: TorchInfo;
  try {
    info = await ask({ model: torchModelSpec(config), threads, seed: 1 });
  } catch (error) {
    // A python without torch has exited already (kill would throw).
    try {
      child.kill();
    } catch {
      // already exited
    }
    await child.status;
    await writer.close().catch(() => {});
    return (error as Error).message;
  }
  const side: Side = {
    name: "torch",
    threads,
    run: async (mode, batch, steps) => await ask({ op: "run", mode, batch, steps }),
    close: async () => {
      await writer.write(encoder.encode(JSON.stringify({ op: "quit" }) + "\n"));
      await writer.close();
      await child.status;
      await stderrDone;
    },
  };
  return { side, info };
}

// ------------------------------------------------------------------ GEMM

const GEMM: [string, boolean, boolean][] = [
  ["NN", false, false],
  ["NT", false, true],
  ["TN", true, false],
];

/** tf.matMul GFLOP/s at M x K x N for NN, NT and TN (best of the repetitions in ~0.4 s). */
function tfjsGemm(M: number, K: number, N: number): number[] {
  return GEMM.map(([, tA, tB]) => {
    const a = tf.randomUniform(tA ? [K, M] : [M, K], -0.5, 0.5) as tf.Tensor2D;
    const b = tf.randomUniform(tB ? [N, K] : [K, N], -0.5, 0.5) as tf.Tensor2D;
    const run = () => {
      const c = tf.matMul(a, b, tA, tB);
      c.dataSync();
      c.dispose();
    };
    run();
    let best = Infinity;
    const start = performance.now();
    for (let reps = 0; reps < 3 || performance.now() - start < 400; reps++) {
      const t = performance.now();
      run();
      best = Math.min(best, performance.now() - t);
    }
    tf.dispose([a, b]);
    return 2 * M * K * N / (best / 1000) / 1e9;
  });
}

// ------------------------------------------------------------------ alternating rounds

/** Samples/s of one side in each round of one (mode, batch). */
interface Rates {
  side: string;
  threads: number;
  /** Samples/s per round, in round order. */
  rounds: number[];
  /** Steps per round. */
  steps: number;
  /** Last loss (train) or first probability (infer): a sanity check. */
  loss: number;
}

interface Row {
  mode: Mode;
  batch: number;
  rates: Rates[];
}

/** Warm-up, then `rounds` rounds in which the sides take turns (order rotating). */
async function measureRow(sides: Side[], mode: Mode, batch: number, options: Options) {
  const log = (s: string) => console.error(`[threads ${options.threads}] ${mode} ${batch}: ${s}`);
  const rates = new Map<Side, Rates>();
  for (const side of sides) {
    let last = { seconds: 0, loss: NaN };
    for (let i = 0; i < options.warmup; i++) last = await side.run(mode, batch, 1);
    const steps = Math.max(1, Math.min(1000, Math.ceil(options.roundMs / (last.seconds * 1000))));
    rates.set(side, { side: side.name, threads: side.threads, rounds: [], steps, loss: last.loss });
    log(`${side.name} warm-up step ${(last.seconds * 1000).toFixed(0)} ms, ${steps} steps a round`);
  }
  for (let r = 0; r < options.rounds; r++) {
    for (let s = 0; s < sides.length; s++) {
      const side = sides[(s + r) % sides.length];
      const entry = rates.get(side)!;
      const { seconds, loss } = await side.run(mode, batch, entry.steps);
      entry.rounds.push(batch * entry.steps / seconds);
      entry.loss = loss;
    }
    log(
      `round ${r + 1}: ` +
        sides.map((s) => `${s.name} ${rates.get(s)!.rounds[r].toFixed(0)}`).join(", "),
    );
  }
  return { mode, batch, rates: [...rates.values()] } satisfies Row;
}

// ------------------------------------------------------------------ one thread count

interface Result {
  threads: number;
  /** This run's peak GFLOP/s per core and where it came from. */
  peak: { gflops: number; source: string };
  runtime: string;
  tfjsWasmFile: string;
  tfjsThreads: number;
  torch: TorchInfo | string | null;
  params: Record<string, { dense: number; embedding: number }>;
  flops: ModelFlops;
  rows: Row[];
  gemm: { name: string; tfjs: number }[];
}

/** Taobao's model with plain ReLU MLPs, one id per feature: what the three sides build. */
function checkModel(config: ResolvedConfig): void {
  const mlps = [config.expertMlp, config.gateMlp, ...config.towers.map((t) => t.mlp)];
  for (const mlp of mlps) {
    if (
      mlp && (mlp.activation !== 1 || mlp.useBn || mlp.useLn || mlp.dropoutRatio.some((d) => d > 0))
    ) {
      throw new Error("compare.ts builds ReLU MLPs without BN, LN or dropout (the Taobao config)");
    }
  }
  if (config.gateMlp !== null || config.towers.some((t) => t.numClass !== 1)) {
    throw new Error("compare.ts builds gates without gate MLPs and single-logit BCE towers");
  }
}

async function runOne(options: Options, threads: number): Promise<Result> {
  // The peak first, on a quiet thread: before any side has started its workers.
  const peak = ceilingPeak(options.peak);
  const maxBatch = Math.max(...options.batches);
  const config = capConfig(resolveConfig(taobaoConfig(maxBatch)), options.vocabCap);
  checkModel(config);
  const data = new Map(options.batches.map((b) => [b, makeBatches(config, b)]));
  const params: Result["params"] = {};

  // Ours first: tfjs's threaded init replaces globalThis.Worker while it runs.
  const sides: Side[] = [];
  const ours = await oursSide("ours", config, threads, data);
  sides.push(ours);
  params.ours = ours.params;
  if (threads > 1) sides.push(await oursSide("ours 1 thread", config, 1, data));

  const tfInfo = await initTfjsWasm(threads);
  const tfjs = tfjsSide(config, tfInfo.threads, data);
  sides.push(tfjs.side);
  params.tfjs = tfjs.params;

  let torch: TorchInfo | string | null = null;
  if (options.torch) {
    const started = await torchSide(config, threads, options);
    if (typeof started === "string") {
      torch = started;
      console.error(`[threads ${threads}] PyTorch not run: ${started}`);
    } else {
      torch = started.info;
      params.torch = started.info.params;
      sides.push(started.side);
    }
  }

  const rows: Row[] = [];
  for (const mode of ["train", "infer"] as const) {
    for (const batch of options.batches) rows.push(await measureRow(sides, mode, batch, options));
  }
  const rates = tfjsGemm(1024, 256, 512);
  for (const side of sides) await side.close();
  return {
    threads,
    peak,
    runtime: `Deno ${Deno.version.deno} (V8 ${Deno.version.v8}), tfjs ${tf.version.tfjs}`,
    tfjsWasmFile: tfInfo.file,
    tfjsThreads: tfInfo.threads,
    torch,
    params,
    flops: modelFlops(config),
    rows,
    gemm: GEMM.map(([name], i) => ({ name, tfjs: rates[i] })),
  };
}

// ------------------------------------------------------------------ report

const best = (r: Rates) => Math.max(...r.rounds);

/** `best / best (min-max of the per-round ratios)`. */
function ratio(a: Rates | undefined, b: Rates | undefined): string {
  if (!a || !b) return "-";
  const pairs = a.rounds.map((x, i) => x / b.rounds[i]);
  const lo = Math.min(...pairs), hi = Math.max(...pairs);
  const f = (x: number) => x.toFixed(x >= 10 ? 1 : 2);
  return `${f(best(a) / best(b))}x (${f(lo)}-${f(hi)})`;
}

function printResults(results: Result[], options: Options): void {
  const r0 = results[0];
  const { forward, train } = r0.flops;
  console.log(`\n${r0.runtime}`);
  console.log(
    `FLOP per sample (GEMMs, from the config): forward ${(forward / 1e6).toFixed(2)} M, ` +
      `train ${(train / 1e6).toFixed(2)} M (3 x forward)`,
  );
  for (const r of results) {
    const peak = r.peak.gflops;
    console.log(
      `threads ${r.threads}: peak ${peak.toFixed(1)} GFLOP/s per core (${r.peak.source}) -> ` +
        `ceiling train ${(peak * 1e9 / train).toFixed(0)}, inference ${
          (peak * 1e9 / forward).toFixed(0)
        } samples/s per core`,
    );
  }
  const vocab = options.vocabCap === null
    ? "full vocabularies"
    : `vocabularies capped at ${options.vocabCap} rows`;
  console.log(
    `parameters (${vocab}): ` +
      Object.entries(r0.params).map(([k, p]) => `${k} dense ${p.dense}, embedding ${p.embedding}`)
        .join("; "),
  );
  for (const r of results) {
    const torch = r.torch === null
      ? "not asked (--no-torch)"
      : typeof r.torch === "string"
      ? `not run: ${r.torch}`
      : `torch ${r.torch.torch}, ${r.torch.threads} thread(s), ${r.torch.capability}, ` +
        `BLAS ${r.torch.blas}; EmbeddingBag(sparse=True) + torch.optim.Adagrad on the sparse ` +
        "gradients (exact row-wise Adagrad), torch.optim.Adam";
    console.log(
      `threads ${r.threads}: tfjs-wasm ${r.tfjsThreads} thread(s) (${r.tfjsWasmFile}); PyTorch: ${torch}`,
    );
    if (typeof r.torch === "object" && r.torch !== null && /\/blas\/libblas/.test(r.torch.blas)) {
      console.log("  (PyTorch on the reference BLAS: not a fair figure; see --torch-blas)");
    }
  }
  console.log(
    `\nsamples/s: best of ${options.rounds} alternating rounds after ${options.warmup} warm-up ` +
      `steps; share = of the ceiling (peak x threads); ratio = best/best (range of the per-round ratios)`,
  );
  console.log(
    "| threads | mode      | batch | ours    | share | TF.js   | share | ours/TF.js          | " +
      "PyTorch | share | ours/PyTorch        | ours/ours 1 thread  |",
  );
  console.log(
    "|--------:|-----------|------:|--------:|------:|--------:|------:|---------------------|" +
      "--------:|------:|---------------------|---------------------|",
  );
  for (const r of results) {
    for (const row of r.rows) {
      const get = (name: string) => row.rates.find((x) => x.side === name);
      const flop = row.mode === "train" ? train : forward;
      const cell = (x: Rates | undefined) => {
        if (!x) return ["-", "-"];
        const share = shareOfPeak(flop, best(x), r.peak.gflops, r.threads);
        return [best(x).toFixed(0), formatShare(share)];
      };
      const [ours, oursShare] = cell(get("ours"));
      const [tfjs, tfjsShare] = cell(get("tfjs"));
      const [torch, torchShare] = cell(get("torch"));
      const cells = [
        String(r.threads).padStart(7),
        (row.mode === "train" ? "train" : "inference").padEnd(9),
        String(row.batch).padStart(5),
        ours.padStart(7),
        oursShare.padStart(5),
        tfjs.padStart(7),
        tfjsShare.padStart(5),
        ratio(get("ours"), get("tfjs")).padEnd(19),
        torch.padStart(7),
        torchShare.padStart(5),
        ratio(get("ours"), get("torch")).padEnd(19),
        ratio(get("ours"), get("ours 1 thread")).padEnd(19),
      ];
      console.log(`| ${cells.join(" | ")} |`);
    }
  }

  console.log(`\ntf.matMul 1024x256x512 on tfjs-wasm (ours: bench/gemm_bench.ts)`);
  console.log("| threads | op | GFLOP/s | share of one core's peak |");
  console.log("|--------:|----|--------:|-------------------------:|");
  for (const r of results) {
    for (const g of r.gemm) {
      const share = g.tfjs / r.peak.gflops;
      console.log(
        `| ${String(r.threads).padStart(7)} | ${g.name} | ${g.tfjs.toFixed(2).padStart(7)} | ${
          formatShare(share).padStart(24)
        } |`,
      );
    }
  }

  console.log("\ngoals (issue: training on both cores, every figure as a share of the ceiling):");
  const one = results.find((r) => r.threads === 1), two = results.find((r) => r.threads === 2);
  for (const batch of options.batches) {
    const row = (r: Result | undefined, mode: Mode) =>
      r?.rows.find((x) => x.mode === mode && x.batch === batch);
    const rates = (r: Result | undefined, mode: Mode, side: string) =>
      row(r, mode)?.rates.find((x) => x.side === side);
    for (const r of results) {
      console.log(
        `  batch ${batch}, ${r.threads} thread(s): train vs TF.js ${
          ratio(rates(r, "train", "ours"), rates(r, "train", "tfjs"))
        } (goal >= 20x); inference vs TF.js ${
          ratio(rates(r, "infer", "ours"), rates(r, "infer", "tfjs"))
        } (goal >= 2x)`,
      );
    }
    const train1 = rates(one, "train", "ours");
    if (train1 && one) {
      console.log(
        `  batch ${batch}: train 1 thread at ${
          formatShare(shareOfPeak(train, best(train1), one.peak.gflops))
        } of the ceiling (goal >= 85%)`,
      );
    }
    const scaling = ratio(rates(two, "train", "ours"), rates(two, "train", "ours 1 thread"));
    if (two) {
      console.log(
        `  batch ${batch}: train 2 threads / 1 thread, same process: ${scaling} (goal >= 1.7x)`,
      );
    }
  }
  console.log(
    "\nlast losses (train; sanity, all start near 2 x 0.69 and fall): " +
      results.flatMap((r) =>
        r.rows.filter((row) => row.mode === "train").map((row) =>
          `${r.threads}t/${row.batch}: ` +
          row.rates.map((x) => `${x.side} ${x.loss.toFixed(3)}`).join(", ")
        )
      ).join("; "),
  );
}

// ------------------------------------------------------------------ main

const options = parseOptions(Deno.args);
if (options.threads !== null) {
  const result = await runOne(options, options.threads);
  if (options.json) await Deno.writeTextFile(options.json, JSON.stringify(result));
  else printResults([result], options);
  for (const dir of tempDirs) await Deno.remove(dir, { recursive: true });
  // tfjs's pthread workers would keep the process alive.
  Deno.exit(0);
} else {
  const results: Result[] = [];
  const dir = await Deno.makeTempDir({ prefix: "denorec-compare-" });
  for (const threads of [1, 2]) {
    const json = `${dir}/threads-${threads}.json`;
    const args = [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      ...Deno.args,
      "--threads",
      String(threads),
      "--json",
      json,
    ];
    const { code } = await new Deno.Command(Deno.execPath(), { args }).spawn().status;
    if (code !== 0) throw new Error(`the --threads ${threads} run exited with ${code}`);
    results.push(JSON.parse(await Deno.readTextFile(json)));
  }
  await Deno.remove(dir, { recursive: true });
  printResults(results, options);
}

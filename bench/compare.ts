/**
 * Side by side: our MMoE (Wasm SIMD kernels) against the same model written
 * the usual TensorFlow.js way on `@tensorflow/tfjs-backend-wasm`.
 *
 *   deno run -A bench/compare.ts [--threads 1|2] [--batches 1024,8192] [--steps N]
 *                                [--budget SECONDS] [--vocab-cap ROWS]
 *
 * - `--threads N`: one configuration in this process (ours and tfjs-wasm at N
 *   threads). Without it the script runs itself once per thread count (1, then
 *   2) and prints a combined table: XNNPACK's thread pool is created once,
 *   when the wasm backend initialises, so each thread count needs a fresh
 *   tfjs-wasm instance (a fresh process).
 * - `--batches`: batch sizes (default 1024,8192).
 * - `--steps N`: at most N timed steps per measurement after one warm-up step
 *   (default 5); a measurement also stops once `--budget` seconds (default 6)
 *   have passed, and a step slower than the budget is timed once (its warm-up
 *   run is the measurement, marked `*`). The whole default run takes ~4 min.
 * - `--vocab-cap ROWS`: cap every embedding table at ROWS rows on both sides
 *   (default: the full Taobao vocabularies, 3.14M rows x 16).
 *
 * The model (both sides): 16 features, embedding dim 16 (same vocabularies),
 * concat to F = 256; 3 experts MLP [512, 256, 128] ReLU; 2 gates
 * softmax(Linear(x)); mixture; 2 towers MLP [256, 128, 64] ReLU + Linear(1);
 * sigmoid BCE (mean per tower, summed over towers); Adam for the dense
 * parameters, Adagrad for the embeddings. Ours updates only the embedding
 * rows a batch touches; tfjs has no sparse gradients, so its Adagrad runs
 * over the whole tables every step (what a tfjs user gets).
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
 * GEMM: tf.matMul at 1024x256x512 NN, NT and TN next to our `gemm` kernel
 * (one thread). tfjs-wasm sends only the plain NN product to XNNPACK (packed
 * weights cached per weight tensor); any transposeA/transposeB goes to a
 * scalar 48-blocked triple loop on one thread, and training needs exactly
 * those: dX = dY W^T (NT) and dW = X^T dY (TN).
 */
import os from "node:os";
import wt from "node:worker_threads";
import { createRequire } from "node:module";
import * as tf from "@tensorflow/tfjs";
import * as tfwasm from "@tensorflow/tfjs-backend-wasm";
import { resolveConfig, type ResolvedConfig } from "../src/config/config.ts";
import { instantiateKernels } from "../src/kernels/kernels.ts";
import {
  type EncodedBatch,
  MMoEModel,
  type ModelOptions,
  type SparseInput,
} from "../src/model/mmoe.ts";
import { randomTaobaoBatch, taobaoConfig } from "./taobao.ts";

// ------------------------------------------------------------------ options

interface Options {
  threads: number | null;
  batches: number[];
  steps: number;
  budgetMs: number;
  vocabCap: number | null;
  json: string | null;
}

function parseArgs(args: string[]): Options {
  const options: Options = {
    threads: null,
    batches: [1024, 8192],
    steps: 5,
    budgetMs: 6000,
    vocabCap: null,
    json: null,
  };
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = args[i].split("=", 2);
    const value = () => {
      const v = inline ?? args[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const positive = (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag}: not a positive integer: ${v}`);
      return n;
    };
    if (flag === "--threads") options.threads = positive(value());
    else if (flag === "--batches") options.batches = value().split(",").map(positive);
    else if (flag === "--steps") options.steps = positive(value());
    else if (flag === "--budget") options.budgetMs = Number(value()) * 1000;
    else if (flag === "--vocab-cap") options.vocabCap = positive(value());
    else if (flag === "--json") options.json = value();
    else throw new Error(`unknown argument ${args[i]} (see the comment at the top of the file)`);
  }
  return options;
}

// ------------------------------------------------------------------ results

interface Timing {
  /** Samples per second. */
  rate: number;
  /** Timed steps. */
  steps: number;
  /** Only the first (warm-up) step was timed: it alone exceeded the budget. */
  firstOnly: boolean;
}

interface Row {
  batch: number;
  mode: "train" | "infer";
  ours: Timing;
  tfjs: Timing;
  oursLoss?: number;
  tfjsLoss?: number;
}

interface Result {
  threads: number;
  oursThreads: number;
  oursThreadsNote: string;
  tfjsThreads: number;
  tfjsWasmFile: string;
  runtime: string;
  rows: Row[];
  gemm: { name: string; ours: number; tfjs: number }[];
  oursVariant: string;
  params: { oursDense: number; oursEmbedding: number; tfjsDense: number; tfjsEmbedding: number };
  initSeconds: { ours: number; tfjs: number };
}

function measure(step: () => void, batch: number, options: Options): Timing {
  const t0 = performance.now();
  step();
  const first = performance.now() - t0;
  if (first > options.budgetMs) return { rate: batch / (first / 1000), steps: 1, firstOnly: true };
  let steps = 0;
  const start = performance.now();
  while (steps < options.steps && (steps === 0 || performance.now() - start < options.budgetMs)) {
    step();
    steps++;
  }
  const ms = (performance.now() - start) / steps;
  return { rate: batch / (ms / 1000), steps, firstOnly: false };
}

// ------------------------------------------------------------------ config

function capConfig(config: ResolvedConfig, cap: number | null): ResolvedConfig {
  if (cap === null) return config;
  return {
    ...config,
    tables: config.tables.map((t) => ({ ...t, rows: Math.min(t.rows, cap) })),
    features: config.features.map((f) => ({ ...f, rows: Math.min(f.rows, cap) })),
  };
}

/** Random batches; ids taken modulo the (possibly capped) table sizes. */
function makeBatches(config: ResolvedConfig, size: number): EncodedBatch[] {
  return Array.from({ length: 3 }, (_, i) => {
    const batch = randomTaobaoBatch(size, 100 * size + i + 1);
    config.features.forEach((f, j) => {
      const ids = (batch.features[j] as SparseInput).ids;
      const rows = config.tables[f.table].rows;
      for (let k = 0; k < ids.length; k++) ids[k] %= rows;
    });
    return batch;
  });
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

// ------------------------------------------------------------------ GEMM

const GEMM: [string, boolean, boolean][] = [["NN", false, false], ["NT", false, true], [
  "TN",
  true,
  false,
]];

function timeGflops(run: () => void, flop: number, minMs: number): number {
  run();
  let reps = 0;
  const start = performance.now();
  while (reps < 2 || performance.now() - start < minMs) {
    run();
    reps++;
  }
  return flop * reps / ((performance.now() - start) / 1000) / 1e9;
}

function oursGemm(M: number, K: number, N: number): { variant: string; rates: number[] } {
  const bytes = (M * K + K * N + M * N) * 4 + (2 << 20);
  const memory = new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) + 1 });
  const { exports: k, variant } = instantiateKernels(memory);
  const f32 = new Float32Array(memory.buffer);
  const a = 1024, b = a + M * K * 4, c = b + K * N * 4, work = c + M * N * 4;
  for (let i = a / 4; i < c / 4; i++) f32[i] = Math.sin(i) * 0.5;
  const rates = GEMM.map(([, tA, tB]) =>
    timeGflops(
      () => k.gemm(c, a, b, 0, work, M, K, N, tA ? M : K, tB ? K : N, N, tA, tB, false, false),
      2 * M * K * N,
      400,
    )
  );
  return { variant, rates };
}

function tfjsGemm(M: number, K: number, N: number): number[] {
  return GEMM.map(([, tA, tB]) => {
    const a = tf.randomUniform(tA ? [K, M] : [M, K], -0.5, 0.5) as tf.Tensor2D;
    const b = tf.randomUniform(tB ? [N, K] : [K, N], -0.5, 0.5) as tf.Tensor2D;
    const rate = timeGflops(
      () => {
        const c = tf.matMul(a, b, tA, tB);
        c.dataSync();
        c.dispose();
      },
      2 * M * K * N,
      400,
    );
    tf.dispose([a, b]);
    return rate;
  });
}

// ------------------------------------------------------------------ one configuration

async function runOne(options: Options, threads: number): Promise<Result> {
  const maxBatch = Math.max(...options.batches);
  const config = capConfig(resolveConfig(taobaoConfig(maxBatch)), options.vocabCap);
  const log = (s: string) => console.log(`[threads ${threads}] ${s}`);
  const rows: Row[] = options.batches.map((batch) => ({ batch, mode: "train" } as Row))
    .concat(options.batches.map((batch) => ({ batch, mode: "infer" } as Row)));
  const data = new Map(options.batches.map((b) => [b, makeBatches(config, b)]));

  // Ours first: tfjs's threaded init replaces globalThis.Worker while it runs.
  let t = performance.now();
  const modelOptions: ModelOptions & { threads?: number } = { maxBatch, seed: 1, threads };
  const model = new MMoEModel(config, modelOptions);
  const oursInit = (performance.now() - t) / 1000;
  const reported = (model as unknown as { threads?: unknown }).threads;
  const oursThreads = typeof reported === "number" ? reported : 1;
  const oursThreadsNote = typeof reported === "number"
    ? `MMoEModel.threads = ${reported}`
    : "MMoEModel has no threads option yet: our side ran 1 thread";
  log(`ours: model built in ${oursInit.toFixed(1)} s; ${oursThreadsNote}`);
  const oursCount = { dense: 0, embedding: 0 };
  for (const p of model.parameters) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    if (p.kind === "dense") oursCount.dense += size;
    if (p.kind === "embedding") oursCount.embedding += size;
  }
  for (const row of rows) {
    const batches = data.get(row.batch)!;
    let i = 0;
    row.ours = measure(
      () => {
        const b = batches[i++ % batches.length];
        if (row.mode === "train") row.oursLoss = model.trainStep(b).total;
        else model.predict(b);
      },
      row.batch,
      options,
    );
    log(`ours ${row.mode} batch ${row.batch}: ${row.ours.rate.toFixed(0)} samples/s`);
  }
  const ours = oursGemm(1024, 256, 512);
  for (const name of ["close", "dispose", "terminate"]) {
    const f = (model as unknown as Record<string, unknown>)[name];
    if (typeof f === "function") f.call(model);
  }

  t = performance.now();
  const tfInfo = await initTfjsWasm(threads);
  log(`tfjs-wasm ${tf.version.tfjs}: ${tfInfo.file}, getThreadsCount() = ${tfInfo.threads}`);
  const tfModel = new TfjsMMoE(config);
  const tfInit = (performance.now() - t) / 1000;
  const tfCount = tfModel.counts();
  log(`tfjs: model built in ${tfInit.toFixed(1)} s`);
  for (const row of rows) {
    const batches = data.get(row.batch)!;
    let i = 0;
    row.tfjs = measure(
      () => {
        const b = batches[i++ % batches.length];
        if (row.mode === "train") row.tfjsLoss = tfModel.trainStep(b, config);
        else tfModel.predict(b, config);
      },
      row.batch,
      options,
    );
    log(
      `tfjs ${row.mode} batch ${row.batch}: ${row.tfjs.rate.toFixed(0)} samples/s ` +
        `(${row.tfjs.firstOnly ? "first step only" : `${row.tfjs.steps} steps`}; ` +
        `${tf.memory().numTensors} live tensors)`,
    );
  }
  const tfRates = tfjsGemm(1024, 256, 512);
  return {
    threads,
    oursThreads,
    oursThreadsNote,
    tfjsThreads: tfInfo.threads,
    tfjsWasmFile: tfInfo.file,
    runtime: `Deno ${Deno.version.deno} (V8 ${Deno.version.v8}), tfjs ${tf.version.tfjs}`,
    rows,
    gemm: GEMM.map(([name], i) => ({ name, ours: ours.rates[i], tfjs: tfRates[i] })),
    oursVariant: ours.variant,
    params: {
      oursDense: oursCount.dense,
      oursEmbedding: oursCount.embedding,
      tfjsDense: tfCount.dense,
      tfjsEmbedding: tfCount.embedding,
    },
    initSeconds: { ours: oursInit, tfjs: tfInit },
  };
}

// ------------------------------------------------------------------ report

function printResults(results: Result[], options: Options): void {
  const r0 = results[0];
  console.log(`\n${r0.runtime}`);
  const vocab = options.vocabCap === null
    ? "full vocabularies"
    : `vocabularies capped at ${options.vocabCap} rows`;
  console.log(
    `parameters: ours dense ${r0.params.oursDense}, embedding ${r0.params.oursEmbedding}; ` +
      `tfjs dense ${r0.params.tfjsDense}, embedding ${r0.params.tfjsEmbedding} (${vocab})`,
  );
  for (const r of results) {
    console.log(
      `threads ${r.threads}: ours ${r.oursThreads} (${r.oursThreadsNote}); tfjs-wasm ` +
        `${r.tfjsThreads} (${r.tfjsWasmFile}); init ours ${r.initSeconds.ours.toFixed(1)} s, ` +
        `tfjs ${r.initSeconds.tfjs.toFixed(1)} s`,
    );
  }
  const pad = (s: string, n: number) => s.padStart(n);
  const fmt = (t: Timing) => `${t.rate.toFixed(0)}${t.firstOnly ? "*" : ""}`;
  console.log(
    `\n| threads | mode      | batch | ours samples/s | tfjs-wasm samples/s | ours / tfjs |`,
  );
  console.log(
    `|--------:|-----------|------:|---------------:|--------------------:|------------:|`,
  );
  for (const r of results) {
    for (const row of r.rows) {
      console.log(
        `| ${pad(String(r.threads), 7)} | ${row.mode === "train" ? "train    " : "inference"} | ${
          pad(String(row.batch), 5)
        } | ${pad(fmt(row.ours), 14)} | ${pad(fmt(row.tfjs), 19)} | ${
          pad((row.ours.rate / row.tfjs.rate).toFixed(1) + "x", 11)
        } |`,
      );
    }
  }
  if (results.some((r) => r.rows.some((row) => row.tfjs.firstOnly || row.ours.firstOnly))) {
    console.log(
      `* one step, the first: it alone took longer than the ${options.budgetMs / 1000} s budget`,
    );
  }
  console.log(`\nGEMM 1024x256x512 GFLOP/s (ours: ${r0.oursVariant}, one thread)`);
  console.log(`| threads | op | ours | tfjs-wasm tf.matMul | ours / tfjs |`);
  console.log(`|--------:|----|-----:|--------------------:|------------:|`);
  for (const r of results) {
    for (const g of r.gemm) {
      console.log(
        `| ${pad(String(r.threads), 7)} | ${g.name} | ${pad(g.ours.toFixed(1), 4)} | ${
          pad(g.tfjs.toFixed(2), 19)
        } | ${pad((g.ours / g.tfjs).toFixed(1) + "x", 11)} |`,
      );
    }
  }
  const losses = results.flatMap((r) => r.rows.filter((row) => row.mode === "train"));
  console.log(
    `\nlast train losses (sanity; both ~2 x 0.69 at init): ` +
      losses.map((row) => `ours ${row.oursLoss?.toFixed(3)} / tfjs ${row.tfjsLoss?.toFixed(3)}`)
        .join(", "),
  );
}

// ------------------------------------------------------------------ main

const options = parseArgs(Deno.args);
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

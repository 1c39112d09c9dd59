import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { createArenaMemory } from "../src/kernels/arena.ts";
import {
  type GemmOp,
  instantiateKernels,
  KERNEL_RESERVED_BYTES,
  runGemm,
} from "../src/kernels/kernels.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import {
  GEMM_SPLIT_MIN_MACS,
  KernelPool,
  splitGemms,
  splitRange,
  threadsSupported,
} from "../src/kernels/threads.ts";
import { randomArray, rng, VARIANTS } from "./_util.ts";

// Shapes large enough that every kernel family splits: F = 33, experts
// [128, 64] x 2, towers [64], batch 256.
interface Options {
  /** Tanh experts with BatchNorm and dropout (else ReLU, fused into the GEMMs). */
  bn?: boolean;
  /** GELU experts with LayerNorm, a gate MLP and a weighted feature. */
  ln?: boolean;
}

function config(options: Options = {}): PipelineConfig {
  const activation = options.bn ? "nn.Tanh" : options.ln ? "nn.GELU" : "nn.ReLU";
  return {
    featureConfigs: [
      {
        idFeature: {
          featureName: "user",
          expression: "user:user",
          numBuckets: 50,
          embeddingDim: 16,
          weighted: options.ln,
        },
      },
      {
        idFeature: {
          featureName: "tags",
          expression: "item:tags",
          numBuckets: 40,
          embeddingDim: 16,
          pooling: "mean",
        },
      },
      { rawFeature: { featureName: "price", expression: "item:price" } },
    ],
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: ["user", "tags", "price"] }],
      mmoe: {
        expertMlp: {
          hiddenUnits: [128, 64],
          activation,
          useBn: options.bn,
          useLn: options.ln,
          dropoutRatio: options.bn ? [0.1, 0.1] : undefined,
        },
        gateMlp: options.ln ? { hiddenUnits: [32], activation } : undefined,
        numExpert: 2,
        taskTowers: [
          {
            towerName: "ctr",
            labelName: "clk",
            mlp: { hiddenUnits: [64], activation },
            losses: [{ binaryCrossEntropy: {} }],
          },
          { towerName: "cvr", labelName: "buy", losses: [{ binaryCrossEntropy: {} }] },
        ],
      },
    },
    trainConfig: {
      denseOptimizer: { adamOptimizer: { lr: 0.01 } },
      sparseOptimizer: { adagradOptimizer: { lr: 0.1 } },
    },
  };
}

function batch(seed: number, B: number, weighted = false): EncodedBatch {
  const next = rng(seed);
  const tagIds: number[] = [], tagOffsets = [0];
  for (let b = 0; b < B; b++) {
    const count = Math.floor(next() * 4);
    for (let j = 0; j < count; j++) tagIds.push(Math.floor(next() * 40));
    tagOffsets.push(tagIds.length);
  }
  const clk = Float32Array.from({ length: B }, () => (next() < 0.4 ? 1 : 0));
  const buy = Float32Array.from(clk, (c) => (c > 0 && next() < 0.5 ? 1 : 0));
  return {
    size: B,
    features: [
      {
        ids: Int32Array.from({ length: B }, () => Math.floor(next() * 50)),
        offsets: Int32Array.from({ length: B + 1 }, (_, b) => b),
        weights: weighted ? Float32Array.from({ length: B }, () => next() * 2) : undefined,
      },
      { ids: Int32Array.from(tagIds), offsets: Int32Array.from(tagOffsets) },
      { values: Float32Array.from({ length: B }, () => next() * 2 - 1) },
    ],
    columns: { clk, buy },
  };
}

function assertBitIdentical(actual: Float32Array, expected: Float32Array, label: string) {
  assert.equal(actual.length, expected.length, label);
  const a = new Uint32Array(Float32Array.from(actual).buffer);
  const e = new Uint32Array(Float32Array.from(expected).buffer);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) assert.fail(`${label}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

/** Every parameter, buffer and counter of `b` equals `a`'s bit for bit. */
function assertSameParameters(a: MMoEModel, b: MMoEModel, label: string) {
  for (const p of a.parameters) {
    if (p.dtype === "i64") {
      assert.deepEqual(b.int64View(p.offset, 1), a.int64View(p.offset, 1), `${label} ${p.name}`);
    } else {
      assertBitIdentical(b.parameter(p.name), a.parameter(p.name), `${label} ${p.name}`);
    }
  }
}

const supported = threadsSupported();

test("threads: the runtime supports the pool (shared memory, Workers, Atomics.wait)", () => {
  assert.ok(supported, "Deno and Bun both should");
});

for (const variant of VARIANTS) {
  for (const options of [{}, { bn: true }, { ln: true }] as Options[]) {
    const label = `${variant}${
      options.bn ? " BN+dropout+tanh" : options.ln ? " LN+GELU+gate MLP+weighted" : " ReLU fused"
    }`;
    test(`threads ${label}: 1, 2 and 3 threads train bit-identically, every step split`, async () => {
      const resolved = resolveConfig(config(options));
      const B = 256;
      const models = [1, 2, 3].map((threads) =>
        new MMoEModel(resolved, { maxBatch: B, seed: 5, variant, threads, profile: true })
      );
      try {
        assert.deepEqual(models.map((m) => m.threads), supported ? [1, 2, 3] : [1, 1, 1]);
        await Promise.all(models.map((m) => m.ready()));
        for (let step = 0; step < 4; step++) {
          const data = batch(step + 1, step === 3 ? 200 : B, options.ln);
          const [a, ...rest] = models.map((m) => m.trainStep(data));
          for (const b of rest) {
            assert.ok(Object.is(a.total, b.total), `step ${step}: ${a.total} vs ${b.total}`);
            assert.deepEqual(b.losses, a.losses);
          }
        }
        const evalBatch = batch(9, B, options.ln);
        const [predicted, ...others] = models.map((m) => m.predict(evalBatch));
        for (const other of others) assert.deepEqual(other, predicted);
        for (const other of models.slice(1)) assertSameParameters(models[0], other, label);
        // The steps really ran on the workers: a train step of these models has 13-30 parallel steps.
        for (const m of models.slice(1)) {
          const splits = m.profile()!.parallelSteps;
          assert.ok(splits >= 4 * 12, `${m.threads} threads: only ${splits} parallel steps`);
        }
      } finally {
        for (const m of models) m.close();
      }
    });
  }
}

/** A shared memory, kernels on it, and a pool of `threads` with 1 MiB of scratch each. */
function poolMemory(variant: (typeof VARIANTS)[number], floats: number, threads: number) {
  const workBytes = 1 << 20;
  const start = KERNEL_RESERVED_BYTES;
  const bytes = start + floats * 4 + threads * workBytes + 4096;
  const memory = createArenaMemory(bytes, { shared: true });
  const k = instantiateKernels(memory, variant).exports;
  const works = Array.from({ length: threads }, (_, t) => start + floats * 4 + t * workBytes);
  return { memory, k, f32: new Float32Array(memory.buffer), works };
}

for (const variant of VARIANTS) {
  test(`threads ${variant}: pool GEMMs equal one call bit for bit (NN, NT, TN, packed, columns)`, async () => {
    const threads = 3;
    const [M, K, N] = [1001, 300, 230]; // uneven splits, M not a multiple of the row grain
    const next = rng(11);
    const floats = M * K + 2 * K * N + 2 * M * N + N + 8 * 1024;
    const { memory, k, f32, works } = poolMemory(variant, floats, threads);
    const a = KERNEL_RESERVED_BYTES,
      b = a + M * K * 4,
      bias = b + K * N * 4,
      c1 = bias + N * 4,
      c2 = c1 + M * N * 4;
    const packed = c2 + M * N * 4;
    f32.set(randomArray(M * K + K * N + N, next), a / 4);
    const pool = new KernelPool(memory, variant, works, k);
    try {
      await pool.start();
      const cases: [string, Partial<GemmOp>][] = [
        ["NN", {}],
        ["NT", { transB: true, ldb: K }],
        ["TN", { transA: true, lda: M }],
        ["NN packed", { packed: true }],
        // A gate's weight gradient: 6 rows, split by columns.
        ["TN few rows", { transA: true, lda: M, M: 6 }],
      ];
      for (const [name, change] of cases) {
        const op: GemmOp = {
          c: c1,
          ldc: N,
          a,
          lda: K,
          transA: false,
          b,
          ldb: N,
          transB: false,
          bias,
          M,
          K,
          N,
          accumulate: true,
          relu: true,
          ...change,
        };
        if (op.packed) k.gemmPackB(packed, b, K, N, false);
        const c0 = randomArray(M * N, next);
        f32.set(c0, c1 / 4);
        f32.set(c0, c2 / 4);
        runGemm(k, { ...op, b: op.packed ? packed : b }, works[0]);
        const before = pool.splits;
        pool.gemms(k, [{ ...op, c: c2, b: op.packed ? packed : b }]);
        assert.equal(pool.splits, before + 1, `${name}: the GEMM was split`);
        assertBitIdentical(
          f32.subarray(c2 / 4, c2 / 4 + op.M * N),
          f32.subarray(c1 / 4, c1 / 4 + op.M * N),
          name,
        );
      }
    } finally {
      pool.close();
    }
    // A closed pool runs every task on the caller, with the same result.
    const plain: GemmOp = {
      c: c1,
      ldc: N,
      a,
      lda: K,
      transA: false,
      b,
      ldb: N,
      transB: false,
      bias: 0,
      M,
      K,
      N,
      accumulate: false,
      relu: false,
    };
    pool.gemms(k, [{ ...plain, c: c2 }]);
    runGemm(k, plain, works[0]);
    assertBitIdentical(
      f32.subarray(c2 / 4, c2 / 4 + M * N),
      f32.subarray(c1 / 4, c1 / 4 + M * N),
      "closed",
    );
  });
}

test("threads: splitGemms gives every output element to exactly one thread", () => {
  const next = rng(3);
  for (let trial = 0; trial < 200; trial++) {
    const threads = 1 + Math.floor(next() * 4);
    const ops: GemmOp[] = Array.from({ length: 1 + Math.floor(next() * 4) }, (_, i) => {
      const [M, N] = [1 + Math.floor(next() * 300), 1 + Math.floor(next() * 300)];
      return {
        c: 1_000_000 * (i + 1),
        ldc: N,
        a: 0,
        lda: 64,
        transA: false,
        b: 0,
        ldb: N,
        transB: false,
        bias: 0,
        M,
        K: 1 + Math.floor(next() * 600),
        N,
        accumulate: false,
        relu: false,
        packed: next() < 0.3,
      };
    });
    const parts = splitGemms(ops, threads);
    assert.equal(parts.length, threads);
    for (const op of ops) {
      const seen = new Uint8Array(op.M * op.N);
      for (const part of parts) {
        for (const piece of part) {
          if (piece.c < op.c || piece.c >= op.c + 4 * op.M * op.N) continue;
          assert.equal(piece.K, op.K);
          if (op.packed) assert.equal(piece.N, op.N, "packed ops split by rows only");
          const at = (piece.c - op.c) / 4;
          for (let i = 0; i < piece.M; i++) {
            for (let j = 0; j < piece.N; j++) seen[at + i * op.ldc + j]++;
          }
        }
      }
      assert.ok(seen.every((n) => n === 1), `trial ${trial}: ${op.M}x${op.K}x${op.N}`);
      if (op.M * op.K * op.N < GEMM_SPLIT_MIN_MACS || threads === 1) {
        const pieces = parts.flat().filter((p) => p.c >= op.c && p.c < op.c + 4 * op.M * op.N);
        assert.equal(pieces.length, 1, "a small GEMM stays whole");
      }
    }
  }
});

test("threads: splitRange covers the range in grain-aligned pieces of at least the minimum", () => {
  for (const [total, parts, grain, minimum] of [[1000, 3, 16, 1], [17, 4, 4, 5], [0, 2, 1, 1]]) {
    const ranges = splitRange(total, parts, grain, minimum);
    assert.ok(ranges.length >= 1 && ranges.length <= parts);
    let end = 0;
    for (const [start, count] of ranges) {
      assert.equal(start, end);
      assert.equal(start % grain, 0);
      if (ranges.length > 1) assert.ok(count >= Math.min(minimum, total - start));
      end = start + count;
    }
    assert.equal(end, total);
  }
});

test("threads: a worker's failing kernel call is an error naming the kernel, not a hang", async () => {
  if (!supported) return;
  const variant = VARIANTS[0];
  const { memory, k, works } = poolMemory(variant, 1024, 2);
  const pool = new KernelPool(memory, variant, works, k);
  try {
    await pool.start();
    const outside = memory.buffer.byteLength + 4096; // fill() traps: out of bounds
    assert.throws(
      () => pool.run(k, [() => {}, (kw) => kw.fill(outside, 0, 16)]),
      /worker 1 failed in kernel fill/,
    );
    // The worker lives on and takes the next step.
    let ran = false;
    pool.run(k, [() => {}, (kw, work) => {
      kw.fill(work, 1, 4);
      ran = true;
    }]);
    assert.ok(ran);
    assert.deepEqual(Array.from(new Float32Array(memory.buffer, works[1], 4)), [1, 1, 1, 1]);
  } finally {
    pool.close();
  }
});

test("threads: close() while the workers start resolves start() and keeps results", async () => {
  const model = new MMoEModel(resolveConfig(config()), { maxBatch: 256, seed: 2, threads: 2 });
  const one = new MMoEModel(resolveConfig(config()), { maxBatch: 256, seed: 2, threads: 1 });
  const started = model.ready();
  model.close();
  await started; // used to hang: a terminated worker never answered
  assert.equal(model.trainStep(batch(1, 256)).total, one.trainStep(batch(1, 256)).total);
  model.close(); // idempotent
});

test("threads: a closed model keeps training on one thread, same results", async () => {
  const resolved = resolveConfig(config());
  const one = new MMoEModel(resolved, { maxBatch: 256, seed: 2, threads: 1 });
  const two = new MMoEModel(resolved, { maxBatch: 256, seed: 2, threads: 2 });
  try {
    await two.ready();
    assert.equal(one.trainStep(batch(1, 256)).total, two.trainStep(batch(1, 256)).total);
    two.close();
    assert.equal(one.trainStep(batch(2, 256)).total, two.trainStep(batch(2, 256)).total);
  } finally {
    one.close();
    two.close();
  }
});

test("threads: option validation", () => {
  const resolved = resolveConfig(config());
  assert.throws(() => new MMoEModel(resolved, { maxBatch: 8, threads: 0 }), RangeError);
  assert.throws(() => new MMoEModel(resolved, { maxBatch: 8, threads: 1.5 }), RangeError);
});

// ------------------------------------------------------------- child processes

const ROOT = new URL("..", import.meta.url).pathname;
const CHILD = join(ROOT, "tests/_pool_child.ts");
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

/** Runs tests/_pool_child.ts with `args` in this runtime; its stdout, stderr and exit code. */
function child(args: string[]): Promise<{ stdout: string; stderr: string; code: number | null }> {
  const argv = isDeno ? ["run", "-A", "--v8-flags=--expose-gc", CHILD, ...args] : [CHILD, ...args];
  const proc = spawn(process.execPath, argv, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  proc.stdout.on("data", (chunk) => stdout += chunk);
  proc.stderr.on("data", (chunk) => stderr += chunk);
  return new Promise((resolve) => proc.on("close", (code) => resolve({ stdout, stderr, code })));
}

test("threads: a 2-thread model closed before exit prints nothing on stderr", async () => {
  const { stdout, stderr, code } = await child(["exit"]);
  assert.equal(code, 0, stderr);
  assert.equal(stdout.trim(), "closed");
  assert.equal(stderr, "", "nothing like 'Uncaught (in worker) TypeError: parentPort.close'");
});

test("threads: 200 models dropped without close() release their workers (RSS bound)", async () => {
  // Each live pool holds a Worker (~13 MB of isolate on Deno): 200 kept pools
  // grew the RSS by ~2.4 GB. Dropped models' pools close when they are
  // collected (the child forces collections: when V8 runs one on its own
  // varies from run to run), so the growth stays near what a few live pools hold.
  const { stdout, stderr, code } = await child(["leak", "200"]);
  assert.equal(code, 0, stderr);
  const [, before, after] = stdout.trim().split(" ").map(Number);
  assert.ok(after - before < 500, `RSS grew from ${before} to ${after} MB over 200 models`);
});

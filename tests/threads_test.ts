import { test } from "node:test";
import assert from "node:assert/strict";
import { type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { createArenaMemory } from "../src/kernels/arena.ts";
import { type GemmOp, instantiateKernels, runGemm } from "../src/kernels/kernels.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import { GemmPool, ROW_GRAIN, SPLIT_MIN_MACS, threadsSupported } from "../src/kernels/threads.ts";
import { randomArray, rng, VARIANTS } from "./_util.ts";

// Shapes large enough that the pool splits the GEMMs (M*K*N >= SPLIT_MIN_MACS):
// F = 33, experts [128, 64] x 2, towers [64], batch 256.
function config(options: { bn?: boolean; dropout?: boolean } = {}): PipelineConfig {
  const activation = options.bn ? "nn.Tanh" : "nn.ReLU";
  return {
    featureConfigs: [
      {
        idFeature: {
          featureName: "user",
          expression: "user:user",
          numBuckets: 50,
          embeddingDim: 16,
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
          dropoutRatio: options.dropout ? [0.1, 0.1] : undefined,
        },
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

function batch(seed: number, B: number): EncodedBatch {
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
      },
      { ids: Int32Array.from(tagIds), offsets: Int32Array.from(tagOffsets) },
      { values: Float32Array.from({ length: B }, () => next() * 2 - 1) },
    ],
    columns: { clk, buy },
  };
}

function assertBitIdentical(actual: Float32Array, expected: Float32Array, label: string) {
  assert.equal(actual.length, expected.length, label);
  const a = new Uint32Array(actual.buffer.slice(0), actual.byteOffset, actual.length);
  const e = new Uint32Array(Float32Array.from(expected).buffer);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== e[i]) assert.fail(`${label}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

const supported = threadsSupported();

test("threads: the runtime supports the pool (shared memory, Workers, Atomics.wait)", () => {
  assert.ok(supported, "Deno and Bun both should");
});

for (const variant of VARIANTS) {
  for (const options of [{}, { bn: true, dropout: true }]) {
    const label = `${variant}${options.bn ? " BN+dropout" : " ReLU fused"}`;
    test(`threads ${label}: 1 and 2 threads train bit-identically`, async () => {
      const resolved = resolveConfig(config(options));
      const B = 256;
      const one = new MMoEModel(resolved, { maxBatch: B, seed: 5, variant, threads: 1 });
      const two = new MMoEModel(resolved, { maxBatch: B, seed: 5, variant, threads: 2 });
      try {
        assert.equal(one.threads, 1);
        assert.equal(two.threads, supported ? 2 : 1);
        await two.ready();
        for (let step = 0; step < 4; step++) {
          const data = batch(step + 1, step === 3 ? 200 : B);
          const a = one.trainStep(data), b = two.trainStep(data);
          assert.ok(Object.is(a.total, b.total), `step ${step}: ${a.total} vs ${b.total}`);
          assert.deepEqual(b.losses, a.losses);
        }
        const evalBatch = batch(9, B);
        assert.deepEqual(two.predict(evalBatch), one.predict(evalBatch));
        for (const p of one.parameters) {
          if (p.dtype === "i64") {
            assert.deepEqual(two.int64View(p.offset, 1), one.int64View(p.offset, 1), p.name);
          } else {
            assertBitIdentical(two.parameter(p.name), one.parameter(p.name), p.name);
          }
        }
      } finally {
        one.close();
        two.close();
      }
    });
  }
}

for (const variant of VARIANTS) {
  test(`threads ${variant}: pool GEMM rows equal one call bit for bit (NN, NT, TN)`, async () => {
    if (!supported) return;
    const [M, K, N] = [1001, 300, 37]; // uneven split, M not a multiple of ROW_GRAIN
    assert.ok(M * K * N >= SPLIT_MIN_MACS && M % ROW_GRAIN !== 0);
    const threads = 3;
    const next = rng(11);
    const floats = M * K + K * N + 2 * M * N + N;
    const workBytes = 1 << 20;
    const memory = createArenaMemory(floats * 4 + threads * workBytes + 4096, { shared: true });
    const k = instantiateKernels(memory, variant).exports;
    const f32 = new Float32Array(memory.buffer);
    const a = 64, b = a + M * K * 4, bias = b + K * N * 4, c1 = bias + N * 4, c2 = c1 + M * N * 4;
    const work = c2 + M * N * 4;
    f32.set(randomArray(M * K + K * N + N, next), a / 4);
    const works = [work + workBytes, work + 2 * workBytes];
    const pool = new GemmPool(memory, variant, works);
    try {
      await pool.start();
      for (const [transA, transB] of [[false, false], [false, true], [true, false]] as const) {
        const op: GemmOp = {
          c: c1,
          ldc: N,
          a,
          lda: transA ? M : K,
          transA,
          b,
          ldb: transB ? K : N,
          transB,
          bias,
          M,
          K,
          N,
          accumulate: true,
          relu: true,
        };
        const c0 = randomArray(M * N, next);
        f32.set(c0, c1 / 4);
        f32.set(c0, c2 / 4);
        runGemm(k, op, work);
        const before = pool.splits;
        pool.gemm(k, { ...op, c: c2 }, work);
        assert.equal(pool.splits, before + 1, "the GEMM was split");
        assertBitIdentical(
          f32.subarray(c2 / 4, c2 / 4 + M * N),
          f32.subarray(c1 / 4, c1 / 4 + M * N),
          `${transA ? "T" : "N"}${transB ? "T" : "N"}`,
        );
      }
    } finally {
      pool.close();
    }
    // A closed pool computes on the caller, with the same result.
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
    pool.gemm(k, { ...plain, c: c2 }, work);
    runGemm(k, plain, work);
    assertBitIdentical(
      f32.subarray(c2 / 4, c2 / 4 + M * N),
      f32.subarray(c1 / 4, c1 / 4 + M * N),
      "closed",
    );
  });
}

test("threads: a closed model keeps training on one thread, same results", async () => {
  const resolved = resolveConfig(config());
  const one = new MMoEModel(resolved, { maxBatch: 256, seed: 2, threads: 1 });
  const two = new MMoEModel(resolved, { maxBatch: 256, seed: 2, threads: 2 });
  try {
    await two.ready();
    assert.equal(one.trainStep(batch(1, 256)).total, two.trainStep(batch(1, 256)).total);
    two.close();
    two.close(); // idempotent
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

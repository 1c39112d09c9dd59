import { test } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Buffer } from "node:buffer";
import {
  decodeSafetensors,
  encodeSafetensors,
  loadCheckpoint,
  modelCheckpoint,
  readCheckpoint,
  saveCheckpoint,
} from "../src/io/checkpoint.ts";
import { type OptimizerConfig, type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import { rng } from "./_util.ts";

/**
 * Two id features, one dense feature, 2 experts, 2 towers (one with an MLP).
 * No dropout: masks are drawn from the constructor seed, which a checkpoint
 * does not carry, so a resumed model with another seed would draw others.
 */
function tinyConfig(
  options: {
    expertUnits?: number[];
    useBn?: boolean;
    dense?: OptimizerConfig;
    sparse?: OptimizerConfig;
  } = {},
): PipelineConfig {
  return {
    featureConfigs: [
      {
        idFeature: { featureName: "user", expression: "user:user", numBuckets: 6, embeddingDim: 4 },
      },
      {
        idFeature: {
          featureName: "tags",
          expression: "item:tags",
          numBuckets: 5,
          embeddingDim: 4,
          pooling: "mean",
        },
      },
      { rawFeature: { featureName: "price", expression: "item:price" } },
    ],
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: ["user", "tags", "price"] }],
      mmoe: {
        expertMlp: { hiddenUnits: options.expertUnits ?? [6, 5], useBn: options.useBn },
        numExpert: 2,
        taskTowers: [
          {
            towerName: "ctr",
            labelName: "clk",
            mlp: { hiddenUnits: [4], activation: "nn.Tanh" },
            losses: [{ binaryCrossEntropy: {} }],
          },
          { towerName: "cvr", labelName: "buy", losses: [{ binaryCrossEntropy: {} }] },
        ],
      },
    },
    trainConfig: {
      denseOptimizer: options.dense ?? { adamOptimizer: { lr: 0.02 } },
      sparseOptimizer: options.sparse ?? { adagradOptimizer: { lr: 0.1 } },
    },
  };
}

function tinyBatch(seed: number, B = 7): EncodedBatch {
  const next = rng(seed);
  const tagIds: number[] = [], tagOffsets = [0];
  for (let b = 0; b < B; b++) {
    const count = 1 + Math.floor(next() * 3);
    for (let j = 0; j < count; j++) tagIds.push(Math.floor(next() * 5));
    tagOffsets.push(tagIds.length);
  }
  const clk = Float32Array.from({ length: B }, () => (next() < 0.5 ? 1 : 0));
  const buy = Float32Array.from(clk, (c) => (c > 0 && next() < 0.5 ? 1 : 0));
  return {
    size: B,
    features: [
      {
        ids: Int32Array.from({ length: B }, () => Math.floor(next() * 6)),
        offsets: Int32Array.from({ length: B + 1 }, (_, b) => b),
      },
      { ids: Int32Array.from(tagIds), offsets: Int32Array.from(tagOffsets) },
      { values: Float32Array.from({ length: B }, () => next() * 2 - 1) },
    ],
    columns: { clk, buy },
  };
}

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Every parameter, buffer and optimizer state value, and the step. */
function snapshot(model: MMoEModel): { step: number; values: number[] } {
  const values: number[] = [];
  for (const t of [...model.parameters, ...model.optimizerState()]) {
    values.push(...model.view(t.offset, sizeOf(t.shape)));
  }
  return { step: model.step, values };
}

/** Safetensors bytes built by hand from the spec: u64 LE length, JSON, data. */
function rawSafetensors(header: string, data: Uint8Array = new Uint8Array()): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Little-endian f32 bytes. */
function f32Bytes(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return out;
}

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "denorec-checkpoint-"));
  try {
    await body(dir);
  } finally {
    await chmod(dir, 0o755).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ round trip

const OPTIMIZERS: { label: string; dense: OptimizerConfig; sparse: OptimizerConfig }[] = [
  {
    label: "adam dense, adagrad sparse",
    dense: { adamOptimizer: { lr: 0.02 } },
    sparse: { adagradOptimizer: { lr: 0.1 } },
  },
  {
    label: "adagrad dense, adam sparse",
    dense: { adagradOptimizer: { lr: 0.05 } },
    sparse: { adamOptimizer: { lr: 0.02 } },
  },
  {
    label: "sgd dense, sgd sparse",
    dense: { sgdOptimizer: { lr: 0.05, momentum: 0 } },
    sparse: { sgdOptimizer: { lr: 0.05 } },
  },
  {
    label: "sgd dense with tzrec's default momentum 0.9",
    dense: { sgdOptimizer: { lr: 0.05 } },
    sparse: { adagradOptimizer: { lr: 0.1 } },
  },
];

for (const { label, dense, sparse } of OPTIMIZERS) {
  test(`checkpoint (${label}): save, read and load into a fresh model resumes bit for bit`, async () => {
    const config = resolveConfig(tinyConfig({ dense, sparse }));
    const batches = [1, 2, 3, 4, 5, 6, 7].map((s) => tinyBatch(s));
    const trained = new MMoEModel(config, { maxBatch: 8, seed: 3 });
    for (const batch of batches.slice(0, 4)) trained.trainStep(batch);

    await withTempDir(async (dir) => {
      const path = join(dir, "model.safetensors");
      await saveCheckpoint(path, modelCheckpoint(trained, { withOptimizer: true }));
      const resumed = new MMoEModel(config, { maxBatch: 8, seed: 41 });
      assert.notDeepEqual(snapshot(resumed), snapshot(trained));
      loadCheckpoint(resumed, await readCheckpoint(path), { withOptimizer: true });
      assert.deepEqual(snapshot(resumed), snapshot(trained));
      assert.equal(resumed.step, 4);
      for (const batch of batches.slice(4)) {
        assert.deepEqual(resumed.trainStep(batch), trained.trainStep(batch));
      }
    });
  });
}

test("checkpoint: weights only restore the next loss, not the optimizer trajectory", () => {
  const config = resolveConfig(tinyConfig());
  const batches = [1, 2, 3, 4, 5, 6].map((s) => tinyBatch(s));
  const trained = new MMoEModel(config, { maxBatch: 8, seed: 3 });
  for (const batch of batches.slice(0, 3)) trained.trainStep(batch);
  const bytes = modelCheckpoint(trained, { withOptimizer: true });

  // The default restores the optimizer state because the checkpoint has it.
  const byDefault = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  loadCheckpoint(byDefault, bytes);
  assert.deepEqual(snapshot(byDefault), snapshot(trained));

  const weightsOnly = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  loadCheckpoint(weightsOnly, bytes, { withOptimizer: false });
  assert.equal(weightsOnly.step, 0);
  assert.equal(weightsOnly.trainStep(batches[3]).total, trained.trainStep(batches[3]).total);
  // Fresh Adam moments and step 1 bias correction take a different step.
  assert.notEqual(weightsOnly.trainStep(batches[4]).total, trained.trainStep(batches[4]).total);
});

// --------------------------------------------------------------- the bytes

test("checkpoint: bytes decode to the model's tensors, names, shapes and metadata", () => {
  const config = resolveConfig(tinyConfig());
  const model = new MMoEModel(config, { maxBatch: 8, seed: 3 });
  model.trainStep(tinyBatch(1));
  model.trainStep(tinyBatch(2));
  const bytes = modelCheckpoint(model, { withOptimizer: true });
  assert.deepEqual(modelCheckpoint(model, { withOptimizer: true }), bytes); // deterministic
  const { tensors, metadata } = decodeSafetensors(bytes);

  const expected = [
    ...model.parameters,
    ...model.optimizerState().map((s) => ({ ...s, name: `optimizer.${s.name}` })),
  ];
  assert.deepEqual([...tensors.keys()].sort(), expected.map((t) => t.name).sort());
  for (const t of expected) {
    const found = tensors.get(t.name)!;
    assert.deepEqual(found.shape, t.shape, t.name);
    assert.deepEqual(Array.from(found.data), Array.from(model.view(t.offset, sizeOf(t.shape))));
  }
  assert.ok(tensors.has("embedding_group.emb_impls.__BASE__.ebc.embedding_bags.user_emb.weight"));
  assert.ok(
    tensors.has(
      "optimizer.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.user_emb.weight.sum",
    ),
  );
  assert.ok(tensors.has("optimizer._task_tower.0.linear.weight.exp_avg_sq"));
  assert.deepEqual(tensors.get("mmoe.expert_mlps.1.mlp.0.perceptron.0.weight")!.shape, [6, 9]);
  assert.equal(metadata.format, "denorec-mmoe");
  assert.equal(metadata.step, "2");
  assert.equal(metadata.optimizer, "dense adam, sparse adagrad");
  assert.match(metadata.fingerprint, /^[0-9a-f]{8}$/);

  // Without optimizer state: parameters only; copies, not views of the arena.
  const weights = decodeSafetensors(modelCheckpoint(model)).tensors;
  assert.equal(weights.size, model.parameters.length);
  const before = weights.get("_task_tower.1.linear.bias")!.data[0];
  model.trainStep(tinyBatch(3));
  assert.equal(weights.get("_task_tower.1.linear.bias")!.data[0], before);
});

test("checkpoint: BatchNorm running statistics are saved as buffers", () => {
  const model = new MMoEModel(resolveConfig(tinyConfig({ useBn: true })), { maxBatch: 8 });
  const { tensors } = decodeSafetensors(modelCheckpoint(model));
  const stem = "mmoe.expert_mlps.0.mlp.1.perceptron.1";
  assert.deepEqual(tensors.get(`${stem}.running_mean`)!.shape, [5]);
  assert.deepEqual(Array.from(tensors.get(`${stem}.running_var`)!.data), [1, 1, 1, 1, 1]);
});

test("safetensors: the encoder writes the layout the spec defines, byte for byte", () => {
  const bytes = encodeSafetensors([
    { name: "attn.0", shape: [1, 2, 3], data: Float32Array.of(0, 1, 2, 3, 4, 5) },
  ]);
  const json = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  assert.equal(json.length % 8, 0); // no padding needed for this header
  assert.deepEqual(bytes, rawSafetensors(json, f32Bytes([0, 1, 2, 3, 4, 5])));

  // A shorter name: the header is padded with spaces to a multiple of 8.
  const padded = encodeSafetensors([{ name: "a", shape: [1], data: Float32Array.of(2) }], {
    k: "v",
  });
  const header = '{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
  const spaces = " ".repeat((8 - header.length % 8) % 8);
  assert.deepEqual(padded, rawSafetensors(header + spaces, f32Bytes([2])));
  assert.equal((padded.length - 4) % 8, 0);

  // Empty: the reference serializer's `{}` padded to 8.
  assert.deepEqual(encodeSafetensors([]), rawSafetensors("{}      "));
});

test("safetensors: a hand-built file decodes (any key order, unpadded, scalar and empty)", () => {
  const header = JSON.stringify({
    "weight": { dtype: "F32", shape: [2, 2], data_offsets: [4, 20] },
    "__metadata__": { format: "pt", note: "hand-built" },
    "scalar": { dtype: "F32", shape: [], data_offsets: [0, 4] },
    "empty": { dtype: "F32", shape: [0, 3], data_offsets: [20, 20] },
  });
  const bytes = rawSafetensors(header, f32Bytes([-2.5, 1, 2, 3, 4]));
  const { tensors, metadata } = decodeSafetensors(bytes);
  assert.deepEqual(metadata, { format: "pt", note: "hand-built" });
  assert.deepEqual(tensors.get("weight")!.shape, [2, 2]);
  assert.deepEqual(Array.from(tensors.get("weight")!.data), [1, 2, 3, 4]);
  assert.deepEqual(tensors.get("scalar")!.shape, []);
  assert.deepEqual(Array.from(tensors.get("scalar")!.data), [-2.5]);
  assert.equal(tensors.get("empty")!.data.length, 0);

  // Re-encoding and decoding gives the same tensors; an unaligned input works too.
  const again = decodeSafetensors(encodeSafetensors(
    [...tensors].map(([name, t]) => ({ name, ...t })),
    metadata,
  ));
  assert.deepEqual(again, { tensors, metadata });
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  assert.deepEqual(decodeSafetensors(shifted.subarray(1)), { tensors, metadata });
});

test("safetensors: malformed input is refused with what is wrong", () => {
  const tensor = (dtype: string, shape: number[], offsets: number[]) =>
    JSON.stringify({ dtype, shape, data_offsets: offsets });
  const ok = rawSafetensors(`{"w":${tensor("F32", [2], [0, 8])}}`, f32Bytes([1, 2]));
  assert.equal(decodeSafetensors(ok).tensors.size, 1);
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty input", new Uint8Array(5), /truncated: 5 bytes, less than the 8-byte header length/],
    [
      "truncated data",
      ok.subarray(0, ok.length - 2),
      /"w": data_offsets \[0, 8\] run past the end of the 6-byte data section; truncated file\?/,
    ],
    [
      "header length past the end",
      ok.subarray(0, 20),
      /header length 54 runs past the end of the input \(20 bytes/,
    ],
    [
      "absurd header length",
      Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 1),
      /header length 72057594037927936 is over the 100000000-byte limit/,
    ],
    ["bad JSON", rawSafetensors('{"w": {'), /header is not valid JSON/],
    ["not an object", rawSafetensors("[1, 2]"), /header is not a JSON object/],
    ["bad UTF-8", rawSafetensors("{}").fill(0xff, 8), /header is not valid UTF-8/],
    [
      "F16",
      rawSafetensors(`{"w":${tensor("F16", [2], [0, 4])}}`, new Uint8Array(4)),
      /tensor "w": dtype F16 is not supported \(only F32 is\)/,
    ],
    [
      "unknown dtype",
      rawSafetensors(`{"w":${tensor("Q7", [2], [0, 4])}}`, new Uint8Array(4)),
      /tensor "w": unknown dtype "Q7" \(only F32 is supported\)/,
    ],
    [
      "overlapping offsets",
      rawSafetensors(
        `{"a":${tensor("F32", [2], [0, 8])},"b":${tensor("F32", [2], [4, 12])}}`,
        new Uint8Array(12),
      ),
      /tensors "a" \[0, 8\) and "b" \[4, 12\) overlap/,
    ],
    [
      "a gap",
      rawSafetensors(`{"a":${tensor("F32", [1], [4, 8])}}`, new Uint8Array(8)),
      /data bytes \[0, 4\) before tensor "a" belong to no tensor/,
    ],
    [
      "trailing bytes",
      rawSafetensors(`{"a":${tensor("F32", [1], [0, 4])}}`, new Uint8Array(12)),
      /8 data bytes after the last tensor belong to no tensor/,
    ],
    [
      "offsets that do not match the shape",
      rawSafetensors(`{"a":${tensor("F32", [3], [0, 8])}}`, new Uint8Array(8)),
      /"a": data_offsets \[0, 8\] hold 8 bytes, F32 shape \[3\] needs 12/,
    ],
    [
      "reversed offsets",
      rawSafetensors(`{"a":${tensor("F32", [1], [8, 4])}}`, new Uint8Array(8)),
      /"a": data_offsets \[8,4\] is not \[begin, end\] with begin <= end/,
    ],
    [
      "a negative dim",
      rawSafetensors(`{"a":${tensor("F32", [-1], [0, 4])}}`, new Uint8Array(4)),
      /"a": shape \[-1\] is not a list of sizes/,
    ],
    [
      "metadata that is not strings",
      rawSafetensors('{"__metadata__":{"step":3}}'),
      /__metadata__\.step is 3, not a string/,
    ],
  ];
  for (const [label, bytes, message] of cases) {
    assert.throws(() => decodeSafetensors(bytes), message, label);
  }
  assert.throws(
    () => encodeSafetensors([{ name: "w", shape: [2, 2], data: new Float32Array(3) }]),
    /tensor "w": shape \[2, 2\] holds 4 values, data has 3/,
  );
  assert.throws(
    () =>
      encodeSafetensors([
        { name: "w", shape: [1], data: new Float32Array(1) },
        { name: "w", shape: [1], data: new Float32Array(1) },
      ]),
    /tensor "w" appears twice/,
  );
});

// ----------------------------------------------------------------- refusals

test("checkpoint: other hidden units are refused naming each tensor and both shapes", () => {
  const wide = new MMoEModel(resolveConfig(tinyConfig({ expertUnits: [6, 5] })), { maxBatch: 8 });
  wide.trainStep(tinyBatch(1));
  const narrow = new MMoEModel(resolveConfig(tinyConfig({ expertUnits: [6, 4] })), {
    maxBatch: 8,
    seed: 2,
  });
  narrow.trainStep(tinyBatch(2));
  const before = snapshot(narrow);
  for (const withOptimizer of [false, true]) {
    const bytes = modelCheckpoint(wide, { withOptimizer });
    assert.throws(() => loadCheckpoint(narrow, bytes, { withOptimizer }), (error: Error) => {
      assert.ok(error instanceof RangeError);
      const m = error.message;
      assert.match(m, /^checkpoint does not match the model:/);
      assert.match(m, /_task_tower\.1\.linear\.weight: checkpoint shape \[1, 5\], model \[1, 4\]/);
      assert.match(
        m,
        /mmoe\.expert_mlps\.0\.mlp\.1\.perceptron\.0\.weight: checkpoint shape \[5, 6\], model \[4, 6\]/,
      );
      assert.match(
        m,
        /_task_tower\.0\.tower_mlp\.mlp\.0\.perceptron\.0\.weight: checkpoint shape \[4, 5\], model \[4, 4\]/,
      );
      assert.match(m, /fingerprint: checkpoint [0-9a-f]{8}, model [0-9a-f]{8}/);
      if (withOptimizer) {
        assert.match(
          m,
          /optimizer\._task_tower\.1\.linear\.weight\.exp_avg: checkpoint shape \[1, 5\], model \[1, 4\]/,
        );
      }
      assert.doesNotMatch(m, /missing|not in the model/);
      return true;
    });
  }
  assert.deepEqual(snapshot(narrow), before);
});

test("checkpoint: missing and unexpected tensors are named and nothing is loaded", () => {
  const config = resolveConfig(tinyConfig());
  const source = new MMoEModel(config, { maxBatch: 8, seed: 1 });
  source.trainStep(tinyBatch(1));
  const { tensors, metadata } = decodeSafetensors(modelCheckpoint(source, { withOptimizer: true }));
  tensors.delete("mmoe.gate_finals.0.bias");
  tensors.delete(
    "optimizer.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.tags_emb.weight.sum",
  );
  tensors.set("mmoe.gate_finals.2.bias", { shape: [2], data: new Float32Array(2) });
  const edited = encodeSafetensors([...tensors].map(([name, t]) => ({ name, ...t })), metadata);

  const target = new MMoEModel(config, { maxBatch: 8, seed: 2 });
  const before = snapshot(target);
  assert.throws(
    () => loadCheckpoint(target, edited),
    (error: Error) =>
      error instanceof RangeError &&
      error.message.includes(
        "missing from the checkpoint: mmoe.gate_finals.0.bias, " +
          "optimizer.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.tags_emb.weight.sum",
      ) &&
      error.message.includes("not in the model: mmoe.gate_finals.2.bias") &&
      !error.message.includes("fingerprint"),
  );
  // Weights only: the optimizer tensors are ignored, the parameter problems remain.
  assert.throws(
    () => loadCheckpoint(target, edited, { withOptimizer: false }),
    /missing from the checkpoint: mmoe\.gate_finals\.0\.bias\n {2}not in the model: mmoe\.gate_finals\.2\.bias$/,
  );
  assert.throws(
    () => loadCheckpoint(target, modelCheckpoint(source), { withOptimizer: true }),
    /no optimizer state in the checkpoint \(saved without withOptimizer\)/,
  );
  const adagrad = new MMoEModel(
    resolveConfig(tinyConfig({ dense: { adagradOptimizer: { lr: 0.1 } } })),
    { maxBatch: 8 },
  );
  assert.throws(
    () => loadCheckpoint(target, modelCheckpoint(adagrad, { withOptimizer: true })),
    /optimizer: checkpoint dense adagrad, sparse adagrad, model dense adam, sparse adagrad/,
  );
  assert.throws(
    () => loadCheckpoint(target, encodeSafetensors([], { format: "gguf" })),
    /checkpoint format is "gguf", expected "denorec-mmoe"/,
  );
  assert.throws(() => loadCheckpoint(target, edited.subarray(0, 100)), /runs past the end/);
  const noStep = encodeSafetensors([], { format: "denorec-mmoe", with_optimizer: "true" });
  assert.throws(() => loadCheckpoint(target, noStep), /metadata step null is not a step count/);
  assert.deepEqual(snapshot(target), before);

  // A plain state_dict file (no metadata) with the right names and shapes loads.
  const plain = decodeSafetensors(modelCheckpoint(source)).tensors;
  loadCheckpoint(target, encodeSafetensors([...plain].map(([name, t]) => ({ name, ...t }))));
  assert.deepEqual(Array.from(target.parameter("mmoe.gate_finals.1.weight")), [
    ...source.parameter("mmoe.gate_finals.1.weight"),
  ]);
  assert.equal(target.step, 0);
});

// -------------------------------------------------------------------- files

test("saveCheckpoint: replaces an existing file and leaves no temporary file", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "model.safetensors");
    await writeFile(path, "old");
    await saveCheckpoint(path, Uint8Array.of(1, 2, 3));
    assert.deepEqual(await readCheckpoint(path), Uint8Array.of(1, 2, 3));
    await saveCheckpoint(path, new Uint8Array(0));
    assert.deepEqual(await readCheckpoint(path), new Uint8Array(0));
    assert.deepEqual(await readdir(dir), ["model.safetensors"]);
  });
});

test("saveCheckpoint: a failed save names the path, keeps the old file and cleans up", async () => {
  await withTempDir(async (dir) => {
    const old = join(dir, "model.safetensors");
    await writeFile(old, "old checkpoint");

    // The directory does not exist: nothing is created anywhere.
    const nowhere = join(dir, "missing", "model.safetensors");
    await assert.rejects(
      saveCheckpoint(nowhere, Uint8Array.of(1)),
      (error: Error) => error.message.startsWith(`saving checkpoint ${nowhere}:`),
    );

    // The target is a non-empty directory: the temporary file is written and
    // fsynced, then the rename fails; the temporary file must go.
    const occupied = join(dir, "occupied");
    await mkdir(occupied);
    await writeFile(join(occupied, "keep"), "kept");
    await assert.rejects(
      saveCheckpoint(occupied, Uint8Array.of(1, 2)),
      (error: Error) => error.message.startsWith(`saving checkpoint ${occupied}:`),
    );
    assert.deepEqual((await readdir(dir)).sort(), ["model.safetensors", "occupied"]);
    assert.deepEqual(await readdir(occupied), ["keep"]);
    assert.equal(await readFile(old, "utf8"), "old checkpoint");
  });
});

const isRoot = process.getuid?.() === 0;

test(
  "saveCheckpoint: a read-only directory refuses the save and the old file stays",
  { skip: isRoot ? "root ignores directory permissions" : false },
  async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, "model.safetensors");
      await writeFile(path, "old checkpoint");
      await chmod(dir, 0o555);
      await assert.rejects(saveCheckpoint(path, Uint8Array.of(1)), /saving checkpoint/);
      await chmod(dir, 0o755);
      assert.deepEqual(await readdir(dir), ["model.safetensors"]);
      assert.equal(await readFile(path, "utf8"), "old checkpoint");
    });
  },
);

test("checkpoint: decoding a Node Buffer (readFileSync) gives tensors of their own size", () => {
  const bytes = encodeSafetensors([
    { name: "a", shape: [2], data: Float32Array.of(1, 2) },
    { name: "b", shape: [3], data: Float32Array.of(3, 4, 5) },
  ]);
  const { tensors } = decodeSafetensors(Buffer.from(bytes));
  assert.deepEqual(Array.from(tensors.get("a")!.data), [1, 2]);
  assert.deepEqual(Array.from(tensors.get("b")!.data), [3, 4, 5]);
});

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
  latestCheckpoint,
  loadCheckpoint,
  modelCheckpoint,
  readCheckpoint,
  readCheckpointState,
  restoreCheckpoint,
  saveCheckpoint,
  saveTrainingCheckpoint,
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

/** Little-endian i64 bytes. */
function i64Bytes(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return out;
}

/**
 * A state_dict file as another tool writes it (no metadata, no checksums):
 * `entries` in order, each F32 or I64.
 */
function foreignSafetensors(
  entries: { name: string; dtype: "F32" | "I64"; shape: number[]; values: number[] }[],
): Uint8Array {
  const header: Record<string, unknown> = {};
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const e of entries) {
    const bytes = e.dtype === "F32" ? f32Bytes(e.values) : i64Bytes(e.values);
    header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [at, at + bytes.length] };
    parts.push(bytes);
    at += bytes.length;
  }
  const data = new Uint8Array(at);
  let offset = 0;
  for (const part of parts) data.set(part, offset), offset += part.length;
  return rawSafetensors(JSON.stringify(header), data);
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
  // Checksums from Python: format(zlib.crc32(data), "08x") of the f32 bytes, and of
  // json.dumps([[[key, value], ...], [[name, dtype, shape], ...]], separators=(",", ":"))
  // for header_crc32 (metadata but header_crc32 sorted by key, tensors by name).
  const bytes = encodeSafetensors([
    { name: "attn.0", shape: [1, 2, 3], data: Float32Array.of(0, 1, 2, 3, 4, 5) },
  ]);
  const json =
    '{"__metadata__":{"crc32":"{\\"attn.0\\":\\"91e79017\\"}","header_crc32":"f1e8b633"},' +
    '"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  const pad = (header: string) => header + " ".repeat((8 - header.length % 8) % 8);
  assert.deepEqual(bytes, rawSafetensors(pad(json), f32Bytes([0, 1, 2, 3, 4, 5])));

  // The header is padded with spaces to a multiple of 8; given metadata is kept.
  const padded = encodeSafetensors([{ name: "a", shape: [1], data: Float32Array.of(2) }], {
    k: "v",
  });
  const header = '{"__metadata__":{"crc32":"{\\"a\\":\\"57989e8c\\"}","header_crc32":"61a6a86e",' +
    '"k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
  assert.deepEqual(padded, rawSafetensors(pad(header), f32Bytes([2])));
  assert.equal((padded.length - 4) % 8, 0);

  // Empty: metadata only.
  const empty = '{"__metadata__":{"crc32":"{}","header_crc32":"be122726"}}';
  assert.deepEqual(encodeSafetensors([]), rawSafetensors(pad(empty)));
  // The CRC is zlib's: the CRC-32 check value of "123456789" is cbf43926.
  const check = encodeSafetensors([
    { name: "x", shape: [], data: new Float32Array(new TextEncoder().encode("1234").buffer) },
  ]);
  assert.equal(decodeSafetensors(check).checksums, true);
  assert.match(new TextDecoder().decode(check), /\{\\"x\\":\\"9be3e0a3\\"\}/); // zlib.crc32(b"1234")
  // 1028 bytes: 16-byte blocks and a tail, read at every alignment.
  const values = Float32Array.from({ length: 257 }, (_, i) => ((i * 7919) % 1000) / 7 - 60);
  const big = encodeSafetensors([{ name: "big", shape: [257], data: values }]);
  assert.match(new TextDecoder().decode(big), /\{\\"big\\":\\"302ec3ff\\"\}/);
  for (let shift = 0; shift < 4; shift++) {
    const copy = new Uint8Array(big.length + shift);
    copy.set(big, shift);
    const { tensors, checksums } = decodeSafetensors(copy.subarray(shift));
    assert.equal(checksums, true, `shift ${shift}`);
    assert.deepEqual(tensors.get("big")!.data, values);
  }
});

test("safetensors: a hand-built file decodes (any key order, unpadded, scalar and empty)", () => {
  const header = JSON.stringify({
    "weight": { dtype: "F32", shape: [2, 2], data_offsets: [4, 20] },
    "__metadata__": { format: "pt", note: "hand-built" },
    "scalar": { dtype: "F32", shape: [], data_offsets: [0, 4] },
    "empty": { dtype: "F32", shape: [0, 3], data_offsets: [20, 20] },
  });
  const bytes = rawSafetensors(header, f32Bytes([-2.5, 1, 2, 3, 4]));
  const { tensors, metadata, checksums } = decodeSafetensors(bytes);
  assert.deepEqual(metadata, { format: "pt", note: "hand-built" });
  assert.equal(checksums, false); // written by another tool: loads unchecked
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
  assert.deepEqual(again, { tensors, metadata, checksums: true });
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  assert.deepEqual(decodeSafetensors(shifted.subarray(1)), { tensors, metadata, checksums });
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
      /tensor "w": dtype F16 is not supported \(only F32 and I64 are\)/,
    ],
    [
      "unknown dtype",
      rawSafetensors(`{"w":${tensor("Q7", [2], [0, 4])}}`, new Uint8Array(4)),
      /tensor "w": unknown dtype "Q7" \(only F32 and I64 are supported\)/,
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
      assert.match(m, /^checkpoint does not match the model:/); // bytes of no file: no name
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
    /missing from the checkpoint: mmoe\.gate_finals\.0\.bias; not in the model: mmoe\.gate_finals\.2\.bias$/,
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

// ------------------------------------------------------- tzrec's state_dict

/** The model's parameters and buffers as a foreign state_dict file, integral tensors as I64. */
function stateDictFile(model: MMoEModel, prefix: string) {
  const entries = model.parameters.map((p) => {
    const values = Array.from(model.view(p.offset, sizeOf(p.shape)));
    const dtype = values.every(Number.isInteger) ? "I64" as const : "F32" as const;
    return { name: prefix + p.name, dtype, shape: p.shape, values };
  });
  return { entries, bytes: foreignSafetensors(entries) };
}

const parameterValues = (model: MMoEModel) =>
  model.parameters.map((p) => Array.from(model.view(p.offset, sizeOf(p.shape))));

test("tzrec state_dict: names with or without the model. prefix and I64 tensors load as they are", () => {
  // An untrained BatchNorm model: its running stats and affine parameters are
  // whole numbers, written as I64 as torch stores num_batches_tracked.
  const config = resolveConfig(tinyConfig({ useBn: true }));
  const source = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  for (const prefix of ["model.", ""]) {
    const { entries, bytes } = stateDictFile(source, prefix);
    assert.ok(entries.some((e) => e.dtype === "I64") && entries.some((e) => e.dtype === "F32"));
    const target = new MMoEModel(config, { maxBatch: 8, seed: 6 });
    assert.notDeepEqual(parameterValues(target), parameterValues(source));
    loadCheckpoint(target, bytes);
    assert.deepEqual(parameterValues(target), parameterValues(source), `prefix "${prefix}"`);
    assert.equal(target.step, 0);
    // The same outputs: the forward reads what was loaded.
    const batch = tinyBatch(3);
    assert.deepEqual(target.evalStep(batch), source.evalStep(batch));
  }
  // Both spellings of one name are ambiguous.
  const { entries } = stateDictFile(source, "model.");
  const both = foreignSafetensors([...entries, { ...entries[0], name: entries[0].name.slice(6) }]);
  assert.throws(
    () => loadCheckpoint(new MMoEModel(config, { maxBatch: 8 }), both),
    new RegExp(`both ${entries[0].name.slice(6).replaceAll(".", "\\.")} and model\\.`),
  );
});

test("safetensors: I64 values become the nearest float (a step counter past 2^24 rounds)", () => {
  const bytes = foreignSafetensors([
    { name: "bn.num_batches_tracked", dtype: "I64", shape: [], values: [16_777_217] },
    { name: "counts", dtype: "I64", shape: [3], values: [-5, 0, 2 ** 40] },
  ]);
  const { tensors } = decodeSafetensors(bytes);
  assert.deepEqual(Array.from(tensors.get("bn.num_batches_tracked")!.data), [16_777_216]);
  assert.deepEqual(Array.from(tensors.get("counts")!.data), [-5, 0, 2 ** 40]);
  assert.throws(
    () =>
      decodeSafetensors(rawSafetensors(
        '{"c":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}}',
        new Uint8Array(8),
      )),
    /tensor "c": data_offsets \[0, 8\] hold 8 bytes, I64 shape \[2\] needs 16/,
  );
});

test("tzrec state_dict: a table missing, extra or of another shape is named with the file", async () => {
  const config = resolveConfig(tinyConfig());
  const source = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  const table = source.parameters.find((p) => p.kind === "embedding")!;
  const { entries } = stateDictFile(source, "model.");
  const cases: [string, typeof entries, RegExp][] = [
    [
      "missing",
      entries.filter((e) => e.name !== `model.${table.name}`),
      new RegExp(`missing from the checkpoint: ${table.name.replaceAll(".", "\\.")}$`, "m"),
    ],
    [
      "extra",
      [...entries, {
        name: "model.embedding_group.extra_emb.weight",
        dtype: "F32",
        shape: [1, 4],
        values: [0, 0, 0, 0],
      }],
      /not in the model: model\.embedding_group\.extra_emb\.weight$/m,
    ],
    [
      "wrong shape",
      entries.map((e) =>
        e.name === `model.${table.name}`
          ? {
            ...e,
            shape: [table.shape[0] - 1, table.shape[1]],
            values: e.values.slice(table.shape[1]),
          }
          : e
      ),
      new RegExp(
        `model\\.${table.name.replaceAll(".", "\\.")}: checkpoint shape \\[${table.shape[0] - 1}, ${
          table.shape[1]
        }\\], model \\[${table.shape.join(", ")}\\]`,
      ),
    ],
  ];
  await withTempDir(async (dir) => {
    const path = join(dir, "tzrec.safetensors");
    for (const [label, list, message] of cases) {
      await saveCheckpoint(path, foreignSafetensors(list));
      const target = new MMoEModel(config, { maxBatch: 8, seed: 6 });
      const before = parameterValues(target);
      const bytes = await readCheckpoint(path); // errors name the file it came from
      assert.throws(() => loadCheckpoint(target, bytes), message, label);
      assert.throws(
        () => loadCheckpoint(target, bytes),
        (error: Error) =>
          error instanceof RangeError &&
          error.message.startsWith(`${path}: checkpoint does not match the model:`),
        label,
      );
      assert.deepEqual(parameterValues(target), before, `${label}: nothing loaded`);
    }
  });
});

// ---------------------------------------------------------------- checksums

/** The file with its JSON header edited (data section unchanged), as a lying writer would. */
function withHeader(
  bytes: Uint8Array,
  edit: (header: Record<string, unknown>) => void,
): Uint8Array {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length)));
  edit(header);
  return rawSafetensors(JSON.stringify(header), bytes.subarray(8 + length));
}

type Entry = { dtype: string; shape: number[]; data_offsets: [number, number] };

test("checksums: a flipped bit, swapped same-shape tensors or an edited header are refused", () => {
  const config = resolveConfig(tinyConfig());
  const source = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  source.trainStep(tinyBatch(1));
  const bytes = modelCheckpoint(source, { withOptimizer: true });
  const { tensors } = decodeSafetensors(bytes);
  const target = new MMoEModel(config, { maxBatch: 8, seed: 6 });
  const before = snapshot(target);
  const load = (b: Uint8Array) => loadCheckpoint(target, b, { source: "ckpt.safetensors" });

  // One bit of one weight.
  const name = "mmoe.expert_mlps.1.mlp.0.perceptron.0.weight";
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const info = (withHeaderInfo(bytes)[name]) as Entry;
  const flipped = bytes.slice();
  flipped[8 + length + info.data_offsets[0] + 5] ^= 0x10;
  assert.throws(
    () => load(flipped),
    new RegExp(
      `^RangeError: ckpt\\.safetensors: tensor "${name.replaceAll(".", "\\.")}": ` +
        'checksum mismatch \\(stored "[0-9a-f]{8}", data [0-9a-f]{8}\\): the file is corrupt',
    ),
  );

  // Two tensors of one shape whose bytes were swapped in the header.
  const [a, b] = ["mmoe.gate_finals.0.weight", "mmoe.gate_finals.1.weight"];
  assert.deepEqual(tensors.get(a)!.shape, tensors.get(b)!.shape);
  const swapped = withHeader(bytes, (h) => {
    const [ea, eb] = [h[a] as Entry, h[b] as Entry];
    [ea.data_offsets, eb.data_offsets] = [eb.data_offsets, ea.data_offsets];
  });
  assert.throws(() => load(swapped), /tensor "mmoe\.gate_finals\.[01]\.weight": checksum mismatch/);

  // The step count edited in the metadata.
  const stepEdited = withHeader(bytes, (h) => {
    (h.__metadata__ as Record<string, string>).step = "7";
  });
  assert.throws(() => load(stepEdited), /^RangeError: ckpt\.safetensors: header checksum mismatch/);
  // A shape transposed (same byte count) and a dtype relabelled.
  const transposed = withHeader(bytes, (h) => {
    (h[name] as Entry).shape.reverse();
  });
  assert.throws(() => load(transposed), /header checksum mismatch/);
  assert.deepEqual(snapshot(target), before);

  // Without the checksums (a file as another tool writes it) the same edit is
  // only caught when it contradicts the model: a transposed shape is, a swap of
  // same-shape tensors is not (nothing can tell).
  const unchecked = (h: Record<string, unknown>) => {
    const meta = h.__metadata__ as Record<string, string>;
    delete meta.crc32;
    delete meta.header_crc32;
  };
  assert.equal(decodeSafetensors(withHeader(bytes, unchecked)).checksums, false);
  assert.throws(
    () =>
      load(withHeader(bytes, (h) => {
        unchecked(h);
        (h[name] as Entry).shape.reverse();
      })),
    /checkpoint shape \[9, 6\], model \[6, 9\]/,
  );
  load(withHeader(bytes, unchecked));
  assert.deepEqual(snapshot(target), snapshot(source));
});

/** The tensor entries of a file's header. */
function withHeaderInfo(bytes: Uint8Array): Record<string, unknown> {
  let header: Record<string, unknown> = {};
  withHeader(bytes, (h) => (header = h));
  return header;
}

test("checkpoint: NaN or infinite weights are refused naming the tensor and the file", async () => {
  const config = resolveConfig(tinyConfig());
  const source = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  source.trainStep(tinyBatch(1));
  const decoded = decodeSafetensors(modelCheckpoint(source, { withOptimizer: true }));
  const poisoned = new Map(decoded.tensors);
  const weight = poisoned.get("_task_tower.1.linear.weight")!;
  poisoned.set("_task_tower.1.linear.weight", {
    ...weight,
    data: weight.data.map((v, i) => i === 2 ? NaN : v),
  });
  const sum = poisoned.get(
    "optimizer.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.user_emb.weight.sum",
  )!;
  poisoned.set(
    "optimizer.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.user_emb.weight.sum",
    {
      ...sum,
      data: sum.data.map((v, i) => i === 5 ? Infinity : v),
    },
  );
  // encodeSafetensors is a codec: it writes what it is given, checksums included.
  const bytes = encodeSafetensors(
    [...poisoned].map(([name, t]) => ({ name, ...t })),
    decoded.metadata,
  );
  await withTempDir(async (dir) => {
    const path = join(dir, "diverged.safetensors");
    await saveCheckpoint(path, bytes);
    const target = new MMoEModel(config, { maxBatch: 8, seed: 6 });
    const before = snapshot(target);
    const read = await readCheckpoint(path);
    assert.throws(
      () => loadCheckpoint(target, read),
      (error: Error) =>
        error.message.startsWith(`${path}: checkpoint does not match the model:`) &&
        error.message.includes(
          "NaN or infinity (a diverged model) in _task_tower.1.linear.weight (NaN at index 2), " +
            "optimizer.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.user_emb.weight.sum (Infinity at index 5)",
        ),
    );
    // Weights only: the optimizer state is not read, the weight still refuses.
    assert.throws(
      () => loadCheckpoint(target, read, { withOptimizer: false }),
      /in _task_tower\.1\.linear\.weight \(NaN at index 2\)$/,
    );
    assert.deepEqual(snapshot(target), before);
  });
  // And a diverged model is never written.
  source.view(source.optimizerState()[0].offset, 1)[0] = -Infinity;
  assert.throws(
    () => modelCheckpoint(source, { withOptimizer: true }),
    /not saving a diverged model: tensor "optimizer\.[^"]+" holds -Infinity at index 0 \(step 1\)/,
  );
  assert.doesNotThrow(() => modelCheckpoint(source)); // the parameters are finite
});

// ------------------------------------------------------- training checkpoints

test("training checkpoints: tzrec's model.ckpt-<step> layout, numeric latest, keep_checkpoint_max", async () => {
  const config = resolveConfig(tinyConfig());
  const model = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  await withTempDir(async (dir) => {
    assert.equal(await latestCheckpoint(dir), null);
    const saved: string[] = [];
    for (let i = 1; i <= 12; i++) {
      model.trainStep(tinyBatch(i));
      saved.push(
        await saveTrainingCheckpoint(dir, model, {
          position: { epoch: 1 + Math.floor(i / 5), batchesInEpoch: i % 5 },
          seed: 5,
          keepCheckpointMax: 3,
        }),
      );
    }
    // tzrec names a checkpoint by its 0-based step: after 12 steps, model.ckpt-11.
    assert.equal(saved[11], join(dir, "model.ckpt-11"));
    assert.deepEqual((await readdir(dir)).sort(), [
      "model.ckpt-10",
      "model.ckpt-11",
      "model.ckpt-9",
    ]);
    assert.deepEqual((await readdir(saved[11])).sort(), [
      "model.safetensors",
      "optimizer.safetensors",
    ]);
    // Numeric order: model.ckpt-9 sorts after model.ckpt-11 as text.
    assert.equal(await latestCheckpoint(dir), saved[11]);
    assert.deepEqual(await readCheckpointState(saved[11]), {
      step: 12,
      training: { position: { epoch: 3, batchesInEpoch: 2 }, seed: 5 },
    });
    // Things that are not checkpoint directories are not candidates.
    await writeFile(join(dir, "model.ckpt-99"), "a file");
    await mkdir(join(dir, "model.ckpt-1x"));
    assert.equal(await latestCheckpoint(dir), saved[11]);

    const resumed = new MMoEModel(config, { maxBatch: 8, seed: 5 });
    assert.deepEqual(await restoreCheckpoint(resumed, saved[11]), {
      step: 12,
      training: { position: { epoch: 3, batchesInEpoch: 2 }, seed: 5 },
    });
    assert.deepEqual(snapshot(resumed), snapshot(model));

    // keep_checkpoint_max 0 keeps every checkpoint.
    model.trainStep(tinyBatch(13));
    await saveTrainingCheckpoint(dir, model, {
      position: { epoch: 3, batchesInEpoch: 3 },
      seed: 5,
    });
    assert.equal((await readdir(dir)).filter((e) => /^model\.ckpt-\d+$/.test(e)).length, 5);
  });
});

test("training checkpoints: temporary directories of a killed save go at the next save", async () => {
  const config = resolveConfig(tinyConfig());
  const model = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  model.trainStep(tinyBatch(1));
  await withTempDir(async (dir) => {
    // What kill -9 leaves: a half-written checkpoint directory under its
    // temporary name, and a half-written model.safetensors temporary file.
    await mkdir(join(dir, ".model.ckpt-7.0badf00d.tmp"));
    await writeFile(join(dir, ".model.ckpt-7.0badf00d.tmp", "model.safetensors"), "torn");
    await writeFile(join(dir, ".model.safetensors.deadbeef.tmp"), "torn");
    await writeFile(join(dir, ".model.safetensors.keep.tmp"), "not ours"); // another pattern
    assert.equal(await latestCheckpoint(dir), null); // temporaries are never candidates
    await saveTrainingCheckpoint(dir, model, {
      position: { epoch: 1, batchesInEpoch: 1 },
      seed: 0,
    });
    await saveCheckpoint(join(dir, "model.safetensors"), modelCheckpoint(model));
    assert.deepEqual((await readdir(dir)).sort(), [
      ".model.safetensors.keep.tmp",
      "model.ckpt-0",
      "model.safetensors",
    ]);
    // The exported model.safetensors is found when no model.ckpt-* is left.
    await rm(join(dir, "model.ckpt-0"), { recursive: true });
    assert.equal(await latestCheckpoint(dir), dir);
    assert.deepEqual(await readCheckpointState(dir), { step: 0, training: null });
  });
});

test("training checkpoints: a diverged model, mixed files and a file as model_dir are refused", async () => {
  const config = resolveConfig(tinyConfig());
  const model = new MMoEModel(config, { maxBatch: 8, seed: 5 });
  model.trainStep(tinyBatch(1));
  await withTempDir(async (dir) => {
    const first = await saveTrainingCheckpoint(dir, model, {
      position: { epoch: 1, batchesInEpoch: 1 },
      seed: 5,
    });
    model.trainStep(tinyBatch(2));
    const second = await saveTrainingCheckpoint(dir, model, {
      position: { epoch: 1, batchesInEpoch: 2 },
      seed: 5,
    });
    // A model file of step 1 beside an optimizer file of step 2.
    await writeFile(
      join(second, "model.safetensors"),
      await readFile(join(first, "model.safetensors")),
    );
    await assert.rejects(
      restoreCheckpoint(new MMoEModel(config, { maxBatch: 8 }), second),
      /the model file is of step 1, the optimizer file of step 2/,
    );
    // NaN in the model: nothing is written, the latest stays the last good one.
    model.trainStep(tinyBatch(3));
    model.parameter("mmoe.gate_finals.0.bias")[0] = NaN;
    await assert.rejects(
      saveTrainingCheckpoint(dir, model, { position: { epoch: 1, batchesInEpoch: 3 }, seed: 5 }),
      /not saving a diverged model: tensor "mmoe\.gate_finals\.0\.bias" holds NaN at index 0 \(step 3\)/,
    );
    assert.deepEqual((await readdir(dir)).sort(), ["model.ckpt-0", "model.ckpt-1"]);
    await assert.rejects(
      restoreCheckpoint(new MMoEModel(config, { maxBatch: 8 }), join(dir, "nothing")),
      /nothing: no model\.safetensors \(not a checkpoint directory\)/,
    );
    const file = join(dir, "model_dir_file");
    await writeFile(file, "");
    await assert.rejects(
      latestCheckpoint(file),
      /model_dir .*model_dir_file is a file, not a directory/,
    );
  });
});

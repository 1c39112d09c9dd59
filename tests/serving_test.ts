// Serving artifacts (src/io/serving.ts): int8 quantization against the fbgemm
// reference fixture (tools/make_int8_fixture.py, checked against PyTorch's
// rowwise prepack), f32 artifacts scoring bit for bit as the checkpoint does,
// int8 artifacts scoring as the dequantized tables do, the parameter block,
// and every way a file can be wrong naming the file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { FeatureEncoder } from "../src/data/features.ts";
import { loadCheckpoint, modelCheckpoint } from "../src/io/checkpoint.ts";
import {
  decodeServingHeader,
  quantizeRowsInt8,
  servingArtifact,
  servingTensors,
} from "../src/io/serving.ts";
import { MMoEModel, planModel } from "../src/model/mmoe.ts";
import { Predictor, readPredictor } from "../src/serve/inference.ts";
import type { RawRecord } from "../src/core/records.ts";
import { assertClose, rng, VARIANTS } from "./_util.ts";
import { xxhash32Twin } from "./twins/checksum.ts";

const FIXTURE = JSON.parse(
  readFileSync(new URL("./fixtures/int8_rowwise.json", import.meta.url), "utf8"),
) as {
  cases: {
    name: string;
    rows: number;
    dim: number;
    table: number[];
    q: number[];
    scale_f16_bits: number[];
    bias_f16_bits: number[];
  }[];
};

test("quantizeRowsInt8 equals fbgemm's 8-bit rowwise SBHalf quantization (fixture)", () => {
  for (const c of FIXTURE.cases) {
    const q = new Uint8Array(c.rows * c.dim), scaleBias = new Float16Array(2 * c.rows);
    quantizeRowsInt8(q, scaleBias, Float32Array.from(c.table), c.rows, c.dim);
    const bits = new Uint16Array(scaleBias.buffer);
    for (let r = 0; r < c.rows; r++) {
      const at = `${c.name} row ${r}`;
      assert.equal(bits[2 * r], c.scale_f16_bits[r], `${at}: scale`);
      assert.equal(bits[2 * r + 1], c.bias_f16_bits[r], `${at}: bias`);
      assert.deepEqual(
        Array.from(q.subarray(r * c.dim, (r + 1) * c.dim)),
        c.q.slice(r * c.dim, (r + 1) * c.dim),
        `${at}: values`,
      );
    }
  }
});

/** Every feature kind, a multi-value mean-pooled table, BatchNorm, and a tower with two losses. */
const CONFIG_TEXT = `
data_config { batch_size: 16 label_fields: ["clk", "buy"] fg_mode: FG_DAG }
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 300 embedding_dim: 16 } }
feature_configs { id_feature { feature_name: "item" expression: "item:item" hash_bucket_size: 200 embedding_dim: 16 } }
feature_configs { id_feature { feature_name: "tags" expression: "item:tags" num_buckets: 50 embedding_dim: 5 separator: "|" pooling: "mean" } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" boundaries: [1, 5, 10] embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "score" expression: "item:score" } }
model_config {
  feature_groups { group_name: "all" feature_names: ["user_id", "item", "tags", "price", "score"] group_type: DEEP }
  mmoe {
    expert_mlp { hidden_units: [16, 8] use_bn: true }
    num_expert: 3
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [8] } losses { binary_cross_entropy {} } }
    task_towers {
      tower_name: "cvr" label_name: "buy"
      losses { binary_cross_entropy {} }
      losses { l2_loss {} }
    }
  }
}
`;
const PIPELINE = parsePipelineConfig(CONFIG_TEXT);
const CONFIG = resolveConfig(PIPELINE);
const OUTPUTS = ["logits_ctr", "probs_ctr", "logits_cvr", "probs_cvr", "y_cvr"];

function records(count: number, seed: number, labels = false): RawRecord[] {
  const next = rng(seed);
  return Array.from({ length: count }, (_, i) => {
    const record: RawRecord = {
      user_id: Math.floor(next() * 300),
      item: `item-${Math.floor(next() * 5000)}`,
      tags: Array.from({ length: i % 4 }, () => Math.floor(next() * 50)),
      price: i % 5 === 4 ? null : Math.round(next() * 1500) / 100,
      score: next() * 2 - 1,
    };
    if (labels) Object.assign(record, { clk: next() < 0.4 ? 1 : 0, buy: next() < 0.2 ? 1 : 0 });
    return record;
  });
}

/** A model trained a few steps (with BatchNorm statistics and counters that moved). */
function trained(variant?: (typeof VARIANTS)[number]): MMoEModel {
  const model = new MMoEModel(CONFIG, { maxBatch: 16, seed: 4, variant, threads: 1 });
  const encoder = new FeatureEncoder(CONFIG);
  for (let step = 0; step < 8; step++) {
    const rows = records(16, 50 + step, true);
    model.trainStep(encoder.encode(rows.map((record, i) => ({ record, location: `row ${i}` }))));
  }
  return model;
}

const MODEL = trained();
const ROWS = records(37, 3);

for (const variant of VARIANTS) {
  test(`serving ${variant}: an f32 artifact scores bit for bit as the checkpoint does, every loss's output`, () => {
    const model = trained(variant);
    const artifact = servingArtifact(model, PIPELINE);
    const fromArtifact = new Predictor(artifact, { maxBatch: 16, variant });
    const fromCheckpoint = new Predictor(PIPELINE, modelCheckpoint(model), {
      maxBatch: 16,
      variant,
    });
    assert.deepEqual(fromArtifact.outputs, OUTPUTS);
    const scores = fromArtifact.predict(ROWS);
    assert.deepEqual(scores, fromCheckpoint.predict(ROWS));
    // The l2 loss's output is the cvr tower's logit, as tzrec's RankModel names it.
    assert.deepEqual(scores.y_cvr, scores.logits_cvr);
    assert.ok(new Set(scores.probs_ctr).size > 30);
  });
}

test("serving: the artifact does not depend on the model it is made from (training or inference)", () => {
  const inference = new MMoEModel(CONFIG, { maxBatch: 3, inference: true, initialize: false });
  loadCheckpoint(inference, modelCheckpoint(MODEL));
  assert.deepEqual(servingArtifact(inference, PIPELINE), servingArtifact(MODEL, PIPELINE));
  assert.deepEqual(
    servingArtifact(inference, PIPELINE, { embeddings: "int8" }),
    servingArtifact(MODEL, PIPELINE, { embeddings: "int8" }),
  );
});

test("serving: the parameter block is every parameter and buffer, first, in any plan", () => {
  const { gemmWorkspaceBytes, gemmPackedBBytes } = MODEL.kernels;
  for (const embeddings of ["f32", "int8"] as const) {
    const plans = [
      planModel(CONFIG, {
        maxBatch: 7,
        idsPerRow: 2,
        training: false,
        threads: 1,
        gemmWorkspaceBytes,
        gemmPackedBBytes,
        embeddings,
      }),
      planModel(CONFIG, {
        maxBatch: 300,
        idsPerRow: 9,
        training: false,
        threads: 2,
        gemmWorkspaceBytes,
        gemmPackedBBytes,
        embeddings,
      }),
    ];
    if (embeddings === "f32") {
      plans.push(
        planModel(CONFIG, {
          maxBatch: 16,
          idsPerRow: 4,
          training: true,
          threads: 1,
          gemmWorkspaceBytes,
          gemmPackedBBytes,
        }),
      );
    }
    for (const plan of plans) {
      assert.deepEqual(servingTensors(plan), servingTensors(plans[0]));
      const { offset, bytes } = plan.parameters;
      assert.equal(offset, Math.min(...plan.regions.map((r) => r.offset)));
      for (const r of plan.regions) {
        const parameter = ["dense", "embedding", "buffer", "counter"].includes(r.kind);
        const inside = r.offset >= offset && r.offset < offset + bytes;
        assert.equal(inside, parameter, `${r.name} (${r.kind}) at ${r.offset}`);
      }
    }
  }
});

/** The f32 values of the int8 tables of `artifact`: scale * q + bias per row. */
function dequantized(artifact: Uint8Array): Map<string, Float32Array> {
  const { header, dataStart } = decodeServingHeader(artifact);
  const at = (offset: number) => artifact.byteOffset + dataStart + offset;
  const tables = new Map<string, Float32Array>();
  for (const t of header.tensors) {
    if (t.dtype !== "u8") continue;
    const [rows, dim] = t.shape;
    const pairs = header.tensors.find((p) => p.name === t.name + "_qscaleshift")!;
    const q = new Uint8Array(artifact.buffer, at(t.offset), rows * dim);
    const scaleBias = new Float16Array(
      artifact.buffer.slice(at(pairs.offset), at(pairs.offset) + 4 * rows),
    );
    const values = new Float32Array(rows * dim);
    for (let i = 0; i < values.length; i++) {
      const r = Math.floor(i / dim);
      values[i] = scaleBias[2 * r] * q[i] + scaleBias[2 * r + 1];
    }
    tables.set(t.name, values);
  }
  return tables;
}

for (const variant of VARIANTS) {
  test(`serving ${variant}: an int8 artifact scores as the f32 model with its dequantized tables`, () => {
    const artifact = servingArtifact(MODEL, PIPELINE, { embeddings: "int8" });
    const int8 = new Predictor(artifact, { maxBatch: 16, variant });
    assert.equal(int8.model.plan.embeddings, "int8");
    // The same model, f32, with every table replaced by its dequantized values.
    const reference = new Predictor(PIPELINE, modelCheckpoint(MODEL), { maxBatch: 16, variant });
    for (const [name, values] of dequantized(artifact)) reference.model.parameter(name).set(values);
    const scores = int8.predict(ROWS), expected = reference.predict(ROWS);
    for (const name of OUTPUTS) {
      assertClose(scores[name], expected[name], name, { rtol: 1e-5, atol: 1e-6 });
    }
    // And close to the f32 model itself: the tables moved by at most half a quantization step.
    const exact = new Predictor(PIPELINE, modelCheckpoint(MODEL), { variant }).predict(ROWS);
    assertClose(scores.probs_ctr, exact.probs_ctr, "probs_ctr vs f32", { rtol: 0, atol: 2e-3 });
    // An int8 model re-exports as the same bytes.
    assert.deepEqual(servingArtifact(int8.model, PIPELINE, { embeddings: "int8" }), artifact);
  });
}

test("serving: int8 tables take dim + 4 bytes per row; dense layers stay f32", () => {
  const f32 = decodeServingHeader(servingArtifact(MODEL, PIPELINE)).header;
  const int8 = decodeServingHeader(servingArtifact(MODEL, PIPELINE, { embeddings: "int8" })).header;
  const bytes = (h: typeof f32, dtype: string) =>
    h.tensors.filter((t) => t.dtype === dtype).reduce(
      (sum, t) => sum + t.shape.reduce((a, b) => a * b, 1) * (dtype === "f16" ? 2 : 1),
      0,
    );
  const rows = CONFIG.tables.reduce((sum, t) => sum + t.rows, 0);
  const values = CONFIG.tables.reduce((sum, t) => sum + t.rows * t.dim, 0);
  assert.equal(bytes(int8, "u8"), values);
  assert.equal(bytes(int8, "f16"), 4 * rows);
  assert.deepEqual(
    int8.tensors.filter((t) => t.dtype === "f32").map((t) => t.name),
    f32.tensors.filter((t) => t.dtype === "f32" && !t.name.startsWith("embedding_group")).map((t) =>
      t.name
    ),
  );
});

test("serving: readPredictor reads the file into the arena; errors name the file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "denorec-serving-"));
  try {
    const path = join(dir, "serving_model.bin");
    const artifact = servingArtifact(MODEL, PIPELINE, { embeddings: "int8" });
    writeFileSync(path, artifact);
    const predictor = await readPredictor(path, { maxBatch: 8 });
    assert.deepEqual(
      predictor.predict(ROWS),
      new Predictor(artifact, { maxBatch: 8 }).predict(ROWS),
    );
    writeFileSync(path, artifact.subarray(0, artifact.length - 1));
    await assert.rejects(readPredictor(path), {
      name: "RangeError",
      message: `${path}: ${artifact.length - 1} bytes, the header says ${artifact.length} ` +
        "(truncated or appended to)",
    });
    const corrupt = artifact.slice();
    corrupt[corrupt.length - 100] ^= 0x10;
    writeFileSync(path, corrupt);
    await assert.rejects(readPredictor(path), {
      name: "RangeError",
      message: new RegExp(
        `^${
          path.replaceAll(".", "\\.")
        }: data checksum mismatch \\(stored [0-9a-f]{8}, computed [0-9a-f]{8}\\): the file is corrupt$`,
      ),
    });
    await assert.rejects(readPredictor(join(dir, "missing.bin")), {
      message: new RegExp(
        `^${join(dir, "missing.bin").replaceAll(".", "\\.")}: .*(No such file|ENOENT)`,
      ),
    });
  } finally {
    rmSync(dir, { recursive: true });
  }
});

/** `artifact` with its header replaced by `edit(header)`, the header checksum made to match. */
function withHeader(
  artifact: Uint8Array,
  edit: (header: Record<string, unknown>) => void,
): Uint8Array {
  const { dataStart } = decodeServingHeader(artifact);
  const view = new DataView(artifact.buffer, artifact.byteOffset);
  const header = JSON.parse(
    new TextDecoder().decode(artifact.subarray(24, 24 + view.getUint32(12, true))),
  );
  edit(header);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const start = Math.ceil((24 + json.length) / 64) * 64;
  const out = new Uint8Array(start + artifact.length - dataStart);
  out.set(artifact.subarray(0, 24));
  const prefix = new DataView(out.buffer);
  prefix.setUint32(12, json.length, true);
  prefix.setUint32(16, xxhash32Twin(json, 0), true);
  out.set(json, 24);
  out.set(artifact.subarray(dataStart), start);
  return out;
}

test("serving: wrong files are refused with what is wrong, naming the source", () => {
  const artifact = servingArtifact(MODEL, PIPELINE);
  const load = (bytes: Uint8Array) => new Predictor(bytes, { source: "m.bin" });
  assert.throws(() => load(modelCheckpoint(MODEL)), {
    name: "TypeError",
    message: "m.bin: not a denorec serving artifact (no DENOREC magic; write one with " +
      "examples/export.ts or servingArtifact)",
  });
  const version = artifact.slice();
  version[8] = 9;
  assert.throws(() => load(version), {
    name: "TypeError",
    message: "m.bin: serving format version 9, this library reads version 1: export the model " +
      "again with this version",
  });
  const header = artifact.slice();
  header[30] ^= 0x01;
  assert.throws(() => load(header), {
    name: "RangeError",
    message:
      /^m\.bin: header checksum mismatch \(stored [0-9a-f]{8}, computed [0-9a-f]{8}\): the file is corrupt$/,
  });
  const data = artifact.slice();
  data[data.length - 1] ^= 0x80;
  assert.throws(() => load(data), {
    name: "RangeError",
    message: /^m\.bin: data checksum mismatch/,
  });
  assert.throws(() => load(artifact.subarray(0, 20)), {
    name: "RangeError",
    message: "m.bin: truncated: 20 bytes, less than the prefix",
  });
  // A layout this library does not produce (another version's placement).
  const moved = withHeader(artifact, (h) => {
    const tensors = h.tensors as { offset: number }[];
    tensors[1].offset += 64;
  });
  assert.throws(() => load(moved), {
    name: "RangeError",
    message:
      /^m\.bin: the artifact's tensor 1 is embedding_group\.\S+ f32 \[\d+, \d+\] at \d+, this library lays out embedding_group\.\S+ f32 \[\d+, \d+\] at \d+: export the model again with this version$/,
  });
  const field = withHeader(artifact, (h) => h.embeddings = "int4");
  assert.throws(() => load(field), {
    name: "TypeError",
    message: 'm.bin: header field embeddings must be "f32" or "int8"',
  });
});

test("serving: what cannot be exported or checkpointed says so", () => {
  const other = parsePipelineConfig(
    CONFIG_TEXT.replace("hidden_units: [16, 8]", "hidden_units: [16, 4]"),
  );
  assert.throws(() => servingArtifact(MODEL, other), {
    name: "TypeError",
    message: "the pipeline config describes another model than the one exported: pass the " +
      "config the model was built from",
  });
  const int8 = new Predictor(servingArtifact(MODEL, PIPELINE, { embeddings: "int8" })).model;
  assert.throws(() => servingArtifact(int8, PIPELINE), {
    name: "TypeError",
    message: "an int8 model has no f32 tables to export: export its f32 source",
  });
  assert.throws(() => modelCheckpoint(int8), {
    name: "TypeError",
    message:
      /^cannot checkpoint a model with int8 embedding tables \(embedding_group\.\S+\.weight\)/,
  });
  const broken = new Predictor(servingArtifact(MODEL, PIPELINE)).model;
  broken.parameter("_task_tower.1.linear.bias")[0] = NaN;
  assert.throws(() => servingArtifact(broken, PIPELINE), {
    name: "RangeError",
    message: 'not exporting a diverged model: tensor "_task_tower.1.linear.bias" holds NaN at ' +
      "index 0 (step 0)",
  });
  assert.throws(() => new MMoEModel(CONFIG, { maxBatch: 1, embeddings: "int8" }), {
    name: "TypeError",
    message: "int8 embeddings are for inference: train with f32 tables",
  });
});

// Seeded checkpoint fuzzing: truncated files, flipped bits, corrupt JSON
// headers, and headers that lie about offsets, shapes, dtypes and metadata.
// Every attempt must end in a clear error that names the file (and leaves the
// model untouched) or in a load of exactly the saved model: never a crash of
// another kind, a hang, a partial load or a silently different model.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  loadCheckpoint,
  modelCheckpoint,
  restoreCheckpoint,
  saveTrainingCheckpoint,
} from "../src/io/checkpoint.ts";
import { resolveConfig } from "../src/config/config.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import { rng } from "./_util.ts";

const CONFIG = resolveConfig({
  featureConfigs: [
    { idFeature: { featureName: "user", expression: "user:user", numBuckets: 6, embeddingDim: 4 } },
    { rawFeature: { featureName: "price", expression: "item:price" } },
  ],
  modelConfig: {
    featureGroups: [{ groupName: "all", featureNames: ["user", "price"] }],
    mmoe: {
      expertMlp: { hiddenUnits: [6, 5], useBn: true },
      numExpert: 2,
      taskTowers: [
        { towerName: "ctr", labelName: "clk", losses: [{ binaryCrossEntropy: {} }] },
        { towerName: "cvr", labelName: "buy", losses: [{ binaryCrossEntropy: {} }] },
      ],
    },
  },
});

const BATCH: EncodedBatch = {
  size: 4,
  features: [
    { ids: Int32Array.of(0, 3, 5, 1), offsets: Int32Array.of(0, 1, 2, 3, 4) },
    { values: Float32Array.of(-1, 0.5, 2, 0) },
  ],
  columns: { clk: Float32Array.of(1, 0, 1, 0), buy: Float32Array.of(1, 0, 0, 0) },
};

const sizeOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function snapshot(model: MMoEModel): number[] {
  const values = [model.step];
  for (const t of [...model.parameters, ...model.optimizerState()]) {
    values.push(...model.view(t.offset, sizeOf(t.shape)));
  }
  return values;
}

const SOURCE = new MMoEModel(CONFIG, { maxBatch: 4, seed: 1 });
for (let i = 0; i < 3; i++) SOURCE.trainStep(BATCH);
const SAVED = snapshot(SOURCE);
const BYTES = modelCheckpoint(SOURCE, { withOptimizer: true });
const TARGET = new MMoEModel(CONFIG, { maxBatch: 4, seed: 2 });
const INITIAL = snapshot(TARGET);
const INITIAL_BYTES = modelCheckpoint(TARGET, { withOptimizer: true });

const HEADER_LENGTH = Number(new DataView(BYTES.buffer).getBigUint64(0, true));
const HEADER = JSON.parse(new TextDecoder().decode(BYTES.subarray(8, 8 + HEADER_LENGTH)));
const NAMES = Object.keys(HEADER).filter((k) => k !== "__metadata__");

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** The file with an edited copy of its header and the original data section. */
function withHeader(edit: (header: Record<string, unknown>) => void): Uint8Array {
  const header = structuredClone(HEADER);
  edit(header);
  const json = new TextEncoder().encode(JSON.stringify(header));
  const data = BYTES.subarray(8 + HEADER_LENGTH);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const withoutChecksums = (header: Record<string, unknown>) => {
  const meta = header.__metadata__ as Record<string, string>;
  delete meta.crc32;
  delete meta.header_crc32;
};

type Outcome = "error" | "loaded";

/**
 * Loads `bytes` into a model in its initial state: an error must be a
 * RangeError or TypeError starting with the file's name and leave the model
 * as it was; a load must give exactly the saved model.
 */
function attempt(bytes: Uint8Array, label: string): Outcome {
  const source = "fuzz/model.safetensors";
  try {
    loadCheckpoint(TARGET, bytes, { source });
  } catch (error) {
    assert.ok(error instanceof RangeError || error instanceof TypeError, `${label}: ${error}`);
    assert.ok(
      error.message.startsWith(`${source}: `),
      `${label}: the error does not name the file: ${error.message}`,
    );
    assert.deepEqual(snapshot(TARGET), INITIAL, `${label}: partially loaded`);
    return "error";
  }
  assert.deepEqual(snapshot(TARGET), SAVED, `${label}: loaded a different model`);
  loadCheckpoint(TARGET, INITIAL_BYTES); // back to the initial state
  return "loaded";
}

const DTYPES = ["F16", "BF16", "I32", "U32", "F64", "I64", "U8", "BOOL", "Q4", ""];
const JSON_CHARS = '{}[]":,0123456789-+.eE aAzZ\\';

test("checkpoint fuzz: 1200 corrupted files give an error naming the file, or the saved model", () => {
  const next = rng(20261202);
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(list: readonly T[]): T => list[int(list.length)];
  const counts: Record<string, Record<Outcome, number>> = {};
  const mutations: [string, () => Uint8Array][] = [
    ["truncate", () => BYTES.slice(0, int(BYTES.length))],
    ["flip bits anywhere", () => {
      const out = BYTES.slice();
      for (let k = 1 + int(4); k > 0; k--) out[int(out.length)] ^= 1 << int(8);
      return out;
    }],
    ["flip a bit of the header", () => {
      const out = BYTES.slice();
      out[8 + int(HEADER_LENGTH)] ^= 1 << int(8);
      return out;
    }],
    ["flip a bit of the length", () => {
      const out = BYTES.slice();
      out[int(8)] ^= 1 << int(8);
      return out;
    }],
    ["corrupt a JSON character", () => {
      const out = BYTES.slice();
      out[8 + int(HEADER_LENGTH)] = pick([...JSON_CHARS]).charCodeAt(0);
      return out;
    }],
    ["lie about offsets", () =>
      withHeader((h) => {
        const entry = h[pick(NAMES)] as Entry;
        const other = h[pick(NAMES.filter((n) => h[n] !== entry))] as Entry;
        const lie = int(3);
        if (lie === 0) {
          [entry.data_offsets, other.data_offsets] = [other.data_offsets, entry.data_offsets];
        } else if (lie === 1) {
          entry.data_offsets = entry.data_offsets.map((o) => o + 4 * (int(5) - 2)) as [
            number,
            number,
          ];
        } else entry.data_offsets = [int(4000), int(4000)];
      })],
    ["swap same-size tensors", () =>
      withHeader((h) => {
        const a = h[pick(NAMES)] as Entry;
        // Same element count, different bytes (two BN counters that both hold the step count are
        // the same tensor either way).
        const bytesOf = (e: Entry) =>
          BYTES.subarray(
            8 + HEADER_LENGTH + e.data_offsets[0],
            8 + HEADER_LENGTH + e.data_offsets[1],
          )
            .join();
        const same = NAMES.map((n) => h[n] as Entry).filter((e) =>
          e !== a && sizeOf(e.shape) === sizeOf(a.shape) && bytesOf(e) !== bytesOf(a)
        );
        if (same.length === 0) return;
        const b = pick(same);
        [a.data_offsets, b.data_offsets] = [b.data_offsets, a.data_offsets];
      })],
    ["lie about a shape", () =>
      withHeader((h) => {
        // Every lie changes the shape: transposed, flattened, a dim of 1 added, a dim grown.
        const entry = h[pick(NAMES)] as Entry;
        const [rows, cols] = entry.shape;
        const lies = [() => [...entry.shape, 1]];
        if (entry.shape.length > 0) lies.push(() => entry.shape.map((d, i) => (i ? d : d + 1)));
        if (entry.shape.length === 2) lies.push(() => [rows * cols]);
        if (entry.shape.length === 2 && rows !== cols) lies.push(() => [cols, rows]);
        entry.shape = pick(lies)();
      })],
    ["lie about a dtype", () =>
      withHeader((h) => {
        const entry = h[pick(NAMES)] as Entry;
        entry.dtype = pick(DTYPES.filter((d) => d !== entry.dtype));
        if (entry.dtype === "I64" || entry.dtype === "F64") {
          const n = sizeOf(entry.shape);
          if (n % 2 === 0) entry.shape = [n / 2]; // the same bytes as 8-byte values
        }
      })],
    ["lie about metadata", () =>
      withHeader((h) => {
        const meta = h.__metadata__ as Record<string, string>;
        const key = pick(Object.keys(meta));
        meta[key] = pick(["0", "7", "", "true", "false", meta[key] + "x", "{}"]);
      })],
    ["another tool's file (no checksums)", () => withHeader(withoutChecksums)],
    ["no checksums and a shape lie", () =>
      withHeader((h) => {
        withoutChecksums(h);
        const entry = h[pick(NAMES.filter((n) => (h[n] as Entry).shape.length === 2))] as Entry;
        entry.shape = [...entry.shape].reverse();
      })],
  ];
  for (let i = 0; i < 1200; i++) {
    const [label, mutate] = mutations[i % mutations.length];
    const outcome = attempt(mutate(), `${label} #${i}`);
    counts[label] ??= { error: 0, loaded: 0 };
    counts[label][outcome]++;
  }
  console.log(JSON.stringify(counts));
  // Mutations that change what the file says are always caught.
  for (const label of ["swap same-size tensors", "lie about a shape", "lie about a dtype"]) {
    assert.equal(counts[label].loaded, 0, label);
  }
  assert.equal(counts["another tool's file (no checksums)"].error, 0);
  assert.equal(counts["truncate"].loaded, 0);
});

test("checkpoint fuzz: a corrupted file in a checkpoint directory is named by its path", async () => {
  const dir = await mkdtemp(join(tmpdir(), "denorec-fuzz-"));
  try {
    const next = rng(7);
    const checkpoint = await saveTrainingCheckpoint(dir, SOURCE, {
      position: { epoch: 1, batchesInEpoch: 3 },
      seed: 1,
    });
    const files = ["model.safetensors", "optimizer.safetensors"];
    const originals = await Promise.all(files.map((f) => readFile(join(checkpoint, f))));
    for (let i = 0; i < 60; i++) {
      const which = i % 2;
      const bytes = new Uint8Array(originals[which]);
      if (i % 4 < 2) bytes[Math.floor(next() * bytes.length)] ^= 1 << Math.floor(next() * 8);
      const cut = i % 4 < 2 ? bytes : bytes.subarray(0, Math.floor(next() * bytes.length));
      const path = join(checkpoint, files[which]);
      await writeFile(path, cut);
      const target = new MMoEModel(CONFIG, { maxBatch: 4, seed: 2 });
      const before = snapshot(target);
      const result = await restoreCheckpoint(target, checkpoint).then(
        () => null,
        (e) => e as Error,
      );
      if (result === null) {
        assert.deepEqual(snapshot(target), SAVED, `#${i}: loaded a different model`);
      } else {
        assert.ok(result.message.startsWith(`${path}: `), `#${i}: ${result.message}`);
        assert.deepEqual(snapshot(target), before, `#${i}: partially loaded`);
      }
      await writeFile(path, originals[which]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

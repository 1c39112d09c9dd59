// A model built and trained in PyTorch with tzrec's exact module structure and
// state_dict names (tools/make_tzrec_model.py: BN experts, a gate MLP, three
// towers, shared/multi-value/mean/weighted/hashed/vocab id features, a dense
// and a bucketized raw feature; FG_NONE input; `model.` prefix and int64
// num_batches_tracked as tzrec saves them) scores the same here: through
// loadPredictor, MMoEModel + loadCheckpoint, and examples/predict.ts.
// The expected outputs are torch's (tests/fixtures/tzrec_model/expected.json),
// re-derived independently with numpy by tools/check_tzrec_model.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { csvReadOptions, readRecords } from "../src/data/readers.ts";
import {
  batchRecords,
  decodeSafetensors,
  FeatureEncoder,
  loadCheckpoint,
  loadPipelineConfig,
  loadPredictor,
  MMoEModel,
  resolveConfig,
} from "../mod.ts";
import type { RawRecord } from "../mod.ts";

const DIR = new URL("./fixtures/tzrec_model/", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
const expected = JSON.parse(readFileSync(join(DIR, "expected.json"), "utf8")) as Record<
  string,
  { shape: number[]; data: number[] }
>;
const TOWERS = ["ctr", "cvr", "like"];
/** torch's float32 outputs vs ours: a different summation order only (measured max 4e-7). */
const TOLERANCE = 1e-5;

function assertClose(actual: ArrayLike<number>, name: string): void {
  const want = expected[name].data;
  assert.equal(actual.length, want.length, `${name}: length`);
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(actual[i] - want[i]);
    if (!(d <= worst)) [worst, at] = [d, i];
  }
  assert.ok(worst <= TOLERANCE, `${name}: |ours - torch| = ${worst} at row ${at}`);
}

async function rows(): Promise<RawRecord[]> {
  const config = resolveConfig(await loadPipelineConfig(join(DIR, "pipeline.config")));
  const out: RawRecord[] = [];
  for await (const { record } of readRecords(join(DIR, "rows.csv"), csvReadOptions(config))) {
    out.push(record);
  }
  return out;
}

test("tzrec model: the safetensors file loads as tzrec names it (model. prefix, int64 num_batches_tracked)", () => {
  const bytes = readFileSync(join(DIR, "model.safetensors"));
  const header = JSON.parse(
    new TextDecoder().decode(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0)))),
  );
  const names = Object.keys(header).filter((n) => n !== "__metadata__");
  assert.ok(names.every((n) => n.startsWith("model.")), "every name has tzrec's model. prefix");
  assert.ok(
    names.includes("model.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.user_emb.weight"),
  );
  assert.ok(names.some((n) => n.endsWith("num_batches_tracked") && header[n].dtype === "I64"));
  const file = decodeSafetensors(bytes);
  assert.equal(file.tensors.size, names.length);
});

test("tzrec model: loadPredictor scores rows.csv as torch does", async () => {
  const predictor = await loadPredictor(
    readFileSync(join(DIR, "pipeline.config"), "utf8"),
    readFileSync(join(DIR, "model.safetensors")),
  );
  const outputs = predictor.predict(await rows());
  for (const t of TOWERS) {
    assertClose(outputs[`logits_${t}`], `logits_${t}`);
    assertClose(outputs[`probs_${t}`], `probs_${t}`);
  }
});

test("tzrec model: MMoEModel + loadCheckpoint, group input and outputs as torch", async () => {
  const config = resolveConfig(await loadPipelineConfig(join(DIR, "pipeline.config")));
  const model = new MMoEModel(config, { maxBatch: 64, threads: 1 });
  loadCheckpoint(model, readFileSync(join(DIR, "model.safetensors")), {
    withOptimizer: false,
  });
  const encoder = new FeatureEncoder(config);
  const all = await rows();
  for await (
    const batch of batchRecords(
      all.map((record, i) => ({ record, location: `rows.csv:${i + 2}` })),
      encoder,
      { batchSize: 64 },
    )
  ) {
    model.evalStep(batch);
    assertClose(model.groupInput(batch.size), "group_input");
    const outputs = model.outputs(batch.size);
    for (const t of TOWERS) assertClose(outputs[`probs_${t}`], `probs_${t}`);
  }
});

test("tzrec model: examples/predict.ts scores a model dir holding tzrec's files", () => {
  const dir = mkdtempSync(join(tmpdir(), "denorec-tzrec-"));
  try {
    copyFileSync(join(DIR, "pipeline.config"), join(dir, "pipeline.config"));
    copyFileSync(join(DIR, "model.safetensors"), join(dir, "model.safetensors"));
    const out = join(dir, "out.csv");
    const run = spawnSync(process.execPath, [
      ...(typeof (globalThis as { Bun?: unknown }).Bun === "undefined" ? ["run", "-A"] : []),
      join(ROOT, "examples/predict.ts"),
      "--model_dir",
      dir,
      "--predict_input_path",
      join(DIR, "rows.csv"),
      "--predict_output_path",
      out,
      "--output_columns",
      "probs_ctr,probs_cvr,probs_like",
    ], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
    const lines = readFileSync(out, "utf8").trim().split("\n");
    assert.equal(lines[0], "probs_ctr,probs_cvr,probs_like");
    const cols = lines.slice(1).map((l) => l.split(",").map(Number));
    TOWERS.forEach((t, i) => assertClose(cols.map((r) => r[i]), `probs_${t}`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// PyTorch parity: fixtures written by tools/make_fixtures.py (torch 1.13,
// tzrec module structure and semantics). See tools/README.md for the schema.
import { test } from "node:test";
import { readFileSync } from "node:fs";
import { type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { BinnedAuc, ExactAuc } from "../src/train/metrics.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import { assertClose, VARIANTS } from "./_util.ts";

interface Tensor {
  shape: number[];
  data: number[];
}
interface Fixture {
  config: PipelineConfig;
  params: Record<string, Tensor>;
  batches: {
    features: Record<string, number[][]>;
    labels: Record<string, number[]>;
    sample_weights?: Record<string, number[]>;
  }[];
  forward: Record<string, Tensor>;
  eval_forward?: Record<string, Tensor>;
  losses: Record<string, number>[];
  grads: Record<string, Tensor>;
  params_after: Record<string, Tensor>;
  eval: Record<string, number | number[] | Tensor>;
}

function load(name: string): Fixture {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8"));
}

function encode(fixture: Fixture, index: number): EncodedBatch {
  const resolved = resolveConfig(fixture.config);
  const batch = fixture.batches[index];
  const size = batch.labels[Object.keys(batch.labels)[0]].length;
  const columns: Record<string, Float32Array> = {};
  for (const [name, values] of Object.entries({ ...batch.labels, ...batch.sample_weights })) {
    columns[name] = Float32Array.from(values);
  }
  return {
    size,
    columns,
    features: resolved.features.map((f) => {
      const rows = batch.features[f.name];
      if (f.kind === "dense") return { values: Float32Array.from(rows.flat()) };
      const offsets = [0];
      for (const row of rows) offsets.push(offsets[offsets.length - 1] + row.length);
      return { ids: Int32Array.from(rows.flat()), offsets: Int32Array.from(offsets) };
    }),
  };
}

const TOL = { rtol: 1e-5, atol: 1e-6 };

/**
 * The model's name of a fixture tensor: the fixtures (tools/make_fixtures.py)
 * name tables `embedding_group.<table>.weight`, tzrec's state_dict
 * `embedding_group.emb_impls.__BASE__.ebc.embedding_bags.<table>.weight`.
 */
function modelName(fixtureName: string): string {
  const table = /^embedding_group\.(\w+)\.weight$/.exec(fixtureName);
  return table
    ? `embedding_group.emb_impls.__BASE__.ebc.embedding_bags.${table[1]}.weight`
    : fixtureName;
}

function parity(name: string, variant: (typeof VARIANTS)[number]) {
  const fixture = load(name);
  const config = resolveConfig(fixture.config);
  const model = new MMoEModel(config, { maxBatch: 7, variant });
  for (const [param, tensor] of Object.entries(fixture.params)) {
    model.parameter(modelName(param)).set(tensor.data);
  }
  // Batch 0: train-mode forward, losses and gradients.
  const batch0 = encode(fixture, 0);
  const first = model.forwardBackward(batch0);
  const B = batch0.size;
  assertClose(model.groupInput(B), fixture.forward.x.data, "x", TOL);
  config.towers.forEach((t, i) => {
    assertClose(
      model.gateWeights(i, B),
      fixture.forward[`gate_${t.name}`].data,
      `gate_${t.name}`,
      TOL,
    );
  });
  const outputs = model.outputs(B);
  for (const key of ["logits_ctr", "probs_ctr", "logits_cvr", "probs_cvr"]) {
    assertClose(outputs[key], fixture.forward[key].data, key, TOL);
  }
  for (const [key, value] of Object.entries(fixture.losses[0])) {
    const ours = key === "total" ? first.total : first.losses[key];
    assertClose([ours], [value], `loss ${key} step 1`, TOL);
  }
  for (const p of model.parameters) {
    if (p.kind === "dense") {
      assertClose(model.gradient(p.name), fixture.grads[p.name].data, `grad ${p.name}`, {
        rtol: 1e-4,
        atol: 1e-6,
      });
    }
  }
  config.tables.forEach((table, t) => {
    const expected = fixture.grads[`embedding_group.${table.name}.weight`].data;
    const dense = new Float32Array(table.rows * table.dim);
    const { rows, grads } = model.embeddingGradient(t);
    rows.forEach((row, u) =>
      dense.set(grads.subarray(u * table.dim, (u + 1) * table.dim), row * table.dim)
    );
    assertClose(dense, expected, `grad ${table.name}`, { rtol: 1e-4, atol: 1e-6 });
  });
  model.applyGradients();
  // Steps 2 and 3.
  for (let step = 1; step < fixture.batches.length; step++) {
    const { losses, total } = model.trainStep(encode(fixture, step));
    for (const [key, value] of Object.entries(fixture.losses[step])) {
      assertClose(
        [key === "total" ? total : losses[key]],
        [value],
        `loss ${key} step ${step + 1}`,
        TOL,
      );
    }
  }
  for (const [param, tensor] of Object.entries(fixture.params_after)) {
    assertClose(model.parameter(modelName(param)), tensor.data, `${param} after 3 steps`, {
      rtol: 1e-4,
      atol: 1e-5,
    });
  }
  // Eval over all rows with the trained parameters: probabilities and AUCs.
  for (const t of config.towers) {
    const probs: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < fixture.batches.length; i++) {
      const batch = encode(fixture, i);
      model.evalStep(batch);
      probs.push(...model.outputs(batch.size)[`probs_${t.name}`]);
      labels.push(...batch.columns[t.label]);
    }
    assertClose(
      probs,
      (fixture.eval[`probs_${t.name}`] as Tensor).data,
      `eval probs_${t.name}`,
      TOL,
    );
    const thresholds = t.metrics.find((m) => m.kind === "auc");
    const binned = new BinnedAuc(
      thresholds && "thresholds" in thresholds ? thresholds.thresholds : 200,
    );
    binned.update(Float32Array.from(probs), Float32Array.from(labels));
    // torchmetrics sums the trapezoids in float32: equal to within f32 rounding.
    assertClose([binned.compute()], [fixture.eval[`auc_${t.name}`] as number], `auc_${t.name}`, {
      rtol: 0,
      atol: 5e-7,
    });
    const exact = new ExactAuc();
    exact.update(Float32Array.from(probs), Float32Array.from(labels));
    assertClose(
      [exact.compute()],
      [fixture.eval[`exact_auc_${t.name}`] as number],
      `exact auc ${t.name}`,
      TOL,
    );
  }
}

for (const variant of VARIANTS) {
  test(`parity ${variant}: tiny MMoE matches PyTorch (forward, losses, grads, 3 Adam+Adagrad steps, AUC)`, () => {
    parity("mmoe_tiny.json", variant);
  });
  test(`parity ${variant}: BatchNorm experts, gate MLP, LeakyReLU, smoothing, sample weights`, () => {
    parity("mmoe_bn_gate.json", variant);
  });
}

// ONNX export: small MMoE models covering every MLP option, exported with
// random parameters, run with onnxruntime-web (wasm, 1 thread) and compared
// to MMoEModel.evalStep to 1e-5 (absolute + relative). onnxruntime-web is a
// dev dependency: without it this file fails to load, it does not skip.
import { test } from "node:test";
import * as ort from "onnxruntime-web";
import assert from "node:assert/strict";
import { fromBinary } from "@bufbuild/protobuf";
import {
  type MLP,
  type PipelineConfig,
  resolveConfig,
  type TaskTower,
} from "../src/config/config.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import {
  exportOnnx,
  type OnnxExportOptions,
  onnxFeeds,
  onnxInputNames,
  onnxOutputNames,
} from "../src/io/onnx.ts";
import { ModelProtoSchema } from "../src/proto/onnx/onnx_pb.ts";
import { rng } from "./_util.ts";

const TOLERANCE = 1e-5;
ort.env.wasm.numThreads = 1;
ort.env.logLevel = "error";

// -------------------------------------------------------------------- models

interface Case {
  name: string;
  expertMlp: MLP;
  gateMlp?: MLP;
  numExpert?: number;
  towers: TaskTower[];
  /** Group features (default: all of FEATURES). */
  features?: string[];
  /** Features read as weighted (tzrec `id_feature.weighted`, set on the resolved config). */
  weighted?: string[];
  exports: OnnxExportOptions[];
}

/** Id features (sum, mean multi-value with empty rows, a shared table, a bucketized raw) and dense ones. */
const FEATURE_CONFIGS: PipelineConfig["featureConfigs"] = [
  { idFeature: { featureName: "user", expression: "user:user", numBuckets: 50, embeddingDim: 8 } },
  {
    idFeature: {
      featureName: "tags",
      expression: "item:tags",
      numBuckets: 30,
      embeddingDim: 4,
      pooling: "mean",
      embeddingName: "tag_emb",
    },
  },
  {
    idFeature: {
      featureName: "liked_tags",
      expression: "user:liked_tags",
      numBuckets: 30,
      embeddingDim: 4,
      embeddingName: "tag_emb",
    },
  },
  { rawFeature: { featureName: "price", expression: "item:price" } },
  {
    rawFeature: {
      featureName: "age",
      expression: "user:age",
      boundaries: [18, 30, 45],
      embeddingDim: 3,
    },
  },
  { rawFeature: { featureName: "vec", expression: "item:vec", valueDim: 3 } },
];
const FEATURES = ["user", "tags", "liked_tags", "price", "age", "vec"];

const bce = (name: string, mlp?: MLP): TaskTower => ({
  towerName: name,
  labelName: name,
  mlp,
  losses: [{ binaryCrossEntropy: {} }],
});

const CASES: Case[] = [
  {
    name: "BN experts (LeakyReLU), GELU gate MLP, BCE towers with tanh MLP and without",
    expertMlp: {
      hiddenUnits: [16, 8],
      useBn: true,
      activation: "nn.LeakyReLU(negative_slope=0.2)",
    },
    gateMlp: { hiddenUnits: [6], activation: "nn.GELU" },
    numExpert: 3,
    towers: [bce("ctr", { hiddenUnits: [8], activation: "nn.Tanh" }), bce("cvr")],
    exports: [{}, { batchNorm: "fold" }, { opset: 13 }, { opset: 21 }],
  },
  {
    name:
      "LN experts (GELU), no gate MLP, softmax C=3 (SiLU MLP), softmax C=2, l2 (BN sigmoid MLP)",
    expertMlp: { hiddenUnits: [12, 6], useLn: true, activation: "nn.GELU" },
    towers: [
      {
        towerName: "cls3",
        labelName: "cls3",
        numClass: 3,
        mlp: { hiddenUnits: [5], activation: "nn.SiLU" },
        losses: [{ softmaxCrossEntropy: {} }],
      },
      {
        towerName: "cls2",
        labelName: "cls2",
        numClass: 2,
        losses: [{ softmaxCrossEntropy: {} }],
      },
      {
        towerName: "dwell",
        labelName: "dwell",
        mlp: { hiddenUnits: [4], activation: "nn.Sigmoid", useBn: true },
        losses: [{ l2Loss: {} }],
      },
    ],
    exports: [{}, { opset: 13 }, { opset: 18, layerNorm: "decompose" }, {
      opset: 21,
      batchNorm: "fold",
    }],
  },
  {
    name: "fused ReLU experts, identity LN gate MLP without bias, 1 expert, one mean feature",
    expertMlp: { hiddenUnits: [8] },
    gateMlp: { hiddenUnits: [4], activation: "", useLn: true, bias: false },
    numExpert: 1,
    towers: [bce("ctr", { hiddenUnits: [6, 3], activation: "nn.ReLU", dropoutRatio: [0.5] })],
    features: ["tags"],
    exports: [{}, { opset: 16 }],
  },
  {
    name: "tanh/SiLU BN experts without Linear bias, sigmoid gate MLP, dense-only group",
    expertMlp: { hiddenUnits: [7, 5], activation: "nn.SiLU", useBn: true, bias: false },
    gateMlp: { hiddenUnits: [3], activation: "nn.Sigmoid", bias: false },
    towers: [bce("ctr", { hiddenUnits: [4], activation: "nn.Tanh", bias: false }), bce("cvr")],
    features: ["price", "vec"],
    exports: [{}, { batchNorm: "fold", opset: 14 }],
  },
  {
    name: "weighted sum features, a tower with binary cross-entropy and l2 losses on one logit",
    expertMlp: { hiddenUnits: [8, 4] },
    towers: [
      {
        towerName: "ctr",
        labelName: "ctr",
        losses: [{ binaryCrossEntropy: {} }, { l2Loss: {} }],
      },
    ],
    features: ["user", "liked_tags", "price"],
    weighted: ["user", "liked_tags"],
    exports: [{}],
  },
];

function configOf(c: Case): PipelineConfig {
  const names = c.features ?? FEATURES;
  return {
    featureConfigs: FEATURE_CONFIGS.filter((f) =>
      names.includes((f.idFeature ?? f.rawFeature)!.featureName)
    ),
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: names }],
      mmoe: {
        expertMlp: c.expertMlp,
        gateMlp: c.gateMlp,
        numExpert: c.numExpert ?? 2,
        taskTowers: c.towers,
      },
    },
  };
}

/** A model whose every parameter and BN buffer is random (BN/LN far from identity). */
function randomModel(c: Case, seed: number): MMoEModel {
  const config = resolveConfig(configOf(c));
  for (const f of config.features) f.weighted = c.weighted?.includes(f.name) ?? false;
  const model = new MMoEModel(config, { maxBatch: 64, seed, idsPerRow: 4 });
  const next = rng(seed * 7919 + 1);
  for (const p of model.parameters) {
    if (p.dtype !== "f32") continue;
    const view = model.parameter(p.name);
    for (let i = 0; i < view.length; i++) {
      const u = next();
      if (p.name.endsWith("running_var")) view[i] = 0.3 + 2 * u;
      else if (p.name.endsWith("running_mean")) view[i] = u - 0.5;
      else if (p.kind === "embedding") view[i] = 2 * u - 1;
      else view[i] = (2 * u - 1) * (p.shape.length === 2 ? 1.5 / Math.sqrt(p.shape[1]) : 1);
    }
  }
  return model;
}

/** A batch of B rows: multi-value features with 0..4 ids (empty rows included). */
function randomBatch(model: MMoEModel, B: number, seed: number): EncodedBatch {
  const next = rng(seed);
  const features = model.config.features.map((f, fi) => {
    if (f.table < 0) {
      return { values: Float32Array.from({ length: B * f.width }, () => 4 * next() - 2) };
    }
    const single = f.name === "user" || f.name === "age";
    const ids: number[] = [], offsets = [0];
    for (let b = 0; b < B; b++) {
      const count = single ? 1 : (b + fi) % 5 === 0 ? 0 : Math.floor(next() * 5);
      for (let j = 0; j < count; j++) ids.push(Math.floor(next() * f.rows));
      offsets.push(ids.length);
    }
    const sparse = { ids: Int32Array.from(ids), offsets: Int32Array.from(offsets) };
    if (!f.weighted) return sparse;
    return { ...sparse, weights: Float32Array.from(ids, () => 3 * next() - 1) };
  });
  const columns: Record<string, Float32Array> = {};
  for (const t of model.config.towers) {
    columns[t.label] = Float32Array.from(
      { length: B },
      () => t.numClass > 1 ? Math.floor(next() * t.numClass) : next() < 0.5 ? 1 : 0,
    );
  }
  return { size: B, features, columns };
}

function tensors(model: MMoEModel, batch: EncodedBatch) {
  return Object.fromEntries(
    Object.entries(onnxFeeds(model, batch)).map((
      [name, f],
    ) => [name, new ort.Tensor(f.type, f.data, f.dims)]),
  );
}

/** Max |a - b| over every output; asserts |a - b| <= tol (1 + |b|) and the shapes. */
function compare(
  model: MMoEModel,
  B: number,
  result: Record<string, { data: unknown; dims: readonly number[] }>,
  label: string,
): number {
  const expected = model.outputs(B);
  const names = onnxOutputNames(model.config);
  assert.deepEqual(Object.keys(result).sort(), [...names].sort(), `${label}: outputs`);
  assert.deepEqual(Object.keys(expected).sort(), [...names].sort(), `${label}: model outputs`);
  let worst = 0;
  for (const name of names) {
    const tower = model.config.towers.find((t) => name.endsWith(`_${t.name}`))!;
    const rank2 = tower.numClass > 1 && !name.startsWith("probs1_");
    assert.deepEqual(
      [...result[name].dims],
      rank2 ? [B, tower.numClass] : [B],
      `${label}: ${name} dims`,
    );
    const got = result[name].data as Float32Array, want = expected[name];
    assert.equal(got.length, want.length, `${label}: ${name} length`);
    for (let i = 0; i < want.length; i++) {
      const diff = Math.abs(got[i] - want[i]);
      worst = Math.max(worst, diff);
      if (!(diff <= TOLERANCE * (1 + Math.abs(want[i])))) {
        assert.fail(`${label}: ${name}[${i}]: onnx ${got[i]}, evalStep ${want[i]}`);
      }
    }
  }
  return worst;
}

// --------------------------------------------------------------------- tests

CASES.forEach((c, ci) => {
  for (const options of c.exports) {
    const label = `${c.name} [${JSON.stringify(options)}]`;
    test(`onnx matches evalStep: ${label}`, async () => {
      const model = randomModel(c, 11 + ci);
      const bytes = exportOnnx(model, options);
      const session = await ort.InferenceSession.create(bytes, {
        executionProviders: ["wasm"],
      });
      try {
        let worst = 0;
        // Dynamic batch and id-list lengths: the same session runs B = 37 and B = 1.
        for (const [B, seed] of [[37, 100 + ci], [1, 200 + ci]]) {
          const batch = randomBatch(model, B, seed);
          model.evalStep(batch);
          const result = await session.run(tensors(model, batch));
          worst = Math.max(worst, compare(model, B, result, label));
        }
        console.log(`max |onnx - evalStep| = ${worst.toExponential(2)}: ${label}`);
      } finally {
        await session.release();
      }
    });
  }
});

test("onnx graph: tzrec initializer names, inputs, outputs, opset, metadata", () => {
  const c = CASES[0];
  const model = randomModel(c, 5);
  const onnx = fromBinary(ModelProtoSchema, exportOnnx(model, { opset: 18, docString: "x" }));
  assert.equal(onnx.irVersion, 8n);
  assert.deepEqual(onnx.opsetImport.map((o) => [o.domain, o.version]), [["", 18n]]);
  assert.equal(onnx.producerName, "denorec");
  assert.equal(onnx.docString, "x");
  const graph = onnx.graph!;
  const params = new Set(
    graph.initializer.map((t) => t.name).filter((n) => !n.startsWith("const.")),
  );
  // Every parameter and float buffer once (the shared tag table too), under its tzrec name,
  // with its shape and values; BN's num_batches_tracked has no part in eval.
  const floats = model.parameters.filter((p) => p.dtype === "f32").map((p) => p.name);
  assert.deepEqual([...params].sort(), floats.sort());
  const tagTable = "embedding_group.emb_impls.__BASE__.ebc.embedding_bags.tag_emb.weight";
  assert.equal(graph.initializer.filter((t) => t.name === tagTable).length, 1);
  const w = graph.initializer.find((t) => t.name === "_task_tower.0.linear.weight")!;
  assert.deepEqual(w.dims, [1n, 8n]);
  assert.deepEqual(
    new Float32Array(w.rawData.slice().buffer),
    model.parameter("_task_tower.0.linear.weight"),
  );
  assert.deepEqual(
    graph.input.map((v) => v.name),
    onnxInputNames(model.config).flatMap((f) => f.inputs),
  );
  assert.deepEqual(graph.input.map((v) => v.name), [
    "user.ids",
    "user.mask",
    "tags.ids",
    "tags.mask",
    "liked_tags.ids",
    "liked_tags.mask",
    "price.values",
    "age.ids",
    "age.mask",
    "vec.values",
  ]);
  assert.deepEqual(graph.output.map((v) => v.name), [
    "logits_ctr",
    "probs_ctr",
    "logits_cvr",
    "probs_cvr",
  ]);
  const ops = new Set(graph.node.map((n) => n.opType));
  for (const op of ["Gather", "ReduceSum", "Div", "BatchNormalization", "LeakyRelu", "Erf"]) {
    assert.ok(ops.has(op), `graph uses ${op}`);
  }
  // Topological order: every node input is a graph input, an initializer or an earlier output.
  const known = new Set([
    ...graph.input.map((v) => v.name),
    ...graph.initializer.map((t) => t.name),
  ]);
  for (const n of graph.node) {
    for (const i of n.input) assert.ok(known.has(i), `${n.name} reads ${i} before it exists`);
    n.output.forEach((o) => known.add(o));
  }
  const meta = Object.fromEntries(onnx.metadataProps.map((m) => [m.key, m.value]));
  assert.deepEqual(JSON.parse(meta["denorec.pooling"]), {
    user: "sum",
    tags: "mean",
    liked_tags: "sum",
    age: "sum",
  });

  // Folded BN: no BatchNormalization node and no BN tensors, folded Linear weights instead.
  const folded = fromBinary(ModelProtoSchema, exportOnnx(model, { batchNorm: "fold" })).graph!;
  assert.ok(!folded.node.some((n) => n.opType === "BatchNormalization"));
  const foldedNames = folded.initializer.map((t) => t.name);
  assert.ok(foldedNames.includes("mmoe.expert_mlps.0.mlp.0.perceptron.0.weight.bn_folded"));
  assert.ok(!foldedNames.some((n) => n.includes("running_")));
});

test("onnx graph: LayerNorm as a node from opset 17, decomposed below", () => {
  const model = randomModel(CASES[1], 6);
  const ops = (o: OnnxExportOptions) =>
    new Set(fromBinary(ModelProtoSchema, exportOnnx(model, o)).graph!.node.map((n) => n.opType));
  assert.ok(ops({}).has("LayerNormalization"));
  assert.ok(!ops({ opset: 16 }).has("LayerNormalization"));
  assert.ok(ops({ opset: 16 }).has("ReduceMean"));
  assert.ok(!ops({ layerNorm: "decompose" }).has("LayerNormalization"));
});

test("exportOnnx rejects unsupported opsets and options", () => {
  const model = randomModel(CASES[1], 7);
  assert.throws(() => exportOnnx(model, { opset: 12 }), /opset must be an integer in \[13, 21\]/);
  assert.throws(() => exportOnnx(model, { opset: 22 }), /opset/);
  assert.throws(
    () => exportOnnx(model, { opset: 16, layerNorm: "node" }),
    /LayerNormalization needs opset 17/,
  );
  assert.throws(
    () => exportOnnx(model, { batchNorm: "merge" as "fold" }),
    /batchNorm must be "node" or "fold"/,
  );
});

test("onnxFeeds pads CSR ids into [B, L] ids + mask and validates the batch", () => {
  const model = randomModel(CASES[0], 8);
  const batch = randomBatch(model, 9, 3);
  const feeds = onnxFeeds(model, batch);
  assert.deepEqual(
    Object.keys(feeds),
    onnxInputNames(model.config).flatMap((f) => f.inputs),
  );
  model.config.features.forEach((f, i) => {
    const input = batch.features[i];
    if (f.table < 0) {
      assert.deepEqual(feeds[`${f.name}.values`].dims, [9, f.width]);
      assert.deepEqual(feeds[`${f.name}.values`].data, (input as { values: Float32Array }).values);
      return;
    }
    const { ids, offsets } = input as { ids: Int32Array; offsets: Int32Array };
    const [B, L] = feeds[`${f.name}.ids`].dims;
    assert.equal(B, 9);
    let longest = 1;
    for (let b = 0; b < 9; b++) longest = Math.max(longest, offsets[b + 1] - offsets[b]);
    assert.equal(L, longest);
    const padded = feeds[`${f.name}.ids`].data as BigInt64Array;
    const mask = feeds[`${f.name}.mask`].data as Float32Array;
    for (let b = 0; b < 9; b++) {
      const count = offsets[b + 1] - offsets[b];
      for (let j = 0; j < L; j++) {
        assert.equal(mask[b * L + j], j < count ? 1 : 0);
        assert.equal(padded[b * L + j], j < count ? BigInt(ids[offsets[b] + j]) : 0n);
      }
    }
  });
  const bad = structuredClone(batch);
  (bad.features[0] as { ids: Int32Array }).ids[0] = 50;
  assert.throws(() => onnxFeeds(model, bad), /feature user: id 50 is outside \[0, 50\)/);
  assert.throws(
    () => onnxFeeds(model.config, { ...batch, features: batch.features.slice(1) }),
    /batch has 5 features/,
  );
});

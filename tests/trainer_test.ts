import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import { ExactAuc } from "../src/train/metrics.ts";
import { type EncodedBatch, MMoEModel } from "../src/model/mmoe.ts";
import { evaluate, train, type TrainLog } from "../src/train/trainer.ts";
import { assertClose, rng } from "./_util.ts";

const USERS = 200, ITEMS = 100, CATEGORIES = 10;

/**
 * Planted signal: user and item biases, a category effect, a small latent
 * user x item interaction and a dense price effect give the click logit; a purchase is possible only
 * after a click, with its own logit. The true probabilities give the oracle AUC.
 */
function plantedData(seed: number, rows: number, batchSize: number) {
  const next = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
  const teacher = rng(1234); // the same teacher for train and eval sets
  const tNormal = () =>
    Math.sqrt(-2 * Math.log(teacher() + 1e-12)) * Math.cos(2 * Math.PI * teacher());
  const userF = Array.from({ length: USERS }, () => Array.from({ length: 4 }, tNormal));
  const itemF = Array.from({ length: ITEMS }, () => Array.from({ length: 4 }, tNormal));
  const itemCat = Array.from({ length: ITEMS }, () => Math.floor(teacher() * CATEGORIES));
  const catEffect = Array.from({ length: CATEGORIES }, () => tNormal() * 0.7);
  const userBias = Array.from({ length: USERS }, () => tNormal() * 0.8);
  const itemBias = Array.from({ length: ITEMS }, () => tNormal() * 0.8);
  const batches: EncodedBatch[] = [];
  const pClick: number[] = [], pBuy: number[] = [];
  for (let start = 0; start < rows; start += batchSize) {
    const B = Math.min(batchSize, rows - start);
    const user = new Int32Array(B), item = new Int32Array(B), cat = new Int32Array(B);
    const price = new Float32Array(B), clk = new Float32Array(B), buy = new Float32Array(B);
    for (let b = 0; b < B; b++) {
      user[b] = Math.floor(next() * USERS);
      item[b] = Math.floor(next() * ITEMS);
      cat[b] = itemCat[item[b]];
      price[b] = normal();
      let dot = 0;
      for (let d = 0; d < 4; d++) dot += userF[user[b]][d] * itemF[item[b]][d];
      const click = 1 / (1 + Math.exp(
        -(userBias[user[b]] + itemBias[item[b]] + catEffect[cat[b]] + 0.3 * dot - 0.4 * price[b] -
          1),
      ));
      const conv = 1 / (1 + Math.exp(-(itemBias[item[b]] + 0.3 * dot - 0.8 * price[b] - 0.5)));
      pClick.push(click);
      pBuy.push(click * conv);
      clk[b] = next() < click ? 1 : 0;
      buy[b] = clk[b] > 0 && next() < conv ? 1 : 0;
    }
    const single = (ids: Int32Array) => ({
      ids,
      offsets: Int32Array.from({ length: B + 1 }, (_, i) => i),
    });
    batches.push({
      size: B,
      features: [single(user), single(item), single(cat), { values: price }],
      columns: { clk, buy },
    });
  }
  return { batches, pClick: Float32Array.from(pClick), pBuy: Float32Array.from(pBuy) };
}

function plantedConfig() {
  return resolveConfig({
    featureConfigs: [
      {
        idFeature: {
          featureName: "user_id",
          expression: "user:user_id",
          numBuckets: USERS,
          embeddingDim: 8,
        },
      },
      {
        idFeature: {
          featureName: "item_id",
          expression: "item:item_id",
          numBuckets: ITEMS,
          embeddingDim: 8,
        },
      },
      {
        idFeature: {
          featureName: "cate_id",
          expression: "item:cate_id",
          numBuckets: CATEGORIES,
          embeddingDim: 4,
        },
      },
      { rawFeature: { featureName: "price", expression: "item:price" } },
    ],
    modelConfig: {
      featureGroups: [{
        groupName: "all",
        featureNames: ["user_id", "item_id", "cate_id", "price"],
      }],
      mmoe: {
        expertMlp: { hiddenUnits: [32, 16] },
        numExpert: 3,
        taskTowers: [
          {
            towerName: "ctr",
            labelName: "clk",
            mlp: { hiddenUnits: [16] },
            losses: [{ binaryCrossEntropy: {} }],
            metrics: [{ auc: {} }, { exactAuc: {} }],
          },
          {
            towerName: "cvr",
            labelName: "buy",
            mlp: { hiddenUnits: [16] },
            losses: [{ binaryCrossEntropy: {} }],
            metrics: [{ auc: { thresholds: 1000 } }],
          },
        ],
      },
    },
    trainConfig: {
      sparseOptimizer: { adagradOptimizer: { lr: 0.05 } },
      denseOptimizer: { adamOptimizer: { lr: 0.003 } },
      numEpochs: 4,
      logStepCountSteps: 20,
    },
  });
}

function oracleAuc(probs: Float32Array, batches: EncodedBatch[], label: string): number {
  const auc = new ExactAuc();
  auc.update(probs, Float32Array.from(batches.flatMap((b) => Array.from(b.columns[label]))));
  return auc.compute();
}

test("trainer: a fixed-seed run on planted-signal data gets close to the oracle AUC", async () => {
  const config = plantedConfig();
  const trainSet = plantedData(1, 20_000, 256);
  const evalSet = plantedData(2, 8_000, 1024);
  const model = new MMoEModel(config, { maxBatch: 1024, seed: 7 });
  const logs: TrainLog[] = [];
  const summary = await train(model, () => trainSet.batches, { onLog: (log) => logs.push(log) });
  assert.equal(summary.steps, 4 * trainSet.batches.length);
  assert.ok(logs.length >= 4 * Math.floor(trainSet.batches.length / 20));
  const metrics = await evaluate(model, evalSet.batches);
  const oracleCtr = oracleAuc(evalSet.pClick, evalSet.batches, "clk");
  const oracleCvr = oracleAuc(evalSet.pBuy, evalSet.batches, "buy");
  // Measured: auc_ctr 0.78 vs oracle 0.80; auc_cvr 0.80 vs oracle 0.83 (seed 7).
  assert.ok(
    metrics.auc_ctr > oracleCtr - 0.04,
    `auc_ctr ${metrics.auc_ctr} vs oracle ${oracleCtr}`,
  );
  assert.ok(
    metrics.auc_cvr > oracleCvr - 0.06,
    `auc_cvr ${metrics.auc_cvr} vs oracle ${oracleCvr}`,
  );
  assert.ok(Math.abs(metrics.exact_auc_ctr - metrics.auc_ctr) < 0.01);
  assert.ok(metrics.binary_cross_entropy_ctr < logs[0].losses.binary_cross_entropy_ctr);
  console.log(
    `planted: auc_ctr ${metrics.auc_ctr.toFixed(4)} (oracle ${oracleCtr.toFixed(4)}), ` +
      `auc_cvr ${metrics.auc_cvr.toFixed(4)} (oracle ${oracleCvr.toFixed(4)})`,
  );
});

/** tests/fixtures/training_curve.json (tools/make_training_curve.py). */
interface Curve {
  config: PipelineConfig;
  weighted_features: string[];
  params: Record<string, { shape: number[]; data: number[] }>;
  batches: { features: Record<string, number[][]>; labels: Record<string, number[]> }[];
  losses: Record<string, number>[];
  params_after: Record<string, { shape: number[]; data: number[] }>;
}

// PyTorch's curve: tzrec's MMoE in torch 1.13 from torch's own init, 30 steps of exact
// sparse Adagrad + Adam. Both sides compute in f32 with different summation orders
// (blocked GEMMs here, MKL/OpenBLAS there), so values differ in the last bits:
// - losses: each step's agree to 1e-5 relative (measured: 1e-7 at most), while a wrong
//   formula anywhere moves them by 1e-3 or more;
// - parameters after 30 steps: Adam and Adagrad normalise each element's step by its
//   own gradient, so an element whose gradient is about eps (user_id row 39 gets
//   -5.6e-9, a sum that cancels, at step 5) takes a step set by the gradient's last
//   bits; measured, such elements end up to 1.7e-5 apart. 5e-5 absolute is a fiftieth
//   of one Adam step (lr 0.003) and a thousandth of an Adagrad one (lr 0.05), the
//   least a wrong update would move a parameter.
test("trainer: training follows PyTorch's loss curve step by step (30 steps, weighted feature, two losses)", async () => {
  const curve: Curve = JSON.parse(
    readFileSync(new URL("./fixtures/training_curve.json", import.meta.url), "utf8"),
  );
  const config = resolveConfig(curve.config);
  for (const f of config.features) f.weighted = curve.weighted_features.includes(f.name);
  const model = new MMoEModel(config, { maxBatch: 32, seed: 1 });
  const floats = model.parameters.filter((p) => p.dtype === "f32").map((p) => p.name);
  assert.deepEqual(floats, Object.keys(curve.params), "tzrec's state_dict names, in its order");
  for (const [name, tensor] of Object.entries(curve.params)) {
    model.parameter(name).set(tensor.data);
  }
  const batches: EncodedBatch[] = curve.batches.map((b) => {
    const size = b.labels.clk.length;
    return {
      size,
      columns: Object.fromEntries(
        Object.entries(b.labels).map(([name, values]) => [name, Float32Array.from(values)]),
      ),
      features: config.features.map((f) => {
        const rows = b.features[f.name];
        if (f.table < 0) return { values: Float32Array.from(rows.flat()) };
        const offsets = [0];
        for (const row of rows) offsets.push(offsets[offsets.length - 1] + row.length);
        const ids = { ids: Int32Array.from(rows.flat()), offsets: Int32Array.from(offsets) };
        if (!f.weighted) return ids;
        return { ...ids, weights: Float32Array.from(b.features[`${f.name}.weights`].flat()) };
      }),
    };
  });
  const { logs } = await train(model, () => batches, { numEpochs: 1, logStepCountSteps: 1 });
  assert.equal(logs.length, curve.losses.length);
  let worst = 0;
  logs.forEach((log, step) => {
    for (const [name, expected] of Object.entries(curve.losses[step])) {
      const ours = name === "total" ? log.total : log.losses[name];
      const error = Math.abs(ours - expected) / Math.abs(expected);
      worst = Math.max(worst, error);
      assertClose([ours], [expected], `step ${step + 1} ${name}`, { rtol: 1e-5, atol: 1e-6 });
    }
  });
  for (const [name, tensor] of Object.entries(curve.params_after)) {
    assertClose(model.parameter(name), tensor.data, `${name} after 30 steps`, {
      rtol: 0,
      atol: 5e-5,
    });
  }
  console.log(`training curve: worst relative loss difference ${worst.toExponential(1)}`);
});

test("trainer: numSteps stops early and logs the partial window", async () => {
  const config = plantedConfig();
  const data = plantedData(4, 2_560, 256);
  const model = new MMoEModel(config, { maxBatch: 256, seed: 1 });
  const summary = await train(model, () => data.batches, { numSteps: 5, logStepCountSteps: 2 });
  assert.equal(summary.steps, 5);
  assert.deepEqual(summary.logs.map((l) => l.step), [2, 4, 5]);
  assert.equal(model.step, 5);
});

test("evaluate: a tower with two losses reports both; each metric reads tzrec's prediction for it", async () => {
  const config = resolveConfig({
    featureConfigs: [{ rawFeature: { featureName: "x", expression: "item:x" } }],
    modelConfig: {
      featureGroups: [{ groupName: "all", featureNames: ["x"] }],
      mmoe: {
        expertMlp: { hiddenUnits: [4] },
        numExpert: 2,
        taskTowers: [{
          towerName: "t",
          labelName: "y",
          losses: [{ binaryCrossEntropy: {} }, { l2Loss: {} }],
          metrics: [{ auc: {} }, { meanSquaredError: {} }],
        }],
      },
    },
  });
  const model = new MMoEModel(config, { maxBatch: 4, seed: 3 });
  const batch = {
    size: 4,
    features: [{ values: Float32Array.of(-1, 1, -2, 2) }],
    columns: { y: Float32Array.of(0, 1, 0, 1) },
  };
  const metrics = await evaluate(model, [batch]);
  assert.deepEqual(Object.keys(metrics).sort(), [
    "auc_t",
    "binary_cross_entropy_t",
    "l2_loss_t",
    "mean_squared_error_t",
  ]);
  const { losses } = model.evalStep(batch);
  assert.equal(metrics.binary_cross_entropy_t, losses.binary_cross_entropy_t);
  assert.equal(metrics.l2_loss_t, losses.l2_loss_t);
  // MSE reads y_t (the raw output), as tzrec: with labels 0/1 it equals the l2 loss's mean.
  const y = model.outputs(4).y_t;
  const mse = Array.from(y).reduce((s, v, i) => s + (v - batch.columns.y[i]) ** 2, 0) / 4;
  assert.ok(
    Math.abs(metrics.mean_squared_error_t - mse) < 1e-6,
    `${metrics.mean_squared_error_t} vs ${mse}`,
  );
});

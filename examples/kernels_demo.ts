/**
 * Kernel demo: trains a one-hidden-layer MLP (Linear+ReLU -> Linear ->
 * sigmoid BCE, Adam) on a planted-signal data set using only the Wasm
 * kernels, the way the MMoE model uses them: one arena, parameters in one
 * block so that zeroing gradients is one fill and Adam is one flat loop.
 * Prints the loss per epoch and the eval AUC next to the oracle AUC of the
 * true probabilities.
 *
 *   deno run -A examples/kernels_demo.ts [--epochs 5] [--seed 7]   (or: bun examples/kernels_demo.ts)
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { mulberry32 } from "@denorec/mmoe";
import { Activation, instantiateKernels, KERNEL_RESERVED_BYTES } from "@denorec/mmoe/kernels";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { epochs: { type: "string", default: "5" }, seed: { type: "string", default: "7" } },
});
const EPOCHS = Number(values.epochs), SEED = Number(values.seed);
const F = 32, H = 64, B = 256, TRAIN = 40_000, EVAL = 10_000;

// Seeded RNG and a hidden teacher: logit = x.w + 2 x0 x1 - 0.5.
const random = mulberry32(SEED);
const teacher = Float64Array.from({ length: F }, () => (random() - 0.5) * 0.8);
function makeData(n: number) {
  const x = new Float32Array(n * F), y = new Float32Array(n), p = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let z = -0.5;
    for (let f = 0; f < F; f++) {
      const v = random() * 2 - 1;
      x[i * F + f] = v;
      z += v * teacher[f];
    }
    z += 2 * x[i * F] * x[i * F + 1];
    p[i] = 1 / (1 + Math.exp(-z));
    y[i] = random() < p[i] ? 1 : 0;
  }
  return { x, y, p };
}
const train = makeData(TRAIN), evalSet = makeData(EVAL);

// One arena: a size table gives every buffer a fixed byte offset, after the
// first 64 KiB, which belong to the kernels (their GEMM scratch).
const sizes = {
  params: F * H + H + H + 1, // W1 [F,H], b1 [H], W2 [H,1], b2 [1]
  grads: F * H + H + H + 1,
  adamM: F * H + H + H + 1,
  adamV: F * H + H + H + 1,
  x: B * F,
  hidden: B * H,
  dHidden: B * H,
  logits: B,
  probs: B,
  dLogits: B,
  labels: B,
  work: F * H + 64 * 1024, // GEMM packing scratch (bytes / 4, generous)
};
const offsets: Record<keyof typeof sizes, number> = {} as never;
let end = KERNEL_RESERVED_BYTES;
for (const [name, floats] of Object.entries(sizes)) {
  offsets[name as keyof typeof sizes] = end;
  end += Math.ceil((floats * 4) / 64) * 64;
}
const memory = new WebAssembly.Memory({ initial: Math.ceil(end / 65536) + 1 });
const { exports: k, variant } = instantiateKernels(memory);
const f32 = new Float32Array(memory.buffer);
const view = (name: keyof typeof sizes) =>
  f32.subarray(offsets[name] / 4, offsets[name] / 4 + sizes[name]);
const W1 = offsets.params, b1 = W1 + F * H * 4, W2 = b1 + H * 4, b2 = W2 + H * 4;
const dW1 = offsets.grads, db1 = dW1 + F * H * 4, dW2 = db1 + H * 4, db2 = dW2 + H * 4;

// PyTorch default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
const params = view("params");
for (let i = 0; i < F * H + H; i++) params[i] = (random() * 2 - 1) / Math.sqrt(F);
for (let i = F * H + H; i < sizes.params; i++) params[i] = (random() * 2 - 1) / Math.sqrt(H);

function forward(rows: number, x: Float32Array, first: number): void {
  view("x").set(x.subarray(first * F, (first + rows) * F));
  k.gemm(
    offsets.hidden,
    offsets.x,
    W1,
    b1,
    offsets.work,
    rows,
    F,
    H,
    F,
    H,
    H,
    false,
    false,
    false,
    true,
  );
  k.gemm(
    offsets.logits,
    offsets.hidden,
    W2,
    b2,
    offsets.work,
    rows,
    H,
    1,
    H,
    1,
    1,
    false,
    false,
    false,
    false,
  );
}

let step = 0;
for (let epoch = 1; epoch <= EPOCHS; epoch++) {
  let lossSum = 0;
  const started = performance.now();
  for (let first = 0; first + B <= TRAIN; first += B) {
    forward(B, train.x, first);
    view("labels").set(train.y.subarray(first, first + B));
    lossSum += k.sigmoidBinaryCrossEntropy(
      offsets.dLogits,
      offsets.probs,
      offsets.logits,
      offsets.labels,
      0,
      B,
      0,
      1 / B,
    );
    view("grads").fill(0);
    // Mirror of forward: Linear2, ReLU, Linear1.
    k.gemm(
      dW2,
      offsets.hidden,
      offsets.dLogits,
      0,
      offsets.work,
      H,
      B,
      1,
      H,
      1,
      1,
      true,
      false,
      true,
      false,
    );
    k.columnSum(db2, offsets.dLogits, B, 1, 1);
    k.gemm(
      offsets.dHidden,
      offsets.dLogits,
      W2,
      0,
      offsets.work,
      B,
      1,
      H,
      1,
      1,
      H,
      false,
      true,
      false,
      false,
    );
    k.activationBackward(
      offsets.dHidden,
      offsets.dHidden,
      0,
      offsets.hidden,
      B * H,
      Activation.relu,
      0,
    );
    k.gemm(
      dW1,
      offsets.x,
      offsets.dHidden,
      0,
      offsets.work,
      F,
      B,
      H,
      F,
      H,
      H,
      true,
      false,
      true,
      false,
    );
    k.columnSum(db1, offsets.dHidden, B, H, H);
    k.adamStep(
      offsets.params,
      offsets.grads,
      offsets.adamM,
      offsets.adamV,
      sizes.params,
      0.01,
      0.9,
      0.999,
      1e-8,
      0,
      ++step,
    );
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `epoch ${epoch}: mean train loss ${(lossSum / (TRAIN - TRAIN % B)).toFixed(4)}, ` +
      `${Math.round((TRAIN - TRAIN % B) / seconds)} samples/s (${variant})`,
  );
}

/** Exact ROC AUC by ranks, ties averaged. */
function exactAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) =>
    scores[a] - scores[b]
  );
  let rankSum = 0, positives = 0;
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j < order.length && scores[order[j]] === scores[order[i]]) j++;
    for (let t = i; t < j; t++) {
      if (labels[order[t]] > 0) {
        rankSum += (i + j + 1) / 2;
        positives++;
      }
    }
    i = j;
  }
  const negatives = order.length - positives;
  return (rankSum - positives * (positives + 1) / 2) / (positives * negatives);
}

const scores = new Float32Array(EVAL);
for (let first = 0; first < EVAL; first += B) {
  const rows = Math.min(B, EVAL - first);
  forward(rows, evalSet.x, first);
  k.sigmoidBinaryCrossEntropy(0, offsets.probs, offsets.logits, offsets.labels, 0, rows, 0, 0);
  scores.set(view("probs").subarray(0, rows), first);
}
console.log(
  `eval AUC ${exactAuc(scores, evalSet.y).toFixed(4)} ` +
    `(oracle AUC of the true probabilities ${exactAuc(evalSet.p, evalSet.y).toFixed(4)})`,
);

// Tower loss kernels at the MMoE batch size B = 8192: fused sigmoid + BCE
// (with sample weights, label smoothing, probs and dLogits written) and tzrec's
// task-space weights, against a scalar TypeScript loop over the same memory
// (the baseline). `[8192 samples]` in the names lets
// `deno run -A bench/report.ts bench/loss_bench.ts` print samples/s.
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/kernels/kernels.ts";
import { rng, VARIANTS } from "../tests/_util.ts";

const B = 8192;
const SMOOTHING = Math.fround(0.1), SCALE = Math.fround(1 / B);

// Arena layout in floats.
const LOGITS = 16;
const LABELS = LOGITS + B;
const INDICATOR = LABELS + B;
const SAMPLE = INDICATOR + B;
const WEIGHTS = SAMPLE + B;
const PROBS = WEIGHTS + B;
const DLOGITS = PROBS + B;
const FLOATS = DLOGITS + B;

const memory = new WebAssembly.Memory({ initial: Math.ceil((FLOATS * 4) / 65536) + 1 });
const f32 = new Float32Array(memory.buffer);
const random = rng(1);
for (let i = 0; i < B; i++) {
  f32[LOGITS + i] = (random() - 0.5) * 8;
  f32[LABELS + i] = random() < 0.05 ? 1 : 0;
  f32[INDICATOR + i] = random() < 0.3 ? 1 : 0;
  f32[SAMPLE + i] = 0.5 + random();
  f32[WEIGHTS + i] = 1;
}
const kernels = new Map<KernelVariant, Kernels>(
  VARIANTS.map((variant) => [variant, instantiateKernels(memory, variant).exports]),
);

/** The plain loss: the same stable formula, one row at a time. */
function scalarBce(): number {
  let total = 0;
  for (let i = 0; i < B; i++) {
    const z = f32[LOGITS + i];
    const y = f32[LABELS + i] * (1 - SMOOTHING) + 0.5 * SMOOTHING;
    const w = f32[WEIGHTS + i];
    const e = Math.exp(-Math.abs(z));
    const p = z >= 0 ? 1 / (1 + e) : e / (1 + e);
    total += w * (Math.max(z, 0) - z * y + Math.log1p(e));
    f32[PROBS + i] = p;
    f32[DLOGITS + i] = SCALE * w * (p - y);
  }
  return total;
}

function scalarWeights(): void {
  let sum = 0;
  for (let i = 0; i < B; i++) {
    const w = f32[SAMPLE + i] * (f32[INDICATOR + i] > 0 ? 1 : 0);
    f32[WEIGHTS + i] = w;
    sum += w;
  }
  const mean = sum / B;
  for (let i = 0; i < B; i++) {
    const w = f32[WEIGHTS + i] / mean;
    f32[WEIGHTS + i] = Number.isFinite(w) ? w : 0;
  }
}

const label = `B=${B} [${B} samples]`;
/** Loss sums accumulate here so every call's result is used. */
let sink = 0;

Deno.bench({
  name: `sigmoidBinaryCrossEntropy scalar TS ${label}`,
  group: "sigmoidBinaryCrossEntropy",
  baseline: true,
  fn: () => {
    sink += scalarBce();
  },
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `sigmoidBinaryCrossEntropy wasm ${variant} ${label}`,
    group: "sigmoidBinaryCrossEntropy",
    fn: () => {
      sink += k.sigmoidBinaryCrossEntropy(
        DLOGITS * 4,
        PROBS * 4,
        LOGITS * 4,
        LABELS * 4,
        WEIGHTS * 4,
        B,
        SMOOTHING,
        SCALE,
      );
    },
  });
}

Deno.bench({
  name: `taskSpaceWeights scalar TS ${label}`,
  group: "taskSpaceWeights",
  baseline: true,
  fn: scalarWeights,
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `taskSpaceWeights wasm ${variant} ${label}`,
    group: "taskSpaceWeights",
    fn: () => k.taskSpaceWeights(WEIGHTS * 4, SAMPLE * 4, INDICATOR * 4, B, 1, 0, 1),
  });
}

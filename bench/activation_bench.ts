// Activation kernels on one MMoE expert layer, B x H = 8192 x 512 (4.2M
// values, 16.8 MB per f32 array), against a scalar TypeScript loop over the
// same memory (the baseline). `[4194304 values]` in the names lets
// `deno run -A bench/report.ts bench/activation_bench.ts` print values/s.
// Bytes moved per call: biasActivation reads x and writes y (33.6 MB),
// activationBackward reads dy and x or y and writes dx (50.3 MB), columnSum
// reads x (16.8 MB); GB/s = bytes / avg.
import {
  Activation,
  instantiateKernels,
  type Kernels,
  type KernelVariant,
} from "../src/kernels/kernels.ts";
import { VARIANTS } from "../tests/_util.ts";

const B = 8192, H = 512, N = B * H;
const SLOPE = 0.01;

// Arena layout in floats.
const X = 16;
const BIAS = X + N;
const Y = BIAS + H;
const DY = Y + N;
const DX = DY + N;
const OUT = DX + N;
const FLOATS = OUT + H;

const memory = new WebAssembly.Memory({ initial: Math.ceil((FLOATS * 4) / 65536) + 1 });
const f32 = new Float32Array(memory.buffer);
for (let i = X; i < FLOATS; i++) f32[i] = Math.sin(i) * 3;
const kernels = new Map<KernelVariant, Kernels>(
  VARIANTS.map((variant) => [variant, instantiateKernels(memory, variant).exports]),
);

/** erf for the scalar GELU (Abramowitz-Stegun 7.1.26, |error| < 1.5e-7). */
function erf(x: number): number {
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 +
            t * (-1.453152027 + t * 1.061405429))));
  return Math.sign(x) * (1 - poly * Math.exp(-x * x));
}

function activate(v: number, act: number): number {
  switch (act) {
    case Activation.relu:
      return v > 0 ? v : 0;
    case Activation.sigmoid:
      return 1 / (1 + Math.exp(-v));
    case Activation.tanh:
      return Math.tanh(v);
    case Activation.leakyRelu:
      return v > 0 ? v : v * SLOPE;
    case Activation.gelu:
      return 0.5 * v * (1 + erf(v * Math.SQRT1_2));
    case Activation.silu:
      return v / (1 + Math.exp(-v));
    default:
      return v;
  }
}

function derivative(v: number, out: number, act: number): number {
  switch (act) {
    case Activation.relu:
      return out > 0 ? 1 : 0;
    case Activation.sigmoid:
      return out * (1 - out);
    case Activation.tanh:
      return 1 - out * out;
    case Activation.leakyRelu:
      return v > 0 ? 1 : SLOPE;
    case Activation.gelu:
      return 0.5 * (1 + erf(v * Math.SQRT1_2)) + v * Math.exp(-0.5 * v * v) * 0.3989422804014327;
    case Activation.silu: {
      const s = 1 / (1 + Math.exp(-v));
      return s * (1 + v * (1 - s));
    }
    default:
      return 1;
  }
}

/** The plain forward: one element at a time, the activation switch hoisted per call. */
function scalarForward(act: number): void {
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      f32[Y + b * H + h] = activate(f32[X + b * H + h] + f32[BIAS + h], act);
    }
  }
}

function scalarBackward(act: number): void {
  for (let i = 0; i < N; i++) f32[DX + i] = f32[DY + i] * derivative(f32[X + i], f32[Y + i], act);
}

function scalarColumnSum(): void {
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) f32[OUT + h] += f32[X + b * H + h];
  }
}

const label = `${B}x${H} [${N} values]`;

for (const [name, act] of Object.entries(Activation)) {
  const forward = `biasActivation ${name}`;
  Deno.bench({
    name: `${forward} scalar TS ${label}`,
    group: forward,
    baseline: true,
    n: 5,
    warmup: 1,
    fn: () => scalarForward(act),
  });
  for (const [variant, k] of kernels) {
    Deno.bench({
      name: `${forward} wasm ${variant} ${label}`,
      group: forward,
      n: 20,
      warmup: 2,
      fn: () => k.biasActivation(Y * 4, X * 4, BIAS * 4, B, H, act, SLOPE),
    });
  }
  const backward = `activationBackward ${name}`;
  Deno.bench({
    name: `${backward} scalar TS ${label}`,
    group: backward,
    baseline: true,
    n: 5,
    warmup: 1,
    fn: () => scalarBackward(act),
  });
  for (const [variant, k] of kernels) {
    Deno.bench({
      name: `${backward} wasm ${variant} ${label}`,
      group: backward,
      n: 20,
      warmup: 2,
      fn: () => k.activationBackward(DX * 4, DY * 4, X * 4, Y * 4, N, act, SLOPE),
    });
  }
}

Deno.bench({
  name: `columnSum scalar TS ${label}`,
  group: "columnSum",
  baseline: true,
  n: 5,
  warmup: 1,
  fn: scalarColumnSum,
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `columnSum wasm ${variant} ${label}`,
    group: "columnSum",
    n: 20,
    warmup: 2,
    fn: () => k.columnSum(OUT * 4, X * 4, B, H, H),
  });
}

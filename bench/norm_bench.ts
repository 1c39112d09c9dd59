// BatchNorm1d forward (training) and backward and LayerNorm forward on a
// B x H = 8192 x 512 batch (16 MiB per matrix, far past L2), against scalar
// TypeScript loops over the same memory (the baselines, row-major with f64
// column accumulators). `[8192 samples]` in the names lets
// `deno run -A bench/report.ts bench/norm_bench.ts` print samples/s.
// Bytes per call: batchNormForward streams x twice (statistics, then y) and
// writes y, 48 MiB; batchNormBackward reads dy and x twice and writes dx,
// 80 MiB; layerNormForward reads x once (rows stay in L1) and writes y, 32 MiB.
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/kernels/kernels.ts";
import { VARIANTS } from "../tests/_util.ts";

const B = 8192, H = 512;
const MOMENTUM = 0.1, EPS = 1e-5;

// Arena layout in floats.
const X = 16;
const Y = X + B * H;
const DY = Y + B * H;
const DX = DY + B * H;
const MEAN = DX + B * H;
const INV_STD = MEAN + Math.max(B, H);
const VARIANCE = INV_STD + Math.max(B, H);
const RUNNING_MEAN = VARIANCE + H;
const RUNNING_VAR = RUNNING_MEAN + H;
const GAMMA = RUNNING_VAR + H;
const BETA = GAMMA + H;
const DGAMMA = BETA + H;
const DBETA = DGAMMA + H;
const FLOATS = DBETA + H;

const memory = new WebAssembly.Memory({ initial: Math.ceil((FLOATS * 4) / 65536) + 1 });
const f32 = new Float32Array(memory.buffer);
for (let i = X; i < FLOATS; i++) f32[i] = Math.sin(i) * 0.5;
for (let h = 0; h < H; h++) {
  f32[GAMMA + h] = 1 + 0.1 * Math.cos(h);
  f32[RUNNING_VAR + h] = 1;
}
const kernels = new Map<KernelVariant, Kernels>(
  VARIANTS.map((variant) => [variant, instantiateKernels(memory, variant).exports]),
);

// Scratch of the scalar baselines, allocated once.
const sums = new Float64Array(H), squares = new Float64Array(H);

/** Plain training-mode BatchNorm forward: two passes for the statistics, one for y. */
function scalarBatchNormForward(): void {
  sums.fill(0);
  squares.fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) sums[h] += f32[X + b * H + h];
  }
  for (let h = 0; h < H; h++) f32[MEAN + h] = sums[h] / B;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) squares[h] += (f32[X + b * H + h] - f32[MEAN + h]) ** 2;
  }
  for (let h = 0; h < H; h++) {
    const m = f32[MEAN + h];
    f32[INV_STD + h] = 1 / Math.sqrt(squares[h] / B + EPS);
    f32[RUNNING_MEAN + h] = (1 - MOMENTUM) * f32[RUNNING_MEAN + h] + MOMENTUM * m;
    f32[RUNNING_VAR + h] = (1 - MOMENTUM) * f32[RUNNING_VAR + h] +
      MOMENTUM * squares[h] / (B - 1);
  }
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const i = b * H + h;
      f32[Y + i] = (f32[X + i] - f32[MEAN + h]) * f32[INV_STD + h] * f32[GAMMA + h] + f32[BETA + h];
    }
  }
}

/** Plain BatchNorm backward: column sums of dy and dy * xhat, then dx. */
function scalarBatchNormBackward(): void {
  sums.fill(0);
  squares.fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const i = b * H + h;
      const xhat = (f32[X + i] - f32[MEAN + h]) * f32[INV_STD + h];
      sums[h] += f32[DY + i];
      squares[h] += f32[DY + i] * xhat;
    }
  }
  for (let h = 0; h < H; h++) {
    f32[DBETA + h] += sums[h];
    f32[DGAMMA + h] += squares[h];
  }
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const i = b * H + h;
      const xhat = (f32[X + i] - f32[MEAN + h]) * f32[INV_STD + h];
      f32[DX + i] = f32[GAMMA + h] * f32[INV_STD + h] *
        (f32[DY + i] - sums[h] / B - xhat * squares[h] / B);
    }
  }
}

/** Plain LayerNorm forward: per row mean, variance, then y. */
function scalarLayerNormForward(): void {
  for (let b = 0; b < B; b++) {
    const row = X + b * H;
    let sum = 0;
    for (let h = 0; h < H; h++) sum += f32[row + h];
    const m = sum / H;
    let sq = 0;
    for (let h = 0; h < H; h++) sq += (f32[row + h] - m) ** 2;
    const s = 1 / Math.sqrt(sq / H + EPS);
    f32[MEAN + b] = m;
    f32[INV_STD + b] = s;
    for (let h = 0; h < H; h++) {
      f32[Y + b * H + h] = (f32[row + h] - m) * s * f32[GAMMA + h] + f32[BETA + h];
    }
  }
}

const label = `B=${B} H=${H} [${B} samples]`;

Deno.bench({
  name: `batchNormForward scalar TS ${label}`,
  group: "batchNormForward",
  baseline: true,
  fn: scalarBatchNormForward,
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `batchNormForward wasm ${variant} ${label}`,
    group: "batchNormForward",
    fn: () => {
      k.batchNormForward(
        Y * 4,
        MEAN * 4,
        INV_STD * 4,
        VARIANCE * 4,
        RUNNING_MEAN * 4,
        RUNNING_VAR * 4,
        X * 4,
        GAMMA * 4,
        BETA * 4,
        B,
        H,
        H,
        EPS,
        true,
      );
      k.batchNormRunningUpdate(
        RUNNING_MEAN * 4,
        RUNNING_VAR * 4,
        MEAN * 4,
        VARIANCE * 4,
        H,
        MOMENTUM,
      );
    },
  });
}

Deno.bench({
  name: `batchNormBackward scalar TS ${label}`,
  group: "batchNormBackward",
  baseline: true,
  fn: scalarBatchNormBackward,
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `batchNormBackward wasm ${variant} ${label}`,
    group: "batchNormBackward",
    fn: () =>
      k.batchNormBackward(
        DX * 4,
        DGAMMA * 4,
        DBETA * 4,
        DY * 4,
        X * 4,
        GAMMA * 4,
        MEAN * 4,
        INV_STD * 4,
        B,
        H,
        H,
      ),
  });
}

Deno.bench({
  name: `layerNormForward scalar TS ${label}`,
  group: "layerNormForward",
  baseline: true,
  fn: scalarLayerNormForward,
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `layerNormForward wasm ${variant} ${label}`,
    group: "layerNormForward",
    fn: () =>
      k.layerNormForward(Y * 4, MEAN * 4, INV_STD * 4, X * 4, GAMMA * 4, BETA * 4, B, 1, H, EPS),
  });
}

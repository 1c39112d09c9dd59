// Optimizer kernels at MMoE Taobao sizes, against a scalar TypeScript loop over
// the same memory (the baseline). `[N params]` / `[N rows]` in the names lets
// `deno run -A bench/report.ts bench/optim_bench.ts` print params/s or rows/s.
//
// Dense: all 1,037,448 dense parameters (SPEC.md) in one block. Adam reads
// p, g, m, v and writes p, m, v: 28 B per parameter, 29 MB per call; Adagrad
// 20 B; SGD 12 B. Sparse: one step's touched embedding rows, 8192 samples x
// 16 features = 131,072 distinct rows of dim 16, drawn uniformly from the
// 3.14M-row Taobao tables (201 MB per table-shaped array), so nearly every row
// misses cache as in training. Adagrad rows move 3 x 64 B read + 2 x 64 B
// written per row (16.8 MB), Adam rows 4 + 3.
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/kernels/kernels.ts";
import { rng, VARIANTS } from "../tests/_util.ts";

const PARAMS = 1_037_448;
const TABLE_ROWS = 3_140_000, DIM = 16, U = 8192 * 16;
const LR = 1e-3, BETA1 = 0.9, BETA2 = 0.999, EPS = 1e-8, WD = 1e-4;

// Arena layout in floats (the row index list is i32).
const P = 16;
const G = P + PARAMS;
const M = G + PARAMS;
const V = M + PARAMS;
const TABLE = V + PARAMS;
const TABLE_M = TABLE + TABLE_ROWS * DIM; // Adagrad's G, Adam's m
const TABLE_V = TABLE_M + TABLE_ROWS * DIM;
const GRAD_ROWS = TABLE_V + TABLE_ROWS * DIM;
const UNIQUE = GRAD_ROWS + U * DIM;
const FLOATS = UNIQUE + U;

const memory = new WebAssembly.Memory({ initial: Math.ceil((FLOATS * 4) / 65536) + 1 });
const f32 = new Float32Array(memory.buffer);
const i32 = new Int32Array(memory.buffer);
const random = rng(1);
for (let i = P; i < TABLE; i++) f32[i] = (random() - 0.5) * 0.1;
for (let i = GRAD_ROWS; i < UNIQUE; i++) f32[i] = (random() - 0.5) * 0.1;
{
  // U distinct rows, uniform over the table (partial Fisher-Yates on a sparse map).
  const swapped = new Map<number, number>();
  for (let u = 0; u < U; u++) {
    const j = u + Math.floor(random() * (TABLE_ROWS - u));
    const picked = swapped.get(j) ?? j;
    swapped.set(j, swapped.get(u) ?? u);
    i32[UNIQUE + u] = picked;
  }
}
const kernels = new Map<KernelVariant, Kernels>(
  VARIANTS.map((variant) => [variant, instantiateKernels(memory, variant).exports]),
);

let step = 0;

function scalarAdam(): void {
  step++;
  const stepSize = LR / (1 - BETA1 ** step), bc2Sqrt = Math.sqrt(1 - BETA2 ** step);
  for (let i = 0; i < PARAMS; i++) {
    const p = f32[P + i];
    const g = f32[G + i] + WD * p;
    const m = (f32[M + i] += (1 - BETA1) * (g - f32[M + i]));
    const v = (f32[V + i] = BETA2 * f32[V + i] + (1 - BETA2) * g * g);
    f32[P + i] = p - stepSize * m / (Math.sqrt(v) / bc2Sqrt + EPS);
  }
}

function scalarAdagrad(): void {
  for (let i = 0; i < PARAMS; i++) {
    const p = f32[P + i];
    const g = f32[G + i] + WD * p;
    const acc = (f32[M + i] += g * g);
    f32[P + i] = p - LR * g / (Math.sqrt(acc) + EPS);
  }
}

function scalarSgd(): void {
  for (let i = 0; i < PARAMS; i++) f32[P + i] -= LR * (f32[G + i] + WD * f32[P + i]);
}

function scalarAdagradRows(): void {
  for (let u = 0; u < U; u++) {
    const row = TABLE + i32[UNIQUE + u] * DIM, acc = row - TABLE + TABLE_M;
    for (let d = 0; d < DIM; d++) {
      const g = f32[GRAD_ROWS + u * DIM + d];
      const G2 = (f32[acc + d] += g * g);
      f32[row + d] -= LR * g / (Math.sqrt(G2) + EPS);
    }
  }
}

function scalarAdamRows(): void {
  step++;
  const stepSize = LR / (1 - BETA1 ** step), bc2Sqrt = Math.sqrt(1 - BETA2 ** step);
  for (let u = 0; u < U; u++) {
    const off = i32[UNIQUE + u] * DIM;
    for (let d = 0; d < DIM; d++) {
      const g = f32[GRAD_ROWS + u * DIM + d];
      const m = (f32[TABLE_M + off + d] += (1 - BETA1) * (g - f32[TABLE_M + off + d]));
      const v = (f32[TABLE_V + off + d] = BETA2 * f32[TABLE_V + off + d] + (1 - BETA2) * g * g);
      f32[TABLE + off + d] -= stepSize * m / (Math.sqrt(v) / bc2Sqrt + EPS);
    }
  }
}

function scalarSgdRows(): void {
  for (let u = 0; u < U; u++) {
    const row = TABLE + i32[UNIQUE + u] * DIM;
    for (let d = 0; d < DIM; d++) f32[row + d] -= LR * f32[GRAD_ROWS + u * DIM + d];
  }
}

const dense = `[${PARAMS} params]`;
const sparse = `dim=${DIM} [${U} rows]`;
const cases: [string, string, () => void, (k: Kernels) => void][] = [
  ["adamStep", dense, scalarAdam, (k) => {
    k.adamStep(P * 4, G * 4, M * 4, V * 4, PARAMS, LR, BETA1, BETA2, EPS, WD, ++step);
  }],
  ["adagradStep", dense, scalarAdagrad, (k) => {
    k.adagradStep(P * 4, G * 4, M * 4, PARAMS, LR, EPS, WD);
  }],
  ["sgdStep", dense, scalarSgd, (k) => k.sgdStep(P * 4, G * 4, PARAMS, LR, WD)],
  ["adagradRows", sparse, scalarAdagradRows, (k) => {
    k.adagradRows(TABLE * 4, TABLE_M * 4, UNIQUE * 4, GRAD_ROWS * 4, U, DIM, LR, EPS);
  }],
  ["adamRows", sparse, scalarAdamRows, (k) => {
    k.adamRows(
      TABLE * 4,
      TABLE_M * 4,
      TABLE_V * 4,
      UNIQUE * 4,
      GRAD_ROWS * 4,
      U,
      DIM,
      LR,
      BETA1,
      BETA2,
      EPS,
      0,
      ++step,
    );
  }],
  ["sgdRows", sparse, scalarSgdRows, (k) => {
    k.sgdRows(TABLE * 4, UNIQUE * 4, GRAD_ROWS * 4, U, DIM, LR);
  }],
];

for (const [name, size, scalar, kernel] of cases) {
  Deno.bench({ name: `${name} scalar TS ${size}`, group: name, baseline: true, fn: scalar });
  for (const [variant, k] of kernels) {
    Deno.bench({ name: `${name} wasm ${variant} ${size}`, group: name, fn: () => kernel(k) });
  }
}

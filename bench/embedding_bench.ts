// Embedding kernels at the MMoE Taobao sizes: a batch of 8192 rows, the 16
// Taobao id features (table rows from SPEC.md, 1.14M for user_id down to 3;
// 3.14M x 16 floats = 201 MB in all), dim 16, concat width ldOut = 256.
// Ids are uniform per table, so the big tables miss cache on nearly every row
// as in real training. Each kernel runs against a scalar TypeScript loop over
// the same memory (the baseline). `[8192 samples]` in the names lets
// `deno run -A bench/report.ts bench/embedding_bench.ts` print samples/s;
// gather moves 8192 x 16 x 64 B = 8.4 MB of table rows per call.
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/kernels/kernels.ts";
import { rng, VARIANTS } from "../tests/_util.ts";

const B = 8192, DIM = 16, LD = 256;
/** Taobao id features (user side, item side, pid hash buckets). */
const TABLE_ROWS = [
  1_141_730,
  98,
  14,
  3,
  8,
  5,
  5,
  3,
  6,
  846_812,
  12_961,
  423_438,
  255_877,
  461_498,
  99,
  20,
];
const F = TABLE_ROWS.length;
const CAPACITY = 16384; // power of two >= 2 * 8192 ids

// Byte layout: per feature a table, ids (one per row: Taobao features are
// single-valued), unique, inverse, gradRows; shared offsets, concat, hash table.
let next = 64;
const take = (bytes: number) => {
  const ptr = next;
  next += Math.ceil(bytes / 64) * 64;
  return ptr;
};
const features = TABLE_ROWS.map((rows) => ({
  rows,
  table: take(rows * DIM * 4),
  ids: take(B * 4),
  unique: take(B * 4),
  inverse: take(B * 4),
  gradRows: take(B * DIM * 4),
  U: 0,
}));
const OFFSETS = take((B + 1) * 4);
const CONCAT = take(B * LD * 4);
const DCONCAT = take(B * LD * 4);
const HASH = take(CAPACITY * 4);
const COUNT = take(4);

const memory = new WebAssembly.Memory({ initial: Math.ceil(next / 65536) + 1 });
const f32 = new Float32Array(memory.buffer);
const i32 = new Int32Array(memory.buffer);
const random = rng(1);
for (const f of features) {
  for (let i = f.table / 4; i < f.table / 4 + f.rows * DIM; i++) f32[i] = random() - 0.5;
  for (let b = 0; b < B; b++) i32[f.ids / 4 + b] = Math.floor(random() * f.rows);
}
for (let b = 0; b <= B; b++) i32[OFFSETS / 4 + b] = b;
for (let i = DCONCAT / 4; i < DCONCAT / 4 + B * LD; i++) f32[i] = random() - 0.5;
const kernels = new Map<KernelVariant, Kernels>(
  VARIANTS.map((variant) => [variant, instantiateKernels(memory, variant).exports]),
);
// unique/inverse for the backward benches.
const setupKernels = instantiateKernels(memory, "simd").exports;
for (const f of features) {
  setupKernels.embeddingUnique(f.unique, f.inverse, COUNT, f.ids, B, HASH, CAPACITY);
  f.U = i32[COUNT / 4];
}

/** The plain gather: CSR sum pooling, element by element. */
function scalarGather(out: number, table: number, ids: number): void {
  for (let b = 0; b < B; b++) {
    const o = out / 4 + b * LD;
    for (let d = 0; d < DIM; d++) f32[o + d] = 0;
    for (let j = i32[OFFSETS / 4 + b]; j < i32[OFFSETS / 4 + b + 1]; j++) {
      const row = table / 4 + i32[ids / 4 + j] * DIM;
      for (let d = 0; d < DIM; d++) f32[o + d] += f32[row + d];
    }
  }
}

/** The plain unique: the kernel's algorithm (fmix32, linear probing) on Int32Array views. */
function scalarUnique(unique: number, inverse: number, ids: number, n: number): number {
  const table = HASH / 4, mask = CAPACITY - 1;
  i32.fill(0, table, table + CAPACITY);
  let U = 0;
  for (let j = 0; j < n; j++) {
    const id = i32[ids / 4 + j];
    let h = id >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    let slot = (h ^ (h >>> 16)) & mask;
    for (;;) {
      const entry = i32[table + slot];
      if (entry === 0) {
        i32[unique / 4 + U] = id;
        i32[table + slot] = U + 1;
        i32[inverse / 4 + j] = U++;
        break;
      }
      if (i32[unique / 4 + entry - 1] === id) {
        i32[inverse / 4 + j] = entry - 1;
        break;
      }
      slot = (slot + 1) & mask;
    }
  }
  return U;
}

/** The plain backward: gradRows[inverse[j]] += dOut row, element by element. */
function scalarBackward(gradRows: number, dOut: number, inverse: number): void {
  for (let b = 0; b < B; b++) {
    const dy = dOut / 4 + b * LD;
    for (let j = i32[OFFSETS / 4 + b]; j < i32[OFFSETS / 4 + b + 1]; j++) {
      const row = gradRows / 4 + i32[inverse / 4 + j] * DIM;
      for (let d = 0; d < DIM; d++) f32[row + d] += f32[dy + d];
    }
  }
}

/** The plain dense copy. */
function scalarCopy(out: number, x: number, width: number): void {
  for (let b = 0; b < B; b++) {
    for (let d = 0; d < width; d++) f32[out / 4 + b * LD + d] = f32[x / 4 + b * LD + d];
  }
}

const label = `${F} features x dim ${DIM} [${B} samples]`;

Deno.bench({
  name: `embeddingGather scalar TS ${label}`,
  group: "embeddingGather",
  baseline: true,
  fn: () => features.forEach((f, i) => scalarGather(CONCAT + i * DIM * 4, f.table, f.ids)),
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `embeddingGather wasm ${variant} ${label}`,
    group: "embeddingGather",
    fn: () => {
      features.forEach((f, i) =>
        k.embeddingGather(CONCAT + i * DIM * 4, f.table, f.ids, 0, OFFSETS, B, DIM, LD, false)
      );
    },
  });
}

Deno.bench({
  name: `embeddingUnique scalar TS ${F} features x ${B} ids [${B} samples]`,
  group: "embeddingUnique",
  baseline: true,
  fn: () => features.forEach((f) => scalarUnique(f.unique, f.inverse, f.ids, B)),
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `embeddingUnique wasm ${variant} ${F} features x ${B} ids [${B} samples]`,
    group: "embeddingUnique",
    fn: () =>
      features.forEach((f) =>
        k.embeddingUnique(f.unique, f.inverse, COUNT, f.ids, B, HASH, CAPACITY)
      ),
  });
}

Deno.bench({
  name: `embeddingBackward scalar TS ${label}`,
  group: "embeddingBackward",
  baseline: true,
  fn: () =>
    features.forEach((f, i) => scalarBackward(f.gradRows, DCONCAT + i * DIM * 4, f.inverse)),
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `embeddingBackward wasm ${variant} ${label}`,
    group: "embeddingBackward",
    fn: () => {
      features.forEach((f, i) =>
        k.embeddingBackward(
          f.gradRows,
          DCONCAT + i * DIM * 4,
          f.inverse,
          0,
          OFFSETS,
          B,
          DIM,
          LD,
          false,
        )
      );
    },
  });
}

// A 16-wide dense block into the concat (both row strides 256).
Deno.bench({
  name: `copyColumns scalar TS width 16 [${B} samples]`,
  group: "copyColumns",
  baseline: true,
  fn: () => scalarCopy(CONCAT, DCONCAT, 16),
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `copyColumns wasm ${variant} width 16 [${B} samples]`,
    group: "copyColumns",
    fn: () => k.copyColumns(CONCAT, DCONCAT, B, 16, LD, LD),
  });
}

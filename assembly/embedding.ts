// Pooled embedding lookup (torchrec EmbeddingBagCollection, SUM or MEAN
// pooling, optionally weighted per id) writing straight into the feature's
// column slice of the DEEP group concat, and its sparse backward.
//
// Ids are i32 in CSR form: row b owns ids[offsets[b] .. offsets[b+1]), so
// offsets has B+1 entries and a row with no ids (a missing value) pools to
// the zero vector. A weighted feature (tzrec `id_feature.weighted`, torchrec
// per_sample_weights) passes one f32 weight per id; `weights` 0 means every
// weight is 1, and w * row then equals row exactly, so one loop serves both. Tables are rows x dim f32, row-major. Row strides of the
// concat (`ldOut`, `ldX`) are in floats.
//
// Backward is fbgemm's sparse form: ids are deduplicated once per batch
// (`embeddingUnique`), gradients are summed per unique row into a U x dim
// block (`embeddingBackward`), and the sparse optimizers (optim.ts) update
// only those U rows.

import { fma } from "./simd";

/**
 * out[b*ldOut + 0..dim] = sum over the ids j of row b (offsets[b] ..
 * offsets[b+1]) of weights[j] * table[ids[j]] (weight 1 when `weights` is
 * 0); an empty row writes zeros. `mean` divides the sum by the id count, as
 * torchrec does.
 */
export function embeddingGather(
  out: usize,
  table: usize,
  ids: usize,
  weights: usize,
  offsets: usize,
  B: i32,
  dim: i32,
  ldOut: i32,
  mean: bool,
): void {
  const rowBytes = <usize> dim << 2;
  const ldBytes = <usize> ldOut << 2;
  for (let b = 0; b < B; b++) {
    const start = load<i32>(offsets + (<usize> b << 2));
    const count = load<i32>(offsets + (<usize> b << 2), 4) - start;
    const rowIds = ids + (<usize> start << 2);
    const rowWeights = weights + (<usize> start << 2);
    const o = out + <usize> b * ldBytes;
    const divide = mean && count > 1;
    const n = f32x4.splat(<f32> count);
    let d = 0;
    // 16 columns (one dim-16 row) per pass: four independent sums over the ids.
    for (; d + 16 <= dim; d += 16) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      for (let j = 0; j < count; j++) {
        const row = table + <usize> load<i32>(rowIds + (<usize> j << 2)) * rowBytes +
          (<usize> d << 2);
        const w = idWeight(weights, rowWeights, j);
        a0 = fma(w, v128.load(row), a0);
        a1 = fma(w, v128.load(row, 16), a1);
        a2 = fma(w, v128.load(row, 32), a2);
        a3 = fma(w, v128.load(row, 48), a3);
      }
      if (divide) {
        a0 = f32x4.div(a0, n);
        a1 = f32x4.div(a1, n);
        a2 = f32x4.div(a2, n);
        a3 = f32x4.div(a3, n);
      }
      const op = o + (<usize> d << 2);
      v128.store(op, a0);
      v128.store(op, a1, 16);
      v128.store(op, a2, 32);
      v128.store(op, a3, 48);
    }
    for (; d + 4 <= dim; d += 4) {
      let a = f32x4.splat(0);
      for (let j = 0; j < count; j++) {
        const row = table + <usize> load<i32>(rowIds + (<usize> j << 2)) * rowBytes +
          (<usize> d << 2);
        a = fma(idWeight(weights, rowWeights, j), v128.load(row), a);
      }
      if (divide) a = f32x4.div(a, n);
      v128.store(o + (<usize> d << 2), a);
    }
    for (; d < dim; d++) {
      let a: f32 = 0;
      for (let j = 0; j < count; j++) {
        const row = table + <usize> load<i32>(rowIds + (<usize> j << 2)) * rowBytes;
        const w: f32 = weights != 0 ? load<f32>(rowWeights + (<usize> j << 2)) : 1;
        a += w * load<f32>(row + (<usize> d << 2));
      }
      store<f32>(o + (<usize> d << 2), divide ? a / <f32> count : a);
    }
  }
}

/**
 * embeddingGather over an int8 table (torchrec's INT8 rowwise quantization,
 * fbgemm `FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf` with 8 bits): row r
 * is dim u8 values q at table + r*dim and an f16 (scale, bias) pair at
 * scaleBias + 4r; its values are scale * q + bias. Pooling, weights and
 * `mean` as in embeddingGather: per id j, w*scale multiplies the row and
 * w*bias is added to every column once.
 */
export function embeddingGatherInt8(
  out: usize,
  table: usize,
  scaleBias: usize,
  ids: usize,
  weights: usize,
  offsets: usize,
  B: i32,
  dim: i32,
  ldOut: i32,
  mean: bool,
): void {
  const ldBytes = <usize> ldOut << 2;
  for (let b = 0; b < B; b++) {
    const start = load<i32>(offsets + (<usize> b << 2));
    const count = load<i32>(offsets + (<usize> b << 2), 4) - start;
    const rowIds = ids + (<usize> start << 2);
    const rowWeights = weights + (<usize> start << 2);
    const o = out + <usize> b * ldBytes;
    const inverseCount: f32 = mean && count > 1 ? <f32> 1 / <f32> count : 1;
    let d = 0;
    // 16 columns (one dim-16 row: one 16-byte load) per pass: four sums over the ids.
    for (; d + 16 <= dim; d += 16) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      let shift: f32 = 0;
      for (let j = 0; j < count; j++) {
        const id = <usize> load<i32>(rowIds + (<usize> j << 2));
        const pair = load<u32>(scaleBias + (id << 2));
        const w: f32 = weights != 0 ? load<f32>(rowWeights + (<usize> j << 2)) : 1;
        const s = f32x4.splat(w * halfToFloat(pair & 0xffff));
        shift += w * halfToFloat(pair >>> 16);
        const q = v128.load(table + id * <usize> dim + <usize> d);
        const lo = i16x8.extend_low_i8x16_u(q), hi = i16x8.extend_high_i8x16_u(q);
        a0 = fma(s, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(lo)), a0);
        a1 = fma(s, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(lo)), a1);
        a2 = fma(s, f32x4.convert_i32x4_u(i32x4.extend_low_i16x8_u(hi)), a2);
        a3 = fma(s, f32x4.convert_i32x4_u(i32x4.extend_high_i16x8_u(hi)), a3);
      }
      const c = f32x4.splat(shift), n = f32x4.splat(inverseCount);
      const op = o + (<usize> d << 2);
      v128.store(op, f32x4.mul(f32x4.add(a0, c), n));
      v128.store(op, f32x4.mul(f32x4.add(a1, c), n), 16);
      v128.store(op, f32x4.mul(f32x4.add(a2, c), n), 32);
      v128.store(op, f32x4.mul(f32x4.add(a3, c), n), 48);
    }
    for (; d + 4 <= dim; d += 4) {
      let a = f32x4.splat(0);
      let shift: f32 = 0;
      for (let j = 0; j < count; j++) {
        const id = <usize> load<i32>(rowIds + (<usize> j << 2));
        const pair = load<u32>(scaleBias + (id << 2));
        const w: f32 = weights != 0 ? load<f32>(rowWeights + (<usize> j << 2)) : 1;
        shift += w * halfToFloat(pair >>> 16);
        const q = v128.load32_zero(table + id * <usize> dim + <usize> d);
        const wide = i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(q));
        a = fma(f32x4.splat(w * halfToFloat(pair & 0xffff)), f32x4.convert_i32x4_u(wide), a);
      }
      const sum = f32x4.add(a, f32x4.splat(shift));
      v128.store(o + (<usize> d << 2), f32x4.mul(sum, f32x4.splat(inverseCount)));
    }
    for (; d < dim; d++) {
      let a: f32 = 0;
      for (let j = 0; j < count; j++) {
        const id = <usize> load<i32>(rowIds + (<usize> j << 2));
        const pair = load<u32>(scaleBias + (id << 2));
        const w: f32 = weights != 0 ? load<f32>(rowWeights + (<usize> j << 2)) : 1;
        const q = <f32> load<u8>(table + id * <usize> dim + <usize> d);
        a += w * halfToFloat(pair & 0xffff) * q + w * halfToFloat(pair >>> 16);
      }
      store<f32>(o + (<usize> d << 2), a * inverseCount);
    }
  }
}

// No `@inline` on helpers: `deno fmt` deletes decorators on function
// declarations, and binaryen -O3 inlines these anyway.

/** Weight of id j of a row as four lanes: weights[j], or 1 when the feature is unweighted. */
function idWeight(weights: usize, rowWeights: usize, j: i32): v128 {
  return weights != 0 ? v128.load32_splat(rowWeights + (<usize> j << 2)) : f32x4.splat(1);
}

/**
 * An IEEE binary16 value (the low 16 bits of `h`) as f32: its exponent and
 * mantissa bits shifted into place read as an f32 2^112 times too small,
 * normal and subnormal alike (no infinities or NaNs reach here).
 */
function halfToFloat(h: u32): f32 {
  const magnitude = reinterpret<f32>((h & 0x7fff) << 13) * reinterpret<f32>(0x77800000);
  return (h & 0x8000) != 0 ? -magnitude : magnitude;
}

/**
 * murmur3's 32-bit finalizer (fmix32): a bijection on u32 whose low bits
 * depend on every input bit, so sequential or strided ids spread over the
 * table instead of clustering under linear probing.
 */
function hashId(id: i32): u32 {
  let h = <u32> id;
  h ^= h >>> 16;
  h *= 0x85ebca6b;
  h ^= h >>> 13;
  h *= 0xc2b2ae35;
  h ^= h >>> 16;
  return h;
}

/**
 * Deduplicates n i32 ids: unique[0..U) in order of first appearance (so
 * results do not depend on the hash), inverse[j] = index of ids[j] in
 * unique, and U stored at `uniqueCount` (one i32: an output in memory, so a
 * worker thread can run it). Open addressing with linear probing over
 * `hashTable` (i32 scratch of `hashCapacity` slots, a power of two >= 2n, so
 * the load factor stays <= 1/2); a slot holds 1 + its id's index in unique,
 * 0 = empty, and is cleared here.
 */
export function embeddingUnique(
  unique: usize,
  inverse: usize,
  uniqueCount: usize,
  ids: usize,
  n: i32,
  hashTable: usize,
  hashCapacity: i32,
): void {
  memory.fill(hashTable, 0, <usize> hashCapacity << 2);
  const mask = <u32> hashCapacity - 1;
  let U = 0;
  for (let j = 0; j < n; j++) {
    const id = load<i32>(ids + (<usize> j << 2));
    let slot = hashId(id) & mask;
    while (true) {
      const p = hashTable + (<usize> slot << 2);
      const entry = load<i32>(p);
      if (entry == 0) {
        store<i32>(unique + (<usize> U << 2), id);
        store<i32>(p, U + 1);
        store<i32>(inverse + (<usize> j << 2), U);
        U++;
        break;
      }
      if (load<i32>(unique + (<usize> (entry - 1) << 2)) == id) {
        store<i32>(inverse + (<usize> j << 2), entry - 1);
        break;
      }
      slot = (slot + 1) & mask;
    }
  }
  store<i32>(uniqueCount, U);
}

/**
 * Sparse backward of embeddingGather: for every id j of row b,
 * gradRows[inverse[j]*dim ..] += weights[j] * dOut[b*ldOut ..] (weight 1 when
 * `weights` is 0; times 1/count when `mean`), so duplicate ids, within a row
 * or across rows, sum into one row. gradRows is U x dim and accumulates.
 */
export function embeddingBackward(
  gradRows: usize,
  dOut: usize,
  inverse: usize,
  weights: usize,
  offsets: usize,
  B: i32,
  dim: i32,
  ldOut: i32,
  mean: bool,
): void {
  const rowBytes = <usize> dim << 2;
  const ldBytes = <usize> ldOut << 2;
  for (let b = 0; b < B; b++) {
    const start = load<i32>(offsets + (<usize> b << 2));
    const count = load<i32>(offsets + (<usize> b << 2), 4) - start;
    if (count <= 0) continue;
    const rowInverse = inverse + (<usize> start << 2);
    const rowWeights = weights + (<usize> start << 2);
    const dy = dOut + <usize> b * ldBytes;
    const scale: f32 = mean ? <f32> 1 / <f32> count : 1;
    const sv = f32x4.splat(scale);
    let d = 0;
    for (; d + 16 <= dim; d += 16) {
      const off = <usize> d << 2;
      const g0 = f32x4.mul(v128.load(dy + off), sv);
      const g1 = f32x4.mul(v128.load(dy + off, 16), sv);
      const g2 = f32x4.mul(v128.load(dy + off, 32), sv);
      const g3 = f32x4.mul(v128.load(dy + off, 48), sv);
      for (let j = 0; j < count; j++) {
        const row = gradRows + <usize> load<i32>(rowInverse + (<usize> j << 2)) * rowBytes + off;
        const w = idWeight(weights, rowWeights, j);
        v128.store(row, fma(w, g0, v128.load(row)));
        v128.store(row, fma(w, g1, v128.load(row, 16)), 16);
        v128.store(row, fma(w, g2, v128.load(row, 32)), 32);
        v128.store(row, fma(w, g3, v128.load(row, 48)), 48);
      }
    }
    for (; d + 4 <= dim; d += 4) {
      const off = <usize> d << 2;
      const g0 = f32x4.mul(v128.load(dy + off), sv);
      for (let j = 0; j < count; j++) {
        const row = gradRows + <usize> load<i32>(rowInverse + (<usize> j << 2)) * rowBytes + off;
        v128.store(row, fma(idWeight(weights, rowWeights, j), g0, v128.load(row)));
      }
    }
    for (; d < dim; d++) {
      const off = <usize> d << 2;
      const g0 = load<f32>(dy + off) * scale;
      for (let j = 0; j < count; j++) {
        const row = gradRows + <usize> load<i32>(rowInverse + (<usize> j << 2)) * rowBytes + off;
        const w: f32 = weights != 0 ? load<f32>(rowWeights + (<usize> j << 2)) : 1;
        store<f32>(row, load<f32>(row) + w * g0);
      }
    }
  }
}

/** out[b*ldOut + 0..width] = x[b*ldX + 0..width]: a dense feature into the concat. */
export function copyColumns(
  out: usize,
  x: usize,
  B: i32,
  width: i32,
  ldOut: i32,
  ldX: i32,
): void {
  const ldOutBytes = <usize> ldOut << 2;
  const ldXBytes = <usize> ldX << 2;
  for (let b = 0; b < B; b++) {
    const o = out + <usize> b * ldOutBytes;
    const s = x + <usize> b * ldXBytes;
    let d = 0;
    for (; d + 4 <= width; d += 4) {
      v128.store(o + (<usize> d << 2), v128.load(s + (<usize> d << 2)));
    }
    for (; d < width; d++) store<f32>(o + (<usize> d << 2), load<f32>(s + (<usize> d << 2)));
  }
}

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  embeddingBackwardTwin,
  embeddingGatherTwin,
  embeddingUniqueTwin,
} from "./twins/embedding.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

// Widths around the kernels' 16/4-column blocks and the scalar tail.
const DIMS = [1, 3, 4, 5, 8, 9, 15, 16, 17, 20, 33, 128, 131];
const BS = [1, 3, 7, 33, 1001];

/** Random CSR rows of 0..maxIds ids from [0, rows): empty rows and duplicates included. */
function randomBatch(B: number, rows: number, maxIds: number, next: () => number) {
  const offsets = [0];
  const ids: number[] = [];
  for (let b = 0; b < B; b++) {
    const count = Math.floor(next() * (maxIds + 1));
    for (let j = 0; j < count; j++) ids.push(Math.floor(next() * rows));
    offsets.push(ids.length);
  }
  return { ids, offsets };
}

/** The smallest power of two >= 2n (>= 1). */
const capacityFor = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(2 * n, 1)));

/** Kernel unique + inverse for `ids` (a fresh hash table). */
function runUnique(mem: TestMemory, ids: ArrayLike<number>) {
  const n = ids.length, capacity = capacityFor(n);
  const Ids = mem.i32(n, ids), Unique = mem.i32(n), Inverse = mem.i32(n), Count = mem.i32(1, [-1]);
  mem.k.embeddingUnique(
    Unique.ptr,
    Inverse.ptr,
    Count.ptr,
    Ids.ptr,
    n,
    mem.alloc(capacity * 4),
    capacity,
  );
  const U = Count.view[0];
  return { U, unique: Unique.view.subarray(0, U), inverse: Inverse.view };
}

/** Columns [col, col+dim) of a B x ld block, dense B x dim. */
function slice(view: ArrayLike<number>, B: number, dim: number, ld: number, col: number) {
  const out = new Float64Array(B * dim);
  for (let b = 0; b < B; b++) {
    for (let d = 0; d < dim; d++) out[b * dim + d] = view[b * ld + col + d];
  }
  return out;
}

/** Asserts every column outside [col, col+dim) of a B x ld block still holds `fill`. */
function assertOutsideUntouched(
  view: Float32Array,
  B: number,
  dim: number,
  ld: number,
  col: number,
  fill: number,
) {
  for (let i = 0; i < view.length; i++) {
    const c = i % ld, b = Math.floor(i / ld);
    if (b < B && c >= col && c < col + dim) continue;
    if (view[i] !== fill) assert.fail(`element ${i} (row ${b}, column ${c}) changed to ${view[i]}`);
  }
}

for (const variant of VARIANTS) {
  for (const B of BS) {
    test(`embeddingGather ${variant} B=${B}: sum, mean and weighted into a concat slice match the twin`, () => {
      let seed = B;
      for (const dim of DIMS) {
        for (
          const [mean, weighted] of [[false, false], [true, false], [false, true], [true, true]]
        ) {
          const next = rng(seed++);
          const rows = 50, col = 3, ld = dim + 7;
          const mem = new TestMemory(variant, Math.ceil((B * ld * 4 * 2) / 2 ** 20) + 2);
          const { ids, offsets } = randomBatch(B, rows, 4, next);
          const weights = Float32Array.from(randomArray(ids.length, next, -2, 2));
          const Table = mem.f32(rows * dim, randomArray(rows * dim, next));
          const Ids = mem.i32(Math.max(ids.length, 1), ids), Offsets = mem.i32(B + 1, offsets);
          const Weights = mem.f32(Math.max(ids.length, 1), weights);
          const Out = mem.f32(B * ld, new Float32Array(B * ld).fill(42));
          const outPtr = Out.ptr + col * 4, w = weighted ? Weights.ptr : 0;
          mem.k.embeddingGather(outPtr, Table.ptr, Ids.ptr, w, Offsets.ptr, B, dim, ld, mean);
          const expected = embeddingGatherTwin(
            Table.view,
            ids,
            offsets,
            B,
            dim,
            mean,
            weighted ? weights : undefined,
          );
          const label = `${variant} B=${B} dim=${dim} mean=${mean} weighted=${weighted}`;
          assertClose(slice(Out.view, B, dim, ld, col), expected, label, {
            rtol: 1e-6,
            atol: 1e-6,
          });
          assertOutsideUntouched(Out.view, B, dim, ld, col, 42);
        }
      }
    });
  }

  test(`embeddingGather ${variant}: duplicates, empty rows, mean vs sum by hand`, () => {
    const mem = new TestMemory(variant, 1);
    const dim = 5, ld = 9, col = 2;
    // Row r of the table is [r, 10r, 100r, -r, 0.5].
    const table = Array.from({ length: 4 }, (_, r) => [r, 10 * r, 100 * r, -r, 0.5]).flat();
    const Table = mem.f32(4 * dim, table);
    // Rows: [1, 1, 3], [], [2], [0, 3].
    const Ids = mem.i32(6, [1, 1, 3, 2, 0, 3]), Offsets = mem.i32(5, [0, 3, 3, 4, 6]);
    const Out = mem.f32(4 * ld, new Float32Array(4 * ld).fill(42));
    const row = (b: number) => Array.from(Out.view.subarray(b * ld + col, b * ld + col + dim));
    mem.k.embeddingGather(Out.ptr + col * 4, Table.ptr, Ids.ptr, 0, Offsets.ptr, 4, dim, ld, false);
    assert.deepEqual(row(0), [5, 50, 500, -5, 1.5]);
    assert.deepEqual(row(1), [0, 0, 0, 0, 0]);
    assert.deepEqual(row(2), [2, 20, 200, -2, 0.5]);
    assert.deepEqual(row(3), [3, 30, 300, -3, 1]);
    mem.k.embeddingGather(Out.ptr + col * 4, Table.ptr, Ids.ptr, 0, Offsets.ptr, 4, dim, ld, true);
    assertClose(row(0), [5 / 3, 50 / 3, 500 / 3, -5 / 3, 0.5], "mean of [1, 1, 3]");
    assert.deepEqual(row(1), [0, 0, 0, 0, 0]);
    assert.deepEqual(row(2), [2, 20, 200, -2, 0.5]);
    assert.deepEqual(row(3), [1.5, 15, 150, -1.5, 0.5]);
    assertOutsideUntouched(Out.view, 4, dim, ld, col, 42);
  });

  test(`embeddingGather ${variant}: ids up to 1.1M address the right rows`, () => {
    const rows = 1_100_000, dim = 16;
    const mem = new TestMemory(variant, 72);
    const Table = mem.f32(rows * dim);
    const picks = [0, 1, 65_535, 65_536, 268_435, 1_048_576, rows - 1];
    for (const r of picks) Table.view.fill(r, r * dim, (r + 1) * dim);
    const Ids = mem.i32(picks.length, picks);
    const Offsets = mem.i32(picks.length + 1, picks.map((_, i) => i).concat(picks.length));
    const Out = mem.f32(picks.length * dim);
    mem.k.embeddingGather(
      Out.ptr,
      Table.ptr,
      Ids.ptr,
      0,
      Offsets.ptr,
      picks.length,
      dim,
      dim,
      false,
    );
    assert.deepEqual(Array.from(Out.view), picks.flatMap((r) => new Array(dim).fill(r)));
  });

  test(`embeddingUnique ${variant}: order of first appearance and inverse by hand`, () => {
    const mem = new TestMemory(variant, 1);
    const { U, unique, inverse } = runUnique(mem, [5, 3, 5, 0, 7, 3, 3, 0, -2, 9]);
    assert.equal(U, 6);
    assert.deepEqual(Array.from(unique), [5, 3, 0, 7, -2, 9]);
    assert.deepEqual(Array.from(inverse), [0, 1, 0, 2, 3, 1, 1, 2, 4, 5]);
  });

  test(`embeddingUnique ${variant}: n = 0 stores 0 and writes nothing else`, () => {
    const mem = new TestMemory(variant, 1);
    const Unique = mem.i32(4, [-7, -7, -7, -7]), Inverse = mem.i32(4, [-7, -7, -7, -7]);
    const Table = mem.i32(2, [123, 456]), Count = mem.i32(1, [-1]);
    mem.k.embeddingUnique(Unique.ptr, Inverse.ptr, Count.ptr, 0, 0, Table.ptr, 1);
    assert.equal(Count.view[0], 0);
    assert.deepEqual(Array.from(Unique.view), [-7, -7, -7, -7]);
    assert.deepEqual(Array.from(Inverse.view), [-7, -7, -7, -7]);
    assert.equal(Table.view[1], 456, "cleared past hashCapacity");
  });

  test(`embeddingUnique ${variant}: all-equal ids give one row`, () => {
    const mem = new TestMemory(variant, 1);
    const { U, unique, inverse } = runUnique(mem, new Array(1000).fill(1_141_729));
    assert.equal(U, 1);
    assert.deepEqual(Array.from(unique), [1_141_729]);
    assert.ok(inverse.every((v) => v === 0));
  });

  test(`embeddingUnique ${variant}: 100k ids from 1.1M rows match a JS Map`, () => {
    const next = rng(77);
    const mem = new TestMemory(variant, 8);
    const ids = Array.from({ length: 100_000 }, () => Math.floor(next() * 1_100_000));
    const got = runUnique(mem, ids);
    const want = embeddingUniqueTwin(ids);
    assert.equal(got.U, want.unique.length);
    assert.deepEqual(Array.from(got.unique), want.unique);
    assert.deepEqual(Array.from(got.inverse), want.inverse);
  });

  test(`embeddingUnique ${variant}: clustered ids, a full table and a dirty scratch`, () => {
    const mem = new TestMemory(variant, 4);
    const cases = [
      Array.from({ length: 8192 }, (_, j) => j), // sequential
      Array.from({ length: 8192 }, (_, j) => (j % 1000) * 16384), // multiples of the capacity
      Array.from({ length: 16 }, (_, j) => 15 - j), // n distinct ids in exactly 2n slots
    ];
    const n = 8192, capacity = capacityFor(n);
    const Ids = mem.i32(n), Unique = mem.i32(n), Inverse = mem.i32(n), Count = mem.i32(1);
    // One scratch table for every case: the kernel must clear it each call.
    const hashTable = mem.i32(capacity, new Int32Array(capacity).fill(3));
    for (const ids of cases) {
      Ids.view.set(ids);
      mem.k.embeddingUnique(
        Unique.ptr,
        Inverse.ptr,
        Count.ptr,
        Ids.ptr,
        ids.length,
        hashTable.ptr,
        capacityFor(ids.length),
      );
      const U = Count.view[0];
      const want = embeddingUniqueTwin(ids);
      assert.equal(U, want.unique.length);
      assert.deepEqual(Array.from(Unique.view.subarray(0, U)), want.unique);
      assert.deepEqual(Array.from(Inverse.view.subarray(0, ids.length)), want.inverse);
    }
  });

  for (const B of BS) {
    test(`embeddingBackward ${variant} B=${B}: sum, mean and weighted match the twin and accumulate`, () => {
      let seed = 500 + B;
      for (const dim of DIMS) {
        for (
          const [mean, weighted] of [[false, false], [true, false], [false, true], [true, true]]
        ) {
          const next = rng(seed++);
          const col = 5, ld = dim + 6;
          const mem = new TestMemory(variant, Math.ceil((B * ld * 4 * 8) / 2 ** 20) + 2);
          const { ids, offsets } = randomBatch(B, 3 * B, 4, next);
          const weights = Float32Array.from(randomArray(ids.length, next, -2, 2));
          const { U, inverse } = runUnique(mem, ids);
          const dOut = randomArray(B * ld, next);
          const grad0 = randomArray(U * dim, next);
          const DOut = mem.f32(B * ld, dOut), Grad = mem.f32(Math.max(U * dim, 1), grad0);
          const Offsets = mem.i32(B + 1, offsets);
          const Inverse = mem.i32(Math.max(ids.length, 1), inverse);
          const Weights = mem.f32(Math.max(ids.length, 1), weights);
          mem.k.embeddingBackward(
            Grad.ptr,
            DOut.ptr + col * 4,
            Inverse.ptr,
            weighted ? Weights.ptr : 0,
            Offsets.ptr,
            B,
            dim,
            ld,
            mean,
          );
          const dOutSlice = slice(Float32Array.from(dOut), B, dim, ld, col);
          const expected = embeddingBackwardTwin(
            dOutSlice,
            inverse,
            offsets,
            B,
            dim,
            U,
            mean,
            Float32Array.from(grad0),
            weighted ? weights : undefined,
          );
          const label = `${variant} B=${B} dim=${dim} mean=${mean} weighted=${weighted}`;
          assertClose(Grad.view.subarray(0, U * dim), expected, label, { rtol: 1e-5, atol: 1e-5 });
        }
      }
    });
  }

  test(`embeddingBackward ${variant}: mean divides by the id count, duplicates sum`, () => {
    const mem = new TestMemory(variant, 1);
    const dim = 3;
    // Rows: [4, 8, 2, 6] (mean 1/4 each), [2, 2] (2 x 1/2), [] (nothing).
    const ids = [4, 8, 2, 6, 2, 2];
    const { U, unique, inverse } = runUnique(mem, ids);
    assert.deepEqual(Array.from(unique), [4, 8, 2, 6]);
    const DOut = mem.f32(3 * dim, [1, 2, 4, 8, 16, 32, 99, 99, 99]);
    const Offsets = mem.i32(4, [0, 4, 6, 6]), Inverse = mem.i32(ids.length, inverse);
    const Grad = mem.f32(U * dim);
    mem.k.embeddingBackward(Grad.ptr, DOut.ptr, Inverse.ptr, 0, Offsets.ptr, 3, dim, dim, true);
    assert.deepEqual(Array.from(Grad.view), [
      ...[0.25, 0.5, 1], // id 4
      ...[0.25, 0.5, 1], // id 8
      ...[0.25 + 8, 0.5 + 16, 1 + 32], // id 2: row 0 / 4 + row 1 (two halves)
      ...[0.25, 0.5, 1], // id 6
    ]);
  });

  // gather is linear in the table: the gradient of L = sum(G * gather(table))
  // w.r.t. table row r is the scattered gradRows[u] where unique[u] = r, and
  // zero for rows not in the batch.
  test(`embeddingBackward ${variant}: finite-difference gradient of the gather (weighted too)`, () => {
    for (const [mean, weighted] of [[false, false], [true, false], [false, true]]) {
      for (const dim of [3, 4, 17]) {
        const next = rng(dim + (mean ? 100 : 0) + (weighted ? 200 : 0));
        const mem = new TestMemory(variant, 1);
        const rows = 9, B = 6;
        // Row 2 is empty; rows 0 and 4 repeat an id; ids 7, 8 never occur.
        const ids = [1, 1, 3, 0, 5, 2, 6, 6, 6, 4, 0];
        const offsets = [0, 3, 5, 5, 6, 9, 11];
        const w = weighted ? Float32Array.from(randomArray(ids.length, next, -2, 2)) : undefined;
        const table = Float64Array.from(Float32Array.from(randomArray(rows * dim, next)));
        const g = Float64Array.from(Float32Array.from(randomArray(B * dim, next)));
        const loss = (t: Float64Array) =>
          embeddingGatherTwin(t, ids, offsets, B, dim, mean, w)
            .reduce((s, y, i) => s + y * g[i], 0);
        const { U, unique, inverse } = runUnique(mem, ids);
        const DOut = mem.f32(B * dim, g), Grad = mem.f32(U * dim);
        const Offsets = mem.i32(B + 1, offsets), Inverse = mem.i32(ids.length, inverse);
        const Weights = w ? mem.f32(ids.length, w).ptr : 0;
        mem.k.embeddingBackward(
          Grad.ptr,
          DOut.ptr,
          Inverse.ptr,
          Weights,
          Offsets.ptr,
          B,
          dim,
          dim,
          mean,
        );
        const dense = new Float64Array(rows * dim);
        for (let u = 0; u < U; u++) {
          for (let d = 0; d < dim; d++) dense[unique[u] * dim + d] = Grad.view[u * dim + d];
        }
        const reference = finiteDifferences(table, loss);
        assertClose(dense, reference, `dim=${dim} mean=${mean} weighted=${weighted}`, {
          rtol: 1e-5,
          atol: 1e-6,
        });
        assert.ok(reference.subarray(7 * dim).every((v) => Math.abs(v) < 1e-9), "unseen rows");
      }
    }
  });

  test(`copyColumns ${variant}: dense columns into the concat slice`, () => {
    const B = 7;
    for (const width of [1, 3, 4, 5, 16, 17]) {
      const mem = new TestMemory(variant, 1);
      const next = rng(width);
      const ldX = width + 2, ld = width + 9, col = 1;
      const x = randomArray(B * ldX, next);
      const X = mem.f32(B * ldX, x), Out = mem.f32(B * ld, new Float32Array(B * ld).fill(42));
      mem.k.copyColumns(Out.ptr + col * 4, X.ptr, B, width, ld, ldX);
      assert.deepEqual(
        Array.from(slice(Out.view, B, width, ld, col)),
        Array.from(slice(Float32Array.from(x), B, width, ldX, 0)),
        `width=${width}`,
      );
      assertOutsideUntouched(Out.view, B, width, ld, col, 42);
    }
  });
}

// torchrec EmbeddingBag with per_sample_weights, by hand: pooled = sum_i w_i row(id_i);
// an unweighted call is bit-identical to weights of 1.
for (const variant of VARIANTS) {
  test(`embeddingGather ${variant}: weights scale each id's row; weights of 1 equal no weights`, () => {
    const mem = new TestMemory(variant, 1);
    const dim = 17, ld = 17;
    const next = rng(9);
    const Table = mem.f32(4 * dim, randomArray(4 * dim, next));
    // Rows: [1, 1, 3] with weights [0.5, 2, -1], [] and [2] with weight 0.
    const Ids = mem.i32(4, [1, 1, 3, 2]), Offsets = mem.i32(4, [0, 3, 3, 4]);
    const Weights = mem.f32(4, [0.5, 2, -1, 0]), Ones = mem.f32(4, [1, 1, 1, 1]);
    const Out = mem.f32(3 * ld), Plain = mem.f32(3 * ld), Unit = mem.f32(3 * ld);
    mem.k.embeddingGather(Out.ptr, Table.ptr, Ids.ptr, Weights.ptr, Offsets.ptr, 3, dim, ld, false);
    const t = (r: number, d: number) => Table.view[r * dim + d];
    for (let d = 0; d < dim; d++) {
      assertClose([Out.view[d]], [2.5 * t(1, d) - t(3, d)], `row 0 column ${d}`);
      assert.equal(Out.view[ld + d], 0);
      assert.equal(Out.view[2 * ld + d], 0);
    }
    mem.k.embeddingGather(Plain.ptr, Table.ptr, Ids.ptr, 0, Offsets.ptr, 3, dim, ld, false);
    mem.k.embeddingGather(Unit.ptr, Table.ptr, Ids.ptr, Ones.ptr, Offsets.ptr, 3, dim, ld, false);
    assert.deepEqual(Unit.view, Plain.view);
  });
}

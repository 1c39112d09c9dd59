// embeddingGatherInt8 (assembly/embedding.ts) against its f64 twin at awkward
// widths, and its f16 decoding against the runtime's Float16Array on every
// finite f16 value.
import { test } from "node:test";
import assert from "node:assert/strict";
import { embeddingGatherInt8Twin } from "./twins/embedding.ts";
import { assertClose, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

// Widths around the kernel's 16- and 4-column blocks and its scalar tail.
const DIMS = [1, 3, 4, 5, 8, 15, 16, 17, 20, 31, 32, 33, 64];
const BS = [1, 3, 7, 33];

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

/** Allocates `rows` int8 rows and their f16 (scale, bias) pairs in `mem`; returns offsets and the pairs as f32. */
function int8Table(mem: TestMemory, rows: number, dim: number, next: () => number) {
  const q = mem.alloc(rows * dim), pairs = mem.alloc(rows * 4);
  const bytes = new Uint8Array(mem.instance.memory.buffer, q, rows * dim);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(next() * 256);
  const halves = new Float16Array(mem.instance.memory.buffer, pairs, rows * 2);
  for (let r = 0; r < rows; r++) {
    // Scales as a quantizer makes them (range / 255), some of them f16 subnormals; biases of both signs.
    halves[2 * r] = r % 7 === 3 ? 3e-6 * next() : next() * 0.02;
    halves[2 * r + 1] = (next() - 0.5) * 2;
  }
  return { q, pairs, bytes, scaleBias: Float32Array.from(halves) };
}

for (const variant of VARIANTS) {
  for (const B of BS) {
    test(`embeddingGatherInt8 ${variant} B=${B}: sum, mean and weighted into a concat slice match the twin`, () => {
      let seed = 100 + B;
      for (const dim of DIMS) {
        for (
          const [mean, weighted] of [[false, false], [true, false], [false, true], [true, true]]
        ) {
          const next = rng(seed++);
          const rows = 40, col = 3, ld = dim + 7;
          const mem = new TestMemory(variant, 2);
          const table = int8Table(mem, rows, dim, next);
          const { ids, offsets } = randomBatch(B, rows, 4, next);
          const weights = Float32Array.from(randomArray(ids.length, next, -2, 2));
          const Ids = mem.i32(Math.max(ids.length, 1), ids), Offsets = mem.i32(B + 1, offsets);
          const Weights = mem.f32(Math.max(ids.length, 1), weights);
          const Out = mem.f32(B * ld, new Float32Array(B * ld).fill(42));
          mem.k.embeddingGatherInt8(
            Out.ptr + col * 4,
            table.q,
            table.pairs,
            Ids.ptr,
            weighted ? Weights.ptr : 0,
            Offsets.ptr,
            B,
            dim,
            ld,
            mean,
          );
          const expected = embeddingGatherInt8Twin(
            table.bytes,
            table.scaleBias,
            ids,
            offsets,
            B,
            dim,
            mean,
            weighted ? weights : undefined,
          );
          const label = `${variant} B=${B} dim=${dim} mean=${mean} weighted=${weighted}`;
          for (let b = 0; b < B; b++) {
            assertClose(
              Out.view.subarray(b * ld + col, b * ld + col + dim),
              expected.subarray(b * dim, (b + 1) * dim),
              `${label} row ${b}`,
              { rtol: 1e-5, atol: 1e-5 },
            );
            for (let c = 0; c < ld; c++) {
              if (c >= col && c < col + dim) continue;
              assert.equal(Out.view[b * ld + c], 42, `${label}: column ${c} of row ${b} changed`);
            }
          }
        }
      }
    });
  }

  test(`embeddingGatherInt8 ${variant}: every finite f16 scale and bias decodes as Float16Array reads it`, () => {
    // Row r has q = 1 everywhere and the f16 pattern p = r as its scale, then as its bias
    // (q = 0): the gathered row is that f16 value, subnormals included (-0 sums to 0).
    const patterns = Array.from({ length: 65536 }, (_, p) => p).filter((p) =>
      ((p >> 10) & 0x1f) !== 0x1f
    );
    const rows = patterns.length, dim = 4;
    const mem = new TestMemory(variant, 4);
    const q = mem.alloc(rows * dim), pairs = mem.alloc(rows * 4);
    const halves = new Uint16Array(mem.instance.memory.buffer, pairs, rows * 2);
    const reference = new Float16Array(halves.buffer, pairs, rows * 2);
    const Ids = mem.i32(rows, patterns.map((_, r) => r));
    const Offsets = mem.i32(rows + 1, Array.from({ length: rows + 1 }, (_, b) => b));
    const Out = mem.f32(rows * dim);
    for (const asScale of [true, false]) {
      new Uint8Array(mem.instance.memory.buffer, q, rows * dim).fill(asScale ? 1 : 0);
      patterns.forEach((p, r) => {
        halves[2 * r] = asScale ? p : 0x3c00; // 1.0
        halves[2 * r + 1] = asScale ? 0 : p;
      });
      mem.k.embeddingGatherInt8(Out.ptr, q, pairs, Ids.ptr, 0, Offsets.ptr, rows, dim, dim, false);
      patterns.forEach((p, r) => {
        const expected = reference[2 * r + (asScale ? 0 : 1)];
        const got = Out.view[r * dim];
        if (got !== expected) {
          assert.fail(
            `${asScale ? "scale" : "bias"} 0x${p.toString(16)}: got ${got}, expected ${expected}`,
          );
        }
      });
    }
  });

  test(`embeddingGatherInt8 ${variant}: rows by hand (duplicates, empty rows, mean, weights)`, () => {
    const mem = new TestMemory(variant, 1);
    const dim = 5, rows = 3;
    const q = mem.alloc(rows * dim), pairs = mem.alloc(rows * 4);
    // Row r: q = [0, 1, 2, 3, 255], scale 0.5 (r + 1), bias -r.
    const bytes = new Uint8Array(mem.instance.memory.buffer, q, rows * dim);
    for (let r = 0; r < rows; r++) bytes.set([0, 1, 2, 3, 255], r * dim);
    new Float16Array(mem.instance.memory.buffer, pairs, 6).set([0.5, 0, 1, -1, 1.5, -2]);
    const Ids = mem.i32(5, [1, 1, 2, 0, 2]), Offsets = mem.i32(4, [0, 3, 3, 5]);
    const Weights = mem.f32(5, [1, 2, 0.5, 4, -1]);
    const Out = mem.f32(3 * dim);
    const row = (b: number) => Array.from(Out.view.subarray(b * dim, (b + 1) * dim));
    const run = (weights: number, mean: boolean) =>
      mem.k.embeddingGatherInt8(
        Out.ptr,
        q,
        pairs,
        Ids.ptr,
        weights,
        Offsets.ptr,
        3,
        dim,
        dim,
        mean,
      );
    const values = (r: number) => [0, 1, 2, 3, 255].map((v) => 0.5 * (r + 1) * v - r);
    const sum = (...rs: [number, number][]) =>
      [0, 1, 2, 3, 4].map((d) => rs.reduce((s, [r, w]) => s + w * values(r)[d], 0));
    run(0, false);
    assert.deepEqual(row(0), sum([1, 1], [1, 1], [2, 1]));
    assert.deepEqual(row(1), [0, 0, 0, 0, 0]);
    assert.deepEqual(row(2), sum([0, 1], [2, 1]));
    run(Weights.ptr, false);
    assert.deepEqual(row(0), sum([1, 1], [1, 2], [2, 0.5]));
    assert.deepEqual(row(2), sum([0, 4], [2, -1]));
    run(0, true);
    assertClose(row(0), sum([1, 1], [1, 1], [2, 1]).map((v) => v / 3), "mean of [1, 1, 2]");
    assert.deepEqual(row(1), [0, 0, 0, 0, 0]);
    assertClose(row(2), sum([0, 1], [2, 1]).map((v) => v / 2), "mean of [0, 2]");
  });
}

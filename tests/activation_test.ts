import { test } from "node:test";
import assert from "node:assert/strict";
import { Activation } from "../src/kernels/kernels.ts";
import {
  activationBackwardTwin,
  activationTwin,
  biasActivationTwin,
  columnSumTwin,
} from "./twins/activation.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

const ACTIVATIONS = Object.entries(Activation) as [string, number][];
/** f32x4 edges: 1, tile-1, tile, tile+1, multiples, a long odd row. */
const WIDTHS = [1, 3, 4, 5, 7, 8, 9, 16, 17, 1001];
/** LeakyReLU slope as the kernel sees it (f32). */
const SLOPE = Math.fround(0.2);
/** Inputs where the kernels must stay finite and saturate like f64. */
const EXTREMES = [100, -100, 1e4, -1e4, 88.5, -88.5, 89, -89, 1e-30, -1e-30, 0, 3e38, -3e38];

/**
 * Kernel vs f64 twin on the same f32 input. Piecewise-linear activations are
 * exact (LeakyReLU: one rounding of v * slope); sigmoid, tanh and SiLU are a
 * few ulp; GELU adds |v|/2 times the f32 erf error (1.2e-7) on inputs in [-5, 5].
 */
function tolerance(act: number): { rtol: number; atol: number } {
  switch (act) {
    case Activation.identity:
    case Activation.relu:
      return { rtol: 0, atol: 0 };
    case Activation.leakyRelu:
      return { rtol: 6e-8, atol: 0 };
    case Activation.gelu:
      return { rtol: 1e-6, atol: 4e-7 };
    default:
      return { rtol: 1e-6, atol: 1e-7 };
  }
}

/** Pre-activation v = x + bias in f32, as the kernel forms it. */
function biasedInput(x: Float32Array, bias: Float32Array | undefined, B: number, H: number) {
  const v = new Float64Array(B * H);
  for (let i = 0; i < B * H; i++) v[i] = Math.fround(x[i] + (bias ? bias[i % H] : 0));
  return v;
}

for (const variant of VARIANTS) {
  for (const [name, act] of ACTIVATIONS) {
    test(`biasActivation ${variant} ${name}: matches the f64 twin at every width, with and without bias`, () => {
      const mem = new TestMemory(variant, 1);
      const next = rng(10 + act);
      for (const H of WIDTHS) {
        for (const B of [1, 3]) {
          for (const withBias of [false, true]) {
            const x = mem.f32(B * H, randomArray(B * H, next, -5, 5));
            const bias = mem.f32(H, randomArray(H, next));
            const y = mem.f32(B * H);
            mem.k.biasActivation(y.ptr, x.ptr, withBias ? bias.ptr : 0, B, H, act, SLOPE);
            const v = biasedInput(x.view, withBias ? bias.view : undefined, B, H);
            const expected = biasActivationTwin(v, undefined, B, H, act, SLOPE);
            assertClose(y.view, expected, `${name} ${B}x${H} bias=${withBias}`, tolerance(act));
          }
        }
      }
    });

    test(`biasActivation ${variant} ${name}: in place (y == x) equals out of place`, () => {
      const mem = new TestMemory(variant, 1);
      const [B, H] = [3, 17];
      const data = randomArray(B * H, rng(20 + act), -5, 5);
      const bias = mem.f32(H, randomArray(H, rng(21)));
      const x = mem.f32(B * H, data), y = mem.f32(B * H), inPlace = mem.f32(B * H, data);
      mem.k.biasActivation(y.ptr, x.ptr, bias.ptr, B, H, act, SLOPE);
      mem.k.biasActivation(inPlace.ptr, inPlace.ptr, bias.ptr, B, H, act, SLOPE);
      assert.deepEqual(Array.from(inPlace.view), Array.from(y.view));
      assert.deepEqual(Array.from(x.view), Array.from(Float32Array.from(data)), "x untouched");
    });

    test(`activationBackward ${variant} ${name}: matches the twin at every size, and in place`, () => {
      const mem = new TestMemory(variant, 1);
      const next = rng(30 + act);
      for (const n of [...WIDTHS, 2 * 1001]) {
        const x = mem.f32(n, randomArray(n, next, -5, 5));
        const y = mem.f32(n);
        mem.k.biasActivation(y.ptr, x.ptr, 0, 1, n, act, SLOPE);
        const dy = mem.f32(n, randomArray(n, next));
        const dx = mem.f32(n);
        mem.k.activationBackward(dx.ptr, dy.ptr, x.ptr, y.ptr, n, act, SLOPE);
        const expected = activationBackwardTwin(dy.view, x.view, y.view, n, act, SLOPE);
        assertClose(dx.view, expected, `${name} n=${n}`, { rtol: 1e-6, atol: 1e-7 });
        mem.k.activationBackward(dy.ptr, dy.ptr, x.ptr, y.ptr, n, act, SLOPE);
        assert.deepEqual(Array.from(dy.view), Array.from(dx.view), `${name} n=${n} in place`);
      }
    });

    // L = sum_i g_i act(x_i); the kernel's dx for dy = g must be dL/dx of the
    // f64 twin forward. Inputs stay 0.05 away from the ReLU kinks.
    test(`activationBackward ${variant} ${name}: equals central finite differences of the f64 forward`, () => {
      const mem = new TestMemory(variant, 1);
      const n = 23;
      const next = rng(40 + act);
      const raw = randomArray(n, next, -4, 4).map((v) => (Math.abs(v) < 0.05 ? v + 0.1 : v));
      const g = randomArray(n, next);
      const x = mem.f32(n, raw), y = mem.f32(n), dy = mem.f32(n, g), dx = mem.f32(n);
      mem.k.biasActivation(y.ptr, x.ptr, 0, n, 1, act, SLOPE);
      mem.k.activationBackward(dx.ptr, dy.ptr, x.ptr, y.ptr, n, act, SLOPE);
      const gf = Float64Array.from(dy.view);
      const loss = (v: Float64Array) =>
        v.reduce((s, vi, i) => s + gf[i] * activationTwin(vi, act, SLOPE), 0);
      const expected = finiteDifferences(Float64Array.from(x.view), loss);
      assertClose(dx.view, expected, `${name} d/dx`, { rtol: 1e-5, atol: 1e-6 });
    });
  }

  test(`biasActivation ${variant}: ReLU keeps NaN and turns -0 into +0 (vector and scalar lanes)`, () => {
    const mem = new TestMemory(variant, 1);
    // 7 values: one f32x4 step and 3 scalar ones, each with NaN and -0.
    const values = [NaN, -0, 0, -2, -0, NaN, 3];
    const x = mem.f32(values.length, values), y = mem.f32(values.length);
    mem.k.biasActivation(y.ptr, x.ptr, 0, 1, values.length, Activation.relu, SLOPE);
    const expected = [NaN, 0, 0, 0, 0, NaN, 3];
    expected.forEach((want, i) => {
      const got = y.view[i];
      assert.ok(
        Object.is(got, want),
        `relu(${Object.is(values[i], -0) ? "-0" : values[i]}) = ${got}`,
      );
    });
  });

  test(`biasActivation ${variant}: |x| = 100, 1e4 and 3e38 stay finite and saturate`, () => {
    const mem = new TestMemory(variant, 1);
    const n = EXTREMES.length;
    for (const [name, act] of ACTIVATIONS) {
      const x = mem.f32(n, EXTREMES), y = mem.f32(n);
      mem.k.biasActivation(y.ptr, x.ptr, 0, 1, n, act, SLOPE);
      for (let i = 0; i < n; i++) {
        assert.ok(Number.isFinite(y.view[i]), `${name}(${EXTREMES[i]}) = ${y.view[i]}`);
      }
      const expected = Array.from(x.view, (v) => activationTwin(v, act, SLOPE));
      assertClose(y.view, expected, `${name} extremes`, { rtol: 1e-6, atol: 1e-7 });
    }
    const sat = (act: number, v: number) => {
      const x = mem.f32(1, [v]), y = mem.f32(1);
      mem.k.biasActivation(y.ptr, x.ptr, 0, 1, 1, act, SLOPE);
      return y.view[0];
    };
    assert.equal(sat(Activation.sigmoid, 1e4), 1);
    assert.equal(sat(Activation.sigmoid, -1e4), 0);
    assert.equal(sat(Activation.tanh, -1e4), -1);
    assert.equal(sat(Activation.gelu, 1e4), 1e4);
    // -1e4 * 0 is -0 in torch too; compare magnitudes.
    assert.equal(Math.abs(sat(Activation.gelu, -1e4)), 0);
    assert.equal(Math.abs(sat(Activation.silu, -1e4)), 0);
    // e^-100 is subnormal in f32; like torch's 1 / (1 + exp(100)) it flushes to 0.
    const tiny = sat(Activation.sigmoid, -100);
    assert.ok(tiny >= 0 && tiny < 1.2e-38, `sigmoid(-100) = ${tiny}`);
    assert.equal(sat(Activation.sigmoid, -80), Math.fround(1 / (1 + Math.exp(80))));
  });

  test(`activationBackward ${variant}: |x| = 100, 1e4 and 3e38 give finite gradients`, () => {
    const mem = new TestMemory(variant, 1);
    const n = EXTREMES.length;
    for (const [name, act] of ACTIVATIONS) {
      const x = mem.f32(n, EXTREMES), y = mem.f32(n), dy = mem.f32(n, new Array(n).fill(1));
      const dx = mem.f32(n);
      mem.k.biasActivation(y.ptr, x.ptr, 0, 1, n, act, SLOPE);
      mem.k.activationBackward(dx.ptr, dy.ptr, x.ptr, y.ptr, n, act, SLOPE);
      for (let i = 0; i < n; i++) {
        assert.ok(Number.isFinite(dx.view[i]), `${name}'(${EXTREMES[i]}) = ${dx.view[i]}`);
      }
      const expected = activationBackwardTwin(dy.view, x.view, y.view, n, act, SLOPE);
      assertClose(dx.view, expected, `${name}' extremes`, { rtol: 1e-6, atol: 1e-7 });
    }
  });

  // GELU's derivative at dy = 1 is Phi(x) + x phi(x) = 0.5 (1 + erf(x/sqrt2))
  // + ..., so its error bounds the f32 erf's: 2.5e-7 here means erf within ~5e-7.
  test(`gelu ${variant}: forward and derivative track exact erf on a 1/1024 grid over [-6, 6]`, () => {
    const mem = new TestMemory(variant, 1);
    const n = 12 * 1024 + 1;
    const grid = Array.from({ length: n }, (_, i) => -6 + i / 1024);
    const x = mem.f32(n, grid), y = mem.f32(n), dy = mem.f32(n, new Array(n).fill(1));
    const dx = mem.f32(n);
    mem.k.biasActivation(y.ptr, x.ptr, 0, 1, n, Activation.gelu, 0);
    mem.k.activationBackward(dx.ptr, dy.ptr, x.ptr, y.ptr, n, Activation.gelu, 0);
    const forward = grid.map((v) => activationTwin(v, Activation.gelu));
    for (let i = 0; i < n; i++) {
      const tol = 0.5 * Math.abs(grid[i]) * 2e-7 + 2e-7 * Math.abs(forward[i]) + 1e-9;
      if (!(Math.abs(y.view[i] - forward[i]) <= tol)) {
        assert.fail(`gelu(${grid[i]}) = ${y.view[i]}, expected ${forward[i]}`);
      }
    }
    const derivative = activationBackwardTwin(dy.view, x.view, y.view, n, Activation.gelu);
    assertClose(dx.view, derivative, "gelu'", { rtol: 0, atol: 2.5e-7 });
  });

  test(`biasActivation and activationBackward ${variant}: write nothing outside their output`, () => {
    const mem = new TestMemory(variant, 1);
    const [B, H] = [3, 7];
    const next = rng(50);
    const x = mem.f32(B * H, randomArray(B * H, next)), bias = mem.f32(H, randomArray(H, next));
    const dy = mem.f32(B * H, randomArray(B * H, next));
    for (const [name, act] of ACTIVATIONS) {
      const block = mem.f32(B * H + 32);
      block.view.fill(42);
      const out = block.ptr + 16 * 4;
      mem.k.biasActivation(out, x.ptr, bias.ptr, B, H, act, SLOPE);
      mem.k.activationBackward(out, dy.ptr, x.ptr, x.ptr, B * H, act, SLOPE);
      for (let i = 0; i < 16; i++) assert.equal(block.view[i], 42, `${name}: before at ${i}`);
      for (let i = 16 + B * H; i < B * H + 32; i++) {
        assert.equal(block.view[i], 42, `${name}: after at ${i}`);
      }
    }
  });

  test(`columnSum ${variant}: accumulates column sums onto out at awkward shapes`, () => {
    const mem = new TestMemory(variant, 8);
    const next = rng(60);
    // Row blocks of 4 and their remainders, f32x4 columns and their tails.
    const shapes: [number, number][] = [[1, 1], [1, 17], [3, 5], [4, 4], [5, 7], [7, 8], [8, 9]];
    shapes.push([9, 16], [17, 3], [1001, 17], [33, 1001], [2, 3]);
    for (const [B, H] of shapes) {
      const x = mem.f32(B * H, randomArray(B * H, next));
      const out = mem.f32(H, randomArray(H, next));
      const expected = columnSumTwin(out.view, x.view, B, H);
      mem.k.columnSum(out.ptr, x.ptr, B, H, H);
      assertClose(out.view, expected, `columnSum ${B}x${H}`, { rtol: 1e-6, atol: 1e-6 * (B + 1) });
    }
  });

  test(`columnSum ${variant}: a column block of a wider matrix, and column splits equal one call bit for bit`, () => {
    const mem = new TestMemory(variant, 8);
    const next = rng(61);
    for (const [B, H, ld, at] of [[5, 7, 16, 3], [1001, 33, 40, 7], [64, 100, 100, 0]]) {
      const x = mem.f32(B * ld, randomArray(B * ld, next));
      const out0 = randomArray(H, next);
      const block = mem.f32(H, out0);
      mem.k.columnSum(block.ptr, x.ptr + 4 * at, B, H, ld);
      const expected = columnSumTwin(out0, x.view.subarray(at), B, H, ld);
      assertClose(block.view, expected, `block ${B}x${H} of ${ld}`, { rtol: 1e-6, atol: 1e-5 });
      // Columns [0, s) and [s, H) in two calls, at every split point.
      for (let split = 1; split < H; split += Math.max(1, Math.floor(H / 9))) {
        const parts = mem.f32(H, out0);
        mem.k.columnSum(parts.ptr, x.ptr + 4 * at, B, split, ld);
        mem.k.columnSum(parts.ptr + 4 * split, x.ptr + 4 * (at + split), B, H - split, ld);
        assert.deepEqual(parts.view, block.view, `split at ${split} of ${B}x${H}`);
      }
    }
  });

  test(`reluBackwardColumnSum ${variant}: activationBackward then columnSum bit for bit, in place, strided and split`, () => {
    const mem = new TestMemory(variant, 8);
    const next = rng(62);
    const shapes: [number, number, number][] = [[1, 1, 1], [3, 5, 9], [4, 4, 4], [5, 7, 7]];
    shapes.push([9, 17, 20], [1001, 33, 40], [64, 100, 100], [7, 1001, 1003]);
    for (const [B, H, ld] of shapes) {
      const n = B * ld;
      // dy with -0, NaN and infinities among the values; y about half positive, with -0 and +0.
      const dyValues = randomArray(n, next).map((v, i) =>
        i % 37 === 5 ? -0 : i % 41 === 7 ? NaN : i % 43 === 9 ? -Infinity : v
      );
      const yValues = randomArray(n, next).map((
        v,
        i,
      ) => (i % 29 === 3 ? -0 : i % 31 === 4 ? 0 : v));
      const dy = mem.f32(n, dyValues), y = mem.f32(n, yValues);
      const out0 = randomArray(H, next);
      // The two kernels as the layer ran them: mask in place, then the column sums.
      const twoPass = mem.f32(n, dyValues), sums = mem.f32(H, out0);
      mem.k.activationBackward(twoPass.ptr, twoPass.ptr, y.ptr, y.ptr, n, Activation.relu, 0);
      mem.k.columnSum(sums.ptr, twoPass.ptr, B, H, ld);
      const where = `${B}x${H} of ${ld}`;
      // Out of place, columns [0, H) of the ld-wide rows: columns past H untouched.
      const dx = mem.f32(n, new Float32Array(n).fill(42)), fusedSums = mem.f32(H, out0);
      mem.k.reluBackwardColumnSum(dx.ptr, fusedSums.ptr, dy.ptr, y.ptr, B, H, ld);
      assert.deepEqual(fusedSums.view, sums.view, `sums ${where}`);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < ld; h++) {
          const want = h < H ? twoPass.view[b * ld + h] : 42;
          assert.ok(Object.is(dx.view[b * ld + h], want), `dx[${b}, ${h}] ${where}`);
        }
      }
      // In place, split into two column blocks at a few points: the same bits.
      for (const split of [1, Math.floor(H / 2), H - 1].filter((s) => s > 0 && s < H)) {
        const inPlace = mem.f32(n, dyValues), parts = mem.f32(H, out0);
        mem.k.reluBackwardColumnSum(inPlace.ptr, parts.ptr, inPlace.ptr, y.ptr, B, split, ld);
        const o = 4 * split;
        mem.k.reluBackwardColumnSum(
          inPlace.ptr + o,
          parts.ptr + o,
          inPlace.ptr + o,
          y.ptr + o,
          B,
          H - split,
          ld,
        );
        assert.deepEqual(parts.view, sums.view, `split at ${split} ${where}`);
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < H; h++) {
            const i = b * ld + h;
            assert.ok(
              Object.is(inPlace.view[i], twoPass.view[i]),
              `in place [${b}, ${h}] ${where}`,
            );
          }
        }
      }
      // The mask itself, as torch's threshold_backward selects it (not a product: a NaN or
      // infinite dy where y <= 0 gives 0).
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) {
          const i = b * ld + h;
          const want = y.view[i] > 0 ? dy.view[i] : 0;
          assert.ok(Object.is(dx.view[i], want), `threshold_backward [${b}, ${h}] ${where}`);
        }
      }
    }
  });
}

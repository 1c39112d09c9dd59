import { test } from "node:test";
import assert from "node:assert/strict";
import { gateMixtureBackwardTwin, gateMixtureForwardTwin } from "./twins/gating.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

// Row counts, task counts, expert counts and widths around the kernel's
// 16/8/4-column blocks and the scalar tail.
const BS = [1, 3, 7, 33, 1001];
const TS = [1, 2, 3];
const ES = [1, 2, 3, 5, 8];
const DS = [1, 3, 4, 5, 8, 9, 128, 131];

const f32 = (x: ArrayLike<number>) => Float64Array.from(Float32Array.from(x));

/** A test memory large enough for one forward + backward at these sizes. */
function memoryFor(variant: (typeof VARIANTS)[number], B: number, T: number, E: number, D: number) {
  const floats = 2 * B * E * D + 3 * B * T * E + 2 * B * T * D;
  return new TestMemory(variant, Math.ceil((floats * 4) / 2 ** 20) + 1);
}

/** Kernel forward + backward vs the f64 twin on the f32-rounded inputs. */
function checkAgainstTwin(
  variant: (typeof VARIANTS)[number],
  B: number,
  T: number,
  E: number,
  D: number,
  seed: number,
) {
  const next = rng(seed);
  const mem = memoryFor(variant, B, T, E, D);
  const logits = f32(randomArray(B * T * E, next, -4, 4));
  const experts = f32(randomArray(B * E * D, next));
  const dOut = f32(randomArray(B * T * D, next));
  const Logits = mem.f32(B * T * E, logits), Experts = mem.f32(B * E * D, experts);
  const Gate = mem.f32(B * T * E), Out = mem.f32(B * T * D), DOut = mem.f32(B * T * D, dOut);
  const DLogits = mem.f32(B * T * E, new Float32Array(B * T * E).fill(NaN));
  // Overwritten, not accumulated: start from garbage.
  const DExperts = mem.f32(B * E * D, new Float32Array(B * E * D).fill(NaN));
  const label = `${variant} B=${B} T=${T} E=${E} D=${D}`;

  mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, T, E, D);
  const fwd = gateMixtureForwardTwin(logits, experts, B, T, E, D);
  assertClose(Gate.view, fwd.gate, `${label} gate`, { rtol: 1e-6, atol: 1e-7 });
  assertClose(Out.view, fwd.out, `${label} out`, { rtol: 1e-5, atol: 2e-6 });

  mem.k.gateMixtureBackward(DLogits.ptr, DExperts.ptr, DOut.ptr, Gate.ptr, Experts.ptr, B, T, E, D);
  // Backward twin on the kernel's own (f32) gate: isolates the backward.
  const bwd = gateMixtureBackwardTwin(dOut, Gate.view, experts, B, T, E, D);
  // dg is a length-D f32 dot product of values in [-1, 1].
  assertClose(DLogits.view, bwd.dLogits, `${label} dLogits`, { rtol: 1e-5, atol: 1e-6 * (D + 4) });
  assertClose(DExperts.view, bwd.dExperts, `${label} dExperts`, { rtol: 1e-6, atol: 1e-6 * T });
}

for (const variant of VARIANTS) {
  for (const B of BS) {
    test(`gating ${variant} B=${B}: forward and backward match the f64 twin for every T, E, D`, () => {
      let seed = B * 1000;
      for (const T of TS) {
        for (const E of ES) {
          for (const D of DS) checkAgainstTwin(variant, B, T, E, D, seed++);
        }
      }
    });
  }

  test(`gating ${variant}: writes nothing outside out, gate, dLogits and dExperts`, () => {
    const [B, T, E, D] = [7, 3, 5, 13];
    const next = rng(3);
    const mem = memoryFor(variant, B, T, E, D + 2);
    const fence = (n: number, data?: ArrayLike<number>) => {
      const buffer = mem.f32(n + 32, new Float32Array(n + 32).fill(42));
      if (data) buffer.view.set(data, 16);
      return { ptr: buffer.ptr + 64, view: buffer.view, n };
    };
    const logits = fence(B * T * E, randomArray(B * T * E, next)), gate = fence(B * T * E);
    const experts = fence(B * E * D, randomArray(B * E * D, next)), out = fence(B * T * D);
    const dOut = fence(B * T * D, randomArray(B * T * D, next));
    const dLogits = fence(B * T * E), dExperts = fence(B * E * D);
    mem.k.gateMixtureForward(out.ptr, gate.ptr, logits.ptr, experts.ptr, B, T, E, D);
    mem.k.gateMixtureBackward(
      dLogits.ptr,
      dExperts.ptr,
      dOut.ptr,
      gate.ptr,
      experts.ptr,
      B,
      T,
      E,
      D,
    );
    for (const [name, b] of Object.entries({ gate, out, dLogits, dExperts })) {
      for (let i = 0; i < 16; i++) assert.equal(b.view[i], 42, `${name}: before at ${i}`);
      for (let i = 16 + b.n; i < b.n + 32; i++) {
        assert.equal(b.view[i], 42, `${name}: after at ${i}`);
      }
    }
  });

  test(`gating ${variant}: softmax of logits near ±1e4 stays finite and sums to 1`, () => {
    const [B, T, E, D] = [64, 2, 5, 9];
    const next = rng(11);
    const mem = memoryFor(variant, B, T, E, D);
    const logits = Float64Array.from(
      { length: B * T * E },
      () => (next() < 0.5 ? -1e4 : 1e4) + next() * 4,
    );
    // Row (0, 0): all equal -> uniform; row (0, 1): one +1e4 among -1e4 -> one-hot.
    for (let e = 0; e < E; e++) logits[e] = 1e4;
    for (let e = 0; e < E; e++) logits[E + e] = e === 2 ? 1e4 : -1e4;
    const experts = randomArray(B * E * D, next);
    const Logits = mem.f32(B * T * E, logits), Experts = mem.f32(B * E * D, experts);
    const Gate = mem.f32(B * T * E), Out = mem.f32(B * T * D);
    mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, T, E, D);
    for (let row = 0; row < B * T; row++) {
      let sum = 0;
      for (let e = 0; e < E; e++) {
        const g = Gate.view[row * E + e];
        assert.ok(Number.isFinite(g) && g >= 0 && g <= 1, `gate[${row},${e}] = ${g}`);
        sum += g;
      }
      assert.ok(Math.abs(sum - 1) <= 1e-6, `row ${row} sums to ${sum}`);
    }
    assertClose(Gate.view.subarray(0, E), new Array(E).fill(1 / E), "uniform row", { rtol: 1e-6 });
    assert.deepEqual(Array.from(Gate.view.subarray(E, 2 * E)), [0, 0, 1, 0, 0]);
    const fwd = gateMixtureForwardTwin(Logits.view, Experts.view, B, T, E, D);
    assertClose(Gate.view, fwd.gate, "gate", { rtol: 1e-5, atol: 1e-7 });
    assertClose(Out.view, fwd.out, "out", { rtol: 1e-5, atol: 2e-6 });
  });

  // The kernel's own table-free exp: every reduction branch (tiny, |x| <
  // ln2/2, large k) and the flush to 0 below e^-87, to a few ulp.
  test(`gating ${variant}: two-expert gates follow 1 / (1 + e^-t) for gaps t in [0, 100]`, () => {
    const gaps = [
      0,
      1e-7,
      1e-5,
      1.2e-4,
      0.01,
      0.3,
      0.35,
      0.5,
      1,
      1.04,
      2,
      10,
      30,
      60,
      86.9,
      87.5,
      100,
    ];
    for (let t = 0; t < 100; t += 0.0731) gaps.push(t);
    const B = gaps.length, T = 1, E = 2, D = 1;
    const mem = memoryFor(variant, B, T, E, D);
    const logits = f32(gaps.flatMap((t) => [0, -t]));
    const Logits = mem.f32(B * E, logits);
    const Experts = mem.f32(B * E, new Float32Array(B * E).fill(1));
    const Gate = mem.f32(B * E), Out = mem.f32(B);
    mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, T, E, D);
    const { gate } = gateMixtureForwardTwin(logits, Experts.view, B, T, E, D);
    assertClose(Gate.view, gate, "gate", { rtol: 5e-7, atol: 2e-38 });
  });

  test(`gating ${variant}: gate may alias logits`, () => {
    const [B, T, E, D] = [7, 2, 3, 10];
    const next = rng(5);
    const mem = memoryFor(variant, B, T, E, D);
    const logits = f32(randomArray(B * T * E, next, -3, 3));
    const experts = f32(randomArray(B * E * D, next));
    const Logits = mem.f32(B * T * E, logits), Experts = mem.f32(B * E * D, experts);
    const Out = mem.f32(B * T * D);
    mem.k.gateMixtureForward(Out.ptr, Logits.ptr, Logits.ptr, Experts.ptr, B, T, E, D);
    const fwd = gateMixtureForwardTwin(logits, experts, B, T, E, D);
    assertClose(Logits.view, fwd.gate, "gate in place", { rtol: 1e-6, atol: 1e-7 });
    assertClose(Out.view, fwd.out, "out", { rtol: 1e-5, atol: 2e-6 });
  });

  // L = sum(G * out(logits, experts)); the backward must be its gradient,
  // checked by central differences of the f64 twin forward.
  test(`gating ${variant}: backward gives the finite-difference gradient of the forward`, () => {
    for (const [B, T, E, D] of [[3, 2, 4, 6], [2, 1, 1, 5], [4, 3, 3, 17]]) {
      const next = rng(31 + D);
      const mem = memoryFor(variant, B, T, E, D);
      const logits = f32(randomArray(B * T * E, next, -2, 2));
      const experts = f32(randomArray(B * E * D, next));
      const g = f32(randomArray(B * T * D, next));
      const loss = (z: Float64Array, x: Float64Array) =>
        gateMixtureForwardTwin(z, x, B, T, E, D).out.reduce((s, y, i) => s + y * g[i], 0);
      const Logits = mem.f32(B * T * E, logits), Experts = mem.f32(B * E * D, experts);
      const Gate = mem.f32(B * T * E), Out = mem.f32(B * T * D), DOut = mem.f32(B * T * D, g);
      const DLogits = mem.f32(B * T * E), DExperts = mem.f32(B * E * D);
      mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, T, E, D);
      mem.k.gateMixtureBackward(
        DLogits.ptr,
        DExperts.ptr,
        DOut.ptr,
        Gate.ptr,
        Experts.ptr,
        B,
        T,
        E,
        D,
      );
      const dzRef = finiteDifferences(logits, (z) => loss(z, experts));
      const dxRef = finiteDifferences(experts, (x) => loss(logits, x));
      const label = `B=${B} T=${T} E=${E} D=${D}`;
      assertClose(DLogits.view, dzRef, `${label} dLogits`, { rtol: 1e-4, atol: 1e-5 });
      assertClose(DExperts.view, dxRef, `${label} dExperts`, { rtol: 1e-4, atol: 1e-5 });
      if (E === 1) assert.ok(DLogits.view.every((v) => v === 0), "E = 1: softmax is constant");
    }
  });
}

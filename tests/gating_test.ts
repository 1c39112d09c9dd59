import { test } from "node:test";
import assert from "node:assert/strict";
import { gateMixtureBackwardTwin, gateMixtureForwardTwin } from "./twins/gating.ts";
import { assertClose, finiteDifferences, randomArray, rng, TestMemory, VARIANTS } from "./_util.ts";

// Row counts, expert counts and widths around the kernel's 16/4-column
// blocks and the scalar tail.
const BS = [1, 3, 7, 33, 1001];
const ES = [1, 2, 3, 5, 8];
const DS = [1, 3, 4, 5, 8, 9, 128, 131];

const f32 = (x: ArrayLike<number>) => Float64Array.from(Float32Array.from(x));

/** A test memory large enough for one forward + backward at these sizes. */
function memoryFor(
  variant: (typeof VARIANTS)[number],
  B: number,
  E: number,
  stride: number,
  D: number,
) {
  const floats = 2 * E * stride + 3 * B * E + 2 * B * D;
  return new TestMemory(variant, Math.ceil((floats * 4) / 2 ** 20) + 1);
}

/** Kernel forward + backward vs the f64 twin on the f32-rounded inputs. */
function checkAgainstTwin(
  variant: (typeof VARIANTS)[number],
  B: number,
  E: number,
  D: number,
  stride: number,
  seed: number,
) {
  const next = rng(seed);
  const mem = memoryFor(variant, B, E, stride, D);
  const logits = f32(randomArray(B * E, next, -4, 4));
  const experts = f32(randomArray(E * stride, next));
  const dOut = f32(randomArray(B * D, next));
  const dExperts0 = f32(randomArray(E * stride, next));
  const Logits = mem.f32(B * E, logits), Experts = mem.f32(E * stride, experts);
  const Gate = mem.f32(B * E), Out = mem.f32(B * D), DOut = mem.f32(B * D, dOut);
  const DLogits = mem.f32(B * E, new Float32Array(B * E).fill(NaN));
  const DExperts = mem.f32(E * stride, dExperts0);
  const label = `${variant} B=${B} E=${E} D=${D} stride=${stride}`;

  mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, E, D, stride);
  const fwd = gateMixtureForwardTwin(logits, experts, B, E, D, stride);
  assertClose(Gate.view, fwd.gate, `${label} gate`, { rtol: 1e-6, atol: 1e-7 });
  assertClose(Out.view, fwd.out, `${label} out`, { rtol: 1e-5, atol: 2e-6 });

  mem.k.gateMixtureBackward(
    DLogits.ptr,
    DExperts.ptr,
    DOut.ptr,
    Gate.ptr,
    Experts.ptr,
    B,
    E,
    D,
    stride,
  );
  // Backward twin on the kernel's own (f32) gate: isolates the backward.
  const bwd = gateMixtureBackwardTwin(dOut, Gate.view, experts, B, E, D, stride, dExperts0);
  // dg is a length-D f32 dot product of values in [-1, 1].
  assertClose(DLogits.view, bwd.dLogits, `${label} dLogits`, { rtol: 1e-5, atol: 1e-6 * (D + 4) });
  assertClose(DExperts.view, bwd.dExperts, `${label} dExperts`, { rtol: 1e-6, atol: 1e-6 });
}

for (const variant of VARIANTS) {
  for (const B of BS) {
    test(`gating ${variant} B=${B}: forward and backward match the f64 twin for every E, D`, () => {
      let seed = B * 1000;
      for (const E of ES) {
        for (const D of DS) checkAgainstTwin(variant, B, E, D, B * D, seed++);
      }
    });
  }

  test(`gating ${variant}: expertStride > B*D reads and writes only the B x D blocks`, () => {
    for (const [B, E, D] of [[3, 3, 5], [7, 5, 16], [33, 2, 131]]) {
      const stride = B * D + 13;
      checkAgainstTwin(variant, B, E, D, stride, 7 + B);

      // NaN in every gap: any read of it would poison out or dLogits.
      const mem = memoryFor(variant, B, E, stride, D);
      const next = rng(B);
      const experts = new Float32Array(E * stride).fill(NaN);
      const dExperts = new Float32Array(E * stride).fill(42);
      for (let e = 0; e < E; e++) {
        experts.set(randomArray(B * D, next), e * stride);
        dExperts.fill(0, e * stride, e * stride + B * D);
      }
      const Experts = mem.f32(E * stride, experts), DExperts = mem.f32(E * stride, dExperts);
      const Logits = mem.f32(B * E, randomArray(B * E, next)), Gate = mem.f32(B * E);
      const Out = mem.f32(B * D), DOut = mem.f32(B * D, randomArray(B * D, next));
      const DLogits = mem.f32(B * E);
      mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, E, D, stride);
      mem.k.gateMixtureBackward(
        DLogits.ptr,
        DExperts.ptr,
        DOut.ptr,
        Gate.ptr,
        Experts.ptr,
        B,
        E,
        D,
        stride,
      );
      assert.ok(Out.view.every(Number.isFinite), "out read a gap");
      assert.ok(DLogits.view.every(Number.isFinite), "dLogits read a gap");
      for (let e = 0; e < E; e++) {
        for (let i = e * stride + B * D; i < (e + 1) * stride; i++) {
          assert.equal(DExperts.view[i], 42, `dExperts gap written at ${i}`);
        }
      }
    }
  });

  test(`gating ${variant}: softmax of logits near ±1e4 stays finite and sums to 1`, () => {
    const [B, E, D] = [64, 5, 9];
    const next = rng(11);
    const mem = memoryFor(variant, B, E, B * D, D);
    const logits = Float64Array.from(
      { length: B * E },
      () => (next() < 0.5 ? -1e4 : 1e4) + next() * 4,
    );
    // Row 0: all equal -> uniform; row 1: one +1e4 among -1e4 -> one-hot.
    for (let e = 0; e < E; e++) logits[e] = 1e4;
    for (let e = 0; e < E; e++) logits[E + e] = e === 2 ? 1e4 : -1e4;
    const experts = randomArray(E * B * D, next);
    const Logits = mem.f32(B * E, logits), Experts = mem.f32(E * B * D, experts);
    const Gate = mem.f32(B * E), Out = mem.f32(B * D);
    mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, E, D, B * D);
    for (let b = 0; b < B; b++) {
      let sum = 0;
      for (let e = 0; e < E; e++) {
        const g = Gate.view[b * E + e];
        assert.ok(Number.isFinite(g) && g >= 0 && g <= 1, `gate[${b},${e}] = ${g}`);
        sum += g;
      }
      assert.ok(Math.abs(sum - 1) <= 1e-6, `row ${b} sums to ${sum}`);
    }
    assertClose(Gate.view.subarray(0, E), new Array(E).fill(1 / E), "uniform row", { rtol: 1e-6 });
    assert.deepEqual(Array.from(Gate.view.subarray(E, 2 * E)), [0, 0, 1, 0, 0]);
    const fwd = gateMixtureForwardTwin(Logits.view, Experts.view, B, E, D, B * D);
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
    const B = gaps.length, E = 2, D = 1;
    const mem = memoryFor(variant, B, E, B, D);
    const logits = f32(gaps.flatMap((t) => [0, -t]));
    const Logits = mem.f32(B * E, logits),
      Experts = mem.f32(E * B, new Float32Array(E * B).fill(1));
    const Gate = mem.f32(B * E), Out = mem.f32(B);
    mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, E, D, B);
    const { gate } = gateMixtureForwardTwin(logits, Experts.view, B, E, D, B);
    assertClose(Gate.view, gate, "gate", { rtol: 5e-7, atol: 2e-38 });
  });

  test(`gating ${variant}: gate may alias logits`, () => {
    const [B, E, D] = [7, 3, 10];
    const next = rng(5);
    const mem = memoryFor(variant, B, E, B * D, D);
    const logits = f32(randomArray(B * E, next, -3, 3)),
      experts = f32(randomArray(E * B * D, next));
    const Logits = mem.f32(B * E, logits), Experts = mem.f32(E * B * D, experts);
    const Out = mem.f32(B * D);
    mem.k.gateMixtureForward(Out.ptr, Logits.ptr, Logits.ptr, Experts.ptr, B, E, D, B * D);
    const fwd = gateMixtureForwardTwin(logits, experts, B, E, D, B * D);
    assertClose(Logits.view, fwd.gate, "gate in place", { rtol: 1e-6, atol: 1e-7 });
    assertClose(Out.view, fwd.out, "out", { rtol: 1e-5, atol: 2e-6 });
  });

  test(`gating ${variant}: dExperts accumulates across calls, dLogits is overwritten`, () => {
    const [B, E, D] = [5, 3, 6];
    const next = rng(21);
    const mem = memoryFor(variant, B, E, B * D, D);
    const gate = f32(randomArray(B * E, next, 0, 1)), experts = f32(randomArray(E * B * D, next));
    const dOut = f32(randomArray(B * D, next)), dExperts0 = f32(randomArray(E * B * D, next));
    const Gate = mem.f32(B * E, gate), Experts = mem.f32(E * B * D, experts);
    const DOut = mem.f32(B * D, dOut), DExperts = mem.f32(E * B * D, dExperts0);
    const DLogits = mem.f32(B * E, new Float32Array(B * E).fill(1e30));
    for (let call = 0; call < 2; call++) {
      mem.k.gateMixtureBackward(
        DLogits.ptr,
        DExperts.ptr,
        DOut.ptr,
        Gate.ptr,
        Experts.ptr,
        B,
        E,
        D,
        B * D,
      );
    }
    const once = gateMixtureBackwardTwin(dOut, gate, experts, B, E, D, B * D, dExperts0);
    const twice = gateMixtureBackwardTwin(dOut, gate, experts, B, E, D, B * D, once.dExperts);
    assertClose(DExperts.view, twice.dExperts, "dExperts after two calls", { atol: 1e-6 });
    assertClose(DLogits.view, once.dLogits, "dLogits after two calls", { atol: 1e-6 });
  });

  // L = sum(G * out(logits, experts)); the backward must be its gradient,
  // checked by central differences of the f64 twin forward.
  test(`gating ${variant}: backward gives the finite-difference gradient of the forward`, () => {
    for (const [B, E, D] of [[3, 4, 6], [2, 1, 5], [4, 3, 17]]) {
      const stride = B * D + 3;
      const next = rng(31 + D);
      const mem = memoryFor(variant, B, E, stride, D);
      const logits = f32(randomArray(B * E, next, -2, 2));
      const experts = f32(randomArray(E * stride, next));
      const g = f32(randomArray(B * D, next));
      const loss = (z: Float64Array, x: Float64Array) =>
        gateMixtureForwardTwin(z, x, B, E, D, stride).out.reduce((s, y, i) => s + y * g[i], 0);
      const Logits = mem.f32(B * E, logits), Experts = mem.f32(E * stride, experts);
      const Gate = mem.f32(B * E), Out = mem.f32(B * D), DOut = mem.f32(B * D, g);
      const DLogits = mem.f32(B * E), DExperts = mem.f32(E * stride);
      mem.k.gateMixtureForward(Out.ptr, Gate.ptr, Logits.ptr, Experts.ptr, B, E, D, stride);
      mem.k.gateMixtureBackward(
        DLogits.ptr,
        DExperts.ptr,
        DOut.ptr,
        Gate.ptr,
        Experts.ptr,
        B,
        E,
        D,
        stride,
      );
      const dzRef = finiteDifferences(logits, (z) => loss(z, experts));
      const dxRef = finiteDifferences(experts, (x) => loss(logits, x));
      const label = `B=${B} E=${E} D=${D}`;
      assertClose(DLogits.view, dzRef, `${label} dLogits`, { rtol: 1e-4, atol: 1e-5 });
      assertClose(DExperts.view, dxRef, `${label} dExperts`, { rtol: 1e-4, atol: 1e-5 });
      if (E === 1) assert.ok(DLogits.view.every((v) => v === 0), "E = 1: softmax is constant");
    }
  });
}

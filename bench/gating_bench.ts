// Gate softmax + expert mixture at the MMoE Taobao sizes (B = 8192, E = 3,
// D = 128), forward and backward, against a scalar TypeScript loop over the
// same memory (the baseline). `[8192 samples]` in the names lets
// `deno run -A bench/report.ts bench/gating_bench.ts` print samples/s.
// Bytes moved per call: forward reads E*B*D*4 = 12.6 MB of experts and writes
// B*D*4 = 4.2 MB; backward reads dOut + experts + dExperts (21 MB) and writes
// dExperts (12.6 MB), so GB/s = bytes / avg.
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/kernels/kernels.ts";
import { VARIANTS } from "../tests/_util.ts";

const B = 8192, E = 3, D = 128;
const STRIDE = B * D;

// Arena layout in floats.
const LOGITS = 16;
const GATE = LOGITS + B * E;
const EXPERTS = GATE + B * E;
const OUT = EXPERTS + E * STRIDE;
const DOUT = OUT + B * D;
const DLOGITS = DOUT + B * D;
const DEXPERTS = DLOGITS + B * E;
const FLOATS = DEXPERTS + E * STRIDE;

const memory = new WebAssembly.Memory({ initial: Math.ceil((FLOATS * 4) / 65536) + 1 });
const f32 = new Float32Array(memory.buffer);
for (let i = LOGITS; i < FLOATS; i++) f32[i] = Math.sin(i) * 0.5;
const kernels = new Map<KernelVariant, Kernels>(
  VARIANTS.map((variant) => [variant, instantiateKernels(memory, variant).exports]),
);

/** The plain forward: per row max-subtracted softmax, then the weighted sum. */
function scalarForward(): void {
  for (let b = 0; b < B; b++) {
    const z = LOGITS + b * E, g = GATE + b * E;
    let zMax = f32[z];
    for (let e = 1; e < E; e++) zMax = Math.max(zMax, f32[z + e]);
    let sum = 0;
    for (let e = 0; e < E; e++) {
      f32[g + e] = Math.exp(f32[z + e] - zMax);
      sum += f32[g + e];
    }
    for (let e = 0; e < E; e++) f32[g + e] /= sum;
    for (let d = 0; d < D; d++) {
      let acc = 0;
      for (let e = 0; e < E; e++) acc += f32[g + e] * f32[EXPERTS + e * STRIDE + b * D + d];
      f32[OUT + b * D + d] = acc;
    }
  }
}

/** The plain backward: same formulas as the kernel, one element at a time. */
function scalarBackward(): void {
  for (let b = 0; b < B; b++) {
    const g = GATE + b * E, dz = DLOGITS + b * E, dy = DOUT + b * D;
    let weighted = 0;
    for (let e = 0; e < E; e++) {
      const x = EXPERTS + e * STRIDE + b * D, dx = DEXPERTS + e * STRIDE + b * D;
      let dg = 0;
      for (let d = 0; d < D; d++) {
        dg += f32[dy + d] * f32[x + d];
        f32[dx + d] += f32[g + e] * f32[dy + d];
      }
      f32[dz + e] = dg;
      weighted += f32[g + e] * dg;
    }
    for (let e = 0; e < E; e++) f32[dz + e] = f32[g + e] * (f32[dz + e] - weighted);
  }
}

const label = `B=${B} E=${E} D=${D} [${B} samples]`;

Deno.bench({
  name: `gateMixtureForward scalar TS ${label}`,
  group: "gateMixtureForward",
  baseline: true,
  fn: scalarForward,
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `gateMixtureForward wasm ${variant} ${label}`,
    group: "gateMixtureForward",
    fn: () => k.gateMixtureForward(OUT * 4, GATE * 4, LOGITS * 4, EXPERTS * 4, B, E, D, STRIDE),
  });
}

Deno.bench({
  name: `gateMixtureBackward scalar TS ${label}`,
  group: "gateMixtureBackward",
  baseline: true,
  fn: scalarBackward,
});
for (const [variant, k] of kernels) {
  Deno.bench({
    name: `gateMixtureBackward wasm ${variant} ${label}`,
    group: "gateMixtureBackward",
    fn: () =>
      k.gateMixtureBackward(
        DLOGITS * 4,
        DEXPERTS * 4,
        DOUT * 4,
        GATE * 4,
        EXPERTS * 4,
        B,
        E,
        D,
        STRIDE,
      ),
  });
}

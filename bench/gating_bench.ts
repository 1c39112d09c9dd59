// Gate softmax + expert mixture at the MMoE Taobao sizes (B = 8192, T = 2,
// E = 3, D = 128), forward and backward, against a scalar TypeScript loop over
// the same memory (the baseline). `[8192 samples]` in the names lets
// `deno run -A bench/report.ts bench/gating_bench.ts` print samples/s.
// Bytes moved per call: forward reads B*E*D*4 = 12.6 MB of experts and writes
// B*T*D*4 = 8.4 MB; backward reads dOut + experts (21 MB) and writes dExperts
// (12.6 MB), so GB/s = bytes / avg.
import { instantiateKernels, type Kernels, type KernelVariant } from "../src/kernels/kernels.ts";
import { VARIANTS } from "../tests/_util.ts";

const B = 8192, T = 2, E = 3, D = 128;

// Arena layout in floats: logits, gate [B, T, E]; experts [B, E, D]; out [B, T, D].
const LOGITS = 16;
const GATE = LOGITS + B * T * E;
const EXPERTS = GATE + B * T * E;
const OUT = EXPERTS + B * E * D;
const DOUT = OUT + B * T * D;
const DLOGITS = DOUT + B * T * D;
const DEXPERTS = DLOGITS + B * T * E;
const FLOATS = DEXPERTS + B * E * D;

const memory = new WebAssembly.Memory({ initial: Math.ceil((FLOATS * 4) / 65536) + 1 });
const f32 = new Float32Array(memory.buffer);
for (let i = LOGITS; i < FLOATS; i++) f32[i] = Math.sin(i) * 0.5;
const kernels = new Map<KernelVariant, Kernels>(
  VARIANTS.map((variant) => [variant, instantiateKernels(memory, variant).exports]),
);

/** The plain forward: per row max-subtracted softmax, then the weighted sum. */
function scalarForward(): void {
  for (let row = 0; row < B * T; row++) {
    const z = LOGITS + row * E, g = GATE + row * E, x = EXPERTS + Math.floor(row / T) * E * D;
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
      for (let e = 0; e < E; e++) acc += f32[g + e] * f32[x + e * D + d];
      f32[OUT + row * D + d] = acc;
    }
  }
}

/** The plain backward: same formulas as the kernel, one element at a time. */
function scalarBackward(): void {
  for (let row = 0; row < B * T; row++) {
    const g = GATE + row * E, dz = DLOGITS + row * E, dy = DOUT + row * D;
    const first = row % T === 0, b = Math.floor(row / T);
    let weighted = 0;
    for (let e = 0; e < E; e++) {
      const x = EXPERTS + (b * E + e) * D, dx = DEXPERTS + (b * E + e) * D;
      let dg = 0;
      for (let d = 0; d < D; d++) {
        dg += f32[dy + d] * f32[x + d];
        f32[dx + d] = (first ? 0 : f32[dx + d]) + f32[g + e] * f32[dy + d];
      }
      f32[dz + e] = dg;
      weighted += f32[g + e] * dg;
    }
    for (let e = 0; e < E; e++) f32[dz + e] = f32[g + e] * (f32[dz + e] - weighted);
  }
}

const label = `B=${B} T=${T} E=${E} D=${D} [${B} samples]`;

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
    fn: () => k.gateMixtureForward(OUT * 4, GATE * 4, LOGITS * 4, EXPERTS * 4, B, T, E, D),
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
        T,
        E,
        D,
      ),
  });
}

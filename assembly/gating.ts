// MMoE gate + mixture (Ma et al., KDD 2018, eqs. 5-6; tzrec `MMoE.forward`):
//   gate[b,:] = softmax(logits[b,:])           B x E
//   out[b,:]  = sum_e gate[b,e] * expert_e[b,:]  B x D
// fused per row, so the gate never makes a second trip through memory.
//
// Experts are stacked along E: expert e is B x D row-major at
// `experts + 4 * e * expertStride` bytes (expertStride in floats, >= B*D), so
// the expert MLPs can write their last layer straight into one arena block.
// dExperts uses the same layout and stride.

import { expNonPositive, fma, hsum } from "./simd";

/**
 * gate[b,:] = softmax(logits[b,:]) over E (max-subtracted, so logits of any
 * size stay finite); out[b,:] = sum_e gate[b,e] * expert_e[b,:].
 * `gate` may equal `logits`; `out` must not alias the experts.
 */
export function gateMixtureForward(
  out: usize,
  gate: usize,
  logits: usize,
  experts: usize,
  B: i32,
  E: i32,
  D: i32,
  expertStride: i32,
): void {
  const rowBytes = <usize> D << 2;
  const strideBytes = <usize> expertStride << 2;
  for (let b = 0; b < B; b++) {
    const z = logits + ((<usize> b * <usize> E) << 2);
    const g = gate + ((<usize> b * <usize> E) << 2);
    softmaxRow(g, z, E);

    const o = out + <usize> b * rowBytes;
    const x0 = experts + <usize> b * rowBytes;
    let d = 0;
    // 16 columns: four independent accumulators, expert loop innermost.
    for (; d + 16 <= D; d += 16) {
      let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0), a3 = f32x4.splat(0);
      let x = x0 + (<usize> d << 2);
      for (let e = 0; e < E; e++) {
        const ge = v128.load32_splat(g + (<usize> e << 2));
        a0 = fma(ge, v128.load(x), a0);
        a1 = fma(ge, v128.load(x, 16), a1);
        a2 = fma(ge, v128.load(x, 32), a2);
        a3 = fma(ge, v128.load(x, 48), a3);
        x += strideBytes;
      }
      const op = o + (<usize> d << 2);
      v128.store(op, a0);
      v128.store(op, a1, 16);
      v128.store(op, a2, 32);
      v128.store(op, a3, 48);
    }
    for (; d + 4 <= D; d += 4) {
      let a = f32x4.splat(0);
      let x = x0 + (<usize> d << 2);
      for (let e = 0; e < E; e++) {
        a = fma(v128.load32_splat(g + (<usize> e << 2)), v128.load(x), a);
        x += strideBytes;
      }
      v128.store(o + (<usize> d << 2), a);
    }
    for (; d < D; d++) {
      let a: f32 = 0;
      let x = x0 + (<usize> d << 2);
      for (let e = 0; e < E; e++) {
        a += load<f32>(g + (<usize> e << 2)) * load<f32>(x);
        x += strideBytes;
      }
      store<f32>(o + (<usize> d << 2), a);
    }
  }
}

// Helpers carry no `@inline`: `deno fmt` deletes decorators on function
// declarations, and binaryen -O3 inlines single-call helpers anyway.

/** g[0..E) = softmax(z[0..E)); g may equal z (each z[e] is read before g[e] is written). */
function softmaxRow(g: usize, z: usize, E: i32): void {
  let zMax = load<f32>(z);
  for (let e = 1; e < E; e++) zMax = max(zMax, load<f32>(z + (<usize> e << 2)));
  let sum: f32 = 0;
  for (let e = 0; e < E; e++) {
    const p = expNonPositive(load<f32>(z + (<usize> e << 2)) - zMax);
    store<f32>(g + (<usize> e << 2), p);
    sum += p;
  }
  // sum >= 1: the max term contributes exp(0).
  for (let e = 0; e < E; e++) {
    const p = g + (<usize> e << 2);
    store<f32>(p, load<f32>(p) / sum);
  }
}

/**
 * Backward of gateMixtureForward, one pass over each expert row:
 *   dExperts[e][b,:] += gate[b,e] * dOut[b,:]
 *   dg[b,e]           = dot(dOut[b,:], expert_e[b,:])
 *   dLogits[b,e]      = gate[b,e] * (dg[b,e] - sum_e' gate[b,e'] dg[b,e'])
 * dLogits is overwritten and holds dg until the row's sum is known, which is
 * why it must not alias `gate`.
 */
export function gateMixtureBackward(
  dLogits: usize,
  dExperts: usize,
  dOut: usize,
  gate: usize,
  experts: usize,
  B: i32,
  E: i32,
  D: i32,
  expertStride: i32,
): void {
  const rowBytes = <usize> D << 2;
  const strideBytes = <usize> expertStride << 2;
  for (let b = 0; b < B; b++) {
    const g = gate + ((<usize> b * <usize> E) << 2);
    const dz = dLogits + ((<usize> b * <usize> E) << 2);
    const dy = dOut + <usize> b * rowBytes;
    let x = experts + <usize> b * rowBytes;
    let dx = dExperts + <usize> b * rowBytes;
    let weighted: f32 = 0;
    for (let e = 0; e < E; e++) {
      const ge = load<f32>(g + (<usize> e << 2));
      const gv = f32x4.splat(ge);
      let dot0 = f32x4.splat(0), dot1 = f32x4.splat(0);
      let d = 0;
      for (; d + 8 <= D; d += 8) {
        const off = <usize> d << 2;
        const dy0 = v128.load(dy + off), dy1 = v128.load(dy + off, 16);
        dot0 = fma(dy0, v128.load(x + off), dot0);
        dot1 = fma(dy1, v128.load(x + off, 16), dot1);
        v128.store(dx + off, fma(gv, dy0, v128.load(dx + off)));
        v128.store(dx + off, fma(gv, dy1, v128.load(dx + off, 16)), 16);
      }
      if (d + 4 <= D) {
        const off = <usize> d << 2;
        const dy0 = v128.load(dy + off);
        dot0 = fma(dy0, v128.load(x + off), dot0);
        v128.store(dx + off, fma(gv, dy0, v128.load(dx + off)));
        d += 4;
      }
      let dg = hsum(f32x4.add(dot0, dot1));
      for (; d < D; d++) {
        const off = <usize> d << 2;
        const dyd = load<f32>(dy + off);
        dg += dyd * load<f32>(x + off);
        store<f32>(dx + off, load<f32>(dx + off) + ge * dyd);
      }
      store<f32>(dz + (<usize> e << 2), dg);
      weighted += ge * dg;
      x += strideBytes;
      dx += strideBytes;
    }
    for (let e = 0; e < E; e++) {
      const p = dz + (<usize> e << 2);
      store<f32>(p, load<f32>(g + (<usize> e << 2)) * (load<f32>(p) - weighted));
    }
  }
}

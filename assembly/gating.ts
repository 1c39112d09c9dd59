// MMoE gates + mixture (Ma et al., KDD 2018, eqs. 5-6; tzrec `MMoE.forward`),
// every task in one call:
//   gate[b,t,:] = softmax(logits[b,t,:])                    B x T x E
//   out[b,t,:]  = sum_e gate[b,t,e] * experts[b,e,:]         B x T x D
// fused per row, so a gate never makes a second trip through memory and a
// row's E x D experts stay in L1 while every task mixes them.
//
// Layouts are row-major and packed: experts [B, E, D] is tzrec's
// `torch.stack(expert_fea_list, dim=1)` and what the stacked expert MLPs
// write (expert e in columns e*D of a [B, E*D] matrix); logits and gate
// [B, T, E] are what the stacked gate Linears write; out [B, T, D] feeds the
// towers (task t in columns t*D). dExperts has the experts' layout.

import { expNonPositive, fma, hsum } from "./simd";

/**
 * gate[b,t,:] = softmax(logits[b,t,:]) over E (max-subtracted, so logits of
 * any size stay finite); out[b,t,:] = sum_e gate[b,t,e] * experts[b,e,:].
 * `gate` may equal `logits`; `out` must not alias the experts.
 */
export function gateMixtureForward(
  out: usize,
  gate: usize,
  logits: usize,
  experts: usize,
  B: i32,
  T: i32,
  E: i32,
  D: i32,
): void {
  const rowBytes = <usize> D << 2;
  for (let b = 0; b < B; b++) {
    const x0 = experts + <usize> b * <usize> E * rowBytes;
    for (let t = 0; t < T; t++) {
      const row = <usize> b * <usize> T + <usize> t;
      const g = gate + ((row * <usize> E) << 2);
      softmaxRow(g, logits + ((row * <usize> E) << 2), E);
      mixRow(out + row * rowBytes, g, x0, E, D);
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

/** o[0..D) = sum_e g[e] * x[e*D .. e*D+D): 16 columns per pass, expert loop innermost. */
function mixRow(o: usize, g: usize, x0: usize, E: i32, D: i32): void {
  const rowBytes = <usize> D << 2;
  let d = 0;
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
      x += rowBytes;
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
      x += rowBytes;
    }
    v128.store(o + (<usize> d << 2), a);
  }
  for (; d < D; d++) {
    let a: f32 = 0;
    let x = x0 + (<usize> d << 2);
    for (let e = 0; e < E; e++) {
      a += load<f32>(g + (<usize> e << 2)) * load<f32>(x);
      x += rowBytes;
    }
    store<f32>(o + (<usize> d << 2), a);
  }
}

/**
 * Backward of gateMixtureForward, one pass over each expert row per task:
 *   dExperts[b,e,:] = sum_t gate[b,t,e] * dOut[b,t,:]
 *   dg[b,t,e]       = dot(dOut[b,t,:], experts[b,e,:])
 *   dLogits[b,t,e]  = gate[b,t,e] * (dg[b,t,e] - sum_e' gate[b,t,e'] dg[b,t,e'])
 * Both outputs are overwritten; dLogits holds dg until the row's sum is
 * known, which is why it must not alias `gate`.
 */
export function gateMixtureBackward(
  dLogits: usize,
  dExperts: usize,
  dOut: usize,
  gate: usize,
  experts: usize,
  B: i32,
  T: i32,
  E: i32,
  D: i32,
): void {
  const rowBytes = <usize> D << 2;
  for (let b = 0; b < B; b++) {
    const expertRow = <usize> b * <usize> E * rowBytes;
    for (let t = 0; t < T; t++) {
      const row = <usize> b * <usize> T + <usize> t;
      const g = gate + ((row * <usize> E) << 2);
      const dz = dLogits + ((row * <usize> E) << 2);
      const dy = dOut + row * rowBytes;
      let x = experts + expertRow;
      let dx = dExperts + expertRow;
      let weighted: f32 = 0;
      for (let e = 0; e < E; e++) {
        const ge = load<f32>(g + (<usize> e << 2));
        const dg = dotAndScatter(dx, x, dy, ge, D, t == 0);
        store<f32>(dz + (<usize> e << 2), dg);
        weighted += ge * dg;
        x += rowBytes;
        dx += rowBytes;
      }
      for (let e = 0; e < E; e++) {
        const p = dz + (<usize> e << 2);
        store<f32>(p, load<f32>(g + (<usize> e << 2)) * (load<f32>(p) - weighted));
      }
    }
  }
}

/**
 * dx[0..D) = ge * dy[0..D) when `first`, else dx += ge * dy; returns
 * dot(dy, x) over D (two accumulators, then the tail).
 */
function dotAndScatter(dx: usize, x: usize, dy: usize, ge: f32, D: i32, first: bool): f32 {
  const gv = f32x4.splat(ge);
  let dot0 = f32x4.splat(0), dot1 = f32x4.splat(0);
  let d = 0;
  for (; d + 8 <= D; d += 8) {
    const off = <usize> d << 2;
    const dy0 = v128.load(dy + off), dy1 = v128.load(dy + off, 16);
    dot0 = fma(dy0, v128.load(x + off), dot0);
    dot1 = fma(dy1, v128.load(x + off, 16), dot1);
    const zero = f32x4.splat(0);
    v128.store(dx + off, fma(gv, dy0, first ? zero : v128.load(dx + off)));
    v128.store(dx + off, fma(gv, dy1, first ? zero : v128.load(dx + off, 16)), 16);
  }
  if (d + 4 <= D) {
    const off = <usize> d << 2;
    const dy0 = v128.load(dy + off);
    dot0 = fma(dy0, v128.load(x + off), dot0);
    v128.store(dx + off, fma(gv, dy0, first ? f32x4.splat(0) : v128.load(dx + off)));
    d += 4;
  }
  let dg = hsum(f32x4.add(dot0, dot1));
  for (; d < D; d++) {
    const off = <usize> d << 2;
    const dyd = load<f32>(dy + off);
    dg += dyd * load<f32>(x + off);
    store<f32>(dx + off, (first ? 0 : load<f32>(dx + off)) + ge * dyd);
  }
  return dg;
}

// Activations: y = act(x + bias) over B x H values, its backward, and the bias
// gradient (column sums).
//
// Codes follow `Activation` in src/kernels.ts and PyTorch's modules: 0
// identity, 1 nn.ReLU, 2 nn.Sigmoid, 3 nn.Tanh, 4 nn.LeakyReLU(slope), 5
// nn.GELU (exact erf form, the torch default), 6 nn.SiLU. Main loops are f32x4;
// the transcendental ones finish their last n % 4 values as one partial vector.
//
// Backward reads what torch's autograd saves: ReLU, Sigmoid and Tanh the
// output y (so a forward may run in place, y == x), LeakyReLU, GELU and SiLU
// the input x.
//
// tanh and erf are f32x4 polynomials written here, on the shared f32x4 exp
// (`expNonPositiveVec` in simd.ts, 1.02 ulp), not `Mathf`: scalar
// `Mathf.expm1` costs ~28 ns per value (slower than V8's Math.exp, 7x slower
// than these), and at -O3 `Mathf.exp` is table-based, its 256-byte table a data
// segment that instantiation would write into the caller's arena. Polynomial
// coefficients are least-squares fits on Chebyshev nodes (numpy), checked in
// f32 against exact values: tanh 1.5 ulp, erf 1.2e-7 abs.

import { expNonPositiveVec, horner, loadPartial, relu, storePartial } from "./simd";

const IDENTITY: i32 = 0;
const RELU: i32 = 1;
const SIGMOID: i32 = 2;
const TANH: i32 = 3;
const LEAKY_RELU: i32 = 4;
const GELU: i32 = 5;
const SILU: i32 = 6;

/** 1/sqrt(2) */
const SQRT1_2: f32 = 0.70710677;
/** 1/sqrt(2 pi), the standard normal density at 0. */
const INV_SQRT_2PI: f32 = 0.3989423;
/** |v| below this takes the tanh polynomial, above it (1 - e^-2|v|) / (1 + e^-2|v|). */
const TANH_SPLIT: f32 = 0.625;
/** |v| below this takes the erf polynomial, above it 1 - exp(Q(|v|)). */
const ERF_SPLIT: f32 = 0.9;
/** erf(4) rounds to 1 in f32. */
const ERF_ONE: f32 = 4;

// @ts-ignore: decorator
@inline
function splat(x: f32): v128 {
  return f32x4.splat(x);
}

/** Sign bit of each lane of `v` put on the non-negative lanes of `magnitude`. */
// @ts-ignore: decorator
@inline
function withSign(magnitude: v128, v: v128): v128 {
  return v128.or(magnitude, v128.and(v, i32x4.splat(0x80000000)));
}

/** Logistic sigmoid from e = e^-|v| (never overflows): 1/(1+e) for v >= 0, else e/(1+e). */
// @ts-ignore: decorator
@inline
function sigmoid(v: v128): v128 {
  const e = expNonPositiveVec(f32x4.neg(f32x4.abs(v)));
  const r = f32x4.div(splat(1), f32x4.add(splat(1), e));
  return v128.bitselect(r, f32x4.mul(e, r), f32x4.ge(v, splat(0)));
}

/**
 * tanh: |v| < 0.625: |v| + |v|^3 P(v^2), P degree 4; else (1 - e) / (1 + e)
 * with e = e^-2|v| (no cancellation there: e < 0.29); saturates to +-1.
 */
// @ts-ignore: decorator
@inline
function tanh(v: v128): v128 {
  const t = f32x4.abs(v);
  const s = f32x4.mul(t, t);
  let p = splat(-0.006154248);
  p = horner(p, s, 0.02104488);
  p = horner(p, s, -0.05386369);
  p = horner(p, s, 0.13332888);
  p = horner(p, s, -0.3333333);
  const small = f32x4.add(t, f32x4.mul(f32x4.mul(t, s), p));
  const e = expNonPositiveVec(f32x4.neg(f32x4.add(t, t)));
  const large = f32x4.div(f32x4.sub(splat(1), e), f32x4.add(splat(1), e));
  return withSign(v128.bitselect(small, large, f32x4.lt(t, splat(TANH_SPLIT))), v);
}

/**
 * erf, max abs error 1.2e-7 (about 2 ulp). |v| < 0.9: |v| P(v^2), P a
 * degree-5 fit of erf(t)/t; 0.9 <= |v| < 4: 1 - exp(Q(|v|)), Q a degree-8 fit
 * of log(erfc(t)) (Q < 0 there); |v| >= 4 rounds to 1.
 */
// @ts-ignore: decorator
@inline
function erf(v: v128): v128 {
  const t = f32x4.abs(v);
  const s = f32x4.mul(t, t);
  let p = splat(-0.00060860696);
  p = horner(p, s, 0.0050110854);
  p = horner(p, s, -0.026778279);
  p = horner(p, s, 0.11282122);
  p = horner(p, s, -0.37612522);
  p = horner(p, s, 1.1283791);
  const small = f32x4.mul(p, t);
  const u = f32x4.min(t, splat(ERF_ONE));
  let q = splat(1.610223e-6);
  q = horner(q, u, -4.551244e-5);
  q = horner(q, u, 0.00059209);
  q = horner(q, u, -0.004736938);
  q = horner(q, u, 0.026355086);
  q = horner(q, u, -0.10996074);
  q = horner(q, u, -0.6319563);
  q = horner(q, u, -1.1301551);
  q = horner(q, u, 0.00030026032);
  const large = f32x4.sub(splat(1), expNonPositiveVec(q));
  return withSign(v128.bitselect(small, large, f32x4.lt(t, splat(ERF_SPLIT))), v);
}

/** nn.GELU(): v * 0.5 * (1 + erf(v / sqrt 2)). */
// @ts-ignore: decorator
@inline
function gelu(v: v128): v128 {
  const cdf = f32x4.add(splat(1), erf(f32x4.mul(v, splat(SQRT1_2))));
  return f32x4.mul(f32x4.mul(v, splat(0.5)), cdf);
}

/** d gelu / dv = Phi(v) + v phi(v), as torch's GeluBackward computes it. */
// @ts-ignore: decorator
@inline
function geluGrad(v: v128): v128 {
  const cdf = f32x4.mul(splat(0.5), f32x4.add(splat(1), erf(f32x4.mul(v, splat(SQRT1_2)))));
  const minusHalfSquare = f32x4.mul(f32x4.mul(splat(-0.5), v), v);
  const pdf = f32x4.mul(expNonPositiveVec(minusHalfSquare), splat(INV_SQRT_2PI));
  return f32x4.add(cdf, f32x4.mul(v, pdf));
}

/**
 * torch silu_backward: s (1 + v (1 - s)), s = sigmoid(v), with 1 - s =
 * sigmoid(-v) taken from the same e^-|v| instead of by subtraction (which
 * costs 1e-5 relative at v = 5).
 */
// @ts-ignore: decorator
@inline
function siluGrad(v: v128): v128 {
  const e = expNonPositiveVec(f32x4.neg(f32x4.abs(v)));
  const r = f32x4.div(splat(1), f32x4.add(splat(1), e));
  const er = f32x4.mul(e, r);
  const positive = f32x4.ge(v, splat(0));
  const s = v128.bitselect(r, er, positive);
  const complement = v128.bitselect(er, r, positive);
  return f32x4.mul(s, f32x4.add(splat(1), f32x4.mul(v, complement)));
}

/** The transcendental activations on four lanes; `act` is loop-invariant. */
// @ts-ignore: decorator
@inline
function transcendental(v: v128, act: i32): v128 {
  if (act == SIGMOID) return sigmoid(v);
  if (act == TANH) return tanh(v);
  if (act == GELU) return gelu(v);
  return f32x4.mul(v, sigmoid(v)); // SILU
}

/** v + bias[i] when there is a bias. */
// @ts-ignore: decorator
@inline
function biased(x: usize, bias: usize, off: usize): f32 {
  const v = load<f32>(x + off);
  return bias != 0 ? v + load<f32>(bias + off) : v;
}

/** Four lanes of x (+ bias), `off` bytes in. */
// @ts-ignore: decorator
@inline
function biasedVec(x: usize, bias: usize, off: usize): v128 {
  const v = v128.load(x + off);
  return bias != 0 ? f32x4.add(v, v128.load(bias + off)) : v;
}

/**
 * y[b,h] = act(x[b,h] + bias[h]) over B x H (`bias` 0: none); `y` may equal
 * `x`. `slope` is LeakyReLU's negative slope.
 */
export function biasActivation(
  y: usize,
  x: usize,
  bias: usize,
  B: i32,
  H: i32,
  act: i32,
  slope: f32,
): void {
  // Without a bias the B x H block is one flat span.
  const rows = bias != 0 ? B : 1;
  const n = bias != 0 ? H : B * H;
  const rowBytes = <usize>n << 2;
  for (let b = 0; b < rows; b++) {
    const yr = y + <usize>b * rowBytes;
    const xr = x + <usize>b * rowBytes;
    switch (act) {
      case IDENTITY:
        identitySpan(yr, xr, bias, n);
        break;
      case RELU:
        reluSpan(yr, xr, bias, n);
        break;
      case LEAKY_RELU:
        leakyReluSpan(yr, xr, bias, n, slope);
        break;
      default:
        transcendentalSpan(yr, xr, bias, n, act);
    }
  }
}

function identitySpan(y: usize, x: usize, bias: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    v128.store(y + off, biasedVec(x, bias, off));
  }
  for (; i < n; i++) {
    const off = <usize>i << 2;
    store<f32>(y + off, biased(x, bias, off));
  }
}

function reluSpan(y: usize, x: usize, bias: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    // f32x4.max(x, 0) in two instructions: NaN stays NaN, -0 becomes +0, like torch.relu.
    v128.store(y + off, relu(biasedVec(x, bias, off)));
  }
  for (; i < n; i++) {
    const off = <usize>i << 2;
    store<f32>(y + off, max(biased(x, bias, off), <f32>0));
  }
}

function leakyReluSpan(y: usize, x: usize, bias: usize, n: i32, slope: f32): void {
  const zero = f32x4.splat(0);
  const s = f32x4.splat(slope);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    const v = biasedVec(x, bias, off);
    v128.store(y + off, v128.bitselect(v, f32x4.mul(v, s), f32x4.gt(v, zero)));
  }
  for (; i < n; i++) {
    const off = <usize>i << 2;
    const v = biased(x, bias, off);
    store<f32>(y + off, v > 0 ? v : v * slope);
  }
}

/** Sigmoid, tanh, GELU and SiLU; the last n % 4 values as one partial vector. */
function transcendentalSpan(y: usize, x: usize, bias: usize, n: i32, act: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    v128.store(y + off, transcendental(biasedVec(x, bias, off), act));
  }
  const rest = n - i;
  if (rest > 0) {
    const off = <usize>i << 2;
    let v = loadPartial(x + off, rest);
    if (bias != 0) v = f32x4.add(v, loadPartial(bias + off, rest));
    storePartial(y + off, transcendental(v, act), rest);
  }
}

/**
 * dx = dy * act'(x) over n values; `x` is the pre-activation input (bias
 * included), `y = act(x)`. `dx` may equal `dy`.
 */
export function activationBackward(
  dx: usize,
  dy: usize,
  x: usize,
  y: usize,
  n: i32,
  act: i32,
  slope: f32,
): void {
  const zero = f32x4.splat(0);
  const one = f32x4.splat(1);
  const s = f32x4.splat(slope);
  let i = 0;
  switch (act) {
    case IDENTITY: {
      if (dx == dy) return;
      for (; i + 4 <= n; i += 4) {
        const off = <usize>i << 2;
        v128.store(dx + off, v128.load(dy + off));
      }
      for (; i < n; i++) {
        const off = <usize>i << 2;
        store<f32>(dx + off, load<f32>(dy + off));
      }
      break;
    }
    case RELU: {
      // torch threshold_backward on the output: dy where y > 0, else 0.
      for (; i + 4 <= n; i += 4) {
        const off = <usize>i << 2;
        const mask = f32x4.gt(v128.load(y + off), zero);
        v128.store(dx + off, v128.and(v128.load(dy + off), mask));
      }
      for (; i < n; i++) {
        const off = <usize>i << 2;
        store<f32>(dx + off, load<f32>(y + off) > 0 ? load<f32>(dy + off) : 0);
      }
      break;
    }
    case SIGMOID: {
      // dy * (1 - y) * y
      for (; i + 4 <= n; i += 4) {
        const off = <usize>i << 2;
        const yv = v128.load(y + off);
        const g = f32x4.mul(f32x4.mul(v128.load(dy + off), f32x4.sub(one, yv)), yv);
        v128.store(dx + off, g);
      }
      for (; i < n; i++) {
        const off = <usize>i << 2;
        const yv = load<f32>(y + off);
        store<f32>(dx + off, load<f32>(dy + off) * (1 - yv) * yv);
      }
      break;
    }
    case TANH: {
      // dy * (1 - y^2)
      for (; i + 4 <= n; i += 4) {
        const off = <usize>i << 2;
        const yv = v128.load(y + off);
        const g = f32x4.mul(v128.load(dy + off), f32x4.sub(one, f32x4.mul(yv, yv)));
        v128.store(dx + off, g);
      }
      for (; i < n; i++) {
        const off = <usize>i << 2;
        const yv = load<f32>(y + off);
        store<f32>(dx + off, load<f32>(dy + off) * (1 - yv * yv));
      }
      break;
    }
    case LEAKY_RELU: {
      // torch leaky_relu_backward: x > 0 ? dy : dy * slope
      for (; i + 4 <= n; i += 4) {
        const off = <usize>i << 2;
        const g = v128.load(dy + off);
        const mask = f32x4.gt(v128.load(x + off), zero);
        v128.store(dx + off, v128.bitselect(g, f32x4.mul(g, s), mask));
      }
      for (; i < n; i++) {
        const off = <usize>i << 2;
        const g = load<f32>(dy + off);
        store<f32>(dx + off, load<f32>(x + off) > 0 ? g : g * slope);
      }
      break;
    }
    case GELU:
    case SILU: {
      for (; i + 4 <= n; i += 4) {
        const off = <usize>i << 2;
        const xv = v128.load(x + off);
        const g = act == GELU ? geluGrad(xv) : siluGrad(xv);
        v128.store(dx + off, f32x4.mul(v128.load(dy + off), g));
      }
      const rest = n - i;
      if (rest > 0) {
        const off = <usize>i << 2;
        const xv = loadPartial(x + off, rest);
        const g = act == GELU ? geluGrad(xv) : siluGrad(xv);
        storePartial(dx + off, f32x4.mul(loadPartial(dy + off, rest), g), rest);
      }
      break;
    }
  }
}

/**
 * out[h] += sum over b of x[b,h] for the H columns of a B-row matrix whose
 * rows are `ldx` floats apart (the bias gradient; a column block of a wider
 * matrix when the threads split the columns). Rows are streamed in order
 * four at a time, so `out` (H floats) stays in L1 and is read and written
 * once per four rows. Each column's sum is ((x0 + x1) + (x2 + x3)) + ...
 * whichever columns share a call.
 */
export function columnSum(out: usize, x: usize, B: i32, H: i32, ldx: i32): void {
  const ld = <usize>ldx << 2;
  let b = 0;
  for (; b + 4 <= B; b += 4) {
    const r0 = x + <usize>b * ld;
    const r1 = r0 + ld, r2 = r1 + ld, r3 = r2 + ld;
    let h = 0;
    for (; h + 4 <= H; h += 4) {
      const off = <usize>h << 2;
      const pair0 = f32x4.add(v128.load(r0 + off), v128.load(r1 + off));
      const pair1 = f32x4.add(v128.load(r2 + off), v128.load(r3 + off));
      v128.store(out + off, f32x4.add(v128.load(out + off), f32x4.add(pair0, pair1)));
    }
    for (; h < H; h++) {
      const off = <usize>h << 2;
      const sum = (load<f32>(r0 + off) + load<f32>(r1 + off)) +
        (load<f32>(r2 + off) + load<f32>(r3 + off));
      store<f32>(out + off, load<f32>(out + off) + sum);
    }
  }
  for (; b < B; b++) {
    const r = x + <usize>b * ld;
    let h = 0;
    for (; h + 4 <= H; h += 4) {
      const off = <usize>h << 2;
      v128.store(out + off, f32x4.add(v128.load(out + off), v128.load(r + off)));
    }
    for (; h < H; h++) {
      const off = <usize>h << 2;
      store<f32>(out + off, load<f32>(out + off) + load<f32>(r + off));
    }
  }
}

/**
 * ReLU backward and the bias gradient in one pass: dx[b,h] = dy[b,h] where
 * y[b,h] > 0, else 0 (as `activationBackward` with RELU), and out[h] += the
 * column sums of dx (as `columnSum`: the same sums, the same order). dx may
 * be dy. All three matrices have rows `ld` floats apart (a column block of a
 * wider matrix when the threads split the columns). Saves `columnSum`'s
 * second read of dx (~0.5% of a training step).
 */
export function reluBackwardColumnSum(
  dx: usize,
  out: usize,
  dy: usize,
  y: usize,
  B: i32,
  H: i32,
  ld: i32,
): void {
  const stride = <usize>ld << 2;
  const zero = f32x4.splat(0);
  let b = 0;
  for (; b + 4 <= B; b += 4) {
    const r0 = <usize>b * stride;
    const r1 = r0 + stride, r2 = r1 + stride, r3 = r2 + stride;
    let h = 0;
    for (; h + 4 <= H; h += 4) {
      const off = <usize>h << 2;
      const z0 = v128.and(v128.load(dy + r0 + off), f32x4.gt(v128.load(y + r0 + off), zero));
      const z1 = v128.and(v128.load(dy + r1 + off), f32x4.gt(v128.load(y + r1 + off), zero));
      const z2 = v128.and(v128.load(dy + r2 + off), f32x4.gt(v128.load(y + r2 + off), zero));
      const z3 = v128.and(v128.load(dy + r3 + off), f32x4.gt(v128.load(y + r3 + off), zero));
      v128.store(dx + r0 + off, z0);
      v128.store(dx + r1 + off, z1);
      v128.store(dx + r2 + off, z2);
      v128.store(dx + r3 + off, z3);
      const sum = f32x4.add(f32x4.add(z0, z1), f32x4.add(z2, z3));
      v128.store(out + off, f32x4.add(v128.load(out + off), sum));
    }
    for (; h < H; h++) {
      const off = <usize>h << 2;
      const z0 = reluGrad(dx + r0 + off, dy + r0 + off, y + r0 + off);
      const z1 = reluGrad(dx + r1 + off, dy + r1 + off, y + r1 + off);
      const z2 = reluGrad(dx + r2 + off, dy + r2 + off, y + r2 + off);
      const z3 = reluGrad(dx + r3 + off, dy + r3 + off, y + r3 + off);
      store<f32>(out + off, load<f32>(out + off) + ((z0 + z1) + (z2 + z3)));
    }
  }
  for (; b < B; b++) {
    const r = <usize>b * stride;
    let h = 0;
    for (; h + 4 <= H; h += 4) {
      const off = <usize>h << 2;
      const z = v128.and(v128.load(dy + r + off), f32x4.gt(v128.load(y + r + off), zero));
      v128.store(dx + r + off, z);
      v128.store(out + off, f32x4.add(v128.load(out + off), z));
    }
    for (; h < H; h++) {
      const off = <usize>h << 2;
      store<f32>(out + off, load<f32>(out + off) + reluGrad(dx + r + off, dy + r + off, y + r + off));
    }
  }
}

/** One element of ReLU's backward: stores and returns y > 0 ? dy : 0. */
// @ts-ignore: decorator
@inline
function reluGrad(dx: usize, dy: usize, y: usize): f32 {
  const v: f32 = load<f32>(y) > 0 ? load<f32>(dy) : 0;
  store<f32>(dx, v);
  return v;
}

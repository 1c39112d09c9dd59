// Optimizer steps. Dense: one flat f32x4 loop over a parameter block (all
// parameters, gradients and moments share one size table, so one call updates
// every dense parameter). Sparse: the same update on the embedding rows a batch
// touched, `unique` (i32) naming each row and `gradRows` holding its summed
// gradient (U x dim).
//
// Formulas and operation order follow torch.optim's single-tensor CPU path
// (Adam, Adagrad with lr_decay 0, SGD with or without momentum, dampening,
// Nesterov) and fbgemm's EXACT_ADAGRAD for sparse Adagrad. Adagrad's
// initial_accumulator_value is where the caller's accumulator starts. Hyperparameters arrive as f64, scalars
// derived from them (bias corrections, 1 - beta) are computed in f64 like
// torch's Python floats, then rounded once to f32. Plain mul + add, no fused
// madd, so both kernel builds give identical parameters.

/** x^k in f64 by squaring (not `Math.pow`: its -O3 version carries a data table). */
function powInt(x: f64, k: i32): f64 {
  let result: f64 = 1;
  let base = x;
  while (k > 0) {
    if (k & 1) result *= base;
    base *= base;
    k >>= 1;
  }
  return result;
}

/**
 * Adam on n values: g += wd p; m += (1 - b1) (g - m) (torch's lerp form);
 * v = b2 v + (1 - b2) g^2; p -= stepSize * m / (sqrt(v) / bc2Sqrt + eps).
 */
function adamSpan(
  param: usize,
  grad: usize,
  m: usize,
  v: usize,
  n: i32,
  stepSize: f32,
  oneMinusBeta1: f32,
  beta2: f32,
  oneMinusBeta2: f32,
  bc2Sqrt: f32,
  eps: f32,
  weightDecay: f32,
): void {
  const stepV = f32x4.splat(stepSize);
  const c1 = f32x4.splat(oneMinusBeta1);
  const b2 = f32x4.splat(beta2);
  const c2 = f32x4.splat(oneMinusBeta2);
  const bc2 = f32x4.splat(bc2Sqrt);
  const epsV = f32x4.splat(eps);
  const wd = f32x4.splat(weightDecay);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    const p = v128.load(param + off);
    const g = f32x4.add(v128.load(grad + off), f32x4.mul(wd, p));
    const m0 = v128.load(m + off);
    const m1 = f32x4.add(m0, f32x4.mul(c1, f32x4.sub(g, m0)));
    const v1 = f32x4.add(f32x4.mul(b2, v128.load(v + off)), f32x4.mul(c2, f32x4.mul(g, g)));
    const denom = f32x4.add(f32x4.div(f32x4.sqrt(v1), bc2), epsV);
    v128.store(m + off, m1);
    v128.store(v + off, v1);
    v128.store(param + off, f32x4.sub(p, f32x4.mul(stepV, f32x4.div(m1, denom))));
  }
  for (; i < n; i++) {
    const off = <usize>i << 2;
    const p = load<f32>(param + off);
    const g = load<f32>(grad + off) + weightDecay * p;
    const m0 = load<f32>(m + off);
    const m1 = m0 + oneMinusBeta1 * (g - m0);
    const v1 = beta2 * load<f32>(v + off) + oneMinusBeta2 * (g * g);
    const denom = sqrt<f32>(v1) / bc2Sqrt + eps;
    store<f32>(m + off, m1);
    store<f32>(v + off, v1);
    store<f32>(param + off, p - stepSize * (m1 / denom));
  }
}

/**
 * torch.optim.Adam step over n values; `step` >= 1 counts this step:
 * g += wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps). `grad` is read only.
 */
export function adamStep(
  param: usize,
  grad: usize,
  m: usize,
  v: usize,
  n: i32,
  lr: f64,
  beta1: f64,
  beta2: f64,
  eps: f64,
  weightDecay: f64,
  step: i32,
): void {
  const stepSize = lr / (1 - powInt(beta1, step));
  const bc2Sqrt = Math.sqrt(1 - powInt(beta2, step));
  adamSpan(
    param, grad, m, v, n,
    <f32>stepSize, <f32>(1 - beta1), <f32>beta2, <f32>(1 - beta2), <f32>bc2Sqrt,
    <f32>eps, <f32>weightDecay,
  );
}

/** Adagrad on n values: g += wd p; G += g^2; p -= lr * (g / (sqrt(G) + eps)). */
function adagradSpan(
  param: usize,
  grad: usize,
  accum: usize,
  n: i32,
  lr: f32,
  eps: f32,
  weightDecay: f32,
): void {
  const lrV = f32x4.splat(lr);
  const epsV = f32x4.splat(eps);
  const wd = f32x4.splat(weightDecay);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    const p = v128.load(param + off);
    const g = f32x4.add(v128.load(grad + off), f32x4.mul(wd, p));
    const G = f32x4.add(v128.load(accum + off), f32x4.mul(g, g));
    const denom = f32x4.add(f32x4.sqrt(G), epsV);
    v128.store(accum + off, G);
    v128.store(param + off, f32x4.sub(p, f32x4.mul(lrV, f32x4.div(g, denom))));
  }
  for (; i < n; i++) {
    const off = <usize>i << 2;
    const p = load<f32>(param + off);
    const g = load<f32>(grad + off) + weightDecay * p;
    const G = load<f32>(accum + off) + g * g;
    store<f32>(accum + off, G);
    store<f32>(param + off, p - lr * (g / (sqrt<f32>(G) + eps)));
  }
}

/** torch.optim.Adagrad step (lr_decay 0): g += wd p; G += g^2; p -= lr g / (sqrt(G) + eps). */
export function adagradStep(
  param: usize,
  grad: usize,
  accum: usize,
  n: i32,
  lr: f64,
  eps: f64,
  weightDecay: f64,
): void {
  adagradSpan(param, grad, accum, n, <f32>lr, <f32>eps, <f32>weightDecay);
}

/** SGD on n values: p -= lr * (g + wd p). */
function sgdSpan(param: usize, grad: usize, n: i32, lr: f32, weightDecay: f32): void {
  const lrV = f32x4.splat(lr);
  const wd = f32x4.splat(weightDecay);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    const p = v128.load(param + off);
    const g = f32x4.add(v128.load(grad + off), f32x4.mul(wd, p));
    v128.store(param + off, f32x4.sub(p, f32x4.mul(lrV, g)));
  }
  for (; i < n; i++) {
    const off = <usize>i << 2;
    const p = load<f32>(param + off);
    store<f32>(param + off, p - lr * (load<f32>(grad + off) + weightDecay * p));
  }
}

/** torch.optim.SGD step without momentum: p -= lr * (g + wd p). */
export function sgdStep(param: usize, grad: usize, n: i32, lr: f64, weightDecay: f64): void {
  sgdSpan(param, grad, n, <f32>lr, <f32>weightDecay);
}

/**
 * torch.optim.SGD with momentum (tzrec's dense SGD defaults to momentum 0.9):
 * g += wd p; buf = g on the first step, else buf = momentum buf + (1 -
 * dampening) g; d = g + momentum buf when `nesterov`, else buf; p -= lr d.
 */
export function sgdMomentumStep(
  param: usize,
  grad: usize,
  buf: usize,
  n: i32,
  lr: f64,
  momentum: f64,
  dampening: f64,
  nesterov: bool,
  weightDecay: f64,
  first: bool,
): void {
  const lr32 = <f32>lr, mu = <f32>momentum, keep = <f32>(1 - dampening), wd32 = <f32>weightDecay;
  const lrV = f32x4.splat(lr32);
  const muV = f32x4.splat(mu);
  const keepV = f32x4.splat(keep);
  const wd = f32x4.splat(wd32);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const off = <usize>i << 2;
    const p = v128.load(param + off);
    const g = f32x4.add(v128.load(grad + off), f32x4.mul(wd, p));
    // On the first step buf may hold anything (even NaN): select g, do not scale.
    const b = first ? g : f32x4.add(f32x4.mul(muV, v128.load(buf + off)), f32x4.mul(keepV, g));
    const d = nesterov ? f32x4.add(g, f32x4.mul(muV, b)) : b;
    v128.store(buf + off, b);
    v128.store(param + off, f32x4.sub(p, f32x4.mul(lrV, d)));
  }
  for (; i < n; i++) {
    const off = <usize>i << 2;
    const p = load<f32>(param + off);
    const g = load<f32>(grad + off) + wd32 * p;
    const b = first ? g : mu * load<f32>(buf + off) + keep * g;
    const d = nesterov ? g + mu * b : b;
    store<f32>(buf + off, b);
    store<f32>(param + off, p - lr32 * d);
  }
}

/**
 * Exact sparse Adagrad (fbgemm EXACT_ADAGRAD, tzrec's sparse optimizer): for
 * each touched row r = unique[u], elementwise G[r] += g^2 and table[r] -= lr *
 * (g / (sqrt(G[r]) + eps)), g = gradRows[u] (dim floats; fbgemm rounds
 * lr * g first, a last-bit difference). `accum` has the table's shape and
 * starts at initial_accumulator_value; untouched rows do not change.
 */
export function adagradRows(
  table: usize,
  accum: usize,
  unique: usize,
  gradRows: usize,
  U: i32,
  dim: i32,
  lr: f64,
  eps: f64,
): void {
  const rowBytes = <usize>dim << 2;
  const lr32 = <f32>lr, eps32 = <f32>eps;
  for (let u = 0; u < U; u++) {
    const row = <usize>load<i32>(unique + (<usize>u << 2)) * rowBytes;
    adagradSpan(table + row, gradRows + <usize>u * rowBytes, accum + row, dim, lr32, eps32, 0);
  }
}

/**
 * Sparse Adam on touched rows only (fbgemm ADAM, tzrec's sparse
 * adam_optimizer): the Adam formulas of adamStep, bias-corrected with the
 * global `step`, weight decay in its L2 form (g += wd w on the touched rows).
 */
export function adamRows(
  table: usize,
  m: usize,
  v: usize,
  unique: usize,
  gradRows: usize,
  U: i32,
  dim: i32,
  lr: f64,
  beta1: f64,
  beta2: f64,
  eps: f64,
  weightDecay: f64,
  step: i32,
): void {
  const stepSize = <f32>(lr / (1 - powInt(beta1, step)));
  const bc2Sqrt = <f32>Math.sqrt(1 - powInt(beta2, step));
  const rowBytes = <usize>dim << 2;
  for (let u = 0; u < U; u++) {
    const row = <usize>load<i32>(unique + (<usize>u << 2)) * rowBytes;
    adamSpan(
      table + row, gradRows + <usize>u * rowBytes, m + row, v + row, dim,
      stepSize, <f32>(1 - beta1), <f32>beta2, <f32>(1 - beta2), bc2Sqrt, <f32>eps,
      <f32>weightDecay,
    );
  }
}

/** Sparse SGD on touched rows: table[unique[u]] -= lr * gradRows[u]. */
export function sgdRows(
  table: usize,
  unique: usize,
  gradRows: usize,
  U: i32,
  dim: i32,
  lr: f64,
): void {
  const rowBytes = <usize>dim << 2;
  for (let u = 0; u < U; u++) {
    const row = <usize>load<i32>(unique + (<usize>u << 2)) * rowBytes;
    sgdSpan(table + row, gradRows + <usize>u * rowBytes, dim, <f32>lr, 0);
  }
}

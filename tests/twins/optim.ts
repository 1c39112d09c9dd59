// Plain TypeScript twin of assembly/optim.ts: f64 state, torch.optim formulas.

/** Adam state for one block: parameters and both moments. */
export interface AdamState {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
}

/** Adam hyperparameters (torch names). */
export interface AdamOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One torch.optim.Adam step on element i; `step` >= 1 counts this step. */
function adamElement(s: AdamState, i: number, grad: number, o: AdamOptions, step: number): void {
  const g = grad + o.weightDecay * s.p[i];
  s.m[i] = o.beta1 * s.m[i] + (1 - o.beta1) * g;
  s.v[i] = o.beta2 * s.v[i] + (1 - o.beta2) * g * g;
  const mHat = s.m[i] / (1 - o.beta1 ** step);
  const vHat = s.v[i] / (1 - o.beta2 ** step);
  s.p[i] -= (o.lr * mHat) / (Math.sqrt(vHat) + o.eps);
}

/** Dense Adam: every element of `s` with gradient `grad`. */
export function adamStepTwin(
  s: AdamState,
  grad: ArrayLike<number>,
  o: AdamOptions,
  step: number,
): void {
  for (let i = 0; i < s.p.length; i++) adamElement(s, i, grad[i], o, step);
}

/** Dense Adagrad (lr_decay 0): G += g^2; p -= lr g / (sqrt(G) + eps), g = grad + wd p. */
export function adagradStepTwin(
  p: Float64Array,
  accum: Float64Array,
  grad: ArrayLike<number>,
  lr: number,
  eps: number,
  weightDecay: number,
): void {
  for (let i = 0; i < p.length; i++) {
    const g = grad[i] + weightDecay * p[i];
    accum[i] += g * g;
    p[i] -= (lr * g) / (Math.sqrt(accum[i]) + eps);
  }
}

/** Dense SGD without momentum: p -= lr (g + wd p). */
export function sgdStepTwin(
  p: Float64Array,
  grad: ArrayLike<number>,
  lr: number,
  weightDecay: number,
): void {
  for (let i = 0; i < p.length; i++) p[i] -= lr * (grad[i] + weightDecay * p[i]);
}

/**
 * torch.optim.SGD with momentum (torch/optim/sgd.py `_single_tensor_sgd`):
 * d_p = g + wd p; buf = clone(d_p) on the first step, else
 * buf = momentum buf + (1 - dampening) d_p; d_p = d_p + momentum buf when
 * nesterov, else buf; p -= lr d_p.
 */
export function sgdMomentumStepTwin(
  p: Float64Array,
  buf: Float64Array,
  grad: ArrayLike<number>,
  lr: number,
  momentum: number,
  dampening: number,
  nesterov: boolean,
  weightDecay: number,
  first: boolean,
): void {
  for (let i = 0; i < p.length; i++) {
    const g = grad[i] + weightDecay * p[i];
    buf[i] = first ? g : momentum * buf[i] + (1 - dampening) * g;
    p[i] -= lr * (nesterov ? g + momentum * buf[i] : buf[i]);
  }
}

/** Sparse exact Adagrad: rows unique[u] of the table (row-major, dim wide). */
export function adagradRowsTwin(
  table: Float64Array,
  accum: Float64Array,
  unique: ArrayLike<number>,
  gradRows: ArrayLike<number>,
  dim: number,
  lr: number,
  eps: number,
): void {
  for (let u = 0; u < unique.length; u++) {
    for (let d = 0; d < dim; d++) {
      const i = unique[u] * dim + d, g = gradRows[u * dim + d];
      accum[i] += g * g;
      table[i] -= (lr * g) / (Math.sqrt(accum[i]) + eps);
    }
  }
}

/** Sparse Adam on rows unique[u] with the global step; weight decay in the L2 form (g += wd w). */
export function adamRowsTwin(
  s: AdamState,
  unique: ArrayLike<number>,
  gradRows: ArrayLike<number>,
  dim: number,
  o: AdamOptions,
  step: number,
): void {
  for (let u = 0; u < unique.length; u++) {
    for (let d = 0; d < dim; d++) {
      adamElement(s, unique[u] * dim + d, gradRows[u * dim + d], o, step);
    }
  }
}

/** Sparse SGD: table[unique[u]] -= lr gradRows[u]. */
export function sgdRowsTwin(
  table: Float64Array,
  unique: ArrayLike<number>,
  gradRows: ArrayLike<number>,
  dim: number,
  lr: number,
): void {
  for (let u = 0; u < unique.length; u++) {
    for (let d = 0; d < dim; d++) table[unique[u] * dim + d] -= lr * gradRows[u * dim + d];
  }
}

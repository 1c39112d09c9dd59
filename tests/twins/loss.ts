// Plain TypeScript twin of assembly/loss.ts: f64, the formulas of SPEC.md "Loss".

/** Result of the BCE twin: the weighted loss sum and per-row outputs. */
export interface BceTwin {
  /** sum_i w_i l_i */
  loss: number;
  /** sigmoid(z_i) */
  probs: Float64Array;
  /** gradScale * w_i * (sigmoid(z_i) - y_i) */
  dLogits: Float64Array;
}

/** Smoothed label: y (1 - s) + s / 2. */
export function smoothLabel(label: number, smoothing: number): number {
  return label * (1 - smoothing) + 0.5 * smoothing;
}

/** Per-row BCE with logits, l = max(z,0) - z y + log(1 + exp(-|z|)). */
export function bceRowTwin(z: number, y: number): number {
  return Math.max(z, 0) - z * y + Math.log1p(Math.exp(-Math.abs(z)));
}

/** Sigmoid + BCE with logits over B rows, weights 1 when not given. */
export function sigmoidBinaryCrossEntropyTwin(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  weights: ArrayLike<number> | undefined,
  B: number,
  labelSmoothing: number,
  gradScale: number,
): BceTwin {
  const probs = new Float64Array(B), dLogits = new Float64Array(B);
  let loss = 0;
  for (let i = 0; i < B; i++) {
    const z = logits[i];
    const y = smoothLabel(labels[i], labelSmoothing);
    const w = weights ? weights[i] : 1;
    const p = 1 / (1 + Math.exp(-z));
    loss += w * bceRowTwin(z, y);
    probs[i] = p;
    dLogits[i] = gradScale * w * (p - y);
  }
  return { loss, probs, dLogits };
}

/** Result of the softmax cross-entropy twin: the weighted loss sum and per-logit outputs. */
export interface SoftmaxCrossEntropyTwin {
  /** sum_i w_i l_i */
  loss: number;
  /** softmax(z_i)_c, B x C */
  probs: Float64Array;
  /** gradScale * w_i * (softmax(z_i)_c - t_ic), B x C */
  dLogits: Float64Array;
}

/** Smoothed one-hot target of class c for a row labelled `label`: (1 - s) [c == label] + s / C. */
export function softmaxTarget(c: number, label: number, C: number, smoothing: number): number {
  return (c === label ? 1 - smoothing : 0) + smoothing / C;
}

/**
 * Softmax + cross-entropy over B rows of C logits, as torch
 * CrossEntropyLoss(label_smoothing=s) per row: l = -sum_c t_c log_softmax(z)_c
 * with log_softmax(z)_c = z_c - (max z + log sum_c' exp(z_c' - max z)).
 * Labels are class indices; weights 1 when not given.
 */
export function softmaxCrossEntropyTwin(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  weights: ArrayLike<number> | undefined,
  B: number,
  C: number,
  labelSmoothing: number,
  gradScale: number,
): SoftmaxCrossEntropyTwin {
  const probs = new Float64Array(B * C), dLogits = new Float64Array(B * C);
  let loss = 0;
  for (let i = 0; i < B; i++) {
    const w = weights ? weights[i] : 1;
    let max = -Infinity;
    for (let c = 0; c < C; c++) max = Math.max(max, logits[i * C + c]);
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(logits[i * C + c] - max);
    const logSumExp = max + Math.log(sum);
    let rowLoss = 0;
    for (let c = 0; c < C; c++) {
      const logProb = logits[i * C + c] - logSumExp;
      const target = softmaxTarget(c, labels[i], C, labelSmoothing);
      rowLoss -= target * logProb;
      probs[i * C + c] = Math.exp(logProb);
      dLogits[i * C + c] = gradScale * w * (probs[i * C + c] - target);
    }
    loss += w * rowLoss;
  }
  return { loss, probs, dLogits };
}

/** Result of the squared-error twin. */
export interface SquaredErrorTwin {
  /** sum_i w_i (y_i - label_i)^2 */
  loss: number;
  /** gradScale * w_i * 2 (y_i - label_i) */
  dY: Float64Array;
}

/** Squared error over B rows, weights 1 when not given. */
export function squaredErrorTwin(
  y: ArrayLike<number>,
  labels: ArrayLike<number>,
  weights: ArrayLike<number> | undefined,
  B: number,
  gradScale: number,
): SquaredErrorTwin {
  const dY = new Float64Array(B);
  let loss = 0;
  for (let i = 0; i < B; i++) {
    const w = weights ? weights[i] : 1;
    const d = y[i] - labels[i];
    loss += w * d * d;
    dY[i] = gradScale * w * 2 * d;
  }
  return { loss, dY };
}

/**
 * tzrec tower weights: sample weight (or 1) times in/out task-space weight
 * when an indicator is given, divided by the batch mean (non-finite -> 0),
 * times the tower weight.
 */
export function taskSpaceWeightsTwin(
  sampleWeights: ArrayLike<number> | undefined,
  indicator: ArrayLike<number> | undefined,
  B: number,
  inWeight: number,
  outWeight: number,
  towerWeight: number,
): Float64Array {
  const w = new Float64Array(B);
  for (let i = 0; i < B; i++) {
    w[i] = sampleWeights ? sampleWeights[i] : 1;
    if (indicator) w[i] *= indicator[i] > 0 ? inWeight : outWeight;
  }
  const mean = w.reduce((s, v) => s + v, 0) / B;
  for (let i = 0; i < B; i++) {
    const normalised = w[i] / mean;
    w[i] = (Number.isFinite(normalised) ? normalised : 0) * towerWeight;
  }
  return w;
}

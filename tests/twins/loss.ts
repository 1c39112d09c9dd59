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

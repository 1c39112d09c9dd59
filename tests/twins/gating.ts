// Plain TypeScript twin of assembly/gating.ts: f64, one obvious loop per formula.
// Experts are stacked like the kernel's: expert e, row b, column d at
// experts[e * expertStride + b * D + d].

/** gate[b,:] = softmax(logits[b,:]) (max-subtracted); out[b,:] = sum_e gate[b,e] expert_e[b,:]. */
export function gateMixtureForwardTwin(
  logits: ArrayLike<number>,
  experts: ArrayLike<number>,
  B: number,
  E: number,
  D: number,
  expertStride: number,
): { gate: Float64Array; out: Float64Array } {
  const gate = new Float64Array(B * E);
  const out = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    let zMax = -Infinity;
    for (let e = 0; e < E; e++) zMax = Math.max(zMax, logits[b * E + e]);
    let sum = 0;
    for (let e = 0; e < E; e++) sum += Math.exp(logits[b * E + e] - zMax);
    for (let e = 0; e < E; e++) gate[b * E + e] = Math.exp(logits[b * E + e] - zMax) / sum;
    for (let d = 0; d < D; d++) {
      let acc = 0;
      for (let e = 0; e < E; e++) acc += gate[b * E + e] * experts[e * expertStride + b * D + d];
      out[b * D + d] = acc;
    }
  }
  return { gate, out };
}

/**
 * Analytic backward: dExperts[e][b,d] = dExperts0 + gate[b,e] dOut[b,d];
 * dLogits[b,e] = gate[b,e] (dg[b,e] - sum_e' gate[b,e'] dg[b,e']) with
 * dg[b,e] = sum_d dOut[b,d] expert_e[b,d]. dExperts has the experts' stride.
 */
export function gateMixtureBackwardTwin(
  dOut: ArrayLike<number>,
  gate: ArrayLike<number>,
  experts: ArrayLike<number>,
  B: number,
  E: number,
  D: number,
  expertStride: number,
  dExperts0?: ArrayLike<number>,
): { dLogits: Float64Array; dExperts: Float64Array } {
  const dLogits = new Float64Array(B * E);
  const dExperts = dExperts0 ? Float64Array.from(dExperts0) : new Float64Array(E * expertStride);
  for (let b = 0; b < B; b++) {
    const dg = new Float64Array(E);
    for (let e = 0; e < E; e++) {
      for (let d = 0; d < D; d++) {
        const i = e * expertStride + b * D + d;
        dg[e] += dOut[b * D + d] * experts[i];
        dExperts[i] += gate[b * E + e] * dOut[b * D + d];
      }
    }
    let weighted = 0;
    for (let e = 0; e < E; e++) weighted += gate[b * E + e] * dg[e];
    for (let e = 0; e < E; e++) dLogits[b * E + e] = gate[b * E + e] * (dg[e] - weighted);
  }
  return { dLogits, dExperts };
}

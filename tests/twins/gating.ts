// Plain TypeScript twin of assembly/gating.ts: f64, one obvious loop per formula.
// Layouts as the kernel's: logits and gate [B, T, E], experts [B, E, D], out [B, T, D].

/** gate[b,t,:] = softmax(logits[b,t,:]) (max-subtracted); out[b,t,:] = sum_e gate[b,t,e] experts[b,e,:]. */
export function gateMixtureForwardTwin(
  logits: ArrayLike<number>,
  experts: ArrayLike<number>,
  B: number,
  T: number,
  E: number,
  D: number,
): { gate: Float64Array; out: Float64Array } {
  const gate = new Float64Array(B * T * E);
  const out = new Float64Array(B * T * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * E;
      let zMax = -Infinity;
      for (let e = 0; e < E; e++) zMax = Math.max(zMax, logits[row + e]);
      let sum = 0;
      for (let e = 0; e < E; e++) sum += Math.exp(logits[row + e] - zMax);
      for (let e = 0; e < E; e++) gate[row + e] = Math.exp(logits[row + e] - zMax) / sum;
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let e = 0; e < E; e++) acc += gate[row + e] * experts[(b * E + e) * D + d];
        out[(b * T + t) * D + d] = acc;
      }
    }
  }
  return { gate, out };
}

/**
 * Analytic backward: dExperts[b,e,d] = sum_t gate[b,t,e] dOut[b,t,d];
 * dLogits[b,t,e] = gate[b,t,e] (dg[b,t,e] - sum_e' gate[b,t,e'] dg[b,t,e'])
 * with dg[b,t,e] = sum_d dOut[b,t,d] experts[b,e,d].
 */
export function gateMixtureBackwardTwin(
  dOut: ArrayLike<number>,
  gate: ArrayLike<number>,
  experts: ArrayLike<number>,
  B: number,
  T: number,
  E: number,
  D: number,
): { dLogits: Float64Array; dExperts: Float64Array } {
  const dLogits = new Float64Array(B * T * E);
  const dExperts = new Float64Array(B * E * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * E, dy = (b * T + t) * D;
      const dg = new Float64Array(E);
      for (let e = 0; e < E; e++) {
        for (let d = 0; d < D; d++) {
          const i = (b * E + e) * D + d;
          dg[e] += dOut[dy + d] * experts[i];
          dExperts[i] += gate[row + e] * dOut[dy + d];
        }
      }
      let weighted = 0;
      for (let e = 0; e < E; e++) weighted += gate[row + e] * dg[e];
      for (let e = 0; e < E; e++) dLogits[row + e] = gate[row + e] * (dg[e] - weighted);
    }
  }
  return { dLogits, dExperts };
}

// Plain TypeScript twin of assembly/embedding.ts: f64, a JS Map for dedup.
// Outputs are dense B x dim (no concat stride); tests place them in the slice.

/**
 * out[b,:] = sum (or mean) over ids j of row b (offsets[b] .. offsets[b+1])
 * of weights[j] * table[ids[j],:] (weight 1 without `weights`); empty -> zeros.
 */
export function embeddingGatherTwin(
  table: ArrayLike<number>,
  ids: ArrayLike<number>,
  offsets: ArrayLike<number>,
  B: number,
  dim: number,
  mean: boolean,
  weights?: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(B * dim);
  for (let b = 0; b < B; b++) {
    const count = offsets[b + 1] - offsets[b];
    for (let j = offsets[b]; j < offsets[b + 1]; j++) {
      const w = weights ? weights[j] : 1;
      for (let d = 0; d < dim; d++) out[b * dim + d] += w * table[ids[j] * dim + d];
    }
    if (mean && count > 0) { for (let d = 0; d < dim; d++) out[b * dim + d] /= count; }
  }
  return out;
}

/**
 * embeddingGatherTwin over an int8 table: row r is `q[r*dim ..]` (u8) with
 * `scaleBias[2r]` (scale) and `scaleBias[2r+1]` (bias); its values are
 * scale * q + bias.
 */
export function embeddingGatherInt8Twin(
  q: ArrayLike<number>,
  scaleBias: ArrayLike<number>,
  ids: ArrayLike<number>,
  offsets: ArrayLike<number>,
  B: number,
  dim: number,
  mean: boolean,
  weights?: ArrayLike<number>,
): Float64Array {
  const rows = Math.max(0, ...Array.from(ids, (id) => id + 1));
  const table = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    for (let d = 0; d < dim; d++) {
      table[r * dim + d] = scaleBias[2 * r] * q[r * dim + d] + scaleBias[2 * r + 1];
    }
  }
  return embeddingGatherTwin(table, ids, offsets, B, dim, mean, weights);
}

/** unique ids in order of first appearance and inverse[j] = position of ids[j] in unique. */
export function embeddingUniqueTwin(ids: ArrayLike<number>): {
  unique: number[];
  inverse: number[];
} {
  const position = new Map<number, number>();
  const unique: number[] = [];
  const inverse: number[] = [];
  for (let j = 0; j < ids.length; j++) {
    let u = position.get(ids[j]);
    if (u === undefined) {
      u = unique.length;
      position.set(ids[j], u);
      unique.push(ids[j]);
    }
    inverse.push(u);
  }
  return { unique, inverse };
}

/**
 * gradRows[inverse[j],:] += weights[j] * dOut[b,:] (/ count when mean) for
 * every id j of row b (weight 1 without `weights`); gradRows is U x dim,
 * starting from `gradRows0` or zeros.
 */
export function embeddingBackwardTwin(
  dOut: ArrayLike<number>,
  inverse: ArrayLike<number>,
  offsets: ArrayLike<number>,
  B: number,
  dim: number,
  U: number,
  mean: boolean,
  gradRows0?: ArrayLike<number>,
  weights?: ArrayLike<number>,
): Float64Array {
  const gradRows = gradRows0 ? Float64Array.from(gradRows0) : new Float64Array(U * dim);
  for (let b = 0; b < B; b++) {
    const count = offsets[b + 1] - offsets[b];
    for (let j = offsets[b]; j < offsets[b + 1]; j++) {
      const w = weights ? weights[j] : 1;
      for (let d = 0; d < dim; d++) {
        const g = mean ? dOut[b * dim + d] / count : dOut[b * dim + d];
        gradRows[inverse[j] * dim + d] += w * g;
      }
    }
  }
  return gradRows;
}

// Plain TypeScript twin of assembly/gemm.ts: f64 accumulation, no blocking.

/** Options of one GEMM call, mirroring the kernel flags. */
export interface GemmTwinOptions {
  transA?: boolean;
  transB?: boolean;
  /** Initial C when accumulating. */
  c?: ArrayLike<number>;
  bias?: ArrayLike<number>;
  relu?: boolean;
}

/** C[M,N] = (C +) op(A) op(B) (+ bias) (ReLU), in f64. */
export function gemmTwin(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
  { transA = false, transB = false, c, bias, relu = false }: GemmTwinOptions = {},
): Float64Array {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let sum = c ? c[i * N + j] : 0;
      for (let k = 0; k < K; k++) {
        const av = transA ? a[k * M + i] : a[i * K + k];
        const bv = transB ? b[j * K + k] : b[k * N + j];
        sum += av * bv;
      }
      if (bias) sum += bias[j];
      out[i * N + j] = relu ? Math.max(sum, 0) : sum;
    }
  }
  return out;
}

/** Elementwise bound on f32 rounding error: sum_k |a_ik| |b_kj| per output. */
export function gemmErrorScale(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
  transA = false,
  transB = false,
): Float64Array {
  const abs = (x: ArrayLike<number>) => Float64Array.from(x as ArrayLike<number>, Math.abs);
  return gemmTwin(abs(a), abs(b), M, K, N, { transA, transB });
}

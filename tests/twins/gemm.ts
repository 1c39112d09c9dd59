// Plain TypeScript twins of assembly/gemm.ts: the f64 product (no blocking)
// and the kernels' exact f32 operation order (per output, a chain of
// multiply-adds over k, one k-block after another).

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

/** The k-block of assembly/gemm.ts (KC): each block's chain starts from 0. */
export const GEMM_KC = 64;

const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);

/** The f32 next to finite nonzero f32 `x`, one ulp away from zero (`up`) or toward it. */
function f32Step(x: number, up: boolean): number {
  f32Bits[0] = x;
  u32Bits[0] += up ? 1 : -1;
  return f32Bits[0];
}

/**
 * a * b + c rounded once to f32 (a fused multiply-add) for f32 inputs. The
 * product is exact in f64 (24 + 24 significant bits); the sum is rounded to
 * f64 then f32, which can differ from one rounding only when the f64 sum
 * lands exactly halfway between two f32: then its exact error (TwoSum)
 * breaks the tie.
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = Math.fround(s);
  if (r === s || !Number.isFinite(s) || s === 0) return r;
  const bp = s - p;
  const error = (p - (s - bp)) + (c - bp);
  if (error === 0) return r;
  // The f32 on the other side of s from r (both share s's sign).
  const other = f32Step(r, Math.abs(r) < Math.abs(s));
  if (Math.abs(s - r) !== Math.abs(other - s)) return r;
  return (error > 0) === (other > r) ? other : r;
}

/** Options of {@link gemmChainTwin}. */
export interface GemmChainTwinOptions extends GemmTwinOptions {
  /**
   * One rounding per multiply-add (`relaxed_madd` where the host has FMA),
   * else the product and the sum each rounded (the plain simd build).
   */
  fused: boolean;
}

/**
 * The kernels' arithmetic exactly, in f32: for each output, per k-block of
 * {@link GEMM_KC}, acc = 0 then acc = a_ik * b_kj + acc for k ascending; C =
 * acc for the first block (C + acc when accumulating, and for later blocks);
 * then C + bias; then max(C, 0) for ReLU. Except N = 1 with A not
 * transposed (a dot product per row): four lane chains, lane l over k = l
 * mod 4 (zero past K), then ((l0 + l1) + l2) + l3 as the whole product.
 * Inputs must be f32 values.
 */
export function gemmChainTwin(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
  { transA = false, transB = false, c, bias, relu = false, fused }: GemmChainTwinOptions,
): Float32Array {
  const madd = fused
    ? fmaF32
    : (x: number, y: number, z: number) => Math.fround(Math.fround(x * y) + z);
  const out = new Float32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let value = c ? c[i * N + j] : undefined;
      if (N === 1 && !transA) {
        const lanes = [0, 0, 0, 0];
        for (let k = 0; k < Math.ceil(K / 4) * 4; k++) {
          lanes[k % 4] = madd(k < K ? a[i * K + k] : 0, k < K ? b[k] : 0, lanes[k % 4]);
        }
        const dot = Math.fround(
          Math.fround(Math.fround(lanes[0] + lanes[1]) + lanes[2]) + lanes[3],
        );
        value = value === undefined ? dot : Math.fround(dot + value);
      }
      for (let k0 = 0; k0 < K && !(N === 1 && !transA); k0 += GEMM_KC) {
        let acc = 0;
        for (let k = k0; k < Math.min(K, k0 + GEMM_KC); k++) {
          acc = madd(
            transA ? a[k * M + i] : a[i * K + k],
            transB ? b[j * K + k] : b[k * N + j],
            acc,
          );
        }
        value = value === undefined ? acc : Math.fround(acc + value);
      }
      value ??= 0;
      if (bias) value = Math.fround(value + bias[j]);
      out[i * N + j] = relu ? Math.max(value, 0) : value;
    }
  }
  return out;
}

// GEMM: C[M,N] (+)= op(A)[M,K] * op(B)[K,N] (+ bias[N]) (then ReLU).
//
// Row-major f32. op(A) = A (M x K) or A^T (A stored K x M); op(B) = B
// (K x N) or B^T (B stored N x K). The three cases training needs:
//   NN  Y  = X W        forward (W stored [in, out])
//   NT  dX = dY W^T     input gradient
//   TN  dW = X^T dY     weight gradient (K = batch rows)
// `lda`, `ldb`, `ldc` are the row strides of A, B and C as stored (A: K, or
// the full M of A^T; B: N, or K for B^T; C: N), so a call can address a row
// range of op(A) and C, or a column block of wider matrices (one expert's
// columns of a [B, E*H] stack): every output element is computed by the same
// instructions in the same k order whichever rows share the call, so
// splitting rows across threads is bit-identical to one call.
//
// Blocking follows the Goto/BLIS scheme: per k-block of KC, op(B) is packed
// into 8-wide column panels [panel][k][8] and, per row block of MC, op(A) into
// MR-high row panels [panel][k][MR] (both zero padded), so the micro-kernel
// reads both operands sequentially with constant offsets whatever the
// transposes (unpacked A^T walks one page per k step and thrashes the TLB).
// The register tile is 6x8 (12 f32x4 accumulators + 2 B vectors + 1 A splat =
// 15 of the 16 XMM registers) in the relaxed-simd build, where `relaxed_madd`
// needs no temporary; the plain simd build uses 4x8 because mul+add on 6x8
// spills (TOOLCHAIN.md).

import { fma, loadPartial, storePartial } from "./simd";

/** Width of a packed B panel: two f32x4. */
const NR: i32 = 8;
/** k-block: a 256 x 8 panel (8 KiB) stays in L1 while row tiles sweep it. */
const KC: i32 = 256;
/** Row block: MC x KC of A (96 KiB) stays in L2 across all panels. */
const MC: i32 = 96;
/** Main tile height. */
const MR: i32 = ASC_FEATURE_RELAXED_SIMD ? 6 : 4;

/** Bytes of `work` that `gemm` needs for inner size K and output width N. */
export function gemmWorkspaceBytes(K: i32, N: i32): i32 {
  const kc = min(K, KC);
  const packedB = kc * (((N + NR - 1) / NR) * NR);
  const packedA = kc * MC;
  return (packedB + packedA) << 2;
}

/**
 * C[M,N] = op(A) op(B), or C += op(A) op(B) when `accumulate`; then
 * C += bias[N] when `bias` is not 0, then ReLU when `relu`. `lda` is the
 * row stride of A as stored: K (A is M x K) or, when `transA`, the row count
 * of the whole A^T (A is K x lda, this call covers its first M columns);
 * `ldb` that of B (N, or K when `transB`) and `ldc` that of C (N), each at
 * least the width the call reads or writes.
 * `work` must hold `gemmWorkspaceBytes(K, N)` bytes. K = 0 writes the
 * epilogue applied to zero (or to C when accumulating).
 */
export function gemm(
  c: usize,
  a: usize,
  b: usize,
  bias: usize,
  work: usize,
  M: i32,
  K: i32,
  N: i32,
  lda: i32,
  ldb: i32,
  ldc: i32,
  transA: bool,
  transB: bool,
  accumulate: bool,
  relu: bool,
): void {
  if (K == 0) {
    epilogueOnly(c, bias, M, N, ldc, accumulate, relu);
    return;
  }
  const ldcBytes = <usize> ldc << 2;
  const panels = (N + NR - 1) / NR;
  const packedA = work + ((<usize> min(K, KC) * <usize> (panels * NR)) << 2);
  for (let k0 = 0; k0 < K; k0 += KC) {
    const kc = min(KC, K - k0);
    packB(work, b, k0, kc, N, ldb, transB);
    const loadC = accumulate || k0 > 0;
    const last = k0 + kc == K;
    const doRelu = last && relu;
    for (let i0 = 0; i0 < M; i0 += MC) {
      const mc = min(MC, M - i0);
      packA(packedA, a, i0, mc, k0, kc, lda, transA);
      for (let p = 0; p < panels; p++) {
        const j = p * NR;
        const cols = min(NR, N - j);
        const panel = work + ((<usize> p * <usize> kc * NR) << 2);
        const biasJ: usize = last && bias != 0 ? bias + (<usize> j << 2) : 0;
        for (let i = 0; i < mc; i += MR) {
          const rows = min(MR, mc - i);
          const cp = c + <usize> (i0 + i) * ldcBytes + (<usize> j << 2);
          const ap = packedA + ((<usize> i * <usize> kc) << 2);
          if (MR == 6) {
            micro6x8(cp, ldcBytes, ap, panel, kc, rows, cols, biasJ, loadC, doRelu);
          } else {
            micro4x8(cp, ldcBytes, ap, panel, kc, rows, cols, biasJ, loadC, doRelu);
          }
        }
      }
    }
  }
}

/** Packs op(B)[k0 : k0+kc, :] (row stride ldb) into 8-wide panels [panel][k][8], zero padded. */
function packB(work: usize, b: usize, k0: i32, kc: i32, N: i32, ldb: i32, transB: bool): void {
  const panels = (N + NR - 1) / NR;
  for (let p = 0; p < panels; p++) {
    const j = p * NR;
    const cols = min(NR, N - j);
    let dst = work + ((<usize> p * <usize> kc * NR) << 2);
    if (!transB) {
      // B is K x N: row k of the panel is 8 contiguous floats.
      const ldbBytes = <usize> ldb << 2;
      let src = b + ((<usize> k0 * <usize> ldb + <usize> j) << 2);
      if (cols == NR) {
        for (let k = 0; k < kc; k++) {
          v128.store(dst, v128.load(src));
          v128.store(dst, v128.load(src, 16), 16);
          src += ldbBytes;
          dst += NR << 2;
        }
      } else {
        for (let k = 0; k < kc; k++) {
          for (let jj = 0; jj < NR; jj++) {
            store<f32>(dst + (<usize> jj << 2), jj < cols ? load<f32>(src + (<usize> jj << 2)) : 0);
          }
          src += ldbBytes;
          dst += NR << 2;
        }
      }
    } else {
      // B is N x K: column jj of the panel is row j+jj of B, contiguous in k.
      for (let jj = 0; jj < NR; jj++) {
        const col = dst + (<usize> jj << 2);
        if (jj < cols) {
          const src = b + ((<usize> (j + jj) * <usize> ldb + <usize> k0) << 2);
          for (let k = 0; k < kc; k++) {
            store<f32>(col + ((<usize> k * NR) << 2), load<f32>(src + (<usize> k << 2)));
          }
        } else {
          for (let k = 0; k < kc; k++) store<f32>(col + ((<usize> k * NR) << 2), 0);
        }
      }
    }
  }
}

/**
 * Packs op(A)[i0 : i0+mc, k0 : k0+kc] into MR-high row panels,
 * [panel][k][MR], rows past mc zero.
 */
function packA(
  dst: usize,
  a: usize,
  i0: i32,
  mc: i32,
  k0: i32,
  kc: i32,
  lda: i32,
  transA: bool,
): void {
  const panelBytes = (<usize> kc * MR) << 2;
  const tail = mc % MR;
  if (tail != 0) {
    // Zero the padding rows of the last panel once.
    const last = dst + <usize> (mc / MR) * panelBytes;
    for (let k = 0; k < kc; k++) {
      for (let r = tail; r < MR; r++) store<f32>(last + ((<usize> (k * MR + r)) << 2), 0);
    }
  }
  if (!transA) {
    // A is M x K (row stride lda): row i0+i is contiguous in k.
    for (let i = 0; i < mc; i++) {
      const col = dst + <usize> (i / MR) * panelBytes + (<usize> (i % MR) << 2);
      const src = a + ((<usize> (i0 + i) * <usize> lda + <usize> k0) << 2);
      for (let k = 0; k < kc; k++) {
        store<f32>(col + ((<usize> k * MR) << 2), load<f32>(src + (<usize> k << 2)));
      }
    }
  } else {
    // A is K x lda: op(A) row block [i0, i0+mc) at step k is contiguous, so
    // walk k outer (one page per k, not one per element).
    for (let k = 0; k < kc; k++) {
      const src = a + ((<usize> (k0 + k) * <usize> lda + <usize> i0) << 2);
      const row = dst + ((<usize> k * MR) << 2);
      let i = 0;
      for (let panel: usize = 0; i + MR <= mc; panel += panelBytes) {
        for (let r = 0; r < MR; r++) {
          store<f32>(row + panel + (<usize> r << 2), load<f32>(src + (<usize> (i + r) << 2)));
        }
        i += MR;
      }
      for (let r = 0; i < mc; r++, i++) {
        store<f32>(
          row + <usize> (i / MR) * panelBytes + (<usize> r << 2),
          load<f32>(src + (<usize> i << 2)),
        );
      }
    }
  }
}

/** Writes one tile row: acc (+ C) (+ bias) (ReLU), `cols` of 8 valid. */
// @ts-ignore: decorator
@inline
function finishRow(
  cp: usize,
  lo: v128,
  hi: v128,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  if (cols == NR) {
    if (loadC) {
      lo = f32x4.add(lo, v128.load(cp));
      hi = f32x4.add(hi, v128.load(cp, 16));
    }
    if (bias != 0) {
      lo = f32x4.add(lo, v128.load(bias));
      hi = f32x4.add(hi, v128.load(bias, 16));
    }
    if (relu) {
      lo = f32x4.max(lo, f32x4.splat(0));
      hi = f32x4.max(hi, f32x4.splat(0));
    }
    v128.store(cp, lo);
    v128.store(cp, hi, 16);
  } else {
    const loCount = min(cols, 4);
    const hiCount = cols - loCount;
    if (loadC) {
      lo = f32x4.add(lo, loCount == 4 ? v128.load(cp) : loadPartial(cp, loCount));
      hi = f32x4.add(hi, loadPartial(cp + 16, hiCount));
    }
    if (bias != 0) {
      lo = f32x4.add(lo, loCount == 4 ? v128.load(bias) : loadPartial(bias, loCount));
      hi = f32x4.add(hi, loadPartial(bias + 16, hiCount));
    }
    if (relu) {
      lo = f32x4.max(lo, f32x4.splat(0));
      hi = f32x4.max(hi, f32x4.splat(0));
    }
    if (loCount == 4) {
      v128.store(cp, lo);
      storePartial(cp + 16, hi, hiCount);
    } else {
      storePartial(cp, lo, loCount);
    }
  }
}

/** 6x8 tile over a packed A panel [k][6] and B panel [k][8]; `rows` of 6 stored. */
function micro6x8(
  c: usize,
  ldc: usize,
  pa: usize,
  pb: usize,
  kc: i32,
  rows: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  let c40 = f32x4.splat(0), c41 = f32x4.splat(0);
  let c50 = f32x4.splat(0), c51 = f32x4.splat(0);
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    let av = v128.load32_splat(pa);
    c00 = fma(av, b0, c00);
    c01 = fma(av, b1, c01);
    av = v128.load32_splat(pa, 4);
    c10 = fma(av, b0, c10);
    c11 = fma(av, b1, c11);
    av = v128.load32_splat(pa, 8);
    c20 = fma(av, b0, c20);
    c21 = fma(av, b1, c21);
    av = v128.load32_splat(pa, 12);
    c30 = fma(av, b0, c30);
    c31 = fma(av, b1, c31);
    av = v128.load32_splat(pa, 16);
    c40 = fma(av, b0, c40);
    c41 = fma(av, b1, c41);
    av = v128.load32_splat(pa, 20);
    c50 = fma(av, b0, c50);
    c51 = fma(av, b1, c51);
    pa += 24;
    pb += NR << 2;
  }
  finishRow(c, c00, c01, cols, bias, loadC, relu);
  if (rows > 1) finishRow(c + ldc, c10, c11, cols, bias, loadC, relu);
  if (rows > 2) finishRow(c + ldc * 2, c20, c21, cols, bias, loadC, relu);
  if (rows > 3) finishRow(c + ldc * 3, c30, c31, cols, bias, loadC, relu);
  if (rows > 4) finishRow(c + ldc * 4, c40, c41, cols, bias, loadC, relu);
  if (rows > 5) finishRow(c + ldc * 5, c50, c51, cols, bias, loadC, relu);
}

/** 4x8 tile over a packed A panel [k][4] and B panel [k][8]; `rows` of 4 stored. */
function micro4x8(
  c: usize,
  ldc: usize,
  pa: usize,
  pb: usize,
  kc: i32,
  rows: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    let av = v128.load32_splat(pa);
    c00 = fma(av, b0, c00);
    c01 = fma(av, b1, c01);
    av = v128.load32_splat(pa, 4);
    c10 = fma(av, b0, c10);
    c11 = fma(av, b1, c11);
    av = v128.load32_splat(pa, 8);
    c20 = fma(av, b0, c20);
    c21 = fma(av, b1, c21);
    av = v128.load32_splat(pa, 12);
    c30 = fma(av, b0, c30);
    c31 = fma(av, b1, c31);
    pa += 16;
    pb += NR << 2;
  }
  finishRow(c, c00, c01, cols, bias, loadC, relu);
  if (rows > 1) finishRow(c + ldc, c10, c11, cols, bias, loadC, relu);
  if (rows > 2) finishRow(c + ldc * 2, c20, c21, cols, bias, loadC, relu);
  if (rows > 3) finishRow(c + ldc * 3, c30, c31, cols, bias, loadC, relu);
}

/** K = 0: C = epilogue(0) or epilogue(C). */
function epilogueOnly(
  c: usize,
  bias: usize,
  M: i32,
  N: i32,
  ldc: i32,
  accumulate: bool,
  relu: bool,
): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      const p = c + ((<usize> i * <usize> ldc + <usize> j) << 2);
      let v: f32 = accumulate ? load<f32>(p) : 0;
      if (bias != 0) v += load<f32>(bias + (<usize> j << 2));
      if (relu) v = max(v, 0);
      store<f32>(p, v);
    }
  }
}

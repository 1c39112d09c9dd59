// GEMM: C[M,N] (+)= op(A)[M,K] * op(B)[K,N] (+ bias[N]) (then ReLU).
//
// Row-major f32. op(A) = A (M x K) or A^T (A stored K x M); op(B) = B
// (K x N) or B^T (B stored N x K). The three cases training needs, with a
// Linear weight W stored [out, in] as in PyTorch:
//   NT  Y  = X W^T      forward
//   NN  dX = dY W       input gradient
//   TN  dW = dY^T X     weight gradient (K = batch rows)
// `lda`, `ldb`, `ldc` are the row strides of A, B and C as stored (A: K, or
// the full M of A^T; B: N, or K for B^T; C: N), so a call can address a row
// range of op(A) and C, or a column block of wider matrices (one expert's
// columns of a [B, E*H] stack).
//
// Blocking follows Goto/BLIS. Per k-block of KC, op(B) is packed into 8-wide
// column panels [panel][k][8] (zero padded); `gemmPackB` packs a whole op(B)
// once into the same panels, k-block after k-block, for `gemmPacked`, so
// the model packs its weights once per optimizer step (training) or at load
// (inference) instead of on every call. Per MC-row block, op(A) is packed
// into MR-high panels [panel][k][MR], whatever its transpose. The A block
// stays in L2 while the B panels stream through L1 (from L3 when the k-block
// of B outgrows L2: column chunks that kept B in L2 cost more in repacking A
// than they saved, 0-10% slower on the MMoE shapes, measured).
//
// The register tile is 5x8: per k, one v128 load gives rows 0-3 of the A
// panel (then splat lane by lane with shuffles), one load32_splat row 4, two
// loads the B panel row; 10 f32x4 accumulators. Why not the classic 6x8 with
// six load32_splat: Deno's V8 runs Wasm without a trap handler, so every
// load carries an explicit bounds check (lea, cmp, jae) and the 6x8 loop
// (8 loads for 12 FMAs) is bound by instruction dispatch at ~0.73 of the FMA
// peak on Zen 3; the 5x8 loop (4 loads for 10 FMAs) is small enough that V8
// also unrolls it and hoists the check limits: ~0.91 of peak out of L1
// (6x8 with shuffles needs 16 XMM registers of V8's 15 and spills). The
// plain simd build (mul + add) runs the same tile: 5x8 and 4x8 tie there.
// The shared-memory builds (worker pool) run 4x8 (see MR). Rows left over
// (M below the tile height, or the M-remainder of a larger call) run a 4x8
// tile (4 rows, or 3 and a zero row), 2x16 or 1x32 tiles, each keeping at
// least 8 accumulator chains, instead of a padded 5-row tile.
//
// N = 1 (a Linear to one output: the towers' last layer) skips the panels:
// op(B) is then one contiguous vector of K floats however B is stored
// (`gemmPackB` just copies it), and C is a matrix-vector product. With A
// row-major (NN, NT) each output is a dot product along k: four lane chains
// over k = l mod 4 (A and b zero padded past K), then summed ((l0 + l1) +
// l2) + l3; with A^T (TN) four rows run as lanes and keep the chain below.
//
// Bit-identical results whatever the row split: every output element is one
// chain acc = fma(a[i,k], b[k,j], acc) over k ascending from 0 within a
// k-block, then + C (for later k-blocks or `accumulate`), + bias, ReLU --
// the same operations in the same order in every tile. Tile choice, M, the
// rows sharing a call, the thread computing them, and packing B once or per
// call change which registers hold a chain, never its arithmetic, so a row
// range (the `lda` argument) or any thread split equals the full call bit
// for bit. (N = 1 with row-major A: the dot product above, the same in
// every row.)

import { fma, hsum, loadPartial, storePartial } from "./simd";

/** Width of a packed B panel: two f32x4. */
const NR: i32 = 8;
/**
 * Main tile height (packed A panel height): 5 (the 5x8 tile), 4 (4x8) in
 * the shared-memory builds of the worker pool, where V8 reloads the memory
 * size for every bounds check and the 5x8 loop grows past its unrolling
 * limit (4x8 unrolled: ~0.84 of peak, 5x8 not: ~0.80).
 */
const MR: i32 = ASC_FEATURE_THREADS ? 4 : 5;
/** k-block: a 256 x 8 B panel (8 KiB) stays in L1 while row tiles sweep it. */
const KC: i32 = 256;
/**
 * Rows of packed A a block may take (96 x KC floats, 96 KiB: stays in L2
 * across all panels), and the row block MC: whole tiles (95 = 19 x 5, 96 =
 * 24 x 4), with room for a leftover panel padded to 4 rows.
 */
const A_BLOCK_ROWS: i32 = 96;
const MC: i32 = MR == 5 ? 95 : 96;

// @ts-ignore: decorator
@inline
function roundUp(n: i32, to: i32): i32 {
  return ((n + to - 1) / to) * to;
}

/** Bytes of `work` that `gemm` and `gemmPacked` need for inner size K and output width N. */
export function gemmWorkspaceBytes(K: i32, N: i32): i32 {
  const kc = min(K, KC);
  return (kc * roundUp(N, NR) + kc * A_BLOCK_ROWS) << 2;
}

/** Bytes of the packed op(B) that `gemmPackB` writes for inner size K and width N. */
export function gemmPackedBBytes(K: i32, N: i32): i32 {
  return (K * (N == 1 ? 1 : roundUp(N, NR))) << 2;
}

/**
 * Packs op(B) (K x N: B, or B^T when `transB`, B stored N x K) into
 * `packed` (`gemmPackedBBytes(K, N)` bytes) for `gemmPacked`: k-block
 * after k-block, each as 8-wide panels [panel][k][8], zero padded (N = 1:
 * the K floats of op(B) as they are).
 */
export function gemmPackB(packed: usize, b: usize, K: i32, N: i32, transB: bool): void {
  if (N == 1) {
    memory.copy(packed, b, <usize> K << 2);
    return;
  }
  const width = <usize> roundUp(N, NR);
  for (let k0 = 0; k0 < K; k0 += KC) {
    packB(packed + ((<usize> k0 * width) << 2), b, k0, min(KC, K - k0), N, transB ? K : N, transB);
  }
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
  if (N == 1 && (transB || ldb == 1)) {
    // op(B) is one contiguous column of K floats.
    gemv(c, a, b, bias, M, K, lda, ldc, transA, accumulate, relu);
    return;
  }
  const packedA = work + ((<usize> min(K, KC) * <usize> roundUp(N, NR)) << 2);
  for (let k0 = 0; k0 < K; k0 += KC) {
    const kc = min(KC, K - k0);
    packB(work, b, k0, kc, N, ldb, transB);
    gemmBlock(c, a, work, bias, packedA, M, N, k0, kc, lda, ldc, transA, accumulate || k0 > 0, k0 + kc == K, relu);
  }
}

/**
 * `gemm` with op(B) already packed by `gemmPackB(packedB, b, K, N, transB)`:
 * the same results bit for bit, without packing B on every call. `work`
 * holds `gemmWorkspaceBytes(K, N)` bytes, as for `gemm`; `lda` and `ldc`
 * as for `gemm`.
 */
export function gemmPacked(
  c: usize,
  a: usize,
  packedB: usize,
  bias: usize,
  work: usize,
  M: i32,
  K: i32,
  N: i32,
  lda: i32,
  ldc: i32,
  transA: bool,
  accumulate: bool,
  relu: bool,
): void {
  if (K == 0) {
    epilogueOnly(c, bias, M, N, ldc, accumulate, relu);
    return;
  }
  if (N == 1) {
    gemv(c, a, packedB, bias, M, K, lda, ldc, transA, accumulate, relu);
    return;
  }
  const width = <usize> roundUp(N, NR);
  for (let k0 = 0; k0 < K; k0 += KC) {
    const kc = min(KC, K - k0);
    const panels = packedB + ((<usize> k0 * width) << 2);
    gemmBlock(c, a, panels, bias, work, M, N, k0, kc, lda, ldc, transA, accumulate || k0 > 0, k0 + kc == K, relu);
  }
}

/**
 * One k-block: C (+)= op(A)[:, k0 : k0+kc] times the packed panels of
 * op(B)[k0 : k0+kc, :]; the epilogue (bias, ReLU) when `last`.
 */
function gemmBlock(
  c: usize,
  a: usize,
  panels: usize,
  bias: usize,
  packedA: usize,
  M: i32,
  N: i32,
  k0: i32,
  kc: i32,
  lda: i32,
  ldcFloats: i32,
  transA: bool,
  loadC: bool,
  last: bool,
  relu: bool,
): void {
  const ldc = <usize> ldcFloats << 2;
  const panelCount = (N + NR - 1) / NR;
  const panelBytes = (<usize> kc * NR) << 2;
  const tileStride = (<usize> kc * MR) << 2;
  const biasOn: usize = last ? bias : 0;
  const reluOn = last && relu;
  for (let i0 = 0; i0 < M; i0 += MC) {
    const mc = min(MC, M - i0);
    const tiles = mc / MR;
    const rest = mc - tiles * MR;
    packA(packedA, a, i0, mc, k0, kc, lda, transA);
    const cBlock = c + <usize> i0 * ldc;
    for (let p = 0; tiles > 0 && p < panelCount; p++) {
      const cp = cBlock + (<usize> p << 5);
      const pb = panels + <usize> p * panelBytes;
      const bp: usize = biasOn != 0 ? biasOn + (<usize> p << 5) : 0;
      const cols = min(NR, N - p * NR);
      if (MR == 5) {
        tiles5x8(cp, ldc, packedA, tileStride, tiles, pb, kc, cols, bp, loadC, reluOn);
      } else {
        tiles4x8(cp, ldc, packedA, tileStride, tiles, 4, pb, kc, cols, bp, loadC, reluOn);
      }
    }
    if (rest > 0) {
      const cRest = cBlock + <usize> (tiles * MR) * ldc;
      const aRest = packedA + <usize> tiles * tileStride;
      restRows(cRest, ldc, aRest, rest, panels, panelBytes, panelCount, N, kc, biasOn, loadC, reluOn);
    }
  }
}

/**
 * The 1 to MR-1 rows left below the main tiles, over every panel, from a packed
 * [k][width] panel (`restWidth(rows)`): 4 rows (or 3 and a zero row) as 4x8
 * tiles, 2 rows as 2x16 (two panels a step), 1 row as 1x32 (four panels).
 */
function restRows(
  c: usize,
  ldc: usize,
  a: usize,
  rows: i32,
  panels: usize,
  panelBytes: usize,
  panelCount: i32,
  N: i32,
  kc: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  if (rows >= 3) {
    for (let p = 0; p < panelCount; p++) {
      const bp: usize = bias != 0 ? bias + (<usize> p << 5) : 0;
      const cols = min(NR, N - p * NR);
      tiles4x8(c + (<usize> p << 5), ldc, a, 0, 1, rows, panels + <usize> p * panelBytes, kc, cols, bp, loadC, relu);
    }
  } else if (rows == 2) {
    let p = 0;
    for (; p + 2 <= panelCount; p += 2) {
      const bp: usize = bias != 0 ? bias + (<usize> p << 5) : 0;
      const cols = min(2 * NR, N - p * NR);
      tile2x16(c + (<usize> p << 5), ldc, a, panels + <usize> p * panelBytes, panelBytes, kc, cols, bp, loadC, relu);
    }
    if (p < panelCount) {
      const bp: usize = bias != 0 ? bias + (<usize> p << 5) : 0;
      tile2x8(c + (<usize> p << 5), ldc, a, panels + <usize> p * panelBytes, kc, N - p * NR, bp, loadC, relu);
    }
  } else {
    let p = 0;
    for (; p + 4 <= panelCount; p += 4) {
      const bp: usize = bias != 0 ? bias + (<usize> p << 5) : 0;
      const cols = min(4 * NR, N - p * NR);
      tile1x32(c + (<usize> p << 5), a, panels + <usize> p * panelBytes, panelBytes, kc, cols, bp, loadC, relu);
    }
    for (; p < panelCount; p++) {
      const bp: usize = bias != 0 ? bias + (<usize> p << 5) : 0;
      tile1x8(c + (<usize> p << 5), a, panels + <usize> p * panelBytes, kc, min(NR, N - p * NR), bp, loadC, relu);
    }
  }
}

/** Row count of the packed panel holding `rows` (1-4) leftover rows: 3 pad to 4. */
// @ts-ignore: decorator
@inline
function restWidth(rows: i32): i32 {
  return rows == 3 ? 4 : rows;
}

// -------------------------------------------------------------------- packing

/**
 * Packs op(B)[k0 : k0+kc, :] into 8-wide panels, [panel][k][8], zero padded;
 * B's rows are `ldb` floats apart (B is K x ldb, or N x ldb when `transB`).
 */
function packB(dst: usize, b: usize, k0: i32, kc: i32, N: i32, ldbFloats: i32, transB: bool): void {
  const panels = (N + NR - 1) / NR;
  for (let p = 0; p < panels; p++) {
    const j = p * NR;
    const cols = min(NR, N - j);
    const panel = dst + ((<usize> p * <usize> kc * NR) << 2);
    if (cols < NR) {
      // Partial last panel: element by element, zero padded.
      for (let k = 0; k < kc; k++) {
        const row = panel + ((<usize> k * NR) << 2);
        for (let jj = 0; jj < NR; jj++) {
          let v: f32 = 0;
          if (jj < cols) {
            v = transB
              ? load<f32>(b + ((<usize> (j + jj) * <usize> ldbFloats + <usize> (k0 + k)) << 2))
              : load<f32>(b + ((<usize> (k0 + k) * <usize> ldbFloats + <usize> (j + jj)) << 2));
          }
          store<f32>(row + (<usize> jj << 2), v);
        }
      }
    } else if (!transB) {
      // B is K x N: row k of the panel is 8 contiguous floats.
      const ldb = <usize> ldbFloats << 2;
      let src = b + ((<usize> k0 * <usize> ldbFloats + <usize> j) << 2);
      let out = panel;
      for (let k = 0; k < kc; k++) {
        v128.store(out, v128.load(src));
        v128.store(out, v128.load(src, 16), 16);
        src += ldb;
        out += NR << 2;
      }
    } else {
      // B is N x K: rows j..j+7 of B, 4 k at a time, transposed in registers.
      const ldb = <usize> ldbFloats << 2;
      const src = b + ((<usize> j * <usize> ldbFloats + <usize> k0) << 2);
      let k = 0;
      for (; k + 4 <= kc; k += 4) {
        const s = src + (<usize> k << 2);
        const out = panel + ((<usize> k * NR) << 2);
        transpose4x4(out, NR << 2, s, ldb);
        transpose4x4(out + 16, NR << 2, s + ldb * 4, ldb);
      }
      for (; k < kc; k++) {
        const out = panel + ((<usize> k * NR) << 2);
        for (let jj = 0; jj < NR; jj++) {
          store<f32>(out + (<usize> jj << 2), load<f32>(src + <usize> jj * ldb + (<usize> k << 2)));
        }
      }
    }
  }
}

/**
 * dst[r * dstStride + 4c] = src[c * srcStride + 4r] for a 4x4 f32 block:
 * four rows of src (4 contiguous floats each) become four columns of dst.
 */
// @ts-ignore: decorator
@inline
function transpose4x4(dst: usize, dstStride: usize, src: usize, srcStride: usize): void {
  const r0 = v128.load(src);
  const r1 = v128.load(src + srcStride);
  const r2 = v128.load(src + srcStride * 2);
  const r3 = v128.load(src + srcStride * 3);
  const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5);
  const t1 = i32x4.shuffle(r0, r1, 2, 6, 3, 7);
  const t2 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
  const t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
  v128.store(dst, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
  v128.store(dst + dstStride, i32x4.shuffle(t0, t2, 2, 3, 6, 7));
  v128.store(dst + dstStride * 2, i32x4.shuffle(t1, t3, 0, 1, 4, 5));
  v128.store(dst + dstStride * 3, i32x4.shuffle(t1, t3, 2, 3, 6, 7));
}

/**
 * Packs op(A)[i0 : i0+mc, k0 : k0+kc] into MR-high panels [tile][k][MR] for
 * the full tiles and one [k][restWidth] panel for the mc % MR rows left
 * (a padding row zero).
 */
function packA(dst: usize, a: usize, i0: i32, mc: i32, k0: i32, kc: i32, lda: i32, transA: bool): void {
  const tiles = mc / MR;
  const rest = mc - tiles * MR;
  const width = restWidth(rest);
  const tileStride = (<usize> kc * MR) << 2;
  const restPanel = dst + <usize> tiles * tileStride;
  if (!transA) {
    // A is M x lda, rows contiguous in k: 4 k of MR rows at a time, rows 0-3
    // transposed in registers, a fifth row stored lane by lane.
    const rowStride = <usize> lda << 2;
    for (let t = 0; t < tiles; t++) {
      const src = a + ((<usize> (i0 + t * MR) * <usize> lda + <usize> k0) << 2);
      const panel = dst + <usize> t * tileStride;
      let k = 0;
      for (; k + 4 <= kc; k += 4) {
        const s = src + (<usize> k << 2);
        const out = panel + ((<usize> k * MR) << 2);
        transpose4x4(out, MR << 2, s, rowStride);
        if (MR == 5) {
          const r4 = v128.load(s + rowStride * 4);
          v128.store32_lane(out, r4, 0, 16);
          v128.store32_lane(out, r4, 1, 36);
          v128.store32_lane(out, r4, 2, 56);
          v128.store32_lane(out, r4, 3, 76);
        }
      }
      for (; k < kc; k++) {
        const out = panel + ((<usize> k * MR) << 2);
        for (let r = 0; r < MR; r++) {
          store<f32>(out + (<usize> r << 2), load<f32>(src + <usize> r * rowStride + (<usize> k << 2)));
        }
      }
    }
    if (rest > 0) {
      const src = a + ((<usize> (i0 + tiles * MR) * <usize> lda + <usize> k0) << 2);
      for (let k = 0; k < kc; k++) {
        const out = restPanel + ((<usize> k * <usize> width) << 2);
        for (let r = 0; r < width; r++) {
          const v: f32 = r < rest ? load<f32>(src + <usize> r * rowStride + (<usize> k << 2)) : 0;
          store<f32>(out + (<usize> r << 2), v);
        }
      }
    }
  } else {
    // A is K x lda: op(A)'s rows are contiguous at each k, so walk k outer
    // (one row of A^T a step, not one page per element).
    for (let k = 0; k < kc; k++) {
      const src = a + ((<usize> (k0 + k) * <usize> lda + <usize> i0) << 2);
      let out = dst + ((<usize> k * MR) << 2);
      let from = src;
      for (let t = 0; t < tiles; t++) {
        v128.store(out, v128.load(from));
        if (MR == 5) store<f32>(out, load<f32>(from, 16), 16);
        out += tileStride;
        from += MR << 2;
      }
      const restOut = restPanel + ((<usize> k * <usize> width) << 2);
      for (let r = 0; r < width; r++) {
        store<f32>(restOut + (<usize> r << 2), r < rest ? load<f32>(from + (<usize> r << 2)) : 0);
      }
    }
  }
}

// -------------------------------------------------------------- micro-kernels

/** Writes one tile row: acc (+ C) (+ bias) (ReLU), `cols` (1-8) of 8 valid. */
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

/** Lane `l` of `v` in all four lanes. */
// @ts-ignore: decorator
@inline
function splatLane(v: v128, l: i32): v128 {
  if (l == 0) return i32x4.shuffle(v, v, 0, 0, 0, 0);
  if (l == 1) return i32x4.shuffle(v, v, 1, 1, 1, 1);
  if (l == 2) return i32x4.shuffle(v, v, 2, 2, 2, 2);
  return i32x4.shuffle(v, v, 3, 3, 3, 3);
}

/**
 * `count` 5x8 tiles down one B panel pb [k][8]: tile t reads the packed A
 * panel pa + t * tileStride ([k][5]) and writes C rows 5t..5t+4 at c; `cols`
 * of the 8 columns stored.
 */
function tiles5x8(
  c: usize,
  ldc: usize,
  pa: usize,
  tileStride: usize,
  count: i32,
  pb: usize,
  kc: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  const end = pb + ((<usize> kc * NR) << 2);
  for (let t = 0; t < count; t++) {
    let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
    let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
    let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
    let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
    let c40 = f32x4.splat(0), c41 = f32x4.splat(0);
    let a = pa, b = pb;
    while (b < end) {
      const b0 = v128.load(b);
      const b1 = v128.load(b, 16);
      const va = v128.load(a);
      let av = splatLane(va, 0);
      c00 = fma(av, b0, c00);
      c01 = fma(av, b1, c01);
      av = splatLane(va, 1);
      c10 = fma(av, b0, c10);
      c11 = fma(av, b1, c11);
      av = splatLane(va, 2);
      c20 = fma(av, b0, c20);
      c21 = fma(av, b1, c21);
      av = splatLane(va, 3);
      c30 = fma(av, b0, c30);
      c31 = fma(av, b1, c31);
      av = v128.load32_splat(a, 16);
      c40 = fma(av, b0, c40);
      c41 = fma(av, b1, c41);
      a += MR << 2;
      b += NR << 2;
    }
    finishRow(c, c00, c01, cols, bias, loadC, relu);
    finishRow(c + ldc, c10, c11, cols, bias, loadC, relu);
    finishRow(c + ldc * 2, c20, c21, cols, bias, loadC, relu);
    finishRow(c + ldc * 3, c30, c31, cols, bias, loadC, relu);
    finishRow(c + ldc * 4, c40, c41, cols, bias, loadC, relu);
    pa += tileStride;
    c += ldc * MR;
  }
}

/**
 * `count` 4x8 tiles down one B panel pb [k][8], as tiles5x8 over packed A
 * panels [k][4]; `rows` (3 or 4) of each tile stored.
 */
function tiles4x8(
  c: usize,
  ldc: usize,
  pa: usize,
  tileStride: usize,
  count: i32,
  rows: i32,
  pb: usize,
  kc: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  const end = pb + ((<usize> kc * NR) << 2);
  for (let t = 0; t < count; t++) {
    let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
    let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
    let c20 = f32x4.splat(0), c21 = f32x4.splat(0);
    let c30 = f32x4.splat(0), c31 = f32x4.splat(0);
    let a = pa, b = pb;
    while (b < end) {
      const b0 = v128.load(b);
      const b1 = v128.load(b, 16);
      const va = v128.load(a);
      let av = splatLane(va, 0);
      c00 = fma(av, b0, c00);
      c01 = fma(av, b1, c01);
      av = splatLane(va, 1);
      c10 = fma(av, b0, c10);
      c11 = fma(av, b1, c11);
      av = splatLane(va, 2);
      c20 = fma(av, b0, c20);
      c21 = fma(av, b1, c21);
      av = splatLane(va, 3);
      c30 = fma(av, b0, c30);
      c31 = fma(av, b1, c31);
      a += 16;
      b += NR << 2;
    }
    finishRow(c, c00, c01, cols, bias, loadC, relu);
    finishRow(c + ldc, c10, c11, cols, bias, loadC, relu);
    finishRow(c + ldc * 2, c20, c21, cols, bias, loadC, relu);
    if (rows == 4) finishRow(c + ldc * 3, c30, c31, cols, bias, loadC, relu);
    pa += tileStride;
    c += ldc << 2;
  }
}

/**
 * 2x16 tile over a packed A panel [k][2] and two adjacent B panels (b and
 * b + panelBytes); `cols` (9-16) of the 16 columns stored.
 */
function tile2x16(
  c: usize,
  ldc: usize,
  a: usize,
  b: usize,
  panelBytes: usize,
  kc: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c02 = f32x4.splat(0), c03 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0), c12 = f32x4.splat(0), c13 = f32x4.splat(0);
  const end = b + ((<usize> kc * NR) << 2);
  while (b < end) {
    const a0 = v128.load32_splat(a);
    const a1 = v128.load32_splat(a, 4);
    let bv = v128.load(b);
    c00 = fma(a0, bv, c00);
    c10 = fma(a1, bv, c10);
    bv = v128.load(b, 16);
    c01 = fma(a0, bv, c01);
    c11 = fma(a1, bv, c11);
    bv = v128.load(b + panelBytes);
    c02 = fma(a0, bv, c02);
    c12 = fma(a1, bv, c12);
    bv = v128.load(b + panelBytes, 16);
    c03 = fma(a0, bv, c03);
    c13 = fma(a1, bv, c13);
    a += 8;
    b += NR << 2;
  }
  const bias1: usize = bias != 0 ? bias + 32 : 0;
  finishRow(c, c00, c01, NR, bias, loadC, relu);
  finishRow(c + 32, c02, c03, cols - NR, bias1, loadC, relu);
  finishRow(c + ldc, c10, c11, NR, bias, loadC, relu);
  finishRow(c + ldc + 32, c12, c13, cols - NR, bias1, loadC, relu);
}

/** 2x8 tile (the last, single panel of a 2-row remainder). */
function tile2x8(
  c: usize,
  ldc: usize,
  a: usize,
  b: usize,
  kc: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  const end = b + ((<usize> kc * NR) << 2);
  while (b < end) {
    const b0 = v128.load(b);
    const b1 = v128.load(b, 16);
    let av = v128.load32_splat(a);
    c00 = fma(av, b0, c00);
    c01 = fma(av, b1, c01);
    av = v128.load32_splat(a, 4);
    c10 = fma(av, b0, c10);
    c11 = fma(av, b1, c11);
    a += 8;
    b += NR << 2;
  }
  finishRow(c, c00, c01, cols, bias, loadC, relu);
  finishRow(c + ldc, c10, c11, cols, bias, loadC, relu);
}

/**
 * 1x32 tile over a packed A row [k] and four adjacent B panels
 * (b + q * panelBytes); `cols` (25-32) of the 32 columns stored.
 */
function tile1x32(
  c: usize,
  a: usize,
  b: usize,
  panelBytes: usize,
  kc: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0), c2 = f32x4.splat(0), c3 = f32x4.splat(0);
  let c4 = f32x4.splat(0), c5 = f32x4.splat(0), c6 = f32x4.splat(0), c7 = f32x4.splat(0);
  const end = b + ((<usize> kc * NR) << 2);
  while (b < end) {
    const av = v128.load32_splat(a);
    c0 = fma(av, v128.load(b), c0);
    c1 = fma(av, v128.load(b, 16), c1);
    c2 = fma(av, v128.load(b + panelBytes), c2);
    c3 = fma(av, v128.load(b + panelBytes, 16), c3);
    c4 = fma(av, v128.load(b + panelBytes * 2), c4);
    c5 = fma(av, v128.load(b + panelBytes * 2, 16), c5);
    c6 = fma(av, v128.load(b + panelBytes * 3), c6);
    c7 = fma(av, v128.load(b + panelBytes * 3, 16), c7);
    a += 4;
    b += NR << 2;
  }
  finishRow(c, c0, c1, NR, bias, loadC, relu);
  finishRow(c + 32, c2, c3, NR, bias != 0 ? bias + 32 : 0, loadC, relu);
  finishRow(c + 64, c4, c5, NR, bias != 0 ? bias + 64 : 0, loadC, relu);
  finishRow(c + 96, c6, c7, cols - 3 * NR, bias != 0 ? bias + 96 : 0, loadC, relu);
}

/** 1x8 tile (the last panels of a 1-row remainder). */
function tile1x8(
  c: usize,
  a: usize,
  b: usize,
  kc: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let c0 = f32x4.splat(0), c1 = f32x4.splat(0);
  const end = b + ((<usize> kc * NR) << 2);
  while (b < end) {
    const av = v128.load32_splat(a);
    c0 = fma(av, v128.load(b), c0);
    c1 = fma(av, v128.load(b, 16), c1);
    a += 4;
    b += NR << 2;
  }
  finishRow(c, c0, c1, cols, bias, loadC, relu);
}

// ---------------------------------------------------------------------- N = 1

/** C[M] (+)= op(A) b for one output column (b: K contiguous floats). */
function gemv(
  c: usize,
  a: usize,
  b: usize,
  bias: usize,
  M: i32,
  K: i32,
  lda: i32,
  ldc: i32,
  transA: bool,
  accumulate: bool,
  relu: bool,
): void {
  const biasValue: f32 = bias != 0 ? load<f32>(bias) : 0;
  if (!transA) {
    dotRows(c, a, b, biasValue, bias != 0, M, K, lda, ldc, accumulate, relu);
  } else {
    columnRows(c, a, b, biasValue, bias != 0, M, K, lda, ldc, accumulate, relu);
  }
}

/** The epilogue of one output: (+ C) (+ bias) (ReLU). */
// @ts-ignore: decorator
@inline
function finishOne(cp: usize, v: f32, bias: f32, hasBias: bool, accumulate: bool, relu: bool): void {
  if (accumulate) v += load<f32>(cp);
  if (hasBias) v += bias;
  if (relu) v = max(v, 0);
  store<f32>(cp, v);
}

/**
 * Row-major A (M x lda): c[i] = dot(A[i, :K], b) with four lane chains over
 * k (the last, partial step zero padded), summed by `hsum`; 8 rows at a time
 * (8 accumulator chains), then one.
 */
function dotRows(
  c: usize,
  a: usize,
  b: usize,
  bias: f32,
  hasBias: bool,
  M: i32,
  K: i32,
  lda: i32,
  ldc: i32,
  accumulate: bool,
  relu: bool,
): void {
  const rowBytes = <usize> lda << 2;
  const cStride = <usize> ldc << 2;
  const body = <usize> (K & ~3) << 2;
  const tail = K & 3;
  let i = 0;
  for (; i + 8 <= M; i += 8) {
    const a0 = a + <usize> i * rowBytes;
    const a1 = a0 + rowBytes, a2 = a1 + rowBytes, a3 = a2 + rowBytes;
    const a4 = a3 + rowBytes, a5 = a4 + rowBytes, a6 = a5 + rowBytes, a7 = a6 + rowBytes;
    let s0 = f32x4.splat(0), s1 = f32x4.splat(0), s2 = f32x4.splat(0), s3 = f32x4.splat(0);
    let s4 = f32x4.splat(0), s5 = f32x4.splat(0), s6 = f32x4.splat(0), s7 = f32x4.splat(0);
    let o: usize = 0;
    while (o < body) {
      const bv = v128.load(b + o);
      s0 = fma(v128.load(a0 + o), bv, s0);
      s1 = fma(v128.load(a1 + o), bv, s1);
      s2 = fma(v128.load(a2 + o), bv, s2);
      s3 = fma(v128.load(a3 + o), bv, s3);
      s4 = fma(v128.load(a4 + o), bv, s4);
      s5 = fma(v128.load(a5 + o), bv, s5);
      s6 = fma(v128.load(a6 + o), bv, s6);
      s7 = fma(v128.load(a7 + o), bv, s7);
      o += 16;
    }
    if (tail != 0) {
      const bv = loadPartial(b + o, tail);
      s0 = fma(loadPartial(a0 + o, tail), bv, s0);
      s1 = fma(loadPartial(a1 + o, tail), bv, s1);
      s2 = fma(loadPartial(a2 + o, tail), bv, s2);
      s3 = fma(loadPartial(a3 + o, tail), bv, s3);
      s4 = fma(loadPartial(a4 + o, tail), bv, s4);
      s5 = fma(loadPartial(a5 + o, tail), bv, s5);
      s6 = fma(loadPartial(a6 + o, tail), bv, s6);
      s7 = fma(loadPartial(a7 + o, tail), bv, s7);
    }
    const cp = c + <usize> i * cStride;
    finishOne(cp, hsum(s0), bias, hasBias, accumulate, relu);
    finishOne(cp + cStride, hsum(s1), bias, hasBias, accumulate, relu);
    finishOne(cp + cStride * 2, hsum(s2), bias, hasBias, accumulate, relu);
    finishOne(cp + cStride * 3, hsum(s3), bias, hasBias, accumulate, relu);
    finishOne(cp + cStride * 4, hsum(s4), bias, hasBias, accumulate, relu);
    finishOne(cp + cStride * 5, hsum(s5), bias, hasBias, accumulate, relu);
    finishOne(cp + cStride * 6, hsum(s6), bias, hasBias, accumulate, relu);
    finishOne(cp + cStride * 7, hsum(s7), bias, hasBias, accumulate, relu);
  }
  for (; i < M; i++) {
    const ai = a + <usize> i * rowBytes;
    let s = f32x4.splat(0);
    let o: usize = 0;
    while (o < body) {
      s = fma(v128.load(ai + o), v128.load(b + o), s);
      o += 16;
    }
    if (tail != 0) s = fma(loadPartial(ai + o, tail), loadPartial(b + o, tail), s);
    finishOne(c + <usize> i * cStride, hsum(s), bias, hasBias, accumulate, relu);
  }
}

/**
 * A^T (K x lda): c[i..i+3] as the lanes of one vector, each the chain
 * acc = fma(A[k, i], b[k], acc) over k ascending per KC block, then + C,
 * as in the panel tiles; the last 1-3 rows as partial lanes.
 */
function columnRows(
  c: usize,
  a: usize,
  b: usize,
  bias: f32,
  hasBias: bool,
  M: i32,
  K: i32,
  lda: i32,
  ldc: i32,
  accumulate: bool,
  relu: bool,
): void {
  const kStride = <usize> lda << 2;
  const cStride = <usize> ldc << 2;
  for (let i = 0; i < M; i += 4) {
    const lanes = min(4, M - i);
    const cp = c + <usize> i * cStride;
    let out = f32x4.splat(0);
    if (accumulate) {
      if (ldc != 1) out = loadStrided(cp, cStride, lanes);
      else out = lanes == 4 ? v128.load(cp) : loadPartial(cp, lanes);
    }
    for (let k0 = 0; k0 < K; k0 += KC) {
      const kc = min(KC, K - k0);
      let acc = f32x4.splat(0);
      let ap = a + ((<usize> k0 * <usize> lda + <usize> i) << 2);
      let bp = b + (<usize> k0 << 2);
      const end = bp + (<usize> kc << 2);
      if (lanes == 4) {
        while (bp < end) {
          acc = fma(v128.load(ap), v128.load32_splat(bp), acc);
          ap += kStride;
          bp += 4;
        }
      } else {
        while (bp < end) {
          acc = fma(loadPartial(ap, lanes), v128.load32_splat(bp), acc);
          ap += kStride;
          bp += 4;
        }
      }
      out = k0 == 0 && !accumulate ? acc : f32x4.add(acc, out);
    }
    if (hasBias) out = f32x4.add(out, f32x4.splat(bias));
    if (relu) out = f32x4.max(out, f32x4.splat(0));
    if (ldc != 1) {
      storeStrided(cp, cStride, out, lanes);
    } else if (lanes == 4) {
      v128.store(cp, out);
    } else {
      storePartial(cp, out, lanes);
    }
  }
}

/** The first `lanes` floats `stride` bytes apart as the lanes of a vector (the rest 0). */
function loadStrided(p: usize, stride: usize, lanes: i32): v128 {
  let v = f32x4.splat(0);
  v = f32x4.replace_lane(v, 0, load<f32>(p));
  if (lanes > 1) v = f32x4.replace_lane(v, 1, load<f32>(p + stride));
  if (lanes > 2) v = f32x4.replace_lane(v, 2, load<f32>(p + stride * 2));
  if (lanes > 3) v = f32x4.replace_lane(v, 3, load<f32>(p + stride * 3));
  return v;
}

/** Stores the first `lanes` lanes of `v` at floats `stride` bytes apart. */
function storeStrided(p: usize, stride: usize, v: v128, lanes: i32): void {
  store<f32>(p, f32x4.extract_lane(v, 0));
  if (lanes > 1) store<f32>(p + stride, f32x4.extract_lane(v, 1));
  if (lanes > 2) store<f32>(p + stride * 2, f32x4.extract_lane(v, 2));
  if (lanes > 3) store<f32>(p + stride * 3, f32x4.extract_lane(v, 3));
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

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
// (inference) instead of on every call. A `gemm` call of one even row block
// (16 to MC rows: the towers' and gates' weight gradients) with B row-major
// skips the panels: its region copies (below) read B's rows in place, since
// each is read once either way (TN 64x1024x128 0.71 -> 0.86 of peak, 128x
// 1024x256 0.81 -> 0.88, interleaved). The 2-row tiles read each of their
// rows of op(A) k-contiguous: a row-major A (NN, NT) as it is stored, no
// copy; an A^T (TN) packed per MC-row block into row pairs [pair][2][kc + 4].
//
// The main tiles are 2x24 and 2x16 and they are not written here: they live in a generated
// module (scripts/gemm_tiles.ts, imported as "tiles"), because Deno's V8 runs
// Wasm with explicit bounds checks (no trap handler), a compare and a branch
// on every load from a computed address, except a load from a constant
// address below the declared minimum memory. Each 24 (or 16) columns of the packed
// op(B) k-block are copied into a fixed region of the first 64 KiB (the
// kernels' reserved bytes, KERNEL_RESERVED_BYTES in src/kernels/kernels.ts)
// and the generated kernel runs the whole k-block written out, every B load
// at a constant address: per k two checked broadcasts of A, six (four)
// unchecked loads of B, twelve (eight) FMAs. Measured on Zen 3: ~0.95 of the
// FMA peak for the 2x16 micro-kernel, where the 5x8 AssemblyScript loop it
// replaced (4 checked loads and 4 shuffles per 10 FMAs) ran at ~0.85 and a
// 6x8 at ~0.73. On a Zen 4/5 core at 3.5+ GHz the 2x16 tile's 8 chains of
// FMAs into the accumulator reach only ~0.93 (a register-only loop of 8 such
// chains does too; 12 reach the peak), so full 24-column chunks run 2x24
// tiles: 12 chains, 15 of the 16 XMM registers with the two A broadcasts and
// one B vector (a 2x16 GEMM in L1 0.88 of peak there, 2x24 0.94). Chunks of
// 24 are taken while they leave a multiple of 16 plus under 8 columns
// (`wideChunks`), so the AssemblyScript tail tiles never get more. Worker
// threads share the memory, so a shared-memory build holds one copy of the
// tile per thread slot (REGION_SLOTS), each with its own region;
// `setThreadSlot` tells an instance its slot. A slot past the last region
// (16-column chunks only), the columns after the last full chunk and the last odd row run the
// AssemblyScript tiles below (2x16, 4x8, 2x8, 1x32, 1x8: dynamic loads, same
// arithmetic). A call with 2-15 rows (serving a few candidates) runs the
// generated few-rows kernels instead (slot 0): there A is copied to a fixed
// region and B streams from its panels, since a 16-column copy of B would
// serve a single tile. Whole GEMM, 15 MMoE shapes: 0.87-0.98 of peak
// (0.88-0.91 while A was packed for NN/NT too and ReLU was f32x4.max;
// 0.81-0.85 with the AssemblyScript 5x8 tile); the rest is the region
// copies, packing A^T and the per-k-block epilogue.
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
// the same operations in the same order in every tile, generated or not.
// Tile choice, M, the rows sharing a call, the thread (and its slot)
// computing them, and packing B once or per call change which registers
// hold a chain, never its arithmetic, so a row range (the `lda` argument) or
// any thread split equals the full call bit for bit. (N = 1 with row-major
// A: the dot product above, the same in every row.)

import { fma, hsum, loadPartial, relu as reluVec, storePartial } from "./simd";

/** Width of a packed B panel: two f32x4. */
const NR: i32 = 8;
/** Height of the main tile (a packed A panel holds a row pair). */
const MR: i32 = 2;
/**
 * k-block: the generated tile writes out KC steps (64: the whole written-out
 * loop stays in the op cache; 128 steps ran at ~0.68 of peak, 32 at ~0.91).
 */
const KC: i32 = 64;
/**
 * k-superblock: op(B) is packed (by `gemm`) and C visited KS rows of k at a
 * time; within it each MC-row block of C runs all its k-blocks while it is in
 * L2 (k-blocks outermost sent C through L3 once per 64 k: ~5% slower).
 */
const KS: i32 = 256;
/**
 * Rows of an A block (256 x KC floats, 64 KiB). Fewer rows mean more region
 * copies per FMA (96 measured 1-2% slower than 192); 256 splits 1024 rows
 * into 4 even blocks (192 left a 64-row block) and lets a 256-row weight
 * gradient read B in place (one row block): TN 256x1024x512 +2-3%, the
 * other MMoE shapes within 0.5% (384 and 512 lost 1-2% on NN).
 */
const MC: i32 = 256;
/** Byte address of slot 0's B region (KC x 24 floats, 6 KiB). */
const REGION_BASE: i32 = 1024;
/** Bytes between two slots' regions. */
const REGION_STRIDE: i32 = 6144;
/** Regions, so generated tile copies, in a shared-memory build (one per thread). */
const REGION_SLOTS: i32 = 8;
/**
 * Byte address of the few-rows kernels' A region (KC x ROWS_MAX floats),
 * after the B regions; slot 0 only.
 */
const ROWS_REGION: i32 = 50176;
/** Most rows of one few-rows tile (generated kernels r2 .. r5). */
const ROWS_MAX: i32 = 5;
/**
 * Calls with fewer rows than this (a few serving candidates, a gate's
 * weight gradient) run the few-rows kernels: there a 2x16 tile's copy of B
 * would serve one or two tiles.
 */
const FEW_ROWS: i32 = 16;
/** The first bytes of memory belong to the regions (KERNEL_RESERVED_BYTES in src/kernels/kernels.ts). */
const RESERVED: usize = 65536;

/**
 * Traps when an operand lies in the reserved first 64 KiB, which the GEMM
 * overwrites: a caller's layout that ignores them fails loudly, not with
 * silently wrong products.
 */
// @ts-ignore: decorator
@inline
function checkReserved(c: usize, a: usize, b: usize, work: usize): void {
  if (c < RESERVED || a < RESERVED || b < RESERVED || work < RESERVED) unreachable();
}

// The generated tiles (scripts/gemm_tiles.ts): t runs `count` 2x16 tiles
// over `slot`'s region (the last region's copy for a slot past it); see
// there for the arguments. w does the same with 2x24 tiles (12 chains: on
// Zen 4/5 cores the 2x16 tile's 8 chains of FMAs into the accumulator cover
// only ~0.93 of the FMA rate, the addend's latency); the plain simd build's
// w traps (never called: `wideChunks` is 0 there).
// @ts-ignore: decorator
@external("tiles", "t")
declare function tiles(slot: i32, c: usize, ldc: usize, pa: usize, aRow: usize, paStride: usize, count: i32, skip: i32, bias: usize, flags: i32): void;
// @ts-ignore: decorator
@external("tiles", "w")
declare function wideTiles(slot: i32, c: usize, ldc: usize, pa: usize, aRow: usize, paStride: usize, count: i32, skip: i32, bias: usize, flags: i32): void;

// The few-rows kernels r<rows> (scripts/gemm_tiles.ts): `count` steps of
// full 8-wide panels from pb (two panels a step for r2, one for r3-r5), A
// from ROWS_REGION.
// @ts-ignore: decorator
@external("tiles", "r2")
declare function rows2(c: usize, ldc: usize, pb: usize, panelBytes: usize, count: i32, skip: i32, bias: usize, flags: i32): void;
// @ts-ignore: decorator
@external("tiles", "r3")
declare function rows3(c: usize, ldc: usize, pb: usize, panelBytes: usize, count: i32, skip: i32, bias: usize, flags: i32): void;
// @ts-ignore: decorator
@external("tiles", "r4")
declare function rows4(c: usize, ldc: usize, pb: usize, panelBytes: usize, count: i32, skip: i32, bias: usize, flags: i32): void;
// @ts-ignore: decorator
@external("tiles", "r5")
declare function rows5(c: usize, ldc: usize, pb: usize, panelBytes: usize, count: i32, skip: i32, bias: usize, flags: i32): void;

/** This instance's thread slot (0: the main thread; workers 1, 2, ...). */
let threadSlot: i32 = 0;

/**
 * Tells this instance which thread runs it (0 for the thread that owns the
 * arena, 1, 2, ... for the workers of a pool sharing its memory), so its
 * GEMM tiles use that slot's scratch region in the kernels' reserved first
 * 64 KiB. An unshared build has one region and ignores the slot. Slots from
 * 8 on run the GEMM without the generated tiles (same results, slower).
 *
 * @param slot `i32`
 */
export function setThreadSlot(slot: i32): void {
  threadSlot = slot;
}

/** Whether full 24-column chunks may run the 2x24 tiles (`setGemmWideTiles`). */
let wideTilesOn: bool = true;

/**
 * Lets full 24-column chunks run the generated 2x24 tiles (`on`, the
 * default) or keeps every chunk on the 2x16 tiles. Results are the same bit
 * for bit either way; the host picks the faster for its engine: V8 holds the
 * 2x24 tile's 15 vectors in registers (0.88 -> 0.94 of the peak), while
 * JavaScriptCore (Bun 1.4.5) spills them (28-33 GFLOP/s against 43 with the
 * 2x16 tile). The plain simd build never runs 2x24 tiles.
 *
 * @param on `bool`
 */
export function setGemmWideTiles(on: bool): void {
  wideTilesOn = on;
}

/** 1 when this instance runs 2x24 tiles (a relaxed-simd build with `setGemmWideTiles(true)`), else 0. */
export function gemmWideTiles(): i32 {
  return ASC_FEATURE_RELAXED_SIMD && wideTilesOn ? 1 : 0;
}

/**
 * Full 24-column chunks the generated tiles run when op(B) is N wide: as
 * many as leave a multiple of 16 (2x16 chunks) plus fewer than 8 columns
 * for the AssemblyScript tiles (512 = 20 x 24 + 2 x 16, 128 = 4 x 24 + 2 x 16);
 * none in the plain simd build or after `setGemmWideTiles(false)`.
 */
// @ts-ignore: decorator
@inline
function wideChunks(N: i32): i32 {
  // The plain simd build multiplies and adds in two instructions: its 2x24
  // tile would need a 16th register for the product (and spills: 0.55 of peak).
  if (!ASC_FEATURE_RELAXED_SIMD || !wideTilesOn) return 0;
  let wide = N / 24;
  if (wide > 0 && ((N - wide * 24) & 15) >= 8) wide--;
  return wide;
}

/** Panels (of 8 columns) the generated tiles cover, wide then narrow chunks. */
// @ts-ignore: decorator
@inline
function generatedPanels(N: i32): i32 {
  const wide = wideChunks(N);
  return wide * 3 + ((N - wide * 24) >> 4) * 2;
}

// @ts-ignore: decorator
@inline
function roundUp(n: i32, to: i32): i32 {
  return ((n + to - 1) / to) * to;
}

/** Bytes of `work` that `gemm` and `gemmPacked` need for inner size K and output width N. */
export function gemmWorkspaceBytes(K: i32, N: i32): i32 {
  return (min(K, KS) * roundUp(N, NR) + (min(K, KC) + 4) * MC) << 2;
}

/** Bytes of the packed op(B) that `gemmPackB` writes for inner size K and width N. */
export function gemmPackedBBytes(K: i32, N: i32): i32 {
  return (K * (N == 1 ? 1 : roundUp(N, NR))) << 2;
}

/**
 * Packs op(B) (K x N: B, or B^T when `transB`, B stored N x K) into
 * `packed` (`gemmPackedBBytes(K, N)` bytes) for `gemmPacked`: k-block
 * after k-block, each as 8-wide panels [panel][k][8], zero padded (N = 1:
 * the K floats of op(B) as they are). Both lie past the kernels' reserved
 * first 64 KiB, as for `gemm` (traps otherwise).
 */
export function gemmPackB(packed: usize, b: usize, K: i32, N: i32, transB: bool): void {
  checkReserved(packed, b, packed, packed);
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
 * `work` must hold `gemmWorkspaceBytes(K, N)` bytes. C, A, B and `work`
 * lie at or past the kernels' reserved first 64 KiB (the call traps, with
 * "unreachable", otherwise: the GEMM writes there). K = 0 writes the
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
  checkReserved(c, a, b, work);
  if (N == 1 && (transB || ldb == 1)) {
    // op(B) is one contiguous column of K floats.
    gemv(c, a, b, bias, M, K, lda, ldc, transA, accumulate, relu);
    return;
  }
  const width = <usize> roundUp(N, NR);
  const packedA = work + ((<usize> min(K, KS) * width) << 2);
  // One row block and a row-major B: the tiles' region copies read B's rows
  // in place (each B row is read once either way); only the columns after
  // the last full 16 are packed, for the AssemblyScript tiles.
  // (An odd last row and a slot without a region run the AssemblyScript tiles on every panel.)
  const direct = !transB && M >= FEW_ROWS && M <= MC && (M & 1) == 0 &&
    (!ASC_FEATURE_THREADS || threadSlot < REGION_SLOTS);
  const firstPanel = direct ? generatedPanels(N) : 0;
  for (let ks = 0; ks < K; ks += KS) {
    const ksc = min(KS, K - ks);
    for (let k0 = ks; k0 < ks + ksc; k0 += KC) {
      packB(work + ((<usize> (k0 - ks) * width) << 2), b, k0, min(KC, ks + ksc - k0), N, ldb, transB, firstPanel);
    }
    superBlock(c, a, work, direct ? b : 0, ldb, bias, packedA, M, K, N, ks, ksc, lda, ldc, transA, accumulate, relu);
  }
}

/**
 * `gemm` with op(B) already packed by `gemmPackB(packedB, b, K, N, transB)`:
 * the same results bit for bit, without packing B on every call. `work`
 * holds `gemmWorkspaceBytes(K, N)` bytes, as for `gemm`; `lda` and `ldc`
 * as for `gemm`, and the same reserved first 64 KiB.
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
  checkReserved(c, a, packedB, work);
  if (N == 1) {
    gemv(c, a, packedB, bias, M, K, lda, ldc, transA, accumulate, relu);
    return;
  }
  const width = <usize> roundUp(N, NR);
  for (let ks = 0; ks < K; ks += KS) {
    const ksc = min(KS, K - ks);
    superBlock(c, a, packedB + ((<usize> ks * width) << 2), 0, 0, bias, work, M, K, N, ks, ksc, lda, ldc, transA, accumulate, relu);
  }
}

/**
 * k rows ks .. ks+ksc of the product, from op(B)'s packed k-blocks at
 * `panels` (k-block after k-block): MC-row block after block, each through
 * all its k-blocks.
 */
function superBlock(
  c: usize,
  a: usize,
  panels: usize,
  bRows: usize,
  ldb: i32,
  bias: usize,
  packedA: usize,
  M: i32,
  K: i32,
  N: i32,
  ks: i32,
  ksc: i32,
  lda: i32,
  ldcFloats: i32,
  transA: bool,
  accumulate: bool,
  relu: bool,
): void {
  const width = <usize> roundUp(N, NR);
  const few = M >= 2 && M < FEW_ROWS && (!ASC_FEATURE_THREADS || threadSlot == 0);
  for (let i0 = 0; i0 < M; i0 += MC) {
    const mc = min(MC, M - i0);
    for (let k0 = ks; k0 < ks + ksc; k0 += KC) {
      const kc = min(KC, ks + ksc - k0);
      const blockPanels = panels + ((<usize> (k0 - ks) * width) << 2);
      const loadC = accumulate || k0 > 0;
      const last = k0 + kc == K;
      if (few) {
        fewRows(c, a, blockPanels, bias, packedA, M, N, k0, kc, lda, ldcFloats, transA, loadC, last, relu);
      } else {
        const bBlock: usize = bRows != 0 ? bRows + ((<usize> k0 * <usize> ldb) << 2) : 0;
        gemmBlock(c, a, blockPanels, bBlock, ldb, bias, packedA, i0, mc, N, k0, kc, lda, ldcFloats, transA, loadC, last, relu);
      }
    }
  }
}

/**
 * One k-block of one row block: C[i0 : i0+mc, :] (+)= op(A)[i0 : i0+mc,
 * k0 : k0+kc] times the packed panels of op(B)[k0 : k0+kc, :]; the epilogue
 * (bias, ReLU) when `last`.
 */
function gemmBlock(
  c: usize,
  a: usize,
  panels: usize,
  bRows: usize,
  ldb: i32,
  bias: usize,
  packedA: usize,
  i0: i32,
  mc: i32,
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
  const biasOn: usize = last ? bias : 0;
  const reluOn = last && relu;
  const flags = (loadC ? 1 : 0) | (reluOn ? 2 : 0);
  const slot = ASC_FEATURE_THREADS ? threadSlot : 0;
  const generated = slot < REGION_SLOTS;
  // Full 24-column chunks (generated 2x24 tiles), then full 16-column chunks
  // (generated 2x16, or the AssemblyScript 2x16 without a region), then the tail.
  const wide = generated ? wideChunks(N) : 0;
  const wideCols = wide * 24;
  const chunks = (N - wideCols) >> 4;
  const tailCols = N - wideCols - (chunks << 4);
  // A k-block shorter than KC fills the region's last kc rows and skips the first steps.
  const skip = KC - kc;
  const regionBase = <usize> (REGION_BASE + slot * REGION_STRIDE);
  const region = regionBase + ((<usize> skip << 6));
  const regionWide = regionBase + <usize> skip * 96;
  {
    const pairs = mc >> 1;
    // A tile reads its two rows of op(A) (k contiguous) at `aPairs + t *
    // pairStride` and `aRow` bytes further: A itself when it is not
    // transposed, a packed copy [pair][2][kc + 4] of A^T's block otherwise.
    let aPairs: usize, aRow: usize;
    if (transA) {
      packA(packedA, a, i0, mc, k0, kc, lda);
      aPairs = packedA;
      aRow = <usize> (kc + 4) << 2;
    } else {
      aPairs = a + ((<usize> i0 * <usize> lda + <usize> k0) << 2);
      aRow = <usize> lda << 2;
    }
    const pairStride = aRow << 1;
    const cBlock = c + <usize> i0 * ldc;
    if (pairs > 0) {
      for (let q = 0; q < wide; q++) {
        const col = <usize> q * 96; // bytes
        const cp = cBlock + col;
        const bp: usize = biasOn != 0 ? biasOn + col : 0;
        if (bRows != 0) copyRows(regionWide, bRows + col, <usize> ldb << 2, kc, true);
        else copyChunk(regionWide, panels + <usize> (q * 3) * panelBytes, panelBytes, kc, true);
        wideTiles(slot, cp, ldc, aPairs, aRow, pairStride, pairs, skip, bp, flags);
      }
      for (let q = 0; q < chunks; q++) {
        const pb = panels + <usize> (wide * 3 + (q << 1)) * panelBytes;
        const col = <usize> wideCols * 4 + (<usize> q << 6); // bytes
        const cp = cBlock + col;
        const bp: usize = biasOn != 0 ? biasOn + col : 0;
        if (generated) {
          if (bRows != 0) copyRows(region, bRows + col, <usize> ldb << 2, kc, false);
          else copyChunk(region, pb, panelBytes, kc, false);
          tiles(slot, cp, ldc, aPairs, aRow, pairStride, pairs, skip, bp, flags);
        } else {
          for (let t = 0; t < pairs; t++) {
            tile2x16(cp + <usize> t * (ldc << 1), ldc, aPairs + <usize> t * pairStride, aRow, pb, panelBytes, kc, 16, bp, loadC, reluOn);
          }
        }
      }
      if (tailCols > 0) {
        const p = wide * 3 + (chunks << 1);
        const pb = panels + <usize> p * panelBytes;
        const cp = cBlock + (<usize> p << 5);
        const bp: usize = biasOn != 0 ? biasOn + (<usize> p << 5) : 0;
        let t = 0;
        if (tailCols <= NR) {
          // One panel: two pairs at a time (8 chains, as the 2x16 tiles run).
          for (; t + 2 <= pairs; t += 2) {
            const ct = cp + <usize> t * (ldc << 1);
            tile4x8(ct, ldc, aPairs + <usize> t * pairStride, aRow, pairStride, pb, kc, tailCols, bp, loadC, reluOn);
          }
        }
        for (; t < pairs; t++) {
          const ct = cp + <usize> t * (ldc << 1);
          const at = aPairs + <usize> t * pairStride;
          if (tailCols > NR) {
            tile2x16(ct, ldc, at, aRow, pb, panelBytes, kc, tailCols, bp, loadC, reluOn);
          } else {
            tile2x8(ct, ldc, at, aRow, pb, kc, tailCols, bp, loadC, reluOn);
          }
        }
      }
    }
    if (mc & 1) {
      const cRest = cBlock + <usize> (pairs << 1) * ldc;
      const aRest = aPairs + <usize> pairs * pairStride;
      lastRow(cRest, aRest, panels, panelBytes, panelCount, N, kc, biasOn, loadC, reluOn);
    }
  }
}

/**
 * One k-block of a call with few rows (2 .. FEW_ROWS-1): tiles of up to
 * ROWS_MAX rows, each copied into the A region and run over every full
 * panel by a generated few-rows kernel, the last partial panel by 1x8
 * tiles; a single row left runs `lastRow`.
 */
function fewRows(
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
  const fullPanels = N >> 3;
  const biasOn: usize = last ? bias : 0;
  const reluOn = last && relu;
  const flags = (loadC ? 1 : 0) | (reluOn ? 2 : 0);
  const skip = KC - kc;
  for (let i0 = 0; i0 < M;) {
    const rows = min(ROWS_MAX, M - i0);
    const cp = c + <usize> i0 * ldc;
    if (rows == 1) {
      packRows(packedA, a, i0, 1, k0, kc, lda, transA);
      lastRow(cp, packedA, panels, panelBytes, panelCount, N, kc, biasOn, loadC, reluOn);
      break;
    }
    // The region's data starts `skip` k later, as the kernel's steps do.
    const region = <usize> ROWS_REGION + <usize> (skip * rows) * 4;
    packRows(region, a, i0, rows, k0, kc, lda, transA);
    // Two rows run 16 columns a step, more rows 8: panels from `done` on are left.
    let done = fullPanels;
    if (rows == 2) {
      done = (N >> 4) << 1;
      if (done > 0) rows2(cp, ldc, panels, panelBytes, done >> 1, skip, biasOn, flags);
    } else if (fullPanels > 0) {
      if (rows == 3) rows3(cp, ldc, panels, panelBytes, fullPanels, skip, biasOn, flags);
      else if (rows == 4) rows4(cp, ldc, panels, panelBytes, fullPanels, skip, biasOn, flags);
      else rows5(cp, ldc, panels, panelBytes, fullPanels, skip, biasOn, flags);
    }
    for (let p = done; p < panelCount; p++) {
      const pb = panels + <usize> p * panelBytes;
      const bp: usize = biasOn != 0 ? biasOn + (<usize> p << 5) : 0;
      const cols = min(NR, N - p * NR);
      for (let r = 0; r < rows; r++) {
        const ct = cp + <usize> r * ldc + (<usize> p << 5);
        tile1x8(ct, region + (<usize> r << 2), <usize> rows << 2, pb, kc, cols, bp, loadC, reluOn);
      }
    }
    i0 += rows;
  }
}

/** Copies op(A)[i0 : i0+rows, k0 : k0+kc] to dst as [k][rows]. */
function packRows(dst: usize, a: usize, i0: i32, rows: i32, k0: i32, kc: i32, lda: i32, transA: bool): void {
  const rowStep: usize = transA ? 4 : <usize> lda << 2;
  const kStep: usize = transA ? <usize> lda << 2 : 4;
  const first = transA
    ? a + ((<usize> k0 * <usize> lda + <usize> i0) << 2)
    : a + ((<usize> i0 * <usize> lda + <usize> k0) << 2);
  for (let r = 0; r < rows; r++) {
    let from = first + <usize> r * rowStep;
    let out = dst + (<usize> r << 2);
    for (let k = 0; k < kc; k++) {
      store<f32>(out, load<f32>(from));
      from += kStep;
      out += <usize> rows << 2;
    }
  }
}

/**
 * Copies the two 8-wide panels at `pb`, `pb + panelBytes` (and a third
 * when `wide`) ([k][8] each, kc rows) into a region as [k][16] ([k][24]).
 */
function copyChunk(region: usize, pb: usize, panelBytes: usize, kc: i32, wide: bool): void {
  const end = pb + ((<usize> kc * NR) << 2);
  let out = region;
  const third = pb + (panelBytes << 1);
  for (let b = pb; b < end; b += NR << 2) {
    v128.store(out, v128.load(b));
    v128.store(out, v128.load(b, 16), 16);
    v128.store(out, v128.load(b + panelBytes), 32);
    v128.store(out, v128.load(b + panelBytes, 16), 48);
    if (wide) {
      const t = third + (b - pb);
      v128.store(out, v128.load(t), 64);
      v128.store(out, v128.load(t, 16), 80);
      out += 96;
    } else {
      out += 64;
    }
  }
}

/**
 * Copies 16 (24 when `wide`) columns of kc rows of a row-major B (rows
 * `ldb` bytes apart) into a region as [k][16] ([k][24]).
 */
function copyRows(region: usize, b: usize, ldb: usize, kc: i32, wide: bool): void {
  const rowBytes: usize = wide ? 96 : 64;
  const end = region + <usize> kc * rowBytes;
  for (let out = region; out < end; out += rowBytes) {
    v128.store(out, v128.load(b));
    v128.store(out, v128.load(b, 16), 16);
    v128.store(out, v128.load(b, 32), 32);
    v128.store(out, v128.load(b, 48), 48);
    if (wide) {
      v128.store(out, v128.load(b, 64), 64);
      v128.store(out, v128.load(b, 80), 80);
    }
    b += ldb;
  }
}

/**
 * The last row of an odd row count, over every panel, from a packed [k]
 * row: 1x32 tiles (four panels a step), then 1x8.
 */
function lastRow(
  c: usize,
  a: usize,
  panels: usize,
  panelBytes: usize,
  panelCount: i32,
  N: i32,
  kc: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let p = 0;
  for (; p + 4 <= panelCount; p += 4) {
    const bp: usize = bias != 0 ? bias + (<usize> p << 5) : 0;
    const cols = min(4 * NR, N - p * NR);
    tile1x32(c + (<usize> p << 5), a, panels + <usize> p * panelBytes, panelBytes, kc, cols, bp, loadC, relu);
  }
  for (; p < panelCount; p++) {
    const bp: usize = bias != 0 ? bias + (<usize> p << 5) : 0;
    tile1x8(c + (<usize> p << 5), a, 4, panels + <usize> p * panelBytes, kc, min(NR, N - p * NR), bp, loadC, relu);
  }
}

// -------------------------------------------------------------------- packing

/**
 * Packs op(B)[k0 : k0+kc, :] into 8-wide panels, [panel][k][8], zero padded;
 * B's rows are `ldb` floats apart (B is K x ldb, or N x ldb when `transB`).
 */
function packB(dst: usize, b: usize, k0: i32, kc: i32, N: i32, ldbFloats: i32, transB: bool, firstPanel: i32 = 0): void {
  const panels = (N + NR - 1) / NR;
  for (let p = firstPanel; p < panels; p++) {
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
 * Packs op(A)[i0 : i0+mc, k0 : k0+kc] of a transposed A (stored K x lda)
 * at `dst` for the 2-row tiles: row pairs [pair][2][kc + 4] (each row k
 * contiguous, as a row-major A's rows are already), then the last odd
 * row. Four k and four rows at a time: a 4x4 transpose in registers. The
 * 4 floats of padding keep the packed rows off 256-byte multiples, which
 * made the pack's stores and loads alias (TN 64x1024x128: 0.70 -> 0.81 of
 * peak).
 */
function packA(dst: usize, a: usize, i0: i32, mc: i32, k0: i32, kc: i32, lda: i32): void {
  const pairs = mc >> 1;
  const rowBytes = <usize> (kc + 4) << 2;
  const pairStride = rowBytes << 1;
  const restRow = dst + <usize> pairs * pairStride;
  const kStride = <usize> lda << 2;
  let k = 0;
  for (; k + 4 <= kc; k += 4) {
    const src = a + ((<usize> (k0 + k) * <usize> lda + <usize> i0) << 2);
    let out = dst + (<usize> k << 2);
    let t = 0;
    for (; t + 2 <= pairs; t += 2) {
      // Rows 2t .. 2t+3 at k .. k+3: the two pairs' four packed rows lie rowBytes apart.
      transpose4x4(out, rowBytes, src + (<usize> t << 3), kStride);
      out += pairStride << 1;
    }
    for (; t < pairs; t++) {
      const s = src + (<usize> t << 3);
      for (let j = 0; j < 4; j++) {
        const from = s + kStride * <usize> j;
        store<f32>(out + (<usize> j << 2), load<f32>(from));
        store<f32>(out + rowBytes + (<usize> j << 2), load<f32>(from, 4));
      }
      out += pairStride;
    }
    if (mc & 1) {
      const s = src + (<usize> pairs << 3);
      const r = restRow + (<usize> k << 2);
      store<f32>(r, load<f32>(s));
      store<f32>(r, load<f32>(s + kStride), 4);
      store<f32>(r, load<f32>(s + kStride * 2), 8);
      store<f32>(r, load<f32>(s + kStride * 3), 12);
    }
  }
  for (; k < kc; k++) {
    let from = a + ((<usize> (k0 + k) * <usize> lda + <usize> i0) << 2);
    let out = dst + (<usize> k << 2);
    for (let t = 0; t < pairs; t++) {
      store<f32>(out, load<f32>(from));
      store<f32>(out + rowBytes, load<f32>(from, 4));
      out += pairStride;
      from += 8;
    }
    if (mc & 1) store<f32>(restRow + (<usize> k << 2), load<f32>(from));
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
      lo = reluVec(lo);
      hi = reluVec(hi);
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
      lo = reluVec(lo);
      hi = reluVec(hi);
    }
    if (loCount == 4) {
      v128.store(cp, lo);
      storePartial(cp + 16, hi, hiCount);
    } else {
      storePartial(cp, lo, loCount);
    }
  }
}

/**
 * 2x16 tile over two rows of op(A) (k contiguous, at a and a + aRow) and two adjacent B panels (b and
 * b + panelBytes); `cols` (9-16) of the 16 columns stored.
 */
function tile2x16(
  c: usize,
  ldc: usize,
  a: usize,
  aRow: usize,
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
    const a1 = v128.load32_splat(a + aRow);
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
    a += 4;
    b += NR << 2;
  }
  const bias1: usize = bias != 0 ? bias + 32 : 0;
  finishRow(c, c00, c01, NR, bias, loadC, relu);
  finishRow(c + 32, c02, c03, cols - NR, bias1, loadC, relu);
  finishRow(c + ldc, c10, c11, NR, bias, loadC, relu);
  finishRow(c + ldc + 32, c12, c13, cols - NR, bias1, loadC, relu);
}

/**
 * 4x8 tile (a last, single panel: the gates' N <= 8): two row pairs, the
 * second `pairStride` after the first, each as for tile2x16.
 */
function tile4x8(
  c: usize,
  ldc: usize,
  a: usize,
  aRow: usize,
  pairStride: usize,
  b: usize,
  kc: i32,
  cols: i32,
  bias: usize,
  loadC: bool,
  relu: bool,
): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  const a2 = a + pairStride;
  const end = b + ((<usize> kc * NR) << 2);
  let k: usize = 0;
  while (b < end) {
    const b0 = v128.load(b);
    const b1 = v128.load(b, 16);
    let av = v128.load32_splat(a + k);
    c00 = fma(av, b0, c00);
    c01 = fma(av, b1, c01);
    av = v128.load32_splat(a + aRow + k);
    c10 = fma(av, b0, c10);
    c11 = fma(av, b1, c11);
    av = v128.load32_splat(a2 + k);
    c20 = fma(av, b0, c20);
    c21 = fma(av, b1, c21);
    av = v128.load32_splat(a2 + aRow + k);
    c30 = fma(av, b0, c30);
    c31 = fma(av, b1, c31);
    k += 4;
    b += NR << 2;
  }
  finishRow(c, c00, c01, cols, bias, loadC, relu);
  finishRow(c + ldc, c10, c11, cols, bias, loadC, relu);
  finishRow(c + ldc * 2, c20, c21, cols, bias, loadC, relu);
  finishRow(c + ldc * 3, c30, c31, cols, bias, loadC, relu);
}

/** 2x8 tile (the last, single panel of a 2-row remainder); A rows as for tile2x16. */
function tile2x8(
  c: usize,
  ldc: usize,
  a: usize,
  aRow: usize,
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
    av = v128.load32_splat(a + aRow);
    c10 = fma(av, b0, c10);
    c11 = fma(av, b1, c11);
    a += 4;
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

/** 1x8 tile (the last panels of a 1-row remainder); A's k are `aStride` bytes apart. */
function tile1x8(
  c: usize,
  a: usize,
  aStride: usize,
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
    a += aStride;
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
    if (relu) out = reluVec(out);
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

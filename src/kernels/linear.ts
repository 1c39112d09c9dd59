/**
 * A PyTorch Linear (weight [out, in], y = x W^T + b) as GEMM ops, forward and
 * backward, on strided matrices: the one place a Linear's GEMM flags are
 * written. The forward is NT; the weight gradient TN (dW += dy^T x); the
 * input gradient NN (dx = dy W). The bias gradient is a column sum of dy,
 * left to the caller, which can take it once for a whole stack of Linears.
 * Each function returns the op; the caller runs it (`runGemm`) or splits a
 * batch of them across threads (`splitGemms`, src/kernels/threads.ts).
 *
 * The forward and the input gradient can read W pre-packed
 * (`Kernels.gemmPackB`): the forward's op(B) = W^T packed with K = in,
 * N = out, `transB` true; the input gradient's op(B) = W packed with K =
 * out, N = in, `transB` false.
 *
 * @example A Linear with 2 inputs and 3 outputs over 2 rows
 * ```ts
 * import assert from "node:assert/strict";
 * import { instantiateKernels, KERNEL_RESERVED_BYTES as at, runGemm } from "./kernels.ts";
 * import { linearForward } from "./linear.ts";
 * const memory = new WebAssembly.Memory({ initial: 2 });
 * const { exports: k } = instantiateKernels(memory);
 * const f = new Float32Array(memory.buffer, at);
 * f.set([1, 2, 3, 4], 0); // x [2, 2] at byte `at`
 * f.set([1, 0, 0, 1, 1, 1], 16); // W [3, 2] at byte at + 64
 * f.set([10, 20, 30], 32); // bias at byte at + 128
 * const y = { at: at + 256, ld: 3 }, x = { at, ld: 2 };
 * const w = { at: at + 64, packed: false };
 * runGemm(k, linearForward(y, x, w, at + 128, 2, 2, 3, false), at + 1024);
 * assert.deepEqual(Array.from(f.subarray(64, 70)), [11, 22, 33, 13, 24, 37]);
 * // The same on W^T packed once:
 * k.gemmPackB(at + 2048, at + 64, 2, 3, true);
 * const packed = { at: at + 2048, packed: true };
 * runGemm(k, linearForward(y, x, packed, at + 128, 2, 2, 3, false), at + 1024);
 * assert.deepEqual(Array.from(f.subarray(64, 70)), [11, 22, 33, 13, 24, 37]);
 * ```
 * @module
 */
import type { GemmOp } from "./kernels.ts";

/** A row-major f32 matrix in the arena: byte offset of element [0, 0] and row stride in floats. */
export interface Matrix {
  /** Byte offset of the first element. */
  at: number;
  /** Row stride in floats. */
  ld: number;
}

/** A Linear weight [out, in] as stored, or its panels packed by `gemmPackB`. */
export interface Weight {
  /** Byte offset of the weight, or of its packed panels. */
  at: number;
  /** `at` holds packed panels (of W^T for the forward, of W for the input gradient). */
  packed: boolean;
}

/**
 * y[B, outW] = x[B, inW] W^T (+ bias) (then ReLU when `relu`); W is
 * [outW, inW] as PyTorch stores it (or W^T packed), `bias` 0 means none.
 */
export function linearForward(
  y: Matrix,
  x: Matrix,
  weight: Weight,
  bias: number,
  B: number,
  inW: number,
  outW: number,
  relu: boolean,
): GemmOp {
  return {
    c: y.at,
    ldc: y.ld,
    a: x.at,
    lda: x.ld,
    transA: false,
    b: weight.at,
    ldb: inW,
    transB: true,
    bias,
    M: B,
    K: inW,
    N: outW,
    accumulate: false,
    relu,
    packed: weight.packed,
  };
}

/** The weight gradient of {@link linearForward}: dW[outW, inW] = dy^T x (overwritten). */
export function linearWeightGradient(
  dWeight: number,
  dy: Matrix,
  x: Matrix,
  B: number,
  inW: number,
  outW: number,
): GemmOp {
  return {
    c: dWeight,
    ldc: inW,
    a: dy.at,
    lda: dy.ld,
    transA: true,
    b: x.at,
    ldb: x.ld,
    transB: false,
    bias: 0,
    M: outW,
    K: B,
    N: inW,
    accumulate: false,
    relu: false,
  };
}

/**
 * The input gradient of {@link linearForward}: dx = dy W (dx += dy W when
 * `accumulate`); `weight` is W [outW, inW] or W packed.
 */
export function linearInputGradient(
  dx: Matrix,
  accumulate: boolean,
  dy: Matrix,
  weight: Weight,
  B: number,
  inW: number,
  outW: number,
): GemmOp {
  return {
    c: dx.at,
    ldc: dx.ld,
    a: dy.at,
    lda: dy.ld,
    transA: false,
    b: weight.at,
    ldb: inW,
    transB: false,
    bias: 0,
    M: B,
    K: outW,
    N: inW,
    accumulate,
    relu: false,
    packed: weight.packed,
  };
}

/**
 * A PyTorch Linear (weight [out, in], y = x W^T + b) as GEMMs, forward and
 * backward, on strided matrices: the one place a Linear's GEMM flags are
 * written. The forward is NT; the weight gradient TN (dW += dy^T x); the
 * input gradient NN (dx = dy W). The bias gradient is a column sum of dy,
 * left to the caller, which can take it once for a whole stack of Linears.
 *
 * @example A Linear with 2 inputs and 3 outputs over 2 rows
 * ```ts
 * import assert from "node:assert/strict";
 * import { instantiateKernels, runGemm } from "./kernels.ts";
 * import { linearForward } from "./linear.ts";
 * const memory = new WebAssembly.Memory({ initial: 1 });
 * const { exports: k } = instantiateKernels(memory);
 * const f = new Float32Array(memory.buffer);
 * f.set([1, 2, 3, 4], 0); // x [2, 2] at byte 0
 * f.set([1, 0, 0, 1, 1, 1], 16); // W [3, 2] at byte 64
 * f.set([10, 20, 30], 32); // bias at byte 128
 * const gemm = (op: Parameters<typeof runGemm>[1]) => runGemm(k, op, 1024);
 * linearForward(gemm, { at: 256, ld: 3 }, { at: 0, ld: 2 }, 64, 128, 2, 2, 3, false);
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

/** Runs one GEMM (on the caller's scratch, its rows perhaps split across threads). */
export type Gemm = (op: GemmOp) => void;

/**
 * y[B, outW] = x[B, inW] W^T (+ bias) (then ReLU when `relu`); W is
 * [outW, inW] as PyTorch stores it, `bias` 0 means none.
 */
export function linearForward(
  gemm: Gemm,
  y: Matrix,
  x: Matrix,
  weight: number,
  bias: number,
  B: number,
  inW: number,
  outW: number,
  relu: boolean,
): void {
  gemm({
    c: y.at,
    ldc: y.ld,
    a: x.at,
    lda: x.ld,
    transA: false,
    b: weight,
    ldb: inW,
    transB: true,
    bias,
    M: B,
    K: inW,
    N: outW,
    accumulate: false,
    relu,
  });
}

/**
 * Backward of {@link linearForward}'s product: dW[outW, inW] += dy^T x, and,
 * when `dx` is given, dx = dy W (dx += dy W when `accumulate`).
 */
export function linearBackward(
  gemm: Gemm,
  dWeight: number,
  dx: Matrix | null,
  accumulate: boolean,
  dy: Matrix,
  x: Matrix,
  weight: number,
  B: number,
  inW: number,
  outW: number,
): void {
  gemm({
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
    accumulate: true,
    relu: false,
  });
  if (dx === null) return;
  gemm({
    c: dx.at,
    ldc: dx.ld,
    a: dy.at,
    lda: dy.ld,
    transA: false,
    b: weight,
    ldb: inW,
    transB: false,
    bias: 0,
    M: B,
    K: outW,
    N: inW,
    accumulate,
    relu: false,
  });
}

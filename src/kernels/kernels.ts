/**
 * Loads the Wasm SIMD kernel module (generated from `assembly/`) on a
 * caller-provided `WebAssembly.Memory`.
 *
 * Every kernel is a free function over byte offsets into that memory and
 * sizes: outputs first, then inputs, then sizes, then flags. Kernels never
 * allocate, never validate and never throw; callers (the model, which sizes
 * one arena up front) validate once. Parameter gradients accumulate (`+=`);
 * activation gradients overwrite. Size letters: B batch rows, F input width,
 * E experts, D expert output width, H a layer width, K inner size.
 *
 * @example Multiply two 2x2 matrices
 * ```ts
 * import assert from "node:assert/strict";
 * import { instantiateKernels } from "./kernels.ts";
 * const memory = new WebAssembly.Memory({ initial: 1 });
 * const { exports: k } = instantiateKernels(memory);
 * const f = new Float32Array(memory.buffer);
 * f.set([1, 2, 3, 4], 0); // A at byte 0
 * f.set([5, 6, 7, 8], 4); // B at byte 16
 * k.gemm(32, 0, 16, 0, 64, 2, 2, 2, 2, false, false, false, false);
 * assert.deepEqual(Array.from(f.subarray(8, 12)), [19, 22, 43, 50]);
 * ```
 * @module
 */
import {
  RELAXED_SIMD_SHARED_WASM,
  RELAXED_SIMD_WASM,
  SIMD_SHARED_WASM,
  SIMD_WASM,
} from "./kernels_wasm.ts";
import { Activation } from "../core/activation.ts";

export { Activation };

/**
 * The two builds of the kernel module (each exists for an unshared and a
 * shared memory import; the loader picks by the memory it is given).
 */
export type KernelVariant = "relaxed-simd" | "simd";

/**
 * The kernel exports. Pointers are byte offsets into the instance memory,
 * f32 unless named otherwise (`ids`, `offsets`, `unique`, `inverse` are i32).
 */
export interface Kernels {
  // gemm.ts
  /**
   * C[M,N] (+)= op(A)[M,K] op(B)[K,N] (+ bias[N]) (then ReLU). op(A) = A^T
   * (A stored K x M) when `transA`; op(B) = B^T (B stored N x K) when
   * `transB`. `bias` 0 means none; `work` holds `gemmWorkspaceBytes(K, N)`.
   * `lda` is A's row stride as stored: K, or (when `transA`) the column
   * count of the whole K x lda matrix. With it a call can cover rows
   * [r0, r0+M) of a larger product (c + 4*r0*N, a + 4*r0*lda, or a + 4*r0
   * when `transA`) with results bit-identical to the full call: the
   * threaded GEMM (src/threads.ts) splits rows this way.
   */
  gemm(
    c: number,
    a: number,
    b: number,
    bias: number,
    work: number,
    M: number,
    K: number,
    N: number,
    lda: number,
    transA: boolean,
    transB: boolean,
    accumulate: boolean,
    relu: boolean,
  ): void;
  /** Bytes of scratch `gemm` needs for inner size K and output width N. */
  gemmWorkspaceBytes(K: number, N: number): number;

  // ---- BEGIN gemm branch additions (assembly/gemm.ts, assembly/probe.ts) ----
  /** Bytes `gemmPackB` writes for op(B) of inner size K and width N. */
  gemmPackedBBytes(K: number, N: number): number;
  /**
   * Packs op(B) (K x N: B, or B^T when `transB`, B stored N x K) into the
   * GEMM's panel layout at `packed` (`gemmPackedBBytes(K, N)` bytes), for
   * `gemmPacked`. A Linear weight W stored [out, in] packs once per
   * optimizer step (or at load) as the forward's B^T (`transB`, K = in,
   * N = out) and as the input gradient's B (K = out, N = in).
   */
  gemmPackB(packed: number, b: number, K: number, N: number, transB: boolean): void;
  /**
   * `gemm` with op(B) packed by `gemmPackB`: C[M,N] (+)= op(A) op(B)
   * (+ bias[N]) (then ReLU), bit-identical to `gemm` on the unpacked B, with
   * the same `lda`, row-range and `work` (`gemmWorkspaceBytes(K, N)`) rules.
   */
  gemmPacked(
    c: number,
    a: number,
    packedB: number,
    bias: number,
    work: number,
    M: number,
    K: number,
    N: number,
    lda: number,
    transA: boolean,
    accumulate: boolean,
    relu: boolean,
  ): void;
  /**
   * Peak probe: `iterations` x 12 register-resident f32x4 multiply-adds
   * acc = acc * s + t (96 flop an iteration; relaxed madd or mul + add, as
   * the build's GEMM), returning the sum of the accumulators. Times this
   * core's Wasm SIMD FMA ceiling (bench/_peak.ts).
   */
  peakProbe(iterations: number, s: number, t: number): number;
  // ---- END gemm branch additions ----

  // activation.ts
  /**
   * y[b,h] = act(x[b,h] + bias[h]) for B x H values (`bias` 0: none). `y`
   * may equal `x`. `act` is an {@link Activation} code; `slope` is
   * LeakyReLU's negative slope.
   */
  biasActivation(
    y: number,
    x: number,
    bias: number,
    B: number,
    H: number,
    act: number,
    slope: number,
  ): void;
  /**
   * dx = dy * act'(x) over n values, where `x` is the pre-activation input
   * (bias included) and `y = act(x)` its output; each activation reads
   * whichever of the two it needs. `dx` may equal `dy`.
   */
  activationBackward(
    dx: number,
    dy: number,
    x: number,
    y: number,
    n: number,
    act: number,
    slope: number,
  ): void;
  /** out[h] += sum over b of x[b,h] (bias gradient), x is B x H. */
  columnSum(out: number, x: number, B: number, H: number): void;

  // gating.ts
  /**
   * gate[b,:] = softmax(logits[b,:]) over E; out[b,:] = sum_e gate[b,e] *
   * experts[e][b,:]. Expert e starts at `experts + 4 * e * expertStride`
   * and is B x D. `gate` may equal `logits`.
   */
  gateMixtureForward(
    out: number,
    gate: number,
    logits: number,
    experts: number,
    B: number,
    E: number,
    D: number,
    expertStride: number,
  ): void;
  /**
   * Backward of gateMixtureForward: dExperts[e][b,:] += gate[b,e] * dOut[b,:];
   * dLogits[b,e] = gate[b,e] * (dot(dOut[b,:], experts[e][b,:]) - sum_e' ...)
   * (softmax Jacobian), overwritten. `dLogits` must not alias `gate`.
   */
  gateMixtureBackward(
    dLogits: number,
    dExperts: number,
    dOut: number,
    gate: number,
    experts: number,
    B: number,
    E: number,
    D: number,
    expertStride: number,
  ): void;

  // loss.ts
  /**
   * Fused sigmoid + binary cross-entropy with logits over B rows. Returns
   * sum_i w_i * l_i (f64) with l_i = max(z,0) - z*y + log(1 + exp(-|z|)) and
   * y smoothed to y(1-s) + s/2; w_i = weights[i] (or 1 when `weights` is 0).
   * Writes probs[i] = sigmoid(z_i) when `probs` is not 0 and
   * dLogits[i] = gradScale * w_i * (sigmoid(z_i) - y_i) when `dLogits` is not 0.
   */
  sigmoidBinaryCrossEntropy(
    dLogits: number,
    probs: number,
    logits: number,
    labels: number,
    weights: number,
    B: number,
    labelSmoothing: number,
    gradScale: number,
  ): number;
  /**
   * tzrec tower loss weights: w_i = sampleWeights[i] (or 1 when 0); if
   * `indicator` is not 0, w_i *= inWeight when indicator[i] > 0 else
   * outWeight; w /= mean(w) with non-finite results set to 0; w *= towerWeight.
   */
  taskSpaceWeights(
    w: number,
    sampleWeights: number,
    indicator: number,
    B: number,
    inWeight: number,
    outWeight: number,
    towerWeight: number,
  ): void;

  // norm.ts
  /**
   * BatchNorm1d over B x H (per column h). Training: batch mean and biased
   * variance normalise; mean[h] and invStd[h] = 1/sqrt(var + eps) are saved
   * for the backward; runningMean/runningVar move by `momentum` toward the
   * batch mean and the UNBIASED batch variance (torch). Eval (`training`
   * false): normalise with the running statistics (mean/invStd are written
   * from them). y = gamma * (x - mean) * invStd + beta; `y` may equal `x`.
   */
  batchNormForward(
    y: number,
    mean: number,
    invStd: number,
    runningMean: number,
    runningVar: number,
    x: number,
    gamma: number,
    beta: number,
    B: number,
    H: number,
    momentum: number,
    eps: number,
    training: boolean,
  ): void;
  /**
   * Backward of batchNormForward in training mode: dx overwritten, dGamma and
   * dBeta accumulated (+=). `x` is the forward input. `dx` must not alias
   * `dy` or `x` (its first two rows are scratch between the two passes).
   */
  batchNormBackward(
    dx: number,
    dGamma: number,
    dBeta: number,
    dy: number,
    x: number,
    gamma: number,
    mean: number,
    invStd: number,
    B: number,
    H: number,
  ): void;
  /**
   * LayerNorm over each row of B x H: y = gamma * (x - mean_b) * invStd_b +
   * beta, biased variance; mean[b] and invStd[b] saved. `y` may equal `x`.
   */
  layerNormForward(
    y: number,
    mean: number,
    invStd: number,
    x: number,
    gamma: number,
    beta: number,
    B: number,
    H: number,
    eps: number,
  ): void;
  /** Backward of layerNormForward: dx overwritten, dGamma/dBeta accumulated. */
  layerNormBackward(
    dx: number,
    dGamma: number,
    dBeta: number,
    dy: number,
    x: number,
    gamma: number,
    mean: number,
    invStd: number,
    B: number,
    H: number,
  ): void;
  /**
   * Inverted dropout over n values: mask[i] = 0 with probability `ratio`, else
   * 1/(1-ratio), drawn from a counter-based hash of (seed, i) so a step is
   * reproducible; y = x * mask (`y` may equal `x`). The backward is
   * {@link Kernels.multiply}(dx, dy, mask, n).
   */
  dropoutForward(y: number, mask: number, x: number, n: number, ratio: number, seed: number): void;
  /** out[i] = a[i] * b[i] over n values (`out` may equal `a` or `b`). */
  multiply(out: number, a: number, b: number, n: number): void;

  /**
   * Softmax cross-entropy over B rows of C logits; labels are class indices
   * stored as f32. Returns sum_i w_i * l_i (f64) with label smoothing s
   * (target = (1-s) onehot + s/C, torch). Writes probs (B x C) when not 0 and
   * dLogits = gradScale * w_i * (softmax - target) when not 0.
   */
  softmaxCrossEntropy(
    dLogits: number,
    probs: number,
    logits: number,
    labels: number,
    weights: number,
    B: number,
    C: number,
    labelSmoothing: number,
    gradScale: number,
  ): number;
  /**
   * Squared error over B rows: returns sum_i w_i (y_i - label_i)^2 (f64);
   * writes dY = gradScale * w_i * 2 (y_i - label_i) when `dY` is not 0.
   */
  squaredError(
    dY: number,
    y: number,
    labels: number,
    weights: number,
    B: number,
    gradScale: number,
  ): number;

  // embedding.ts
  /**
   * out[b*ldOut + 0..dim] = sum (or mean when `mean`) of table rows
   * ids[offsets[b] .. offsets[b+1]]; an empty row gives zeros. `out` points at
   * the feature's first column of the concatenated input (row stride ldOut
   * floats). `ids` and `offsets` (B+1 entries) are i32.
   */
  embeddingGather(
    out: number,
    table: number,
    ids: number,
    offsets: number,
    B: number,
    dim: number,
    ldOut: number,
    mean: boolean,
  ): void;
  /**
   * Deduplicates n i32 ids: unique[0..U) in order of first appearance,
   * inverse[j] = index of ids[j] in unique; returns U. `hashTable` is i32
   * scratch of `hashCapacity` slots (a power of two >= 2n), cleared here.
   */
  embeddingUnique(
    unique: number,
    inverse: number,
    ids: number,
    n: number,
    hashTable: number,
    hashCapacity: number,
  ): number;
  /**
   * Sparse backward of embeddingGather: gradRows[inverse[j]*dim ..] +=
   * dOut[b*ldOut ..] (divided by the row's id count when `mean`) for every id
   * j of row b, so duplicate ids are summed into one row.
   */
  embeddingBackward(
    gradRows: number,
    dOut: number,
    inverse: number,
    offsets: number,
    B: number,
    dim: number,
    ldOut: number,
    mean: boolean,
  ): void;
  /** out[b*ldOut + 0..width] = x[b*ldX + 0..width]: a dense feature into the concat. */
  copyColumns(out: number, x: number, B: number, width: number, ldOut: number, ldX: number): void;

  // optim.ts
  /**
   * torch.optim.Adam step over n values (step >= 1 counts this step):
   * g += wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
   * p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps).
   */
  adamStep(
    param: number,
    grad: number,
    m: number,
    v: number,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
  ): void;
  /** torch.optim.Adagrad: g += wd*p; G += g^2; p -= lr * g / (sqrt(G) + eps). */
  adagradStep(
    param: number,
    grad: number,
    accum: number,
    n: number,
    lr: number,
    eps: number,
    weightDecay: number,
  ): void;
  /** torch.optim.SGD (no momentum): p -= lr * (g + wd*p). */
  sgdStep(param: number, grad: number, n: number, lr: number, weightDecay: number): void;
  /**
   * torch.optim.SGD with momentum (dampening 0): g += wd*p; buf = g when
   * `first`, else buf = momentum*buf + g; p -= lr*buf.
   */
  sgdMomentumStep(
    param: number,
    grad: number,
    buf: number,
    n: number,
    lr: number,
    momentum: number,
    weightDecay: number,
    first: boolean,
  ): void;
  /**
   * Exact row-wise-sparse Adagrad (fbgemm EXACT_ADAGRAD): for each touched row
   * r = unique[u] (i32), G[r] += g^2 and table[r] -= lr * g / (sqrt(G[r]) + eps)
   * elementwise, g = gradRows[u] (dim floats). Untouched rows do not change.
   */
  adagradRows(
    table: number,
    accum: number,
    unique: number,
    gradRows: number,
    U: number,
    dim: number,
    lr: number,
    eps: number,
  ): void;
  /** Sparse Adam on touched rows only, torch Adam formulas with a global step. */
  adamRows(
    table: number,
    m: number,
    v: number,
    unique: number,
    gradRows: number,
    U: number,
    dim: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    step: number,
  ): void;
  /** Sparse SGD on touched rows: table[unique[u]] -= lr * gradRows[u]. */
  sgdRows(
    table: number,
    unique: number,
    gradRows: number,
    U: number,
    dim: number,
    lr: number,
  ): void;
}

/** A kernel module instantiated on one memory. */
export interface KernelInstance {
  /** The kernel functions. */
  readonly exports: Kernels;
  /** The memory every pointer refers to. */
  readonly memory: WebAssembly.Memory;
  /** Which build runs. */
  readonly variant: KernelVariant;
  /** Whether the memory is shared (the threads build runs). */
  readonly shared: boolean;
}

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const modules = new Map<string, WebAssembly.Module>();

/** Whether `memory` is a shared memory (its buffer a SharedArrayBuffer). */
export function isSharedMemory(memory: WebAssembly.Memory): boolean {
  return typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer;
}

/**
 * The compiled module of one variant (compiled once per process, synchronously).
 * `shared` selects the build that imports a shared memory (maximum 65536
 * pages), for `createArenaMemory(bytes, { shared: true })` (src/arena.ts).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kernelModule } from "./kernels.ts";
 * const module = kernelModule("simd");
 * assert.ok(WebAssembly.Module.exports(module).some((e) => e.name === "gemm"));
 * ```
 */
export function kernelModule(variant: KernelVariant, shared = false): WebAssembly.Module {
  const key = `${variant}${shared ? "+shared" : ""}`;
  let module = modules.get(key);
  if (module === undefined) {
    const text = variant === "relaxed-simd"
      ? (shared ? RELAXED_SIMD_SHARED_WASM : RELAXED_SIMD_WASM)
      : (shared ? SIMD_SHARED_WASM : SIMD_WASM);
    module = new WebAssembly.Module(decodeBase64(text));
    modules.set(key, module);
  }
  return module;
}

let relaxedSupported: boolean | undefined;

/**
 * Whether this runtime validates the relaxed-simd build.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { supportsRelaxedSimd } from "./kernels.ts";
 * // V8 (Deno, Node 22+) and JavaScriptCore (Bun) both validate relaxed SIMD today.
 * assert.equal(typeof supportsRelaxedSimd(), "boolean");
 * ```
 */
export function supportsRelaxedSimd(): boolean {
  relaxedSupported ??= WebAssembly.validate(decodeBase64(RELAXED_SIMD_WASM));
  return relaxedSupported;
}

/**
 * The fastest variant this runtime runs: relaxed-simd where it validates.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bestKernelVariant, supportsRelaxedSimd } from "./kernels.ts";
 * assert.equal(bestKernelVariant(), supportsRelaxedSimd() ? "relaxed-simd" : "simd");
 * ```
 */
export function bestKernelVariant(): KernelVariant {
  return supportsRelaxedSimd() ? "relaxed-simd" : "simd";
}

/**
 * Instantiates the kernels on `memory` (imported as `env.memory`).
 * The memory must already be as large as the caller's arena: kernels never
 * grow it, and growing it would detach every typed-array view. A shared
 * memory gets the threads build of `variant`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { instantiateKernels } from "./kernels.ts";
 * const kernels = instantiateKernels(new WebAssembly.Memory({ initial: 1 }), "simd");
 * assert.equal(kernels.variant, "simd");
 * ```
 */
export function instantiateKernels(
  memory: WebAssembly.Memory,
  variant: KernelVariant = bestKernelVariant(),
): KernelInstance {
  const shared = isSharedMemory(memory);
  const instance = new WebAssembly.Instance(kernelModule(variant, shared), { env: { memory } });
  return { exports: instance.exports as unknown as Kernels, memory, variant, shared };
}

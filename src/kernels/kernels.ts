/**
 * Loads the Wasm SIMD kernel module (generated from `assembly/`) on a
 * caller-provided `WebAssembly.Memory`.
 *
 * Every kernel is a free function over byte offsets into that memory and
 * sizes: outputs first, then inputs, then sizes, then flags. Kernels never
 * allocate, never validate and never throw; callers (the model, which sizes
 * one arena up front) validate once. Parameter gradients accumulate (`+=`);
 * activation gradients overwrite. Size letters: B batch rows, F input width,
 * E experts, T tasks, D expert output width, H a layer width, K inner size.
 * The {@link Kernels} interface is generated with the module (`deno task
 * build`) from the AssemblyScript sources. GEMMs go through one call
 * convention, {@link GemmOp} and {@link runGemm}.
 *
 * The first {@link KERNEL_RESERVED_BYTES} bytes of the memory belong to the
 * kernels (the GEMM's scratch regions): the caller's data starts there.
 *
 * @example Multiply two 2x2 matrices
 * ```ts
 * import assert from "node:assert/strict";
 * import { instantiateKernels, KERNEL_RESERVED_BYTES as at } from "./kernels.ts";
 * const memory = new WebAssembly.Memory({ initial: 2 });
 * const { exports: k } = instantiateKernels(memory);
 * const f = new Float32Array(memory.buffer, at);
 * f.set([1, 2, 3, 4], 0); // A at byte `at`
 * f.set([5, 6, 7, 8], 4); // B at byte at + 16
 * k.gemm(at + 32, at, at + 16, 0, at + 64, 2, 2, 2, 2, 2, 2, false, false, false, false);
 * assert.deepEqual(Array.from(f.subarray(8, 12)), [19, 22, 43, 50]);
 * ```
 * @module
 */
import {
  type Kernels,
  RELAXED_SIMD_SHARED_TILES_WASM,
  RELAXED_SIMD_SHARED_WASM,
  RELAXED_SIMD_TILES_WASM,
  RELAXED_SIMD_WASM,
  SIMD_SHARED_TILES_WASM,
  SIMD_SHARED_WASM,
  SIMD_TILES_WASM,
  SIMD_WASM,
} from "./kernels_wasm.ts";
import { Activation } from "../core/activation.ts";

export { Activation };
export type { Kernels };

/**
 * Bytes at the start of a kernel memory that belong to the kernels: the
 * GEMM copies each 16 or 24 columns of op(B) into a fixed region there (one per
 * thread slot), so its micro-kernel loads B from constant addresses, which
 * V8 does not bounds-check (assembly/gemm.ts). Callers place their data
 * from this offset on; `ArenaLayout` starts there.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { KERNEL_RESERVED_BYTES } from "./kernels.ts";
 * assert.equal(KERNEL_RESERVED_BYTES, 65536);
 * ```
 */
export const KERNEL_RESERVED_BYTES = 65536;

/**
 * The two builds of the kernel module (each exists for an unshared and a
 * shared memory import; the loader picks by the memory it is given).
 */
export type KernelVariant = "relaxed-simd" | "simd";

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

/**
 * Base64 -> bytes: the runtime's `Uint8Array.fromBase64` where it exists
 * (Deno, Bun: ~0.1 ms for a build, where the `atob` loop below takes 4-6 ms
 * of a cold start, twice: validation and compilation), else an `atob` loop.
 */
function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const native = (Uint8Array as { fromBase64?: (text: string) => Uint8Array<ArrayBuffer> })
    .fromBase64;
  if (native !== undefined) return native(text);
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
  const relaxed = variant === "relaxed-simd";
  return compiled(
    `${variant}${shared ? "+shared" : ""}`,
    relaxed
      ? (shared ? RELAXED_SIMD_SHARED_WASM : RELAXED_SIMD_WASM)
      : (shared ? SIMD_SHARED_WASM : SIMD_WASM),
  );
}

/**
 * Whether this engine runs the GEMM's 2x24 tiles faster than its 2x16 ones
 * (`Kernels.setGemmWideTiles`): V8 (Deno, Node.js, Chromium) keeps the
 * tile's 15 vectors in registers; JavaScriptCore (Bun 1.4.5) spilled them
 * (28-33 vs 43 GFLOP/s on the MMoE shapes), and engines not measured keep
 * the 2x16 tile, the one every engine ran before.
 */
function engineKeepsWideTiles(): boolean {
  const agent = globalThis.navigator?.userAgent ?? "";
  return /\b(Deno|Node\.js|Chrome|Chromium)\//.test(agent) && !/\bBun\//.test(agent);
}

/**
 * The GEMM tiles module the kernel module of `variant` imports ("tiles"):
 * the generated 2x24 and 2x16 micro-kernels (scripts/gemm_tiles.ts), one copy per
 * thread slot in the shared build.
 */
function tilesModule(variant: KernelVariant, shared: boolean): WebAssembly.Module {
  const relaxed = variant === "relaxed-simd";
  return compiled(
    `${variant}${shared ? "+shared" : ""}+tiles`,
    relaxed
      ? (shared ? RELAXED_SIMD_SHARED_TILES_WASM : RELAXED_SIMD_TILES_WASM)
      : (shared ? SIMD_SHARED_TILES_WASM : SIMD_TILES_WASM),
  );
}

function compiled(key: string, text: string): WebAssembly.Module {
  let module = modules.get(key);
  if (module === undefined) {
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
  const env = { memory };
  const tiles = new WebAssembly.Instance(tilesModule(variant, shared), { env }).exports;
  const instance = new WebAssembly.Instance(kernelModule(variant, shared), { env, tiles });
  const exports = instance.exports as unknown as Kernels;
  exports.setGemmWideTiles(engineKeepsWideTiles());
  return { exports, memory, variant, shared };
}

/**
 * One GEMM by name: the arguments of `Kernels.gemm`. C[M,N] (+)= op(A)[M,K]
 * op(B)[K,N] (+ bias[N]) (then ReLU); op(A) = A^T (stored K x M) when
 * `transA`, op(B) = B^T (stored N x K) when `transB`. Every operand is a byte
 * offset with its row stride in floats as stored, so an op can address a
 * column block of a wider matrix (one expert's H columns of a [B, E*H]
 * stack) as well as a row range ({@link gemmRows}) or a column range
 * ({@link gemmColumns}). With `packed`, `b` holds op(B) already packed by
 * `Kernels.gemmPackB` (`ldb` and `transB` are then not read) and the op runs
 * `Kernels.gemmPacked`, bit-identical to `gemm`.
 */
export interface GemmOp {
  /** Output C, row stride `ldc`. */
  c: number;
  /** Row stride of C (at least N). */
  ldc: number;
  /** Left operand A. */
  a: number;
  /** Row stride of A as stored: K, or (transA) the row count of the whole A^T. */
  lda: number;
  /** op(A) = A^T. */
  transA: boolean;
  /** Right operand B. */
  b: number;
  /** Row stride of B as stored: N, or K when `transB`. */
  ldb: number;
  /** op(B) = B^T. */
  transB: boolean;
  /** bias[N] added after the product; 0 means none. */
  bias: number;
  /** Rows of op(A) and C. */
  M: number;
  /** Inner size. */
  K: number;
  /** Columns of op(B) and C. */
  N: number;
  /** C += instead of C =. */
  accumulate: boolean;
  /** ReLU after the bias (the fused Linear + ReLU epilogue). */
  relu: boolean;
  /** `b` is op(B) packed by `gemmPackB(b, B, K, N, transB)` (default false). */
  packed?: boolean;
}

/**
 * Runs `op` with `work` as scratch (`gemmWorkspaceBytes(K, N)` bytes): the
 * one place the positional `Kernels.gemm` call is written.
 *
 * @example C (2x2) = A (2x3) B (3x2), all row-major and packed
 * ```ts
 * import assert from "node:assert/strict";
 * import { instantiateKernels, KERNEL_RESERVED_BYTES as at, runGemm } from "./kernels.ts";
 * const memory = new WebAssembly.Memory({ initial: 2 });
 * const { exports: k } = instantiateKernels(memory);
 * const f = new Float32Array(memory.buffer, at);
 * f.set([1, 2, 3, 4, 5, 6], 0); // A at byte `at`
 * f.set([1, 0, 0, 1, 1, 1], 16); // B at byte at + 64
 * const op = { c: at + 128, ldc: 2, a: at, lda: 3, transA: false, b: at + 64, ldb: 2 };
 * runGemm(k, { ...op, transB: false, bias: 0, M: 2, K: 3, N: 2, accumulate: false, relu: false }, at + 256);
 * assert.deepEqual(Array.from(f.subarray(32, 36)), [4, 5, 10, 11]);
 * ```
 */
export function runGemm(k: Kernels, op: GemmOp, work: number): void {
  if (op.packed) {
    k.gemmPacked(
      op.c,
      op.a,
      op.b,
      op.bias,
      work,
      op.M,
      op.K,
      op.N,
      op.lda,
      op.ldc,
      op.transA,
      op.accumulate,
      op.relu,
    );
    return;
  }
  k.gemm(
    op.c,
    op.a,
    op.b,
    op.bias,
    work,
    op.M,
    op.K,
    op.N,
    op.lda,
    op.ldb,
    op.ldc,
    op.transA,
    op.transB,
    op.accumulate,
    op.relu,
  );
}

/**
 * Rows [r0, r0 + rows) of `op` as an op of their own. The kernel computes
 * each output element with the same instructions in the same order whichever
 * rows share a call, so running the row ranges of a split is bit-identical to
 * running `op` (the thread pool relies on it).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemmRows } from "./kernels.ts";
 * const op = {
 *   c: 1000, ldc: 8, a: 2000, lda: 5, transA: false, b: 3000, ldb: 8, transB: false,
 *   bias: 0, M: 10, K: 5, N: 8, accumulate: false, relu: false,
 * };
 * const tail = gemmRows(op, 6, 4);
 * assert.deepEqual([tail.c, tail.a, tail.M], [1000 + 4 * 6 * 8, 2000 + 4 * 6 * 5, 4]);
 * ```
 */
export function gemmRows(op: GemmOp, r0: number, rows: number): GemmOp {
  return {
    ...op,
    c: op.c + 4 * r0 * op.ldc,
    a: op.a + 4 * (op.transA ? r0 : r0 * op.lda),
    M: rows,
  };
}

/**
 * Columns [j0, j0 + columns) of `op` (of op(B), C and the bias) as an op of
 * their own: for a GEMM with few rows (a gate's weight gradient, M = E). Each
 * output element is the same chain over k as in `op`, so the column ranges
 * of a split equal `op` bit for bit. Not for a packed B (its panels
 * interleave k-blocks).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gemmColumns } from "./kernels.ts";
 * const op = {
 *   c: 1000, ldc: 8, a: 2000, lda: 5, transA: false, b: 3000, ldb: 5, transB: true,
 *   bias: 4000, M: 10, K: 5, N: 8, accumulate: false, relu: false,
 * };
 * const tail = gemmColumns(op, 6, 2);
 * assert.deepEqual([tail.c, tail.b, tail.bias, tail.N], [1000 + 4 * 6, 3000 + 4 * 6 * 5, 4024, 2]);
 * ```
 */
export function gemmColumns(op: GemmOp, j0: number, columns: number): GemmOp {
  if (op.packed) throw new RangeError("gemmColumns: a packed B cannot be split by columns");
  return {
    ...op,
    c: op.c + 4 * j0,
    b: op.b + 4 * (op.transB ? j0 * op.ldb : j0),
    bias: op.bias && op.bias + 4 * j0,
    N: columns,
  };
}

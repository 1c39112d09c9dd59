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
 * import { instantiateKernels } from "./kernels.ts";
 * const memory = new WebAssembly.Memory({ initial: 1 });
 * const { exports: k } = instantiateKernels(memory);
 * const f = new Float32Array(memory.buffer);
 * f.set([1, 2, 3, 4], 0); // A at byte 0
 * f.set([5, 6, 7, 8], 4); // B at byte 16
 * k.gemm(32, 0, 16, 0, 64, 2, 2, 2, false, false, false, false);
 * console.log(Array.from(f.subarray(8, 12))); // [19, 22, 43, 50]
 * ```
 * @module
 */
import { RELAXED_SIMD_WASM, SIMD_WASM } from "./wasm/kernels_wasm.ts";

/** The two builds of the kernel module. */
export type KernelVariant = "relaxed-simd" | "simd";

/** Activation codes shared by the activation kernels and the config. */
export const Activation = {
  /** f(x) = x */
  identity: 0,
  /** nn.ReLU */
  relu: 1,
  /** nn.Sigmoid */
  sigmoid: 2,
  /** nn.Tanh */
  tanh: 3,
  /** nn.LeakyReLU(negative_slope) */
  leakyRelu: 4,
  /** nn.GELU (exact, erf form, PyTorch default) */
  gelu: 5,
  /** nn.SiLU */
  silu: 6,
} as const;

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
    transA: boolean,
    transB: boolean,
    accumulate: boolean,
    relu: boolean,
  ): void;
  /** Bytes of scratch `gemm` needs for inner size K and output width N. */
  gemmWorkspaceBytes(K: number, N: number): number;
}

/** A kernel module instantiated on one memory. */
export interface KernelInstance {
  /** The kernel functions. */
  readonly exports: Kernels;
  /** The memory every pointer refers to. */
  readonly memory: WebAssembly.Memory;
  /** Which build runs. */
  readonly variant: KernelVariant;
}

function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const modules = new Map<KernelVariant, WebAssembly.Module>();

/**
 * The compiled module of one variant (compiled once per process, synchronously).
 *
 * @example
 * ```ts
 * import { kernelModule } from "./kernels.ts";
 * const module = kernelModule("simd");
 * console.log(WebAssembly.Module.exports(module).some((e) => e.name === "gemm")); // true
 * ```
 */
export function kernelModule(variant: KernelVariant): WebAssembly.Module {
  let module = modules.get(variant);
  if (module === undefined) {
    const bytes = decodeBase64(variant === "relaxed-simd" ? RELAXED_SIMD_WASM : SIMD_WASM);
    module = new WebAssembly.Module(bytes);
    modules.set(variant, module);
  }
  return module;
}

let relaxedSupported: boolean | undefined;

/**
 * Whether this runtime validates the relaxed-simd build.
 *
 * @example
 * ```ts
 * import { supportsRelaxedSimd } from "./kernels.ts";
 * console.log(typeof supportsRelaxedSimd()); // "boolean"
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
 * import { bestKernelVariant } from "./kernels.ts";
 * console.log(["relaxed-simd", "simd"].includes(bestKernelVariant())); // true
 * ```
 */
export function bestKernelVariant(): KernelVariant {
  return supportsRelaxedSimd() ? "relaxed-simd" : "simd";
}

/**
 * Instantiates the kernels on `memory` (imported as `env.memory`).
 * The memory must already be as large as the caller's arena: kernels never
 * grow it, and growing it would detach every typed-array view.
 *
 * @example
 * ```ts
 * import { instantiateKernels } from "./kernels.ts";
 * const kernels = instantiateKernels(new WebAssembly.Memory({ initial: 1 }), "simd");
 * console.log(kernels.variant); // "simd"
 * ```
 */
export function instantiateKernels(
  memory: WebAssembly.Memory,
  variant: KernelVariant = bestKernelVariant(),
): KernelInstance {
  const instance = new WebAssembly.Instance(kernelModule(variant), { env: { memory } });
  return { exports: instance.exports as unknown as Kernels, memory, variant };
}

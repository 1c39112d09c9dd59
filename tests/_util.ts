// Test helpers: a bump-allocated test memory per kernel variant, a seeded
// RNG, closeness assertions and central finite differences.
import assert from "node:assert/strict";
import {
  instantiateKernels,
  KERNEL_RESERVED_BYTES,
  type KernelInstance,
  type Kernels,
  type KernelVariant,
  supportsRelaxedSimd,
} from "../src/kernels/kernels.ts";
import { mulberry32 } from "../src/core/random.ts";

/** Every variant this runtime can run (both where relaxed SIMD validates). */
export const VARIANTS: KernelVariant[] = supportsRelaxedSimd() ? ["relaxed-simd", "simd"] : [
  "simd",
];

/** A float or int buffer in the test memory. */
export interface Buffer<T extends Float32Array | Int32Array> {
  /** Byte offset in the memory. */
  ptr: number;
  /** View over the buffer. */
  view: T;
}

/** A kernel instance on a fixed-size memory with a bump allocator. */
export class TestMemory {
  readonly instance: KernelInstance;
  readonly k: Kernels;
  private next = KERNEL_RESERVED_BYTES;

  /** `shared`: a shared memory, which gets the threads build of `variant`. */
  constructor(variant: KernelVariant, megabytes = 64, shared = false) {
    const pages = megabytes * 16;
    const memory = new WebAssembly.Memory({
      initial: pages,
      maximum: shared ? pages : undefined,
      shared,
    });
    this.instance = instantiateKernels(memory, variant);
    this.k = this.instance.exports;
  }

  /** Allocates `n` f32 (64-byte aligned), filled from `data` if given. */
  f32(n: number, data?: ArrayLike<number>): Buffer<Float32Array> {
    const ptr = this.alloc(n * 4);
    const view = new Float32Array(this.instance.memory.buffer, ptr, n);
    if (data) view.set(data);
    return { ptr, view };
  }

  /** Allocates `n` i32 (64-byte aligned), filled from `data` if given. */
  i32(n: number, data?: ArrayLike<number>): Buffer<Int32Array> {
    const ptr = this.alloc(n * 4);
    const view = new Int32Array(this.instance.memory.buffer, ptr, n);
    if (data) view.set(data);
    return { ptr, view };
  }

  /** Allocates raw bytes (64-byte aligned) and returns the offset. */
  alloc(bytes: number): number {
    const ptr = this.next;
    this.next = ptr + Math.ceil(Math.max(bytes, 1) / 64) * 64 + 64; // + a guard gap
    if (this.next > this.instance.memory.buffer.byteLength) {
      throw new RangeError("test memory exhausted");
    }
    return ptr;
  }
}

/** mulberry32: a small seeded PRNG returning floats in [0, 1). */
export const rng: (seed: number) => () => number = mulberry32;

/** `n` uniform values in [lo, hi). */
export function randomArray(n: number, next: () => number, lo = -1, hi = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * next();
  return out;
}

/**
 * Asserts |actual - expected| <= atol + rtol * |expected| elementwise, naming
 * the first index that fails.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  label: string,
  { rtol = 1e-5, atol = 1e-6 }: { rtol?: number; atol?: number } = {},
): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    const ok = Math.abs(a - e) <= atol + rtol * Math.abs(e) || (Number.isNaN(a) && Number.isNaN(e));
    if (!ok) assert.fail(`${label}: index ${i}: got ${a}, expected ${e}`);
  }
}

/**
 * Central finite differences of a scalar f64 function of `x` at every index:
 * (f(x + h e_i) - f(x - h e_i)) / 2h.
 */
export function finiteDifferences(
  x: Float64Array,
  f: (x: Float64Array) => number,
  h = 1e-6,
): Float64Array {
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const saved = x[i];
    x[i] = saved + h;
    const plus = f(x);
    x[i] = saved - h;
    const minus = f(x);
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

/**
 * The arena: one `WebAssembly.Memory` sized once, cut into named regions by a
 * size table. Every parameter, gradient, optimizer state, activation and
 * scratch buffer gets a fixed byte offset before the first step, so nothing
 * allocates or grows in the training loop (growth would detach every
 * typed-array view).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ArenaLayout } from "./arena.ts";
 * const layout = new ArenaLayout();
 * const a = layout.floats(3);
 * const b = layout.floats(5);
 * assert.equal(a % 64, 0);
 * assert.ok(b >= a + 12);
 * assert.ok(layout.bytes >= b + 20);
 * ```
 * @module
 */
import { KERNEL_RESERVED_BYTES } from "./kernels.ts";

/** Alignment of every region: one cache line, a multiple of the 16-byte v128. */
export const ALIGN = 64;

/** Hands out aligned byte offsets; `bytes` is the total so far. */
export class ArenaLayout {
  private end: number;

  /**
   * Starts at `start` bytes: by default after the kernels' reserved bytes
   * ({@link KERNEL_RESERVED_BYTES}, the GEMM's scratch regions), so offset
   * 0 also stays unused as "null".
   */
  constructor(start = KERNEL_RESERVED_BYTES) {
    this.end = start;
  }

  /** Reserves `count` 4-byte elements (f32 or i32); returns the byte offset. */
  floats(count: number): number {
    return this.reserve(count * 4);
  }

  /** Reserves `bytes` bytes; returns the byte offset (64-byte aligned). */
  reserve(bytes: number): number {
    if (!Number.isFinite(bytes) || bytes < 0) throw new RangeError(`cannot reserve ${bytes} bytes`);
    const offset = this.end;
    this.end += Math.ceil(bytes / ALIGN) * ALIGN;
    return offset;
  }

  /** Total bytes reserved, including the unused first line. */
  get bytes(): number {
    return this.end;
  }
}

/** Largest memory a wasm32 module can address: 65536 pages of 64 KiB. */
export const MAX_WASM_BYTES = 65536 * 65536;

/** Options of {@link createArenaMemory}. */
export interface ArenaMemoryOptions {
  /**
   * A shared memory (SharedArrayBuffer-backed) that Workers can run the
   * kernels on. Default false. Its maximum is its own size (the threads
   * builds declare 65536 pages, and a provided maximum may be lower).
   */
  shared?: boolean;
}

/**
 * Creates a memory of at least `bytes` bytes (never grown afterwards).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createArenaMemory } from "./arena.ts";
 * assert.equal(createArenaMemory(100_000).buffer.byteLength, 2 * 65536);
 * const shared = createArenaMemory(100_000, { shared: true });
 * assert.ok(shared.buffer instanceof SharedArrayBuffer);
 * ```
 */
export function createArenaMemory(
  bytes: number,
  options: ArenaMemoryOptions = {},
): WebAssembly.Memory {
  if (bytes > MAX_WASM_BYTES) {
    throw new RangeError(
      `the model needs ${
        (bytes / 2 ** 30).toFixed(2)
      } GiB of arena, more than the 4 GiB wasm32 limit: ` +
        "lower the batch size or the embedding table sizes",
    );
  }
  const pages = Math.max(1, Math.ceil(bytes / 65536));
  return new WebAssembly.Memory({
    initial: pages,
    maximum: pages,
    shared: options.shared ?? false,
  });
}

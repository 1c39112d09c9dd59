/**
 * A pool of Workers that run row ranges of one GEMM on a shared arena.
 *
 * Every worker instantiates the threads build of the kernels on the SAME
 * shared `WebAssembly.Memory` and owns a scratch region (`work`) of the
 * arena. A GEMM C[M,N] = op(A) op(B) is cut into row ranges in multiples of
 * {@link ROW_GRAIN} (a multiple of both tile heights, 6 and 4); the main
 * thread computes the first range and each ready worker one of the others.
 * The kernel computes every output row with the same instructions in the
 * same k order whichever rows share a call ({@link gemmRows}), so results are
 * bit-identical for any thread count.
 *
 * Jobs travel through a small shared Int32Array control block, one 64-byte
 * slot per worker: the main thread writes the arguments, bumps the slot's
 * generation and `Atomics.notify`s; the worker sleeps in `Atomics.wait`
 * (no spinning), runs its range, stores the generation as done and
 * notifies; the main thread `Atomics.wait`s for it after its own range.
 * Workers that have not finished starting are skipped (the main thread
 * takes their rows), so the first steps never wait for a worker to boot.
 *
 * The workers are `node:worker_threads` Workers (Deno and Bun both have
 * them, imported on first use) and are `unref`'d: a program that forgets
 * the model's `close()` still exits. Web Workers could not be (Deno's have
 * no `unref`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultThreads, threadsSupported } from "./threads.ts";
 * assert.ok(defaultThreads() >= 1);
 * assert.equal(typeof threadsSupported(), "boolean");
 * ```
 * @module
 */
import type { Worker as NodeWorker } from "node:worker_threads";
import { type GemmOp, gemmRows, type Kernels, type KernelVariant, runGemm } from "./kernels.ts";

/** Row ranges are multiples of this: both tile heights (6 and 4) divide it. */
export const ROW_GRAIN = 12;

/**
 * GEMMs with fewer multiply-adds (M*K*N) than this run on the main thread:
 * waking a worker and waiting for it costs ~10-30 us, a 2^19 MAC GEMM
 * ~15 us at 65 GFLOP/s.
 */
export const SPLIT_MIN_MACS = 1 << 19;

/** Default thread cap: the pool's gains flatten past it on the MMoE shapes. */
export const MAX_DEFAULT_THREADS = 8;

/** Int32 fields of one worker's control slot (16 ints = one cache line). */
const SLOT = 16;
const GEN = 0;
const DONE = 1;
const READY = 2;
const ARGS = 3; // c, a, b, bias, work, M, K, N, lda, ldb, ldc, flags
const STOP = -1;

let supported: boolean | undefined;

/**
 * Whether this runtime can run the pool: SharedArrayBuffer, shared
 * `WebAssembly.Memory`, `Worker` and a blocking `Atomics.wait` on this thread
 * (browsers' main threads and some edge isolates lack one of them).
 */
export function threadsSupported(): boolean {
  if (supported !== undefined) return supported;
  supported = false;
  try {
    if (typeof SharedArrayBuffer === "undefined" || typeof Worker === "undefined") return false;
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    if (!(memory.buffer instanceof SharedArrayBuffer)) return false;
    const probe = new Int32Array(new SharedArrayBuffer(4));
    supported = Atomics.wait(probe, 0, 1, 0) === "not-equal";
  } catch {
    supported = false;
  }
  return supported;
}

/**
 * Default thread count: `navigator.hardwareConcurrency` capped at
 * {@link MAX_DEFAULT_THREADS} where {@link threadsSupported}, else 1.
 */
export function defaultThreads(): number {
  if (!threadsSupported()) return 1;
  const cores = typeof navigator !== "undefined" ? navigator.hardwareConcurrency ?? 1 : 1;
  return Math.max(1, Math.min(MAX_DEFAULT_THREADS, Math.floor(cores)));
}

/** The message a worker gets once, at start. */
export interface GemmWorkerInit {
  /** The shared arena. */
  memory: WebAssembly.Memory;
  /** Kernel build (the worker instantiates its threads build). */
  variant: KernelVariant;
  /** The control block (SharedArrayBuffer of Int32). */
  control: SharedArrayBuffer;
  /** This worker's slot in the control block. */
  slot: number;
}

/**
 * `threads - 1` Workers plus the calling thread, splitting GEMM rows.
 * Workers start on the first GEMM large enough to split (a model that only
 * runs small GEMMs never starts one).
 */
export class GemmPool {
  /** Threads including the caller. */
  readonly threads: number;
  /** GEMMs split across the pool so far (for tests and benchmarks). */
  splits = 0;
  readonly #memory: WebAssembly.Memory;
  readonly #variant: KernelVariant;
  readonly #works: number[];
  readonly #control: Int32Array;
  #workers: NodeWorker[] = [];
  #generation = 0;
  #closed = false;
  #ready: Promise<void> | null = null;

  /**
   * `works` holds one scratch offset per worker (threads - 1 of them), each
   * large enough for every GEMM the caller runs.
   */
  constructor(memory: WebAssembly.Memory, variant: KernelVariant, works: number[]) {
    this.threads = works.length + 1;
    this.#memory = memory;
    this.#variant = variant;
    this.#works = works;
    this.#control = new Int32Array(new SharedArrayBuffer(Math.max(1, works.length) * SLOT * 4));
  }

  /** Starts the workers (once); resolves when every one has instantiated the kernels. */
  start(): Promise<void> {
    if (this.#ready) return this.#ready;
    if (this.#closed) return Promise.resolve();
    this.#ready = this.#spawn();
    return this.#ready;
  }

  async #spawn(): Promise<void> {
    let Worker: typeof NodeWorker;
    try {
      ({ Worker } = await import("node:worker_threads"));
    } catch {
      return; // no worker threads here: the caller computes every row
    }
    const started: Promise<void>[] = [];
    for (let slot = 0; slot < this.#works.length && !this.#closed; slot++) {
      let worker: NodeWorker;
      try {
        worker = new Worker(new URL("./gemm_worker.ts", import.meta.url));
      } catch {
        break; // no Workers here after all: the caller computes every row
      }
      started.push(
        new Promise<void>((resolve) => {
          // Referenced while starting (so awaiting ready() keeps the event loop
          // alive), unref'd once ready (so a forgotten close() cannot hang exit).
          worker.once("message", () => {
            worker.unref();
            resolve();
          });
          // A worker that fails never marks its slot ready: its rows stay on the caller.
          worker.once("error", () => resolve());
        }),
      );
      const init: GemmWorkerInit = {
        memory: this.#memory,
        variant: this.#variant,
        control: this.#control.buffer as SharedArrayBuffer,
        slot,
      };
      worker.postMessage(init);
      this.#workers.push(worker);
    }
    await Promise.all(started);
  }

  /**
   * Runs `op` with `work` as the caller's scratch, rows split across the pool
   * (small GEMMs, or a closed pool, run on the caller alone).
   */
  gemm(kernels: Kernels, op: GemmOp, work: number): void {
    const { M, K, N } = op;
    if (this.#closed || M * K * N < SPLIT_MIN_MACS || M < 2 * ROW_GRAIN) {
      runGemm(kernels, op, work);
      return;
    }
    if (this.#ready === null) this.start();
    const ctrl = this.#control;
    const ready: number[] = [];
    for (let slot = 0; slot < this.#workers.length; slot++) {
      if (Atomics.load(ctrl, slot * SLOT + READY) === 1) ready.push(slot);
    }
    const parts = Math.min(ready.length + 1, Math.floor(M / ROW_GRAIN));
    if (parts <= 1) {
      runGemm(kernels, op, work);
      return;
    }
    const chunk = Math.ceil(M / parts / ROW_GRAIN) * ROW_GRAIN;
    const generation = this.#generation = (this.#generation % 0x3fffffff) + 1;
    this.splits++;
    const used: number[] = [];
    for (let p = 1; p < parts; p++) {
      const r0 = p * chunk;
      const rows = Math.min(chunk, M - r0);
      if (rows <= 0) break;
      const slot = ready[p - 1];
      const base = slot * SLOT;
      writeJob(ctrl, base, gemmRows(op, r0, rows), this.#works[slot]);
      Atomics.store(ctrl, base + GEN, generation);
      Atomics.notify(ctrl, base + GEN);
      used.push(base);
    }
    runGemm(kernels, gemmRows(op, 0, Math.min(chunk, M)), work);
    for (const base of used) {
      for (;;) {
        const done = Atomics.load(ctrl, base + DONE);
        if (done === generation) break;
        Atomics.wait(ctrl, base + DONE, done);
      }
    }
  }

  /** Stops and terminates the workers; later GEMMs run on the caller. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const ctrl = this.#control;
    this.#workers.forEach((worker, slot) => {
      Atomics.store(ctrl, slot * SLOT + GEN, STOP);
      Atomics.notify(ctrl, slot * SLOT + GEN);
      worker.terminate();
    });
    this.#workers = [];
  }
}

/** Writes a job (an op and the worker's scratch) into a control slot's argument fields. */
function writeJob(ctrl: Int32Array, base: number, op: GemmOp, work: number): void {
  const flags = (op.transA ? 1 : 0) | (op.transB ? 2 : 0) | (op.accumulate ? 4 : 0) |
    (op.relu ? 8 : 0);
  ctrl.set(
    [op.c, op.a, op.b, op.bias, work, op.M, op.K, op.N, op.lda, op.ldb, op.ldc, flags],
    base + ARGS,
  );
}

/** The job {@link writeJob} left in a control slot. Offsets are below 4 GiB: read as u32. */
function readJob(ctrl: Int32Array, base: number): { op: GemmOp; work: number } {
  const at = (i: number) => ctrl[base + ARGS + i];
  const flags = at(11);
  return {
    op: {
      c: at(0) >>> 0,
      a: at(1) >>> 0,
      b: at(2) >>> 0,
      bias: at(3) >>> 0,
      M: at(5),
      K: at(6),
      N: at(7),
      lda: at(8),
      ldb: at(9),
      ldc: at(10),
      transA: (flags & 1) !== 0,
      transB: (flags & 2) !== 0,
      accumulate: (flags & 4) !== 0,
      relu: (flags & 8) !== 0,
    },
    work: at(4) >>> 0,
  };
}

/**
 * The worker side: instantiate the kernels on the shared memory, mark the
 * slot ready, then run jobs until told to stop. Runs inside gemm_worker.ts.
 */
export function runGemmWorker(
  init: GemmWorkerInit,
  instantiate: (memory: WebAssembly.Memory, variant: KernelVariant) => Kernels,
  ready: () => void,
): void {
  const k = instantiate(init.memory, init.variant);
  const ctrl = new Int32Array(init.control);
  const base = init.slot * SLOT;
  Atomics.store(ctrl, base + READY, 1);
  ready();
  let seen = 0;
  for (;;) {
    Atomics.wait(ctrl, base + GEN, seen);
    const generation = Atomics.load(ctrl, base + GEN);
    if (generation === STOP) return;
    if (generation === seen) continue;
    seen = generation;
    const { op, work } = readJob(ctrl, base);
    runGemm(k, op, work);
    Atomics.store(ctrl, base + DONE, generation);
    Atomics.notify(ctrl, base + DONE);
  }
}

/**
 * A pool of Workers that run kernel calls on a shared arena, each kernel
 * call split into ranges (rows, columns, elements, tables) that threads own.
 *
 * Every worker instantiates the threads build of the kernels on the SAME
 * shared `WebAssembly.Memory` and owns a scratch region (`work`) of the
 * arena. The caller describes one parallel step as {@link Task}s, one per
 * thread: functions that make kernel calls on the `Kernels` they are given.
 * Task 0 runs on the calling thread with the real kernels; every other task
 * runs against a recorder with the same methods, which writes each call
 * (kernel index and arguments) into that worker's job area of a shared
 * control block; the worker replays the calls on its own instance. A split
 * gives each output element to exactly one task and the kernels compute
 * every element with the same instructions in the same order whatever range
 * a call covers (`gemmRows`, `gemmColumns`, the kernels' own docs), so
 * results are bit-identical for any thread count.
 *
 * Handshake, per worker: the caller writes the job, stores a new generation
 * and notifies; the worker runs the calls, stores the generation as done and
 * notifies; the caller, after its own task, waits for every done. Both sides
 * spin for a short while ({@link SPIN_MS}) before they sleep in
 * `Atomics.wait`: a training step runs a few dozen parallel steps in a row,
 * and waking a sleeping thread costs 20-60 µs here against ~1 µs for a
 * spinning one. The generation and done words of a worker sit on separate
 * cache lines, so the caller's store does not bounce the line the worker
 * writes. A worker that has not finished starting has its task run by the
 * caller (same results), so the first steps never wait for a worker to boot.
 *
 * The workers are `node:worker_threads` Workers (Deno and Bun both have
 * them, imported on first use), started on the first split step, and
 * `unref`'d once ready: a program that forgets `close()` still exits, and
 * the model that owns a pool closes it when it is garbage-collected.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultThreads, splitRange, threadsSupported } from "./threads.ts";
 * assert.ok(defaultThreads() >= 1);
 * assert.equal(typeof threadsSupported(), "boolean");
 * assert.deepEqual(splitRange(100, 2, 16, 1), [[0, 64], [64, 36]]);
 * ```
 * @module
 */
import type { Worker as NodeWorker } from "node:worker_threads";
import {
  gemmColumns,
  type GemmOp,
  gemmRows,
  type Kernels,
  type KernelVariant,
  runGemm,
} from "./kernels.ts";

/** Default thread cap: the pool's gains flatten past it on the MMoE shapes. */
export const MAX_DEFAULT_THREADS = 8;

/**
 * How long a thread spins on the handshake word before it sleeps in
 * `Atomics.wait`: longer than the gap between two parallel steps of a
 * training step (the serial kernels between them take < 0.5 ms), short
 * enough that an idle pool stops using a core at once.
 */
export const SPIN_MS = 0.2;

/** What one thread runs of a parallel step: kernel calls on `k`, with `work` as its GEMM scratch. */
export type Task = (k: Kernels, work: number) => void;

/** Int32 words of one worker's handshake: generation and ready, then done one cache line on. */
const SLOT_INTS = 32;
const GEN = 0;
const READY = 1;
const DONE = 16;
/** The kernel whose call threw in a worker (-1: none), beside `DONE`. */
const FAILED = 17;
const STOP = -1;
/** Float64 words of one worker's job area: calls as [kernel, argc, ...args] after a count. */
const JOB_FLOATS = 1 << 15;

let supported: boolean | undefined;

/**
 * Whether this runtime can run the pool: SharedArrayBuffer, shared
 * `WebAssembly.Memory`, `Worker` and a blocking `Atomics.wait` on this thread
 * (browsers' main threads and some edge isolates lack one of them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { threadsSupported } from "./threads.ts";
 * assert.equal(typeof threadsSupported(), "boolean");
 * ```
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
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { defaultThreads } from "./threads.ts";
 * assert.ok(defaultThreads() >= 1);
 * ```
 */
export function defaultThreads(): number {
  if (!threadsSupported()) return 1;
  const cores = typeof navigator !== "undefined" ? navigator.hardwareConcurrency ?? 1 : 1;
  return Math.max(1, Math.min(MAX_DEFAULT_THREADS, Math.floor(cores)));
}

/**
 * [start, count] ranges covering [0, total) in at most `parts` pieces: every
 * start a multiple of `grain` (ranges of one cache line, one tile height),
 * each piece at least `minimum` items, so a small call is not split into
 * pieces that cost more to hand out than to compute. Fewer than `parts`
 * pieces when the total is small; one piece when `parts` is 1.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitRange } from "./threads.ts";
 * assert.deepEqual(splitRange(1000, 2, 12, 1), [[0, 504], [504, 496]]);
 * assert.deepEqual(splitRange(1000, 4, 16, 400), [[0, 512], [512, 488]]);
 * assert.deepEqual(splitRange(10, 8, 16, 1), [[0, 10]]);
 * ```
 */
export function splitRange(
  total: number,
  parts: number,
  grain: number,
  minimum: number,
): [number, number][] {
  const most = Math.max(1, Math.min(parts, Math.floor(total / Math.max(minimum, grain, 1))));
  const chunk = Math.ceil(total / most / grain) * grain;
  const ranges: [number, number][] = [];
  for (let start = 0; start < total || ranges.length === 0; start += chunk) {
    ranges.push([start, Math.min(chunk, total - start)]);
  }
  return ranges;
}

/**
 * Items of the given costs shared out over at most `threads` parts, largest
 * first to the part with the least cost so far (indices, in input order
 * within a part): as many parts as the total cost holds `minimum`s, so
 * cheap work stays on one thread.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { shareOut } from "./threads.ts";
 * assert.deepEqual(shareOut([5, 1, 4, 2], 2, 1), [[0, 1], [2, 3]]);
 * assert.deepEqual(shareOut([5, 1, 4, 2], 2, 100), [[0, 1, 2, 3]]);
 * ```
 */
export function shareOut(costs: readonly number[], threads: number, minimum: number): number[][] {
  const total = costs.reduce((sum, cost) => sum + cost, 0);
  const parts = Math.max(1, Math.min(threads, Math.floor(total / Math.max(minimum, 1e-9))));
  const lists: number[][] = Array.from({ length: parts }, () => []);
  const load = new Array(parts).fill(0);
  const order = costs.map((_, i) => i).sort((a, b) => costs[b] - costs[a] || a - b);
  for (const i of order) {
    const t = load.indexOf(Math.min(...load));
    lists[t].push(i);
    load[t] += costs[i];
  }
  for (const list of lists) list.sort((a, b) => a - b);
  return lists;
}

/**
 * Row ranges of a GEMM are multiples of this, a multiple of the tile height
 * (a row pair) and of a cache line of rows: only the last range of a split
 * has a partial tile.
 */
export const GEMM_ROW_GRAIN = 20;

/** Column ranges of a GEMM are whole 8-wide panels, two of them (one cache line of C). */
export const GEMM_COLUMN_GRAIN = 16;

/**
 * A GEMM with fewer multiply-adds (M*K*N) than this is not split: handing a
 * range to a spinning worker and waiting for it costs a few µs, a 2^17 MAC
 * GEMM ~6 µs at 45 GFLOP/s.
 */
export const GEMM_SPLIT_MIN_MACS = 1 << 17;

/**
 * The GEMMs of one parallel step split over `threads` threads: per thread
 * the ops (or row or column ranges of ops) it computes. An op is split by
 * rows of C (M) when it has enough rows, else by columns of C (N, not for
 * pre-packed B, whose panels interleave k-blocks), else it goes whole to the
 * thread with the least work so far. Every output element goes to exactly
 * one thread, computed as the whole op computes it. Ops that together have
 * fewer multiply-adds than {@link GEMM_SPLIT_MIN_MACS} stay on thread 0.
 *
 * @example Two threads share the rows of one op
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitGemms } from "./threads.ts";
 * const op = {
 *   c: 1000, ldc: 64, a: 9000, lda: 256, transA: false, b: 70000, ldb: 64, transB: false,
 *   bias: 0, M: 1024, K: 256, N: 64, accumulate: false, relu: false,
 * };
 * const [first, second] = splitGemms([op], 2);
 * assert.deepEqual([first[0].M, second[0].M], [520, 504]);
 * ```
 */
export function splitGemms(ops: readonly GemmOp[], threads: number): GemmOp[][] {
  const parts: GemmOp[][] = Array.from({ length: threads }, () => []);
  const total = ops.reduce((sum, op) => sum + op.M * op.K * op.N, 0);
  const used = Math.max(1, Math.min(threads, Math.floor(total / GEMM_SPLIT_MIN_MACS)));
  const load = new Array(used).fill(0);
  for (const op of ops) {
    const macs = op.M * op.K * op.N;
    const pieces = macs < GEMM_SPLIT_MIN_MACS ? 1 : used;
    const rows = splitRange(op.M, pieces, GEMM_ROW_GRAIN, 1);
    const columns = op.packed ? [] : splitRange(op.N, pieces, GEMM_COLUMN_GRAIN, 1);
    if (rows.length > 1 && rows.length >= columns.length) {
      rows.forEach(([r0, count], t) => {
        parts[t].push(gemmRows(op, r0, count));
        load[t] += count * op.K * op.N;
      });
    } else if (columns.length > 1) {
      columns.forEach(([j0, count], t) => {
        parts[t].push(gemmColumns(op, j0, count));
        load[t] += op.M * op.K * count;
      });
    } else {
      const t = load.indexOf(Math.min(...load));
      parts[t].push(op);
      load[t] += macs;
    }
  }
  return parts;
}

/** The message a worker gets once, at start. */
export interface KernelWorkerInit {
  /** The shared arena. */
  memory: WebAssembly.Memory;
  /** Kernel build (the worker instantiates its threads build). */
  variant: KernelVariant;
  /** The control block: handshake words, then job areas (SharedArrayBuffer). */
  control: SharedArrayBuffer;
  /** This worker's slot in the control block. */
  slot: number;
  /** Slots in the control block (where the job areas start). */
  slots: number;
  /** Kernel names, indexed as the recorded calls index them. */
  kernels: string[];
}

/** Byte offset of the job areas in a control block of `slots` workers. */
const jobsAt = (slots: number) => slots * SLOT_INTS * 4;

/**
 * Waits until `ctrl[index]` differs from `seen` and returns it: spins for
 * {@link SPIN_MS}, then sleeps in `Atomics.wait`.
 */
function waitChange(ctrl: Int32Array, index: number, seen: number): number {
  let value = Atomics.load(ctrl, index);
  if (value !== seen) return value;
  const until = performance.now() + SPIN_MS;
  for (let i = 1;; i++) {
    value = Atomics.load(ctrl, index);
    if (value !== seen) return value;
    if ((i & 1023) === 0 && performance.now() > until) break;
  }
  for (;;) {
    Atomics.wait(ctrl, index, seen);
    value = Atomics.load(ctrl, index);
    if (value !== seen) return value;
  }
}

/**
 * A `Kernels`-shaped object whose methods append their calls to a job area
 * (`[count, (kernel, argc, ...args)*]`, booleans as 0/1) instead of running.
 */
class Recorder {
  readonly kernels: Kernels;
  #job: Float64Array;
  #at = 1;

  constructor(job: Float64Array, names: readonly string[]) {
    this.#job = job;
    const methods: Record<string, (...args: (number | boolean)[]) => void> = {};
    names.forEach((name, id) => {
      methods[name] = (...args) => this.#record(id, args);
    });
    this.kernels = methods as unknown as Kernels;
  }

  #record(id: number, args: (number | boolean)[]): void {
    const job = this.#job;
    if (this.#at + 2 + args.length > job.length) {
      throw new RangeError(`a pool job holds ${job.length} values: split the parallel step`);
    }
    job[this.#at++] = id;
    job[this.#at++] = args.length;
    for (const arg of args) job[this.#at++] = +arg;
    job[0]++;
  }

  /** Starts an empty job. */
  reset(): void {
    this.#job[0] = 0;
    this.#at = 1;
  }
}

/**
 * `threads - 1` Workers plus the calling thread, running {@link Task}s.
 * Workers start on the first step with more than one task (a model that
 * never splits never starts one).
 */
export class KernelPool {
  /** Threads including the caller. */
  readonly threads: number;
  /** Parallel steps run with at least one worker so far (for tests and benchmarks). */
  splits = 0;
  readonly #memory: WebAssembly.Memory;
  readonly #variant: KernelVariant;
  readonly #works: number[];
  readonly #names: string[];
  readonly #control: Int32Array;
  readonly #recorders: Recorder[];
  #workers: NodeWorker[] = [];
  #generation = 0;
  #closed = false;
  #ready: Promise<void> | null = null;
  #settle: () => void = () => {};

  /**
   * `works` holds one scratch offset per thread (the caller's first), each
   * large enough for every GEMM the tasks run; `kernels` is any instance of
   * the module (its exports name the kernels the workers can run).
   */
  constructor(
    memory: WebAssembly.Memory,
    variant: KernelVariant,
    works: number[],
    kernels: Kernels,
  ) {
    this.threads = works.length;
    this.#memory = memory;
    this.#variant = variant;
    this.#works = works;
    this.#names = Object.keys(kernels).filter((name) =>
      typeof (kernels as unknown as Record<string, unknown>)[name] === "function"
    );
    const slots = Math.max(1, works.length - 1);
    const control = new SharedArrayBuffer(jobsAt(slots) + slots * JOB_FLOATS * 8);
    this.#control = new Int32Array(control);
    this.#recorders = Array.from(
      { length: works.length - 1 },
      (_, slot) =>
        new Recorder(
          new Float64Array(control, jobsAt(slots) + slot * JOB_FLOATS * 8, JOB_FLOATS),
          this.#names,
        ),
    );
  }

  /** Whether {@link KernelPool.close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Starts the workers (once); resolves when every one has instantiated the
   * kernels, failed, or the pool was closed.
   */
  start(): Promise<void> {
    if (this.#ready) return this.#ready;
    if (this.#closed || this.threads === 1) return Promise.resolve();
    this.#ready = new Promise<void>((resolve) => {
      this.#settle = resolve;
      this.#spawn().then(resolve, resolve);
    });
    return this.#ready;
  }

  async #spawn(): Promise<void> {
    let Worker: typeof NodeWorker;
    try {
      ({ Worker } = await import("node:worker_threads"));
    } catch {
      return; // no worker threads here: the caller runs every task
    }
    const slots = Math.max(1, this.threads - 1);
    const started: Promise<void>[] = [];
    for (let slot = 0; slot < this.threads - 1 && !this.#closed; slot++) {
      let worker: NodeWorker;
      try {
        worker = new Worker(new URL("./kernel_worker.ts", import.meta.url));
      } catch {
        break; // no Workers here after all: the caller runs every task
      }
      started.push(
        new Promise<void>((resolve) => {
          // Referenced while starting (so awaiting start() keeps the event loop
          // alive), unref'd once ready (so a forgotten close() cannot hang exit).
          worker.once("message", () => {
            worker.unref();
            resolve();
          });
          // A worker that fails never marks its slot ready: the caller runs its tasks.
          worker.once("error", () => resolve());
          worker.once("exit", () => resolve());
        }),
      );
      const init: KernelWorkerInit = {
        memory: this.#memory,
        variant: this.#variant,
        control: this.#control.buffer as SharedArrayBuffer,
        slot,
        slots,
        kernels: this.#names,
      };
      worker.postMessage(init);
      this.#workers.push(worker);
    }
    await Promise.all(started);
  }

  /**
   * Runs `tasks` (at most {@link KernelPool.threads}): task 0 on this thread
   * with `kernels` and the caller's scratch, task i on worker i - 1 when it
   * is ready, else here too. Returns when every task is done. Throws an
   * `Error` naming the kernel if a worker's call threw (a kernel never throws
   * on valid offsets: that is a bug).
   */
  run(kernels: Kernels, tasks: readonly Task[]): void {
    if (tasks.length > this.threads) {
      throw new RangeError(`${tasks.length} tasks for a pool of ${this.threads} threads`);
    }
    const ctrl = this.#control;
    const posted: number[] = [];
    if (tasks.length > 1 && !this.#closed) {
      if (this.#ready === null) this.start();
      const generation = this.#generation = (this.#generation % 0x3fffffff) + 1;
      for (let t = 1; t < tasks.length; t++) {
        const base = (t - 1) * SLOT_INTS;
        if (Atomics.load(ctrl, base + READY) !== 1) continue;
        const recorder = this.#recorders[t - 1];
        recorder.reset();
        tasks[t](recorder.kernels, this.#works[t]);
        Atomics.store(ctrl, base + GEN, generation);
        Atomics.notify(ctrl, base + GEN, 1);
        posted.push(t);
      }
      if (posted.length > 0) this.splits++;
    }
    tasks[0](kernels, this.#works[0]);
    for (let t = 1; t < tasks.length; t++) {
      if (!posted.includes(t)) tasks[t](kernels, this.#works[t]);
    }
    for (const t of posted) {
      const base = (t - 1) * SLOT_INTS;
      this.#awaitDone(base);
      const failed = Atomics.load(ctrl, base + FAILED);
      if (failed >= 0) {
        Atomics.store(ctrl, base + FAILED, -1);
        throw new Error(`kernel pool: worker ${t} failed in kernel ${this.#names[failed]}`);
      }
    }
  }

  /** Waits until the worker at `base` reports the current generation done. */
  #awaitDone(base: number): void {
    const ctrl = this.#control;
    for (;;) {
      const done = Atomics.load(ctrl, base + DONE);
      if (done === this.#generation) return;
      waitChange(ctrl, base + DONE, done);
    }
  }

  /**
   * `ops` as one parallel step ({@link splitGemms}), each thread running its
   * share with its own scratch.
   */
  gemms(kernels: Kernels, ops: readonly GemmOp[]): void {
    const parts = splitGemms(ops, this.#closed ? 1 : this.threads).filter((p) => p.length > 0);
    this.run(
      kernels,
      parts.map((part) => (k: Kernels, work: number) => {
        for (const op of part) runGemm(k, op, work);
      }),
    );
  }

  /**
   * Stops and terminates the workers; later steps run every task on the
   * caller. Resolves a pending {@link KernelPool.start}. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const ctrl = this.#control;
    this.#workers.forEach((worker, slot) => {
      Atomics.store(ctrl, slot * SLOT_INTS + GEN, STOP);
      Atomics.notify(ctrl, slot * SLOT_INTS + GEN);
      worker.terminate();
    });
    this.#workers = [];
    this.#settle();
  }
}

/**
 * The worker side: instantiate the kernels on the shared memory, mark the
 * slot ready, then replay jobs until told to stop. Runs inside
 * kernel_worker.ts.
 */
export function runKernelWorker(
  init: KernelWorkerInit,
  instantiate: (memory: WebAssembly.Memory, variant: KernelVariant) => Kernels,
  ready: () => void,
): void {
  const k = instantiate(init.memory, init.variant) as unknown as Record<
    string,
    (...args: number[]) => unknown
  >;
  // Worker n runs the GEMM tiles on thread slot n + 1's scratch region (the
  // arena's owner is slot 0): see `Kernels.setThreadSlot`.
  k.setThreadSlot(init.slot + 1);
  const fns = init.kernels.map((name) => k[name]);
  const ctrl = new Int32Array(init.control);
  const job = new Float64Array(
    init.control,
    jobsAt(init.slots) + init.slot * JOB_FLOATS * 8,
    JOB_FLOATS,
  );
  const base = init.slot * SLOT_INTS;
  const argsByCount: number[][] = [];
  Atomics.store(ctrl, base + FAILED, -1);
  Atomics.store(ctrl, base + READY, 1);
  ready();
  let seen = 0;
  for (;;) {
    const generation = waitChange(ctrl, base + GEN, seen);
    if (generation === STOP) return;
    seen = generation;
    let at = 1;
    let id = -1;
    try {
      for (let call = 0, calls = job[0]; call < calls; call++) {
        id = job[at++];
        const argc = job[at++];
        const args = argsByCount[argc] ??= new Array(argc);
        for (let i = 0; i < argc; i++) args[i] = job[at++];
        fns[id](...args);
      }
    } catch {
      Atomics.store(ctrl, base + FAILED, id);
    }
    Atomics.store(ctrl, base + DONE, generation);
    Atomics.notify(ctrl, base + DONE);
  }
}

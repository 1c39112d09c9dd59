/**
 * Worker entry of the kernel pool (src/kernels/threads.ts), a
 * `node:worker_threads` Worker: receives the shared arena once, then replays
 * the kernel calls posted through the control block until the pool stops it
 * (and terminates it: Deno's `parentPort` has no `close()`, so the worker
 * never calls it).
 *
 * @module
 */
import { parentPort } from "node:worker_threads";
import { instantiateKernels } from "./kernels.ts";
import { type KernelWorkerInit, runKernelWorker } from "./threads.ts";

parentPort!.once("message", (init: KernelWorkerInit) => {
  runKernelWorker(
    init,
    (memory, variant) => instantiateKernels(memory, variant).exports,
    () => parentPort!.postMessage("ready"),
  );
});

/**
 * Worker entry of the GEMM pool (src/kernels/threads.ts), a `node:worker_threads`
 * Worker: receives the shared arena once, then runs row ranges of GEMMs
 * posted through the control block until the pool stops it.
 *
 * @module
 */
import { parentPort } from "node:worker_threads";
import { instantiateKernels } from "./kernels.ts";
import { type GemmWorkerInit, runGemmWorker } from "./threads.ts";

parentPort!.once("message", (init: GemmWorkerInit) => {
  runGemmWorker(
    init,
    (memory, variant) => instantiateKernels(memory, variant).exports,
    () => parentPort!.postMessage("ready"),
  );
  // Stopped: the pool terminates this worker next (Deno's parentPort has no close()).
});

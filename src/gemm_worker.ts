/**
 * Worker entry of the GEMM pool (src/threads.ts): receives the shared arena
 * once, then runs row ranges of GEMMs posted through the control block.
 *
 * @module
 */
import { instantiateKernels } from "./kernels.ts";
import { type GemmWorkerInit, runGemmWorker } from "./threads.ts";

/** The parts of the worker global scope used here. */
interface WorkerScope {
  onmessage: ((event: MessageEvent<GemmWorkerInit>) => void) | null;
  postMessage(message: unknown): void;
  close(): void;
}

const scope = globalThis as unknown as WorkerScope;
scope.onmessage = (event) => {
  scope.onmessage = null;
  runGemmWorker(
    event.data,
    (memory, variant) => instantiateKernels(memory, variant).exports,
    () => scope.postMessage("ready"),
  );
  scope.close();
};

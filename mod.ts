/**
 * denorec: TorchEasyRec's MMoE multi-task recommendation model for Deno, Bun
 * and the edge, with its math in WebAssembly SIMD kernels compiled from
 * AssemblyScript.
 *
 * - {@link resolveConfig}: a tzrec pipeline config (typed object) with tzrec's
 *   defaults applied and validated;
 * - {@link MMoEModel}: the model on one Wasm arena, `trainStep`, `evalStep`,
 *   `outputs` (`logits_<t>`, `probs_<t>`);
 * - {@link train} and {@link evaluate}: loops with tzrec's loss and metric
 *   names (`auc_ctr`, binned exactly like torchmetrics);
 * - {@link modelCheckpoint} / {@link loadCheckpoint}: safetensors checkpoints
 *   with tzrec state_dict names;
 * - {@link Predictor}: serving from bytes (config text + checkpoint), raw
 *   records in, `probs_<t>` out, with errors that name the row and column;
 *   {@link parsePipelineConfig} and {@link FeatureEncoder} underneath;
 * - {@link instantiateKernels}: the kernels themselves (GEMM NN/NT/TN with a
 *   fused bias + ReLU epilogue, activations, softmax gating fused with the
 *   expert mixture, sigmoid + BCE, embedding gather/scatter, optimizers).
 *
 * @example Multiply a 2x3 matrix by a 3x2 matrix
 * ```ts
 * import assert from "node:assert/strict";
 * import { instantiateKernels } from "@denorec/mmoe";
 *
 * const memory = new WebAssembly.Memory({ initial: 1 });
 * const { exports: k } = instantiateKernels(memory);
 * const f32 = new Float32Array(memory.buffer);
 * const a = 0, b = 64, c = 128, work = 192; // byte offsets
 * f32.set([1, 2, 3, 4, 5, 6], a / 4);
 * f32.set([1, 0, 0, 1, 1, 1], b / 4);
 * k.gemm(c, a, b, 0, work, 2, 3, 2, 3, 2, 2, false, false, false, false);
 * assert.deepEqual(Array.from(f32.subarray(c / 4, c / 4 + 4)), [4, 5, 10, 11]);
 * ```
 * @module
 */
export * from "./src/kernels/kernels.ts";
export * from "./src/config/config.ts";
export * from "./src/model/mmoe.ts";
export * from "./src/train/trainer.ts";
export * from "./src/train/metrics.ts";
export * from "./src/io/checkpoint.ts";
export * from "./src/train/report.ts";
export * from "./src/core/records.ts";
export * from "./src/data/features.ts";
export * from "./src/config/config_text.ts";
export * from "./src/serve/inference.ts";
export * from "./src/serve/load.ts";
export * from "./src/io/serving.ts";
export * from "./src/io/onnx.ts";
export { ArenaLayout, type ArenaMemoryOptions, createArenaMemory } from "./src/kernels/arena.ts";

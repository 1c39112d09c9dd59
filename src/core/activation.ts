/**
 * Activation codes: the contract between the config (which names an
 * activation module, `nn.ReLU`) and the activation kernels (which take the
 * code). It lives below both, so parsing a config never loads the kernels.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Activation } from "./activation.ts";
 * assert.equal(Activation.relu, 1);
 * ```
 * @module
 */

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

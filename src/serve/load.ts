/**
 * Predictors from what training leaves behind when there is no serving
 * artifact: the `pipeline.config` text and a safetensors checkpoint. This
 * module loads the protobuf text parser (`config_text.ts`,
 * `@bufbuild/protobuf`) on first use, which is why it is apart from
 * `./inference.ts`: a server reads a serving artifact
 * ({@link readPredictor}) and never imports this file.
 *
 * @example Score with the config text and checkpoint bytes
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, modelCheckpoint, parsePipelineConfig, resolveConfig } from "../../mod.ts";
 * import { loadPredictor } from "./load.ts";
 * const text = `
 *   feature_configs { id_feature { feature_name: "cate" expression: "item:cate" vocab_list: ["a", "b"] embedding_dim: 4 } }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: "cate" group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [4] }
 *       num_expert: 2
 *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
 *     }
 *   }`;
 * const bytes = modelCheckpoint(new MMoEModel(resolveConfig(parsePipelineConfig(text)), { maxBatch: 1 }));
 * const predictor = await loadPredictor(text, bytes, { maxBatch: 64 });
 * assert.deepEqual(predictor.outputs, ["logits_ctr", "probs_ctr"]);
 * ```
 * @module
 */
import type { PipelineConfig } from "../config/config.ts";
import { readCheckpoint } from "../io/checkpoint.ts";
import { SERVING_FILE_NAME } from "../io/serving.ts";
import { Predictor, type PredictorOptions, readPredictor } from "./inference.ts";

/**
 * A {@link Predictor} from the `pipeline.config` text (parsed with
 * `parsePipelineConfig`, loaded on first use; errors name
 * `pipeline.config:line:column`, or `<source>:line:column` with
 * `options.source`) or the typed config, and the safetensors checkpoint
 * bytes (errors name the file `readCheckpoint` read them from).
 *
 * @example A misspelt field names its line
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadPredictor } from "./load.ts";
 * const text = `model_config { mmoe { num_experts: 2 } }`;
 * await assert.rejects(loadPredictor(text, new Uint8Array(0)), {
 *   name: "ConfigTextError",
 *   message: /^pipeline\.config:1:23: model_config\.mmoe\.num_experts: unknown field/,
 * });
 * ```
 */
export async function loadPredictor(
  config: string | PipelineConfig,
  checkpoint: Uint8Array,
  options: PredictorOptions & { source?: string } = {},
): Promise<Predictor> {
  if (typeof config !== "string") return new Predictor(config, checkpoint, options);
  const { parsePipelineConfig } = await import("../config/config_text.ts");
  return new Predictor(parsePipelineConfig(config, options.source), checkpoint, options);
}

/** The Deno namespace, or undefined under Bun and Node. */
const deno = (globalThis as { Deno?: typeof Deno }).Deno;

/** Whether `path` exists (any error but "not found" is the caller's to meet). */
async function exists(path: string): Promise<boolean> {
  try {
    if (deno !== undefined) await deno.stat(path);
    else await (await import("node:fs/promises")).stat(path);
    return true;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (error instanceof Error && (error.name === "NotFound" || code === "ENOENT")) return false;
    throw error;
  }
}

/** A file's bytes, its path in every error. */
async function readBytes(path: string): Promise<Uint8Array> {
  try {
    if (deno !== undefined) return await deno.readFile(path);
    const buffer = await (await import("node:fs/promises")).readFile(path);
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * A {@link Predictor} from a model directory: its serving artifact
 * (`serving_model.bin`, {@link readPredictor}) when there is one, else
 * `pipeline.config` and `model.safetensors` as `examples/train.ts` writes
 * them. Every error names the file it is about.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readModelDir } from "./load.ts";
 * await assert.rejects(readModelDir("no/such/dir"), { message: /^no\/such\/dir\/pipeline\.config: / });
 * ```
 */
export async function readModelDir(
  dir: string,
  options: PredictorOptions = {},
): Promise<Predictor> {
  const base = dir.replace(/[\\/]+$/, "");
  const artifact = `${base}/${SERVING_FILE_NAME}`;
  if (await exists(artifact)) return await readPredictor(artifact, options);
  const configPath = `${base}/pipeline.config`, checkpointPath = `${base}/model.safetensors`;
  const text = new TextDecoder().decode(await readBytes(configPath));
  const checkpoint = await readCheckpoint(checkpointPath).catch((error) => {
    throw new Error(`${checkpointPath}: ${error.message}`, { cause: error });
  });
  return await loadPredictor(text, checkpoint, { ...options, source: configPath });
}

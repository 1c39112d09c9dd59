/**
 * `@denorec/mmoe/serve`: scoring a serving artifact and the HTTP handler,
 * and nothing else. It does not import the protobuf text parser or the data
 * readers that `@denorec/mmoe` brings along (105-120 ms of module loading
 * on Deno, against 13 ms for this one), so a cold isolate (`deno serve`,
 * Deno Deploy, Bun) pays only for what scoring needs: the config arrives as
 * JSON inside the artifact.
 *
 * The artifact (`serving_model.bin`) is written by `examples/train.ts`,
 * `examples/export.ts` or {@link servingArtifact} of the main module.
 *
 * @example Score an artifact's bytes, then answer HTTP with the same predictor
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, parsePipelineConfig, resolveConfig, servingArtifact } from "@denorec/mmoe";
 * import { createHandler, Predictor } from "@denorec/mmoe/serve";
 *
 * const pipeline = parsePipelineConfig(`
 *   data_config { batch_size: 8 label_fields: "clk" fg_mode: FG_DAG }
 *   feature_configs {
 *     id_feature { feature_name: "item" expression: "item:item" num_buckets: 10 embedding_dim: 4 }
 *   }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: "item" group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [8] }
 *       num_expert: 2
 *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
 *     }
 *   }
 * `);
 * using model = new MMoEModel(resolveConfig(pipeline), { maxBatch: 8, seed: 1 });
 * const bytes = servingArtifact(model, pipeline); // what serving_model.bin holds
 *
 * const predictor = new Predictor(bytes, { maxRows: 100 });
 * const { probs_ctr } = predictor.predict([{ item: 3 }, { item: 7 }]);
 * assert.equal(probs_ctr.length, 2);
 *
 * const handler = createHandler({ predictor, source: "example", loadMs: 0 });
 * const response = await handler(
 *   new Request("http://localhost/predict", {
 *     method: "POST",
 *     headers: { "content-type": "application/json" },
 *     body: JSON.stringify({ rows: [{ item: 3 }] }),
 *   }),
 * );
 * assert.equal(response.status, 200);
 * assert.equal((await response.json()).probs_ctr[0], probs_ctr[0]);
 * ```
 * @module
 */

export {
  PredictError,
  type PredictErrorCode,
  Predictor,
  type PredictorOptions,
  readPredictor,
} from "./inference.ts";
export {
  decodeServingHeader,
  isServingArtifact,
  SERVING_FILE_NAME,
  SERVING_FORMAT_VERSION,
  type ServingHeader,
  type ServingTensor,
} from "../io/serving.ts";
export {
  createHandler,
  DEFAULT_LIMITS,
  internalErrorResponse,
  type LoadedModel,
  type ServeLimits,
} from "./handler.ts";
// Types the exports above mention (type-only: importing them loads nothing).
export type * from "../model/mmoe.ts";
export type * from "../config/config.ts";
export type * from "../config/types.ts";
export type * from "../kernels/kernels.ts";
export type * from "../core/records.ts";

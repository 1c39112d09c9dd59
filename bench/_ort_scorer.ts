/**
 * onnxruntime-web scoring our `exportOnnx` graph from raw rows, the way a
 * service would run it: our {@link FeatureEncoder} turns the rows into ids,
 * `onnxFeeds` into the graph's inputs, and `session.run` (wasm execution
 * provider, 1 thread) returns every output. The peer of `Predictor.predict`
 * in `bench/serve_load.ts`, and the model of `bench/_ort_serve.ts`.
 * @module
 */
import * as ort from "onnxruntime-web";
import { type PipelineConfig, resolveConfig } from "../src/config/config.ts";
import type { RawRecord } from "../src/core/records.ts";
import { FeatureEncoder } from "../src/data/features.ts";
import { onnxFeeds, onnxOutputNames } from "../src/io/onnx.ts";

/** Scores raw rows: `logits_<t>`, `probs_<t>` per tower, as `Predictor.predict` names them. */
export interface OrtScorer {
  /** Scores one request's rows. */
  score(rows: RawRecord[]): Promise<Record<string, Float32Array>>;
}

/**
 * A session over `onnx` (the bytes of `exportOnnx`) for the model of
 * `pipeline` (`parsePipelineConfig` of its pipeline.config).
 */
export async function loadOrtScorer(
  pipeline: PipelineConfig,
  onnx: Uint8Array,
): Promise<OrtScorer> {
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = "error";
  const config = resolveConfig(pipeline);
  const encoder = new FeatureEncoder(config, { labels: false });
  const outputs = onnxOutputNames(config);
  const session = await ort.InferenceSession.create(onnx, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: "all",
  });
  return {
    async score(rows) {
      const batch = encoder.encode(rows.map((record, i) => ({ record, location: `row ${i}` })));
      const feeds: Record<string, ort.Tensor> = {};
      for (const [name, feed] of Object.entries(onnxFeeds(config, batch))) {
        feeds[name] = new ort.Tensor(feed.type, feed.data, feed.dims);
      }
      const result = await session.run(feeds);
      const scores: Record<string, Float32Array> = {};
      for (const name of outputs) scores[name] = result[name].data as Float32Array;
      return scores;
    },
  };
}

/**
 * The onnxruntime-web peer of `examples/serve.ts`, for the cold-start and
 * load rows of `bench/serve_load.ts`: the same JSON in and out (POST
 * /predict `{"rows": [...]}` -> `{"logits_ctr": [...], "probs_ctr": [...],
 * ...}`, GET /healthz), scoring through {@link loadOrtScorer}. The model is
 * `$DENOREC_MODEL_DIR/pipeline.json` (the typed config as JSON, as ours has
 * it in its serving artifact: neither server loads the protobuf text
 * parser) + `model.onnx` (`exportOnnx`), loaded once per process at start,
 * like ours.
 *
 *   DENOREC_MODEL_DIR=dir deno serve --allow-read=dir --allow-env=DENOREC_MODEL_DIR \
 *     bench/_ort_serve.ts
 * @module
 */
import { loadOrtScorer } from "./_ort_scorer.ts";

const dir = Deno.env.get("DENOREC_MODEL_DIR");
const scorer = (async () =>
  await loadOrtScorer(
    JSON.parse(await Deno.readTextFile(`${dir}/pipeline.json`)),
    await Deno.readFile(`${dir}/model.onnx`),
  ))();
scorer.catch((error) => console.error(`ORT serve: model not loaded: ${error.message}`));

const json = (status: number, body: unknown) => Response.json(body, { status });

export default {
  async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === "/healthz") return json(200, { status: "ok", loaded: !!(await scorer) });
    if (pathname !== "/predict" || request.method !== "POST") {
      return json(404, { error: "POST /predict, GET /healthz" });
    }
    const model = await scorer;
    let rows: unknown;
    try {
      rows = (await request.json()).rows;
    } catch (error) {
      return json(400, { error: `body is not valid JSON: ${(error as Error).message}` });
    }
    if (!Array.isArray(rows)) return json(400, { error: '"rows" must be an array of row objects' });
    try {
      const scores = await model.score(rows);
      const body: Record<string, number[]> = {};
      for (const name in scores) body[name] = Array.from(scores[name]);
      return json(200, body);
    } catch (error) {
      return json(400, { error: (error as Error).message });
    }
  },
} satisfies Deno.ServeDefaultExport;

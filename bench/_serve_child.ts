/**
 * One cold start in a fresh process, timed step by step, for
 * `bench/serve_load.ts`:
 *
 *   deno run --allow-read=<dir>[,<ORT's .wasm>] bench/_serve_child.ts ours|ort <dir> '<rows JSON>'
 *
 * prints one JSON line of milliseconds: `boot` (process start to this
 * module's first line: Deno's start-up), `import` (the serving module:
 * `src/serve/inference.ts`, or onnxruntime-web with our encoder), `read`
 * (the model files), `parse` (the pipeline.config text, importing the
 * parser included), `build` (ours: arena and checkpoint, `new Predictor`;
 * ORT: encoder and `InferenceSession.create`), `first` (the first scoring of
 * `rows`), `total` (import to first), and `rssMB`. No static imports, so
 * every import is inside the timing; ours is what `loadPredictor` does for
 * `examples/serve.ts` (maxBatch = maxRows = 1024), split in two.
 * @module
 */
const boot = performance.now();
const [side, dir, rowsJson] = Deno.args;
if (side !== "ours" && side !== "ort") {
  throw new Error(`usage: _serve_child.ts ours|ort <dir> <rows JSON>, got ${side}`);
}
const rows = JSON.parse(rowsJson);
const score = side === "ours"
  ? await import("../src/serve/inference.ts")
  : await import("./_ort_scorer.ts");
const imported = performance.now();
const text = await Deno.readTextFile(`${dir}/pipeline.config`);
const model = await Deno.readFile(`${dir}/${side === "ours" ? "model.safetensors" : "model.onnx"}`);
const read = performance.now();
const { parsePipelineConfig } = await import("../src/config/config_text.ts");
const config = parsePipelineConfig(text);
const parsed = performance.now();
let probability: number;
let built: number;
if ("Predictor" in score) {
  const predictor = new score.Predictor(config, model, { maxBatch: 1024, maxRows: 1024 });
  built = performance.now();
  probability = predictor.predict(rows).probs_ctr[0];
} else {
  const scorer = await score.loadOrtScorer(config, model);
  built = performance.now();
  probability = (await scorer.score(rows)).probs_ctr[0];
}
const first = performance.now();
if (!(probability > 0 && probability < 1)) throw new Error(`${side}: probs_ctr ${probability}`);
console.log(JSON.stringify({
  boot,
  import: imported - boot,
  read: read - imported,
  parse: parsed - read,
  build: built - parsed,
  first: first - built,
  total: first - boot,
  rssMB: Deno.memoryUsage().rss / 2 ** 20,
}));

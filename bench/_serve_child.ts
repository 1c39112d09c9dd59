/**
 * One cold start in a fresh process, timed step by step, for
 * `bench/serve_load.ts`:
 *
 *   deno run --allow-read=<dir>[,<ORT's .wasm>] bench/_serve_child.ts ours|ort <dir> '<rows JSON>'
 *
 * prints one JSON line of milliseconds: `boot` (process start to this
 * module's first line: Deno's start-up), `import` (the serving module:
 * `src/serve/inference.ts`, or onnxruntime-web with our encoder), `read`
 * (the model files), `load` (ours: config parse, arena, checkpoint; ORT:
 * config parse, encoder, InferenceSession.create), `first` (the first
 * scoring of `rows`), `total` (import + read + load + first), and `rssMB`.
 * No static imports, so the import step is all inside the timing.
 * @module
 */
const boot = performance.now();
const [side, dir, rowsJson] = Deno.args;
const rows = JSON.parse(rowsJson);
let imported: number, read: number, loaded: number, probability: number;
if (side === "ours") {
  // Our serving path as examples/serve.ts runs it (maxBatch = maxRows = 1024).
  const { loadPredictor } = await import("../src/serve/inference.ts");
  imported = performance.now();
  const text = await Deno.readTextFile(`${dir}/pipeline.config`);
  const checkpoint = await Deno.readFile(`${dir}/model.safetensors`);
  read = performance.now();
  const predictor = await loadPredictor(text, checkpoint, { maxBatch: 1024, maxRows: 1024 });
  loaded = performance.now();
  probability = predictor.predict(rows).probs_ctr[0];
} else if (side === "ort") {
  const { loadOrtScorer } = await import("./_ort_scorer.ts");
  imported = performance.now();
  const text = await Deno.readTextFile(`${dir}/pipeline.config`);
  const onnx = await Deno.readFile(`${dir}/model.onnx`);
  read = performance.now();
  const scorer = await loadOrtScorer(text, onnx);
  loaded = performance.now();
  probability = (await scorer.score(rows)).probs_ctr[0];
} else {
  throw new Error(`usage: _serve_child.ts ours|ort <dir> <rows JSON>, got side ${side}`);
}
const first = performance.now();
if (!(probability > 0 && probability < 1)) throw new Error(`${side}: probs_ctr ${probability}`);
console.log(JSON.stringify({
  boot,
  import: imported - boot,
  read: read - imported,
  load: loaded - read,
  first: first - loaded,
  total: first - boot,
  rssMB: Deno.memoryUsage().rss / 2 ** 20,
}));

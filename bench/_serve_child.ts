/**
 * One cold start in a fresh process, timed step by step, for
 * `bench/serve_load.ts`:
 *
 *   deno run --allow-read=<files> bench/_serve_child.ts <side> <path> '<rows JSON>'
 *
 * sides:
 * - `ours <serving_model.bin>`: `readPredictor` (header, arena, the data read
 *   from the file straight into it, XXH32), as `examples/serve.ts` does;
 * - `ours-module <module.ts>`: the fallback for runtimes without bytes
 *   imports: a generated TypeScript module exporting the artifact as base64
 *   (`export default "..."`), imported, decoded (`Uint8Array.fromBase64`)
 *   and loaded with `new Predictor(bytes)`;
 * - `ort <dir>`: onnxruntime-web on `<dir>/model.onnx` with our encoder
 *   (`bench/_ort_scorer.ts`), the typed config from `<dir>/pipeline.json`
 *   (JSON, as ours has it in the artifact: neither side parses protobuf text).
 *
 * prints one JSON line of milliseconds: `boot` (process start to this
 * module's first line: Deno's start-up), `import` (the serving modules),
 * `load` (model bytes to a ready scorer: reading, decoding, building),
 * `first` (the first scoring of `rows`), `total` (import to first), and
 * `rssMB`. No static imports, so every import is inside the timing. Ours
 * scores with maxBatch = maxRows = 1024, as `examples/serve.ts` does.
 * @module
 */
const boot = performance.now();
const [side, path, rowsJson] = Deno.args;
if (side !== "ours" && side !== "ours-module" && side !== "ort") {
  throw new Error(`usage: _serve_child.ts ours|ours-module|ort <path> <rows JSON>, got ${side}`);
}
const rows = JSON.parse(rowsJson);
let imported: number, loaded: number;
let score: () => Promise<number> | number;
if (side === "ours") {
  const { readPredictor } = await import("../src/serve/inference.ts");
  imported = performance.now();
  const predictor = await readPredictor(path, { maxBatch: 1024, maxRows: 1024 });
  loaded = performance.now();
  score = () => predictor.predict(rows).probs_ctr[0];
} else if (side === "ours-module") {
  const { Predictor } = await import("../src/serve/inference.ts");
  imported = performance.now();
  const { default: base64 } = await import(path);
  const bytes = (Uint8Array as unknown as { fromBase64(text: string): Uint8Array }).fromBase64(
    base64,
  );
  const predictor = new Predictor(bytes, { maxBatch: 1024, maxRows: 1024 });
  loaded = performance.now();
  score = () => predictor.predict(rows).probs_ctr[0];
} else {
  const { loadOrtScorer } = await import("./_ort_scorer.ts");
  imported = performance.now();
  const config = JSON.parse(await Deno.readTextFile(`${path}/pipeline.json`));
  const scorer = await loadOrtScorer(config, await Deno.readFile(`${path}/model.onnx`));
  loaded = performance.now();
  score = async () => (await scorer.score(rows)).probs_ctr[0];
}
const probability = await score();
const first = performance.now();
if (!(probability > 0 && probability < 1)) throw new Error(`${side}: probs_ctr ${probability}`);
console.log(JSON.stringify({
  boot,
  import: imported - boot,
  load: loaded - imported,
  first: first - loaded,
  total: first - boot,
  rssMB: Deno.memoryUsage().rss / 2 ** 20,
}));

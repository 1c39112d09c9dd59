/**
 * Embeds a trained model into `examples/model_embedded.bin`, which
 * `examples/serve.ts` imports as bytes, so the service needs no file system
 * access and no permissions (Deno Deploy; a bundle):
 *
 *   deno run --allow-read=experiments/mmoe_taobao --allow-write=examples/model_embedded.bin \
 *     examples/embed_model.ts experiments/mmoe_taobao [--embeddings int8] [examples/model_embedded.bin]
 *
 * The file is the model's serving artifact (`examples/export.ts`, the same
 * bytes as `<model_dir>/serving_model.bin`): the config as JSON and the
 * parameters laid out as the arena holds them, made from
 * `<model_dir>/pipeline.config` and `<model_dir>/model.safetensors` and
 * checked by loading it as the server will. `--embeddings int8` (torchrec's
 * INT8 rowwise tables) makes a full-vocabulary model fit a 512 MB edge
 * isolate with room to spare. Runs under Bun too (`bun run
 * examples/embed_model.ts <model_dir>`). Errors are one line and exit code 1
 * (`--debug`: the stack).
 *
 * @module
 */
import { writeFile } from "node:fs/promises";
import process from "node:process";
import { Predictor } from "@denorec/mmoe/serve";
import { exitOnErrors, parseFlags } from "./_cli.ts";
import { embeddingsFlag, exportModelDir } from "./export.ts";

if (import.meta.main) {
  exitOnErrors();
  const { flags, positionals } = parseFlags(process.argv.slice(2), {
    embeddings: { type: "string", default: "f32" },
  }, [1, 2]);
  const [dir, out = new URL("./model_embedded.bin", import.meta.url).pathname] = positionals;
  const bytes = await exportModelDir(dir, embeddingsFlag(flags.embeddings));
  new Predictor(bytes, { maxBatch: 1, source: dir }); // loads as serve.ts will load it
  await writeFile(out, bytes);
  console.log(`wrote ${out} (${(bytes.length / 1e6).toFixed(1)} MB) from ${dir}`);
}

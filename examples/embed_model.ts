/**
 * Embeds a trained model into `examples/model_embedded.json`, which
 * `examples/serve.ts` imports, so the service needs no file system access
 * and no permissions (Deno Deploy; a bundle):
 *
 *   deno run --allow-read=experiments/mmoe_taobao --allow-write=examples/model_embedded.json \
 *     examples/embed_model.ts experiments/mmoe_taobao [examples/model_embedded.json]
 *
 * It reads `<model_dir>/pipeline.config` and `<model_dir>/model.safetensors`,
 * checks that they load together (as the server would), drops the optimizer
 * state `examples/train.ts` saves alongside the parameters (half the bytes
 * for Adagrad embeddings), and writes the typed config (parsed here, so the
 * server never loads the protobuf text parser) and the parameters-only
 * checkpoint as base64. JSON rather than a `.ts` module with a string
 * literal: Deno imports 10 MB of JSON in ~35 ms, of TypeScript in ~130 ms
 * (bench/serve_load.ts). Runs under Bun too (`bun run examples/embed_model.ts
 * <model_dir>`). Errors are one line and exit code 1 (`--debug`: the stack).
 *
 * @module
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import type { PipelineConfig } from "../src/config/config.ts";
import { modelCheckpoint, parsePipelineConfig, Predictor, readCheckpoint } from "../mod.ts";
import { exitOnErrors, parseFlags } from "./_cli.ts";

/** The shape of `model_embedded.json`: both null when no model is embedded. */
export interface EmbeddedModel {
  /** Where the model came from. */
  source?: string;
  /** The typed pipeline config. */
  config: PipelineConfig | null;
  /** The safetensors checkpoint (parameters only), base64. */
  checkpoint: string | null;
}

/** Base64 of `bytes`: `toBase64` where the runtime has it, else `btoa` over 3-byte-aligned chunks. */
function encodeBase64(bytes: Uint8Array): string {
  const native = (bytes as { toBase64?: () => string }).toBase64;
  if (native !== undefined) return native.call(bytes);
  const parts: string[] = [];
  const chunk = 3 * 8192;
  for (let i = 0; i < bytes.length; i += chunk) {
    const piece = bytes.subarray(i, Math.min(bytes.length, i + chunk));
    parts.push(btoa(String.fromCharCode(...piece)));
  }
  return parts.join("");
}

/**
 * A model as {@link EmbeddedModel}: the typed config and the parameters-only
 * checkpoint, validated by loading both into a predictor.
 */
export function embedModel(
  configText: string,
  checkpoint: Uint8Array,
  origin: string,
): EmbeddedModel {
  const config = parsePipelineConfig(configText, `${origin}/pipeline.config`);
  const predictor = new Predictor(config, checkpoint, { maxBatch: 1 });
  return { source: origin, config, checkpoint: encodeBase64(modelCheckpoint(predictor.model)) };
}

if (import.meta.main) {
  exitOnErrors();
  const { positionals } = parseFlags(process.argv.slice(2), {}, [1, 2]);
  const [dir, out = new URL("./model_embedded.json", import.meta.url).pathname] = positionals;
  const configText = await readFile(join(dir, "pipeline.config"), "utf8");
  const checkpoint = await readCheckpoint(join(dir, "model.safetensors"));
  const text = JSON.stringify(embedModel(configText, checkpoint, dir), null, 2) + "\n";
  await writeFile(out, text);
  console.log(`wrote ${out} (${text.length} bytes) from ${dir}`);
}

/**
 * An HTTP scoring service for a trained MMoE: one file that runs under
 * `deno serve`, on Deno Deploy and under Bun. The handler is the library's
 * `createHandler` (src/serve/handler.ts: routes, limits, JSON errors, never
 * a 500 for anything a client sends); this file loads the model and starts
 * the server.
 *
 *   POST /predict  content-type: application/json  {"rows": [{"user_id": 17, ...}, ...]}
 *                  -> 200 {"logits_ctr": [...], "probs_ctr": [...], ...}
 *   GET  /healthz  -> 200 {"status": "ok", "towers": [...], "columns": [...], ...}
 *
 * The model is loaded once per process at cold start, from the directory in
 * `DENOREC_MODEL_DIR` (`pipeline.config` + `model.safetensors`) when that
 * variable is set, otherwise from `examples/model_embedded.json` (written by
 * `examples/embed_model.ts`: the typed config and the parameters as base64;
 * it needs no permission at all and starts fastest). If it fails to load,
 * the reason is logged once and every request is answered 503.
 *
 *   deno serve --allow-read=experiments/mmoe_taobao --allow-env=DENOREC_MODEL_DIR examples/serve.ts
 *   DENOREC_MODEL_DIR=experiments/mmoe_taobao HOST=127.0.0.1 PORT=8000 bun run examples/serve.ts
 *
 * Under Bun, `PORT` (default 3000) and `HOST` (default all interfaces) are
 * checked (a bad `PORT` is an error, not port 3000), and Bun's development
 * error page is off: its own errors are JSON too. A server that cannot
 * start (port in use) prints one line `error: ...` and exits with code 1
 * under both runtimes (`DENOREC_DEBUG=1`: the stack).
 *
 * @module
 */
// Straight from src/ rather than mod.ts, and no node:* imports here: on Deno, mod.ts's
// protobuf text parser (~60 ms) and the Node compatibility layer (~30 ms, still pulled in
// by src/checkpoint.ts) cost more start-up time than loading a small model
// (bench/serve_load.ts). The text parser is loaded only for a model dir.
import type { PipelineConfig } from "../src/config/config.ts";
import { loadPredictor, Predictor } from "../src/serve/inference.ts";
import {
  createHandler,
  DEFAULT_LIMITS,
  internalErrorResponse,
  type LoadedModel,
} from "../src/serve/handler.ts";
import { exitOnErrors } from "./_cli_errors.ts";
import type { EmbeddedModel } from "./embed_model.ts";
import embeddedJson from "./model_embedded.json" with { type: "json" };

export {
  createHandler,
  DEFAULT_LIMITS,
  type LoadedModel,
  type ServeLimits,
} from "../src/serve/handler.ts";

if (import.meta.main) exitOnErrors();

/** The model `examples/embed_model.ts` wrote (config and checkpoint null: none). */
const embedded = embeddedJson as unknown as EmbeddedModel;

/** The environment variable naming the model directory. */
export const MODEL_DIR_VARIABLE = "DENOREC_MODEL_DIR";

/** The Deno namespace, or undefined under Bun and Node. */
const deno = (globalThis as { Deno?: typeof Deno }).Deno;

/** A file's bytes: `Deno.readFile` under Deno, `node:fs` (loaded on demand) elsewhere. */
async function readBytes(path: string): Promise<Uint8Array> {
  if (deno !== undefined) return await deno.readFile(path);
  const { readFile } = await import("node:fs/promises");
  const buffer = await readFile(path);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/**
 * Loads `<dir>/pipeline.config` and `<dir>/model.safetensors` (needs read
 * access to `dir`). The predictor's batch is `maxRows`: one model call per
 * request, on one arena.
 */
export async function loadModelDir(
  dir: string,
  maxRows: number = DEFAULT_LIMITS.maxRows,
): Promise<LoadedModel> {
  const started = performance.now();
  const configText = new TextDecoder().decode(await readBytes(`${dir}/pipeline.config`));
  const checkpoint = await readBytes(`${dir}/model.safetensors`);
  const predictor = await loadPredictor(configText, checkpoint, { maxBatch: maxRows, maxRows });
  // The last path segment only: /healthz answers clients, who need no absolute paths.
  const name = dir.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || dir;
  return { predictor, source: `dir ${name}`, loadMs: performance.now() - started };
}

/** Base64 -> bytes: `Uint8Array.fromBase64` where the runtime has it, else an `atob` loop. */
function decodeBase64(text: string): Uint8Array {
  const native = (Uint8Array as { fromBase64?: (text: string) => Uint8Array }).fromBase64;
  if (native !== undefined) return native(text);
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Loads a model embedded as its typed config + base64 checkpoint (no permissions). */
export function loadEmbeddedModel(
  config: PipelineConfig,
  checkpointBase64: string,
  maxRows: number = DEFAULT_LIMITS.maxRows,
): LoadedModel {
  const started = performance.now();
  const checkpoint = decodeBase64(checkpointBase64);
  const predictor = new Predictor(config, checkpoint, { maxBatch: maxRows, maxRows });
  return { predictor, source: "embedded", loadMs: performance.now() - started };
}

/**
 * An environment variable, or undefined when unset or not permitted (Deno
 * without `--allow-env=<name>` is asked first, so it never prompts).
 */
function readEnv(name: string): string | undefined {
  if (deno !== undefined) {
    if (deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return deno.env.get(name);
  }
  const node = globalThis as { process?: { env: Record<string, string | undefined> } };
  return node.process?.env[name];
}

/** The model of this process: `DENOREC_MODEL_DIR` if set, else the embedded one. */
async function loadDefaultModel(): Promise<LoadedModel> {
  const dir = readEnv(MODEL_DIR_VARIABLE);
  if (dir !== undefined && dir !== "") return await loadModelDir(dir);
  if (embedded.config !== null && embedded.checkpoint !== null) {
    return loadEmbeddedModel(embedded.config, embedded.checkpoint);
  }
  throw new Error(
    `no model: set ${MODEL_DIR_VARIABLE} to a directory with pipeline.config and ` +
      "model.safetensors (and allow reading it and the variable), or embed one with " +
      "examples/embed_model.ts",
  );
}

const handler = createHandler(loadDefaultModel());

/**
 * Bun's address when this file is its entry: `PORT` and `HOST`, checked
 * (Bun itself would take `PORT=abc` as 3000). `deno serve` ignores both and
 * takes --host and --port.
 */
function bunAddress(): { port?: number; hostname?: string } {
  if (deno !== undefined || !import.meta.main) return {};
  const port = readEnv("PORT"), hostname = readEnv("HOST");
  const address: { port?: number; hostname?: string } = {};
  if (port !== undefined && port !== "") {
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) {
      throw new RangeError(`PORT must be a port number in [0, 65535], got ${JSON.stringify(port)}`);
    }
    address.port = Number(port);
  }
  if (hostname !== undefined && hostname !== "") address.hostname = hostname;
  return address;
}

/**
 * `deno serve` / Deno Deploy / Bun entry: `{ fetch }`, plus Bun's options:
 * its own errors as JSON, no development error page, the checked address.
 */
export default {
  fetch: (request: Request): Promise<Response> => handler(request),
  error: internalErrorResponse,
  development: false,
  ...bunAddress(),
};

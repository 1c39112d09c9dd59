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
 * The model is loaded once per process at cold start: the serving artifact
 * `$DENOREC_MODEL_DIR/serving_model.bin` (written by `examples/train.ts` and
 * `examples/export.ts`) when that variable is set, read from the file
 * straight into the model's arena; otherwise `examples/model_embedded.bin`
 * (the same bytes, copied there by `examples/embed_model.ts`), imported as
 * bytes (`with { type: "bytes" }`, Deno's `--unstable-raw-imports`, enabled in
 * deno.json; under Bun that import gives the file's path, which is read), so
 * the service needs no permission at all. Either way the config comes as
 * JSON in the artifact: no protobuf text parser, no Node modules. If it fails
 * to load, the reason is logged once and every request is answered 503.
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
// The serving entry point, not the main module, and no node:* imports here: on Deno, the main
// module's protobuf text parser (~110 ms) and the Node compatibility layer (~30 ms) cost more
// start-up time than loading a small model (bench/serve_load.ts).
import {
  createHandler,
  DEFAULT_LIMITS,
  internalErrorResponse,
  type LoadedModel,
  Predictor,
  readPredictor,
  SERVING_FILE_NAME,
} from "@denorec/mmoe/serve";
import { exitOnErrors } from "./_cli_errors.ts";
import embeddedImport from "./model_embedded.bin" with { type: "bytes" };

export {
  createHandler,
  DEFAULT_LIMITS,
  type LoadedModel,
  type ServeLimits,
} from "@denorec/mmoe/serve";

if (import.meta.main) exitOnErrors();

/** The environment variable naming the model directory. */
export const MODEL_DIR_VARIABLE = "DENOREC_MODEL_DIR";

/** The Deno namespace, or undefined under Bun and Node. */
const deno = (globalThis as { Deno?: typeof Deno }).Deno;

/**
 * Loads `<dir>/serving_model.bin` (needs read access to it), its data read
 * straight into the arena. The predictor's batch is `maxRows`: one model
 * call per request, on one arena.
 */
export async function loadModelDir(
  dir: string,
  maxRows: number = DEFAULT_LIMITS.maxRows,
): Promise<LoadedModel> {
  const started = performance.now();
  const path = `${dir.replace(/[\\/]+$/, "")}/${SERVING_FILE_NAME}`;
  const predictor = await readPredictor(path, { maxBatch: maxRows, maxRows }).catch((error) => {
    const missing = error.cause?.name === "NotFound" || error.cause?.code === "ENOENT";
    if (!missing) throw error;
    throw new Error(
      `${error.message} (write it with: deno run -A examples/export.ts --model_dir ${dir})`,
      { cause: error },
    );
  });
  // The last path segment only: /healthz answers clients, who need no absolute paths.
  const name = dir.replace(/[\\/]+$/, "").split(/[\\/]/).pop() || dir;
  return { predictor, source: `dir ${name}`, loadMs: performance.now() - started };
}

/** Loads a serving artifact's bytes (the embedded model: no permissions). */
export function loadEmbeddedModel(
  artifact: Uint8Array,
  maxRows: number = DEFAULT_LIMITS.maxRows,
): LoadedModel {
  const started = performance.now();
  const predictor = new Predictor(artifact, {
    maxBatch: maxRows,
    maxRows,
    source: "embedded model",
  });
  return { predictor, source: "embedded", loadMs: performance.now() - started };
}

/**
 * The bytes of examples/model_embedded.bin: the import itself under Deno;
 * Bun's import gives the file's path instead, which is read here.
 */
async function embeddedBytes(): Promise<Uint8Array> {
  const imported = embeddedImport as Uint8Array | string;
  if (typeof imported !== "string") return imported;
  const { readFile } = await import("node:fs/promises");
  const buffer = await readFile(imported);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
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
  const embedded = await embeddedBytes();
  if (embedded.length > 0) return loadEmbeddedModel(embedded);
  throw new Error(
    `no model: set ${MODEL_DIR_VARIABLE} to a directory with ${SERVING_FILE_NAME} (and allow ` +
      "reading it and the variable), or embed one with examples/embed_model.ts",
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

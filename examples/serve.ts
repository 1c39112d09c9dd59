/**
 * An HTTP scoring service for a trained MMoE: one file that runs under
 * `deno serve`, on Deno Deploy and under Bun.
 *
 *   POST /predict  {"rows": [{"user_id": 17, "adgroup_id": 5, ...}, ...]}
 *                  -> 200 {"logits_ctr": [...], "probs_ctr": [...], ...}
 *   GET  /healthz  -> 200 {"status": "ok", "towers": [...], "columns": [...], ...}
 *
 * Bad input is a 400 with `{"error": "row 3: column 'user_id': ..."}` (plus
 * `row` and `column` when one row is at fault), never a 500: a body over
 * {@link DEFAULT_LIMITS}.maxBodyBytes (counted while it streams in), invalid
 * UTF-8 or JSON, JSON nested deeper than the request shape needs (checked
 * before parsing), another top-level key than `rows`, more than `maxRows`
 * rows, a row that is not an object, an unknown column, a value of the wrong
 * type. An unknown path is a 404, a known path with another method a 405
 * with `Allow`. If the model failed to load, every request to /predict and
 * /healthz is a 503 naming the reason (logged once at start).
 *
 * The model is loaded once per process at cold start, from the directory in
 * `DENOREC_MODEL_DIR` (`pipeline.config` + `model.safetensors`) when that
 * variable is set, otherwise from `examples/model_embedded.json` (written by
 * `examples/embed_model.ts`: the typed config and the parameters as base64;
 * it needs no permission at all and starts fastest).
 *
 *   deno serve --allow-read=experiments/mmoe_taobao --allow-env=DENOREC_MODEL_DIR examples/serve.ts
 *   DENOREC_MODEL_DIR=experiments/mmoe_taobao HOST=127.0.0.1 PORT=8000 bun run examples/serve.ts
 *
 * @module
 */
// Straight from src/ rather than mod.ts, and no node:* imports here: on Deno, mod.ts's
// protobuf text parser (~60 ms) and the Node compatibility layer (~30 ms, still pulled in
// by src/checkpoint.ts) cost more start-up time than loading a small model
// (bench/serve_load.ts). The text parser is loaded only for a model dir.
import type { PipelineConfig } from "../src/config/config.ts";
import { loadPredictor, PredictError, Predictor } from "../src/serve/inference.ts";
import { bestKernelVariant } from "../src/kernels/kernels.ts";
import type { EmbeddedModel } from "./embed_model.ts";
import embeddedJson from "./model_embedded.json" with { type: "json" };

/** The model `examples/embed_model.ts` wrote (config and checkpoint null: none). */
const embedded = embeddedJson as unknown as EmbeddedModel;

/** The environment variable naming the model directory. */
export const MODEL_DIR_VARIABLE = "DENOREC_MODEL_DIR";

/** Request limits of the handler. */
export interface ServeLimits {
  /** Largest request body in bytes (counted while reading). */
  maxBodyBytes: number;
  /** Most rows per request (also the predictor's batch: one model call per request). */
  maxRows: number;
  /** Deepest JSON nesting: `{"rows": [{"tags": [...]}]}` is 4. */
  maxDepth: number;
}

/** 1 MiB of body, 1024 rows, the 4 levels the request shape has. */
export const DEFAULT_LIMITS: ServeLimits = { maxBodyBytes: 1 << 20, maxRows: 1024, maxDepth: 4 };

/** A loaded model and where it came from (for /healthz). */
export interface LoadedModel {
  /** The predictor. */
  predictor: Predictor;
  /** `dir <path>` or `embedded`. */
  source: string;
  /** Milliseconds to parse the config, build the arena and load the checkpoint. */
  loadMs: number;
}

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
  return { predictor, source: `dir ${dir}`, loadMs: performance.now() - started };
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

// ------------------------------------------------------------------ handler

/** A client error: 400 with this message. */
class BadRequest extends Error {}

const JSON_HEADERS = { "content-type": "application/json; charset=utf-8" };

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...JSON_HEADERS, ...headers } });
}

/** The body as UTF-8 text, refusing more than `limit` bytes while it streams in. */
async function readBody(request: Request, limit: number): Promise<string> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    throw new BadRequest(`request body of ${declared} bytes is over the ${limit}-byte limit`);
  }
  if (request.body === null) throw new BadRequest('empty body: send JSON {"rows": [...]}');
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        reader.cancel().catch(() => {});
        throw new BadRequest(`request body is over the ${limit}-byte limit`);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof BadRequest) throw error;
    throw new BadRequest(`could not read the request body: ${(error as Error).message}`);
  }
  const bytes = chunks.length === 1 ? chunks[0] : new Uint8Array(size);
  if (chunks.length !== 1) {
    let at = 0;
    for (const chunk of chunks) bytes.set(chunk, at), at += chunk.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new BadRequest("request body is not valid UTF-8");
  }
}

/**
 * Refuses JSON nested deeper than `max` before `JSON.parse` sees it (a deep
 * enough nesting overflows the stack of a recursive parser).
 */
function checkDepth(text: string, max: number): void {
  let depth = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) {
      inString = true;
    } else if (c === 91 || c === 123) {
      if (++depth > max) {
        throw new BadRequest(
          `JSON is nested deeper than ${max} levels (expected {"rows": [{"column": value}]})`,
        );
      }
    } else if (c === 93 || c === 125) {
      depth--;
    }
  }
}

/** The rows of a parsed body `{"rows": [...]}`. */
function requestRows(body: unknown, maxRows: number): Record<string, unknown>[] {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new BadRequest(
      `body must be a JSON object {"rows": [...]}, got ${
        Array.isArray(body) ? "an array" : body === null ? "null" : typeof body
      }`,
    );
  }
  for (const key in body) {
    if (key !== "rows") throw new BadRequest(`unknown key '${key}' (the body has only "rows")`);
  }
  const rows = (body as { rows?: unknown }).rows;
  if (!Array.isArray(rows)) throw new BadRequest('"rows" must be an array of row objects');
  if (rows.length > maxRows) {
    throw new BadRequest(`too many rows: ${rows.length}, the limit is ${maxRows} per request`);
  }
  return rows;
}

/** The /healthz body: what the model reads and returns. */
function modelInfo(loaded: LoadedModel, limits: ServeLimits): Record<string, unknown> {
  const { predictor } = loaded;
  const config = predictor.config;
  return {
    status: "ok",
    source: loaded.source,
    loadMs: Math.round(loaded.loadMs * 10) / 10,
    towers: config.towers.map((t) => t.name),
    outputs: predictor.outputs,
    columns: predictor.columns,
    experts: config.numExpert,
    parameters: predictor.model.parameters.reduce(
      (sum, p) => sum + p.shape.reduce((a, b) => a * b, 1),
      0,
    ),
    arenaBytes: predictor.model.memory.buffer.byteLength,
    kernels: bestKernelVariant(),
    limits,
  };
}

/**
 * The request handler over a model that is loading or loaded: a load failure
 * is logged once and answered with 503 from then on.
 */
export function createHandler(
  model: Promise<LoadedModel>,
  limits: Partial<ServeLimits> = {},
): (request: Request) => Promise<Response> {
  const settings: ServeLimits = { ...DEFAULT_LIMITS, ...limits };
  const ready = model.then(
    (loaded) => ({ loaded, reason: "" }),
    (error: unknown) => {
      const reason = error instanceof Error ? error.message : String(error);
      console.error(`denorec serve: model not loaded: ${reason}`);
      return { loaded: null, reason };
    },
  );
  return async (request: Request): Promise<Response> => {
    const { pathname } = new URL(request.url);
    const method = request.method;
    if (pathname === "/predict") {
      if (method !== "POST") return json(405, { error: "use POST" }, { allow: "POST" });
    } else if (pathname === "/healthz") {
      if (method !== "GET" && method !== "HEAD") {
        return json(405, { error: "use GET" }, { allow: "GET, HEAD" });
      }
    } else {
      return json(404, { error: `no route ${pathname}: POST /predict, GET /healthz` });
    }
    const { loaded, reason } = await ready;
    if (loaded === null) return json(503, { error: `model not loaded: ${reason}` });
    if (pathname === "/healthz") {
      const response = json(200, modelInfo(loaded, settings));
      return method === "HEAD" ? new Response(null, response) : response;
    }
    let rows: Record<string, unknown>[];
    try {
      const text = await readBody(request, settings.maxBodyBytes);
      checkDepth(text, settings.maxDepth);
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (error) {
        throw new BadRequest(`body is not valid JSON: ${(error as Error).message}`);
      }
      rows = requestRows(body, settings.maxRows);
    } catch (error) {
      if (error instanceof BadRequest) return json(400, { error: error.message });
      throw error;
    }
    let scores: Record<string, Float32Array>;
    try {
      scores = loaded.predictor.predict(rows as Parameters<Predictor["predict"]>[0]);
    } catch (error) {
      if (error instanceof PredictError) {
        const detail: Record<string, unknown> = { error: error.message };
        if (error.row >= 0) detail.row = error.row;
        if (error.column !== "") detail.column = error.column;
        return json(400, detail);
      }
      console.error("denorec serve: predict failed:", error);
      return json(500, { error: "internal error while scoring" });
    }
    const body: Record<string, number[]> = {};
    for (const name in scores) body[name] = Array.from(scores[name]);
    return json(200, body);
  };
}

const handler = createHandler(loadDefaultModel());

// Bun takes the address from this object (port: $PORT, default 3000; hostname: $HOST here,
// default all interfaces); `deno serve` ignores both and takes --host and --port.
const bunHostname = deno === undefined ? readEnv("HOST") : undefined;

/** `deno serve` / Deno Deploy / Bun entry: `{ fetch }`. */
export default {
  fetch: (request: Request): Promise<Response> => handler(request),
  ...(bunHostname ? { hostname: bunHostname } : {}),
};

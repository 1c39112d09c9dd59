/**
 * The HTTP scoring service of a {@link Predictor} as a fetch handler
 * (`(request: Request) => Promise<Response>`), for `deno serve`, Deno Deploy,
 * `Deno.serve`, `Bun.serve` or any server that speaks `Request`/`Response`:
 *
 *   POST /predict  content-type: application/json  {"rows": [{"user_id": 17, ...}, ...]}
 *                  -> 200 {"logits_ctr": [...], "probs_ctr": [...], ...}
 *   GET  /healthz  -> 200 {"status": "ok", "towers": [...], "columns": [...],
 *                          "embeddings": "f32" | "int8", ...}
 *
 * Whatever a client sends, the answer is JSON and never a 500: a client
 * error is `{"error": "...", "row": 3, "column": "user_id"}` (`row` and
 * `column` when one row is at fault) with 400 (bad JSON, bad rows, values
 * the model cannot score), 404 (unknown path), 405 with `Allow` (wrong
 * method), 408 (the body did not arrive within `bodyTimeoutMs`), 413 (body
 * over `maxBodyBytes`, counted while it streams in), 415 (not
 * `application/json`), or 503 with `Retry-After` (more than `maxConcurrent`
 * requests in flight, or the model not loaded). The request URL is never
 * parsed as a URL (a malformed `Host` header makes `new URL(request.url)`
 * throw): only its path is read. A failure of this code or the model is a
 * 500 `{"error": "internal error"}`, logged with its stack on the server,
 * never sent to the client.
 *
 * This module imports neither the protobuf text parser nor Node modules, so
 * a server of a serving artifact starts fast (see `examples/serve.ts`).
 *
 * @example Score rows with a freshly initialised model
 * ```ts
 * import assert from "node:assert/strict";
 * import { MMoEModel, modelCheckpoint, parsePipelineConfig, Predictor, resolveConfig } from "../../mod.ts";
 * import { createHandler } from "./handler.ts";
 * const config = parsePipelineConfig(`
 *   feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 100 embedding_dim: 4 } }
 *   model_config {
 *     feature_groups { group_name: "all" feature_names: "user_id" group_type: DEEP }
 *     mmoe {
 *       expert_mlp { hidden_units: [8] }
 *       num_expert: 2
 *       task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
 *     }
 *   }`);
 * const bytes = modelCheckpoint(new MMoEModel(resolveConfig(config), { maxBatch: 4, seed: 1 }));
 * const handler = createHandler({ predictor: new Predictor(config, bytes), source: "example", loadMs: 0 });
 * const post = (body: string, type = "application/json") =>
 *   handler(new Request("http://localhost/predict", { method: "POST", body, headers: { "content-type": type } }));
 * const ok = await post('{"rows": [{"user_id": 7}, {"user_id": null}]}');
 * assert.equal(ok.status, 200);
 * assert.equal((await ok.json()).probs_ctr.length, 2);
 * const bad = await post('{"rows": [{"user_id": 7}, {"user_id": "abc"}]}');
 * assert.equal(bad.status, 400);
 * assert.deepEqual(await bad.json(), {
 *   error: `row 1: column 'user_id': "abc" is not an integer id`,
 *   row: 1,
 *   column: "user_id",
 * });
 * assert.equal((await post("user_id=7", "application/x-www-form-urlencoded")).status, 415);
 * ```
 * @module
 */
import { bestKernelVariant } from "../kernels/kernels.ts";
import { PredictError, Predictor } from "./inference.ts";

/**
 * Request limits of {@link createHandler}.
 *
 * @example Tighter limits for a public endpoint
 * ```ts
 * import { DEFAULT_LIMITS, type ServeLimits } from "./handler.ts";
 * const limits: ServeLimits = { ...DEFAULT_LIMITS, maxRows: 100, bodyTimeoutMs: 2000 };
 * ```
 */
export interface ServeLimits {
  /** Largest request body in bytes (counted while reading): 413 above. */
  maxBodyBytes: number;
  /** Most rows per request (also the predictor's batch: one model call per request). */
  maxRows: number;
  /** Deepest JSON nesting: `{"rows": [{"tags": [...]}]}` is 4. */
  maxDepth: number;
  /**
   * Milliseconds from the start of a POST to the end of its body: a client
   * that holds a partial body longer gets 408 (`connection: close`), its
   * body stream is cancelled and its `maxConcurrent` slot freed. Bun then
   * closes the connection; Deno (2.9.6) keeps a connection open while a
   * read of its body is pending, whatever the handler answers, until the
   * client closes it, so there `maxConcurrent` is what bounds the memory
   * slow clients hold.
   */
  bodyTimeoutMs: number;
  /**
   * POST /predict requests in flight (reading, parsing, scoring); more are
   * answered 503 with `Retry-After` at once. Bounds the memory held by
   * request bodies to about `maxConcurrent * maxBodyBytes`.
   */
  maxConcurrent: number;
}

/**
 * 1 MiB of body, 1024 rows, the 4 levels the request shape has, 10 s to send
 * the body, 64 requests in flight (at most 64 MiB of bodies).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULT_LIMITS } from "./handler.ts";
 * assert.equal(DEFAULT_LIMITS.maxBodyBytes, 1 << 20);
 * ```
 */
export const DEFAULT_LIMITS: Readonly<ServeLimits> = Object.freeze({
  maxBodyBytes: 1 << 20,
  maxRows: 1024,
  maxDepth: 4,
  bodyTimeoutMs: 10_000,
  maxConcurrent: 64,
});

/**
 * A loaded model and where it came from (for /healthz).
 *
 * @example
 * ```ts
 * import type { LoadedModel } from "./handler.ts";
 * const describe = (model: LoadedModel) => `${model.source} in ${model.loadMs} ms`;
 * ```
 */
export interface LoadedModel {
  /** The predictor. */
  predictor: Predictor;
  /** Where it came from, without absolute paths (they are not the client's business): `dir mmoe_taobao`, `embedded`. */
  source: string;
  /** Milliseconds from reading the model (a serving artifact) to a ready predictor. */
  loadMs: number;
}

/** A client error: its status and JSON fields. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly fields: { row?: number; column?: string } = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const JSON_HEADERS = { "content-type": "application/json; charset=utf-8" };

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...JSON_HEADERS, ...headers } });
}

/**
 * The 500 answer to a failure of the server itself: logged with its stack
 * (server side), `{"error": "internal error"}` to the client. Also fits
 * `Bun.serve`'s `error` option, so that Bun never sends its development
 * error page (which shows source lines and paths).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { internalErrorResponse } from "./handler.ts";
 * const original = console.error;
 * console.error = () => {};
 * try {
 *   const response = internalErrorResponse(new Error("secret /srv/model path"));
 *   assert.equal(response.status, 500);
 *   assert.deepEqual(await response.json(), { error: "internal error" });
 * } finally {
 *   console.error = original;
 * }
 * ```
 */
export function internalErrorResponse(error: unknown): Response {
  console.error("denorec serve: internal error:", error);
  return json(500, { error: "internal error" });
}

/**
 * The path of a request URL without query or fragment, never throwing: Deno
 * builds `request.url` from the client's `Host` header (`http://[::1/x`
 * when that is malformed), Bun gives just `/x` then. Nothing here needs the
 * host.
 */
function requestPath(url: string): string {
  return /^(?:[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*)?([^?#]*)/.exec(url)?.[1] ?? "";
}

/** Refuses anything but `application/json` (any case; charset, if given, UTF-8). */
function checkContentType(request: Request): void {
  const header = request.headers.get("content-type");
  const [type, ...parameters] = (header ?? "").split(";").map((part) => part.trim().toLowerCase());
  const charset = parameters.find((p) => p.startsWith("charset="))?.slice(8).replace(/"/g, "");
  if (type === "application/json" && (charset === undefined || charset === "utf-8")) return;
  throw new HttpError(
    415,
    header === null
      ? "no content-type: send the body as content-type: application/json"
      : `content-type ${JSON.stringify(header.slice(0, 100))} is not supported: send ` +
        "application/json (UTF-8)",
    {},
    { "accept-post": "application/json" },
  );
}

/**
 * The body as UTF-8 text: refuses more than `limit` bytes (declared or
 * counted while it streams in) and a body that is not complete `timeoutMs`
 * after reading starts (the stream is then cancelled; see
 * {@link ServeLimits.bodyTimeoutMs}).
 */
async function readBody(request: Request, limit: number, timeoutMs: number): Promise<string> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    throw new HttpError(
      413,
      `request body of ${declared.slice(0, 20)} bytes is over the ${limit}-byte limit`,
    );
  }
  if (request.body === null) throw new HttpError(400, 'empty body: send JSON {"rows": [...]}');
  const reader = request.body.getReader();
  let timedOut = false;
  // Cancelling ends the pending read with `done`; the flag tells that apart from the real end.
  // AbortSignal.timeout rather than setTimeout: Deno 2.9.6's first setTimeout costs ~10 ms,
  // which the first request of a cold server would pay (the signal's timer: ~0.6 ms).
  const deadline = AbortSignal.timeout(timeoutMs);
  const onDeadline = () => {
    timedOut = true;
    reader.cancel().catch(() => {});
  };
  deadline.addEventListener("abort", onDeadline);
  const late = () =>
    new HttpError(408, `request body not complete after ${timeoutMs} ms`, {}, {
      connection: "close",
    });
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (timedOut) throw late();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        reader.cancel().catch(() => {});
        throw new HttpError(413, `request body is over the ${limit}-byte limit`);
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof HttpError) throw error;
    if (timedOut) throw late(); // a runtime whose cancel fails the pending read
    throw new HttpError(400, `could not read the request body: ${(error as Error).message}`);
  } finally {
    deadline.removeEventListener("abort", onDeadline);
  }
  const bytes = chunks.length === 1 ? chunks[0] : new Uint8Array(size);
  if (chunks.length !== 1) {
    let at = 0;
    for (const chunk of chunks) bytes.set(chunk, at), at += chunk.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "request body is not valid UTF-8");
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
        throw new HttpError(
          400,
          `JSON is nested deeper than ${max} levels (expected {"rows": [{"column": value}]})`,
        );
      }
    } else if (c === 93 || c === 125) {
      depth--;
    }
  }
}

/** The rows of a parsed body `{"rows": [...]}`. */
function requestRows(body: unknown, maxRows: number): unknown[] {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpError(
      400,
      `body must be a JSON object {"rows": [...]}, got ${
        Array.isArray(body) ? "an array" : body === null ? "null" : typeof body
      }`,
    );
  }
  for (const key in body) {
    if (key !== "rows") {
      throw new HttpError(400, `unknown key '${key.slice(0, 100)}' (the body has only "rows")`);
    }
  }
  const rows = (body as { rows?: unknown }).rows;
  if (!Array.isArray(rows)) throw new HttpError(400, '"rows" must be an array of row objects');
  if (rows.length > maxRows) {
    throw new HttpError(400, `too many rows: ${rows.length}, the limit is ${maxRows} per request`);
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
    embeddings: predictor.model.plan.embeddings,
    parameters: predictor.model.parameters.reduce(
      (sum, p) => sum + p.shape.reduce((a, b) => a * b, 1),
      0,
    ),
    arenaBytes: predictor.model.memory.buffer.byteLength,
    kernels: bestKernelVariant(),
    limits,
  };
}

/** `value` as a {@link LoadedModel}, or a TypeError saying what it is instead. */
function checkModel(value: unknown): LoadedModel {
  const predictor = (value as { predictor?: unknown } | null)?.predictor;
  if (predictor instanceof Predictor) return value as LoadedModel;
  throw new TypeError(
    "model must be { predictor: Predictor, source, loadMs } (or a promise of it), got " +
      (value === null ? "null" : typeof value),
  );
}

function checkLimits(limits: ServeLimits): void {
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(`limits.${name} must be a positive integer, got ${value}`);
    }
  }
}

/**
 * The request handler over a model that is loaded or loading (a promise): a
 * load failure (or a promise of something else) is logged once and
 * answered with 503 from then on (the reason stays in the server log: it
 * names files). A `model` that is not a {@link LoadedModel} throws a
 * `TypeError`, limits that are not positive integers a `RangeError`. Limits
 * not given are
 * {@link DEFAULT_LIMITS}; the predictor should accept `maxRows` rows per
 * call. The handler never throws.
 *
 * @example Bad requests: JSON errors, never a 500
 * ```ts
 * import assert from "node:assert/strict";
 * import { createHandler } from "./handler.ts";
 * const original = console.error;
 * console.error = () => {}; // the load failure is logged once
 * try {
 *   const handler = createHandler(Promise.reject(new Error("no model here")), { maxRows: 10 });
 *   const health = await handler(new Request("http://localhost/healthz"));
 *   assert.equal(health.status, 503);
 *   assert.deepEqual(await health.json(), { error: "model not loaded (the server log says why)" });
 *   const get = await handler(new Request("http://localhost/predict"));
 *   assert.equal(get.status, 405);
 *   assert.equal(get.headers.get("allow"), "POST");
 *   assert.equal((await handler(new Request("http://localhost/"))).status, 404);
 * } finally {
 *   console.error = original;
 * }
 * ```
 */
export function createHandler(
  model: LoadedModel | Promise<LoadedModel>,
  limits: Partial<ServeLimits> = {},
): (request: Request) => Promise<Response> {
  const settings: ServeLimits = { ...DEFAULT_LIMITS, ...limits };
  checkLimits(settings);
  if (!(model instanceof Promise)) checkModel(model);
  const ready = Promise.resolve(model).then(checkModel).then(
    (loaded) => ({ loaded, reason: "" }),
    (error: unknown) => {
      const reason = error instanceof Error ? error.message : String(error);
      console.error(`denorec serve: model not loaded: ${reason}`);
      return { loaded: null, reason };
    },
  );
  let inFlight = 0;

  async function predict(request: Request): Promise<Response> {
    checkContentType(request);
    if (inFlight >= settings.maxConcurrent) {
      throw new HttpError(
        503,
        `busy: ${settings.maxConcurrent} requests in flight; retry shortly`,
        {},
        { "retry-after": "1" },
      );
    }
    inFlight++;
    try {
      const { loaded } = await ready;
      if (loaded === null) throw notLoaded();
      const text = await readBody(request, settings.maxBodyBytes, settings.bodyTimeoutMs);
      checkDepth(text, settings.maxDepth);
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (error) {
        throw new HttpError(400, `body is not valid JSON: ${(error as Error).message}`);
      }
      const rows = requestRows(body, settings.maxRows);
      let scores: Record<string, Float32Array>;
      try {
        scores = loaded.predictor.predict(rows as Parameters<Predictor["predict"]>[0]);
      } catch (error) {
        if (!(error instanceof PredictError)) throw error;
        const fields: { row?: number; column?: string } = {};
        if (error.row >= 0) fields.row = error.row;
        if (error.column !== "") fields.column = error.column;
        throw new HttpError(400, error.message, fields);
      }
      const result: Record<string, number[]> = {};
      for (const name in scores) result[name] = Array.from(scores[name]);
      return json(200, result);
    } finally {
      inFlight--;
    }
  }

  async function health(request: Request): Promise<Response> {
    const { loaded } = await ready;
    if (loaded === null) throw notLoaded();
    const response = json(200, modelInfo(loaded, settings));
    return request.method === "HEAD" ? new Response(null, response) : response;
  }

  return async (request: Request): Promise<Response> => {
    try {
      const path = requestPath(request.url);
      const method = request.method;
      if (path === "/predict") {
        if (method !== "POST") return json(405, { error: "use POST" }, { allow: "POST" });
        return await predict(request);
      }
      if (path === "/healthz") {
        if (method !== "GET" && method !== "HEAD") {
          return json(405, { error: "use GET" }, { allow: "GET, HEAD" });
        }
        return await health(request);
      }
      return json(404, {
        error: `no route ${path.slice(0, 100)}: POST /predict, GET /healthz`,
      });
    } catch (error) {
      if (error instanceof HttpError) {
        return json(error.status, { error: error.message, ...error.fields }, error.headers);
      }
      return internalErrorResponse(error);
    }
  };
}

function notLoaded(): HttpError {
  return new HttpError(503, "model not loaded (the server log says why)");
}

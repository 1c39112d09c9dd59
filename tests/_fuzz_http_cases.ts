// Fuzz cases for the HTTP handler (tests/fuzz_http_test.ts): random methods,
// paths, headers (content-type, content-length lies, Host) and bodies
// (valid rows, rows with random perturbations, truncated, deep, huge,
// invalid UTF-8, random JSON, streamed, stalled, failing), sent to the
// handler in process (`createRunner`) or over a loopback server
// (`createLoopbackRunner`: Deno.serve / Bun.serve with raw TCP requests).
//
// The oracle is independent of the handler's code: a request is valid when
// it is POST /predict, JSON (UTF-8) by its content-type, delivered whole
// within the limits, a JSON object {"rows": [...]} of at most maxRows rows
// nested at most maxDepth deep, and `Predictor.predict` (a second predictor
// on the same checkpoint) scores its rows. A valid request must get 200
// with exactly that predictor's outputs, all finite ("accepted correct");
// an invalid one a 4xx (or 503) JSON `{"error": "..."}` whose `row` and
// `column`, when present, match the message ("clear error"). Anything else
// is counted: a 500, a non-JSON answer or one with internals (a stack frame,
// a path of this machine) is a "crash", a 200 for an invalid request
// "silently wrong", an error for a valid one "wrongly refused".
import process from "node:process";
import { modelCheckpoint } from "../src/io/checkpoint.ts";
import { resolveConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { MMoEModel } from "../src/model/mmoe.ts";
import { Predictor } from "../src/serve/inference.ts";
import { createHandler, internalErrorResponse, type ServeLimits } from "../src/serve/handler.ts";
import { type CaseResult, type CaseRunner, draws } from "./_fuzz.ts";
import { listen, rawExchange } from "./_http.ts";

/** Every feature kind: num_buckets, hash, vocab, multi-value, bucketized raw, 2-wide dense raw. */
export const FUZZ_CONFIG = `
data_config { label_fields: ["clk", "buy"] }
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 50 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "item" expression: "item:item" hash_bucket_size: 40 embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "cate" expression: "item:cate" vocab_list: ["a", "b", "c"] embedding_dim: 4 } }
feature_configs { id_feature { feature_name: "tags" expression: "item:tags" num_buckets: 10 embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" boundaries: [1, 5, 10] embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "score" expression: "item:score" value_dim: 2 } }
model_config {
  feature_groups {
    group_name: "all"
    feature_names: ["user_id", "item", "cate", "tags", "price", "score"]
    group_type: DEEP
  }
  mmoe {
    expert_mlp { hidden_units: [8, 6] }
    num_expert: 3
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [4] } losses { binary_cross_entropy {} } }
    task_towers { tower_name: "cvr" label_name: "buy" losses { binary_cross_entropy {} } }
  }
}
`;

/** Small limits, so that huge and slow bodies cost little. */
const LIMITS: ServeLimits = {
  maxBodyBytes: 16384,
  maxRows: 64,
  maxDepth: 4,
  bodyTimeoutMs: 150,
  maxConcurrent: 4,
};

/** The handler's predictor and an independent one on the same checkpoint (same arena size). */
function predictors(): { served: Predictor; reference: Predictor } {
  const pipeline = parsePipelineConfig(FUZZ_CONFIG);
  const model = new MMoEModel(resolveConfig(pipeline), { maxBatch: 8, seed: 11 });
  const checkpoint = modelCheckpoint(model);
  model.close();
  const options = { maxBatch: LIMITS.maxRows };
  return {
    served: new Predictor(pipeline, checkpoint, { ...options, maxRows: LIMITS.maxRows }),
    reference: new Predictor(pipeline, checkpoint, options),
  };
}

// ------------------------------------------------------------------ requests

/** How the body reaches the server. */
type Delivery = "whole" | "chunks" | "stall" | "error" | "endless";

/** One generated request. */
interface FuzzRequest {
  what: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Uint8Array | null;
  delivery: Delivery;
  /** Bytes per chunk for streamed deliveries. */
  chunk: number;
  /** Host header on the wire (loopback only); null: none, with HTTP/1.0. */
  host: string | null;
}

const encoder = new TextEncoder();

const EVIL_VALUES: unknown[] = [
  "",
  "abc",
  "1e999",
  "NaN",
  "-1",
  "50",
  "49",
  "1.5",
  "0x1F",
  " 7 ",
  "\u0000",
  "\u001d",
  "|",
  "\ud800",
  "é",
  "x".repeat(3000),
  true,
  false,
  1e308,
  -1e308,
  1e-320,
  -0,
  2 ** 53,
  -(2 ** 31),
  Number.MAX_SAFE_INTEGER,
  [[1]],
  [{}],
  {},
  { a: 1 },
  [1, "x"],
  [true],
  [null],
  [],
  Array.from({ length: 300 }, (_, i) => i % 10),
  ["1", "2"],
  [1e40, 2],
  [0.5, 0.25, 0.125],
];

const UNKNOWN_KEYS = ["userid", "__proto__", "constructor", "toString", "", " user_id", "USER_ID"];
const FEATURES = ["user_id", "item", "cate", "tags", "price", "score"];

function validRow(random: () => number): Record<string, unknown> {
  const { int, pick, chance } = draws(random);
  const row: Record<string, unknown> = {};
  const decimal = () => Math.round(random() * 2000) / 100;
  if (chance(0.85)) row.user_id = pick([int(50), String(int(50)), null, ""]);
  if (chance(0.85)) row.item = pick([`item-${int(1000)}`, int(99999), "", null, "ünï©ødé", "a,b"]);
  if (chance(0.85)) row.cate = pick(["a", "b", "c", "zzz", "", null]);
  if (chance(0.8)) {
    const ids = Array.from({ length: int(4) }, () => int(10));
    row.tags = pick([ids, ids.join("\x1d"), "", null]);
  }
  if (chance(0.8)) row.price = pick([decimal(), String(decimal()), null, "", -5, 0, 1, 5, 10]);
  if (chance(0.8)) {
    const [a, b] = [random() * 4 - 2, random() * 4 - 2];
    row.score = pick([[a, b], `${a}\x1d${b}`, null, ""]);
  }
  if (chance(0.3)) row.clk = int(2);
  if (chance(0.2)) row.buy = pick([0, 1, "1", null]);
  return row;
}

function setKey(row: Record<string, unknown>, key: string, value: unknown): void {
  // defineProperty: `row["__proto__"] = v` would set the prototype, not a key.
  Object.defineProperty(row, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Applies one perturbation to `rows` (which may hold non-objects afterwards). */
function perturb(rows: unknown[], random: () => number): string {
  const { int, pick } = draws(random);
  if (rows.length === 0) rows.push({});
  const at = int(rows.length);
  const row = rows[at];
  const target = typeof row === "object" && row !== null && !Array.isArray(row)
    ? row as Record<string, unknown>
    : {};
  switch (int(6)) {
    case 0: {
      const column = pick(FEATURES), value = pick(EVIL_VALUES);
      setKey(target, column, value);
      rows[at] = target;
      return `row ${at} ${column}=${JSON.stringify(value)?.slice(0, 40)}`;
    }
    case 1: {
      const key = pick(UNKNOWN_KEYS);
      setKey(target, key, pick(EVIL_VALUES));
      rows[at] = target;
      return `row ${at} unknown key ${JSON.stringify(key)}`;
    }
    case 2: {
      const column = pick(FEATURES);
      delete target[column];
      rows[at] = target;
      return `row ${at} without ${column}`;
    }
    case 3: {
      const value = pick([7, "x", null, [], true, [1, 2], { rows: [] }]);
      rows[at] = value;
      return `row ${at} = ${JSON.stringify(value)}`;
    }
    case 4: {
      setKey(target, pick(["clk", "buy"]), pick(EVIL_VALUES));
      rows[at] = target;
      return `row ${at} odd label`;
    }
    default: {
      const extra = Array.from({ length: 40 + int(40) }, () => validRow(random));
      rows.push(...extra);
      return `${rows.length} rows`;
    }
  }
}

function bytesOf(text: string): Uint8Array {
  return encoder.encode(text);
}

/** A body-level mutation of a valid body. */
function mangle(text: string, random: () => number): { body: Uint8Array; what: string } {
  const { int, pick } = draws(random);
  const bytes = bytesOf(text);
  const splice = (insert: number[]) => {
    const at = int(bytes.length + 1);
    return Uint8Array.from([...bytes.subarray(0, at), ...insert, ...bytes.subarray(at)]);
  };
  switch (int(12)) {
    case 0:
      return { body: bytes.subarray(0, int(bytes.length)), what: "truncated" };
    case 1:
      return { body: Uint8Array.from([0xef, 0xbb, 0xbf, ...bytes]), what: "BOM" };
    case 2:
      return {
        body: splice(pick([[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80]])),
        what: "invalid UTF-8",
      };
    case 3: {
      const depth = pick([5, 6, 100, 100000]);
      return {
        body: bytesOf(`{"rows": [${"[".repeat(depth)}${"]".repeat(depth)}]}`),
        what: `nested ${depth}`,
      };
    }
    case 4:
      return {
        body: bytesOf(`{"rows": [{"item": "${"y".repeat(LIMITS.maxBodyBytes)}"}]}`),
        what: "huge",
      };
    case 5:
      return { body: Uint8Array.from({ length: int(200) }, () => int(256)), what: "random bytes" };
    case 6: {
      const value = pick(["null", "3", '"x"', "{}", "[]", "true", '{"rows": null}', '{"rows": 1}']);
      return { body: bytesOf(value), what: `JSON ${value}` };
    }
    case 7:
      return { body: bytesOf(pick(["", " ", "\n\n"])), what: "empty" };
    case 8:
      return { body: bytesOf(text + pick(["x", "}", " //c", ",", "\u0000"])), what: "trailing" };
    case 9:
      return {
        body: bytesOf(
          text.replace("{", pick(['{"extra": 1, ', '{"rows": 5, ', '{"__proto__": {}, '])),
        ),
        what: "extra key",
      };
    case 10:
      return {
        body: bytesOf(
          text.replace(/\d+(\.\d+)?/, pick(["1e999", "-1e999", "NaN", "01", "1.", "-"])),
        ),
        what: "odd number",
      };
    default:
      return { body: bytesOf(text.replaceAll('"', pick(["'", '\\"', "\u201c"]))), what: "quotes" };
  }
}

const CONTENT_TYPES = [
  "application/json",
  "APPLICATION/JSON",
  "application/json; charset=utf-8",
  "application/json;charset=UTF-8",
  'application/json; charset="utf-8"',
  "application/json; foo=bar",
  "application/json; charset=utf-16",
  "application/json; charset=latin1",
  "text/plain",
  "",
  "application/x-json",
  "application/jsonx",
  "multipart/form-data; boundary=x",
  "application/json, text/plain",
];
const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"];
const PATHS = [
  "/predict",
  "/healthz",
  "/",
  "/predict/",
  "/Predict",
  "//predict",
  "/predict?x=1",
  "/%70redict",
  "/healthz/..",
  "/" + "a".repeat(3000),
  "/predict;x",
];
const HOSTS = ["fuzz", "", "[::1", "a b", "x:99999", "%zz", "[", "127.0.0.1:1"];

function generate(random: () => number): FuzzRequest {
  const { int, pick, chance } = draws(random);
  const rows: unknown[] = Array.from({ length: int(6) }, () => validRow(random));
  const request: FuzzRequest = {
    what: "",
    method: "POST",
    path: "/predict",
    headers: { "content-type": "application/json" },
    body: null,
    delivery: "whole",
    chunk: 1 + int(64),
    host: "fuzz",
  };
  const kind = pick([
    "valid",
    "valid",
    "perturbed",
    "perturbed",
    "perturbed",
    "body",
    "body",
    "headers",
    "route",
    "stream",
  ]);
  const what: string[] = [kind];
  if (kind === "perturbed") {
    for (let n = 1 + int(3); n > 0; n--) what.push(perturb(rows, random));
  }
  const text = JSON.stringify({ rows });
  request.body = bytesOf(text);
  if (kind === "body") {
    const mangled = mangle(text, random);
    request.body = mangled.body;
    what.push(mangled.what);
  } else if (kind === "headers") {
    const type = pick(CONTENT_TYPES);
    if (type === "") delete request.headers["content-type"];
    else request.headers["content-type"] = type;
    what.push(`content-type ${JSON.stringify(type)}`);
    if (chance(0.5)) {
      const length = request.body.length;
      const declared = pick([
        "0",
        "-1",
        "abc",
        "99999999",
        String(length + 1 + int(5)),
        String(Math.max(0, length - 1 - int(5))),
        "1e3",
      ]);
      request.headers["content-length"] = declared;
      what.push(`content-length ${declared} (${length} sent)`);
    }
  } else if (kind === "route") {
    request.method = pick(METHODS);
    request.path = pick(PATHS);
    if (request.method === "GET" || request.method === "HEAD") request.body = null;
    what.push(`${request.method} ${request.path.slice(0, 40)}`);
  } else if (kind === "stream") {
    request.delivery = pick(["chunks", "chunks", "stall", "error", "endless"]);
    what.push(request.delivery);
  }
  if (chance(0.3)) {
    request.host = pick([...HOSTS, null]);
    what.push(`host ${JSON.stringify(request.host)}`);
  }
  request.what = what.join(", ");
  return request;
}

// -------------------------------------------------------------------- oracle

/** What the handler must answer: 200 with these outputs, or an error. */
type Expectation =
  | { valid: true; outputs: Record<string, number[]>; rows: number }
  | { valid: false; reason: string };

function jsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const [type, ...parameters] = header.split(";").map((p) => p.trim().toLowerCase());
  if (type !== "application/json") return false;
  return parameters.every((p) => !p.startsWith("charset=") || /^charset="?utf-8"?$/.test(p));
}

function depthOf(value: unknown): number {
  if (typeof value !== "object" || value === null) return 0;
  let deepest = 0;
  for (const item of Object.values(value)) deepest = Math.max(deepest, depthOf(item));
  return 1 + deepest;
}

/** The independent verdict on what the handler receives. */
function expectation(
  request: FuzzRequest,
  body: Uint8Array | null,
  declared: string | null,
  reference: Predictor,
): Expectation {
  const path = request.path.replace(/[?#].*$/, "");
  if (request.method !== "POST" || path !== "/predict") return { valid: false, reason: "route" };
  if (!jsonContentType(request.headers["content-type"])) return { valid: false, reason: "type" };
  if (request.delivery !== "whole" && request.delivery !== "chunks") {
    return { valid: false, reason: request.delivery };
  }
  if (declared !== null && Number(declared) > LIMITS.maxBodyBytes) {
    return { valid: false, reason: "declared length" };
  }
  if (body === null || body.length > LIMITS.maxBodyBytes) return { valid: false, reason: "size" };
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    return { valid: false, reason: "not JSON" };
  }
  if (depthOf(value) > LIMITS.maxDepth) return { valid: false, reason: "depth" };
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { valid: false, reason: "not an object" };
  }
  const keys = Object.keys(value);
  const rows = (value as { rows?: unknown }).rows;
  if (keys.length !== 1 || keys[0] !== "rows" || !Array.isArray(rows)) {
    return { valid: false, reason: "shape" };
  }
  if (rows.length > LIMITS.maxRows) return { valid: false, reason: "rows" };
  let scores: Record<string, Float32Array>;
  try {
    scores = reference.predict(rows);
  } catch (error) {
    return { valid: false, reason: `predict: ${(error as Error).message}` };
  }
  const outputs: Record<string, number[]> = {};
  for (const name in scores) outputs[name] = Array.from(scores[name]);
  return { valid: true, outputs, rows: rows.length };
}

/** Signs of this machine's internals in an answer. */
function internals(text: string): string {
  if (/\bat .*:\d+:\d+|file:\/\/|\.ts:\d+/.test(text)) return "a stack frame";
  if (text.includes(process.cwd())) return "the working directory";
  if (/<html|<!doctype/i.test(text)) return "HTML";
  return "";
}

/** The outcome of an answer against the expectation. */
function judge(
  request: FuzzRequest,
  expected: Expectation,
  status: number,
  contentType: string,
  text: string,
  fromRuntime: boolean,
): CaseResult {
  const detail = `${request.what}: ${status} ${text.slice(0, 300)}`;
  if (status === 500) return { outcome: "500", detail };
  const leak = internals(text);
  if (leak !== "") return { outcome: "crash", detail: `${leak} in ${detail}` };
  if (fromRuntime && status >= 400 && status < 500 && !contentType.includes("json")) {
    // The runtime's own HTTP parser refused the bytes before the handler saw them.
    return { outcome: "clear error", detail, note: "refused by the runtime's HTTP parser" };
  }
  if (request.method === "HEAD" && text === "") {
    // No body to read: the status says it all.
    return status === 200 || status >= 400
      ? { outcome: status === 200 ? "accepted correct" : "clear error", detail }
      : { outcome: "crash", detail };
  }
  if (!/^application\/json/.test(contentType)) {
    return { outcome: "crash", detail: `content-type ${contentType}: ${detail}` };
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch {
    return { outcome: "crash", detail: `not JSON: ${detail}` };
  }
  if (status === 200) {
    if (request.path.replace(/[?#].*$/, "") === "/healthz" && request.method === "GET") {
      return body.status === "ok"
        ? { outcome: "accepted correct", detail }
        : { outcome: "silently wrong", detail };
    }
    if (!expected.valid) {
      return { outcome: "silently wrong", detail: `200 for ${expected.reason}: ${detail}` };
    }
    const same = JSON.stringify(body) === JSON.stringify(expected.outputs);
    const finite = Object.values(body).every((v) => Array.isArray(v) && v.every(Number.isFinite));
    return same && finite
      ? { outcome: "accepted correct", detail }
      : { outcome: "silently wrong", detail: `outputs differ: ${detail}` };
  }
  if (status < 400 || status >= 600 || typeof body.error !== "string" || body.error === "") {
    return { outcome: "crash", detail: `no error message: ${detail}` };
  }
  if (
    body.row !== undefined &&
    (!Number.isInteger(body.row) || !String(body.error).startsWith(`row ${body.row}`))
  ) {
    return { outcome: "crash", detail: `row field does not match: ${detail}` };
  }
  if (body.column !== undefined && !String(body.error).includes(`'${body.column}'`)) {
    return { outcome: "crash", detail: `column field does not match: ${detail}` };
  }
  if (expected.valid) return { outcome: "wrongly refused", detail };
  return { outcome: "clear error", detail };
}

// ---------------------------------------------------------------- in process

function requestBody(request: FuzzRequest): BodyInit | null {
  const bytes = request.body;
  if (bytes === null) return null;
  if (request.delivery === "whole") return bytes as Uint8Array<ArrayBuffer>;
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (request.delivery === "endless") {
        controller.enqueue(new Uint8Array(4096).fill(0x20));
        return;
      }
      if (at >= bytes.length || (request.delivery !== "chunks" && at >= bytes.length / 2)) {
        if (request.delivery === "chunks") controller.close();
        else if (request.delivery === "error") controller.error(new Error("client went away"));
        else return new Promise<void>(() => {}); // stall: never another byte
        return;
      }
      controller.enqueue(bytes.slice(at, at + request.chunk));
      at += request.chunk;
    },
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout>;
  const timeout = new Promise<"timeout">((resolve) =>
    timer = setTimeout(() => resolve("timeout"), ms)
  );
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const ANSWER_MS = LIMITS.bodyTimeoutMs + 3000;

/** Cases against the handler called with `new Request(...)`. */
export function createRunner(): Promise<CaseRunner> {
  const { served, reference } = predictors();
  const handler = createHandler({ predictor: served, source: "fuzz", loadMs: 0 }, LIMITS);
  return Promise.resolve(async (_i: number, random: () => number): Promise<CaseResult> => {
    const request = generate(random);
    let built: Request;
    try {
      built = new Request(`http://fuzz.test${request.path}`, {
        method: request.method,
        headers: request.headers,
        body: requestBody(request),
        duplex: "half",
      } as RequestInit);
    } catch {
      // A request fetch itself cannot build (e.g. a forbidden header value): not tried here.
      built = new Request("http://fuzz.test/healthz");
      request.method = "GET", request.path = "/healthz", request.body = null;
    }
    const expected = expectation(
      request,
      request.body,
      built.headers.get("content-length"),
      reference,
    );
    const response = await withTimeout(handler(built), ANSWER_MS);
    if (response === "timeout") return { outcome: "hang", detail: request.what };
    const text = await withTimeout(response.text(), ANSWER_MS);
    if (text === "timeout") return { outcome: "hang", detail: `body of ${request.what}` };
    return judge(
      request,
      expected,
      response.status,
      response.headers.get("content-type") ?? "",
      text,
      false,
    );
  });
}

// ------------------------------------------------------------------ loopback

/** The request as bytes on the wire, and the body the handler will see. */
function wire(
  request: FuzzRequest,
): { bytes: Uint8Array; body: Uint8Array | null; stalls: boolean } {
  const head = [`${request.method} ${request.path} HTTP/${request.host === null ? "1.0" : "1.1"}`];
  if (request.host !== null) head.push(`Host: ${request.host}`);
  for (const [name, value] of Object.entries(request.headers)) {
    if (name !== "content-length") head.push(`${name}: ${value}`);
  }
  let body = request.body ?? new Uint8Array(0);
  const lie = request.headers["content-length"];
  let declared = body.length;
  if (lie !== undefined && /^\d+$/.test(lie)) declared = Number(lie);
  if (request.delivery === "stall" || request.delivery === "error") {
    // Half the body, then silence (a client that went away mid-body is the same on the wire).
    head.push(`content-length: ${body.length}`);
    body = body.subarray(0, Math.floor(body.length / 2));
    declared = Infinity;
  } else if (request.delivery === "endless") {
    head.push("transfer-encoding: chunked");
    const chunk = `1000\r\n${" ".repeat(4096)}\r\n`.repeat(8);
    return {
      bytes: encoder.encode(head.join("\r\n") + "\r\n\r\n" + chunk),
      body: null,
      stalls: true,
    };
  } else if (request.body !== null || lie !== undefined) {
    head.push(`content-length: ${lie ?? body.length}`);
  }
  head.push("connection: close");
  const bytes = Uint8Array.from([...encoder.encode(head.join("\r\n") + "\r\n\r\n"), ...body]);
  const stalls = declared > body.length;
  return { bytes, body: stalls ? null : body.subarray(0, declared), stalls };
}

/** Cases against a loopback server (raw TCP requests), in the worker that runs them. */
export async function createLoopbackRunner(): Promise<CaseRunner> {
  const { served, reference } = predictors();
  const handler = createHandler({ predictor: served, source: "fuzz", loadMs: 0 }, LIMITS);
  const server = await listen({ fetch: handler, error: internalErrorResponse, development: false });
  return async (_i: number, random: () => number): Promise<CaseResult> => {
    const request = generate(random);
    const { bytes, body, stalls } = wire(request);
    if (stalls) request.delivery = request.delivery === "endless" ? "endless" : "stall";
    const lie = request.headers["content-length"];
    const expected = expectation(
      request,
      body,
      lie !== undefined && /^\d+$/.test(lie) ? lie : null,
      reference,
    );
    const answer = await rawExchange(server.port, bytes, { waitMs: ANSWER_MS, complete: true });
    if (answer.status === 0) {
      return answer.closedByServer
        ? { outcome: "clear error", detail: request.what, note: "connection closed by the runtime" }
        : { outcome: "hang", detail: request.what };
    }
    return judge(
      request,
      expected,
      answer.status,
      answer.headers["content-type"] ?? "",
      answer.body,
      true,
    );
  };
}

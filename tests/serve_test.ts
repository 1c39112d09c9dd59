// examples/serve.ts: the handler called directly with `new Request(...)` for
// good and bad input, a loopback server (Deno.serve, or Bun.serve under
// Bun), and the documented commands run as child processes: `deno serve`
// with the least permissions, and `bun run`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { type AddressInfo, createServer } from "node:net";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import process from "node:process";
import { modelCheckpoint } from "../src/io/checkpoint.ts";
import { servingArtifact } from "../src/io/serving.ts";
import { resolveConfig } from "../src/config/config.ts";
import { parsePipelineConfig } from "../src/config/config_text.ts";
import { FeatureEncoder } from "../src/data/features.ts";
import { Predictor } from "../src/serve/inference.ts";
import { MMoEModel } from "../src/model/mmoe.ts";
import { exportModelDir } from "../examples/export.ts";
import { assertClose } from "./_util.ts";
import { listen, rawExchange } from "./_http.ts";

const CONFIG_TEXT = `
data_config { fg_mode: FG_DAG }
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 100 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "pid" expression: "context:pid" hash_bucket_size: 20 embedding_dim: 8 } }
feature_configs { id_feature { feature_name: "tags" expression: "item:tags" num_buckets: 10 embedding_dim: 8 separator: "|" } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" boundaries: [1, 10, 100] embedding_dim: 8 } }
model_config {
  feature_groups { group_name: "all" feature_names: ["user_id", "pid", "tags", "price"] group_type: DEEP }
  mmoe {
    expert_mlp { hidden_units: [16, 8] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" mlp { hidden_units: [8] } losses { binary_cross_entropy {} } }
    task_towers { tower_name: "cvr" label_name: "buy" mlp { hidden_units: [8] } losses { binary_cross_entropy {} } }
  }
}
`;

// The model dir of these tests: a tiny model trained a few steps, saved as
// examples/train.ts saves it: checkpoint (with optimizer state), config, serving artifact.
const config = resolveConfig(parsePipelineConfig(CONFIG_TEXT));
const trained = new MMoEModel(config, { maxBatch: 16, seed: 5 });
const encoder = new FeatureEncoder(config);
for (let step = 0; step < 5; step++) {
  trained.trainStep(encoder.encode(Array.from({ length: 16 }, (_, i) => ({
    record: {
      user_id: (i * 7 + step) % 100,
      pid: `p${i % 3}`,
      tags: "1|2",
      price: i,
      clk: i % 2,
      buy: i % 4 === 0 ? 1 : 0,
    },
    location: `row ${i}`,
  }))));
}
const CHECKPOINT = modelCheckpoint(trained, { withOptimizer: true });
const ARTIFACT = servingArtifact(trained, parsePipelineConfig(CONFIG_TEXT));
const MODEL_DIR = await mkdtemp(join(tmpdir(), "denorec-serve-"));
await writeFile(join(MODEL_DIR, "pipeline.config"), CONFIG_TEXT);
await writeFile(join(MODEL_DIR, "model.safetensors"), CHECKPOINT);
await writeFile(join(MODEL_DIR, "serving_model.bin"), ARTIFACT);

// The default export loads DENOREC_MODEL_DIR at import: set it first.
process.env.DENOREC_MODEL_DIR = MODEL_DIR;
const serve = await import("../examples/serve.ts");
const fetchDefault = serve.default.fetch;

const reference = new Predictor(parsePipelineConfig(CONFIG_TEXT), CHECKPOINT);
const ROWS = [
  { user_id: 3, pid: "430548_1007", tags: "1|5", price: 9.5 },
  { user_id: "42", pid: "430539_1007", tags: [2], price: "120" },
  { user_id: 7, tags: null, price: null },
];

const URL_BASE = "http://denorec.test";

function post(body: BodyInit | null, headers: Record<string, string> = {}): Request {
  return new Request(`${URL_BASE}/predict`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json", ...headers },
  });
}

async function expectError(response: Response, status: number, error: string | RegExp) {
  assert.equal(response.status, status);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  const body = await response.json();
  if (typeof error === "string") assert.equal(body.error, error);
  else assert.match(body.error, error);
  return body;
}

/** The JSON the service returns for ROWS-like rows: the reference predictor's outputs as arrays. */
function expectedScores(rows: Record<string, unknown>[]): Record<string, number[]> {
  const scores = reference.predict(rows as Parameters<Predictor["predict"]>[0]);
  return Object.fromEntries(Object.entries(scores).map(([k, v]) => [k, Array.from(v)]));
}

test("serve: POST /predict scores rows; GET /healthz describes the model", async () => {
  const response = await fetchDefault(post(JSON.stringify({ rows: ROWS })));
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.deepEqual(Object.keys(body), ["logits_ctr", "probs_ctr", "logits_cvr", "probs_cvr"]);
  assert.deepEqual(body, expectedScores(ROWS));
  assert.equal(body.probs_ctr.length, 3);
  // Label columns ride along and are ignored; an empty request gives empty arrays.
  const labelled = ROWS.map((r) => ({ ...r, clk: 1, buy: 0 }));
  assert.deepEqual(
    await (await fetchDefault(post(JSON.stringify({ rows: labelled })))).json(),
    body,
  );
  const empty = await fetchDefault(post('{"rows": []}'));
  assert.deepEqual(await empty.json(), {
    logits_ctr: [],
    probs_ctr: [],
    logits_cvr: [],
    probs_cvr: [],
  });

  const health = await fetchDefault(new Request(`${URL_BASE}/healthz`));
  assert.equal(health.status, 200);
  const info = await health.json();
  assert.equal(info.status, "ok");
  // The directory's name only: clients are not told absolute paths.
  assert.equal(info.source, `dir ${basename(MODEL_DIR)}`);
  assert.deepEqual(info.towers, ["ctr", "cvr"]);
  assert.deepEqual(info.columns, ["user_id", "pid", "tags", "price"]);
  assert.equal(info.embeddings, "f32");
  assert.deepEqual(info.limits, {
    maxBodyBytes: 1048576,
    maxRows: 1024,
    maxDepth: 4,
    bodyTimeoutMs: 10000,
    maxConcurrent: 64,
  });
  const head = await fetchDefault(new Request(`${URL_BASE}/healthz`, { method: "HEAD" }));
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
});

test("serve: each bad input is a 400 with a message, never a 500", async () => {
  // A Request built in process may carry no content-length: then the streamed count refuses it.
  await expectError(
    await fetchDefault(post("x".repeat((1 << 20) + 1))),
    413,
    /^request body (of 1048577 bytes )?is over the 1048576-byte limit$/,
  );
  const cases: [string, Request, string | RegExp][] = [
    [
      "too many rows",
      post(JSON.stringify({ rows: Array.from({ length: 1025 }, () => ({ user_id: 1 })) })),
      "too many rows: 1025, the limit is 1024 per request",
    ],
    ["truncated JSON", post('{"rows": [{"user_id": 1}'), /^body is not valid JSON: /],
    ["empty body", post(""), /^body is not valid JSON: /],
    ["no body", post(null), 'empty body: send JSON {"rows": [...]}'],
    ["invalid UTF-8", post(Uint8Array.of(0x7b, 0xff, 0x7d)), "request body is not valid UTF-8"],
    [
      "JSON deeper than the request shape",
      post('{"rows": [{"tags": [[1]]}]}'),
      'JSON is nested deeper than 4 levels (expected {"rows": [{"column": value}]})',
    ],
    [
      "JSON nested 100000 deep",
      post("[".repeat(100000) + "]".repeat(100000)),
      'JSON is nested deeper than 4 levels (expected {"rows": [{"column": value}]})',
    ],
    ["an array body", post("[]"), 'body must be a JSON object {"rows": [...]}, got an array'],
    ["a number body", post("3"), 'body must be a JSON object {"rows": [...]}, got number'],
    ["null body", post("null"), 'body must be a JSON object {"rows": [...]}, got null'],
    ["misspelt key", post('{"row": []}'), `unknown key 'row' (the body has only "rows")`],
    [
      "rows not an array",
      post('{"rows": {"user_id": 1}}'),
      '"rows" must be an array of row objects',
    ],
    ["missing rows", post("{}"), '"rows" must be an array of row objects'],
    [
      "a row that is not an object",
      post('{"rows": [{"user_id": 1}, 7]}'),
      "row 1: expected an object of column values, got the number 7",
    ],
    [
      "a value of the wrong type",
      post('{"rows": [{"user_id": {"id": 1}}]}'),
      "row 0: column 'user_id': expected a string, number, boolean, null or an array of strings " +
      "and numbers, got an object",
    ],
    [
      "an id that is not an integer",
      post('{"rows": [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}, {"user_id": "abc"}]}'),
      `row 3: column 'user_id': "abc" is not an integer id`,
    ],
    [
      "an id out of range",
      post('{"rows": [{"user_id": 100}]}'),
      "row 0: column 'user_id': id 100 is out of range [0, 100)",
    ],
    [
      "a number that overflows to Infinity",
      post('{"rows": [{"price": 1e999}]}'),
      "row 0: column 'price': Infinity is not a finite number",
    ],
    [
      "an unknown column",
      post('{"rows": [{"userid": 3}]}'),
      "row 0: unknown column 'userid' (the model reads user_id, pid, tags, price; label and " +
      "weight columns clk, buy are accepted and ignored)",
    ],
    [
      "more multi-value ids than the arena holds",
      post(JSON.stringify({ rows: [{ tags: Array.from({ length: 5000 }, () => 1) }] })),
      "column 'tags': 5000 ids in 1 rows (row 0 to row 0) exceed the 4096 the predictor holds " +
      "per call (maxBatch 1024 x idsPerRow 4)",
    ],
  ];
  for (const [name, request, error] of cases) {
    const response = await fetchDefault(request);
    assert.equal(response.status, 400, name);
    await expectError(response, 400, error);
  }
  // Row and column are separate fields when one row is at fault.
  const body = await expectError(
    await fetchDefault(post('{"rows": [{"user_id": 1}, {"price": "cheap"}]}')),
    400,
    `row 1: column 'price': "cheap" is not a number`,
  );
  assert.equal(body.row, 1);
  assert.equal(body.column, "price");
  // Brackets inside strings are not nesting.
  const quoted = await fetchDefault(post('{"rows": [{"pid": "[[[[{{{{\\"]]"}]}'));
  assert.equal(quoted.status, 200);
});

test("serve: an endless body is refused after the limit, while it streams in", async () => {
  let pulled = 0;
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  const endless = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(chunk);
    },
  });
  const request = new Request(`${URL_BASE}/predict`, {
    method: "POST",
    body: endless,
    headers: { "content-type": "application/json" },
    // Node and Bun want this for a stream body; Deno ignores it.
    duplex: "half",
  } as RequestInit);
  await expectError(
    await fetchDefault(request),
    413,
    "request body is over the 1048576-byte limit",
  );
  // 1 MiB is 16 chunks: reading stopped right after the limit (allowing read-ahead).
  assert.ok(pulled >= 17 && pulled <= 24, `pulled ${pulled} chunks`);
});

test("serve: unknown routes are 404, wrong methods 405 with Allow", async () => {
  await expectError(
    await fetchDefault(new Request(`${URL_BASE}/predictions`)),
    404,
    "no route /predictions: POST /predict, GET /healthz",
  );
  await expectError(
    await fetchDefault(new Request(`${URL_BASE}/`, { method: "POST", body: "{}" })),
    404,
    "no route /: POST /predict, GET /healthz",
  );
  const get = await fetchDefault(new Request(`${URL_BASE}/predict`));
  await expectError(get, 405, "use POST");
  assert.equal(get.headers.get("allow"), "POST");
  const put = await fetchDefault(new Request(`${URL_BASE}/healthz`, { method: "PUT", body: "x" }));
  await expectError(put, 405, "use GET");
  assert.equal(put.headers.get("allow"), "GET, HEAD");
});

const NOT_LOADED = "model not loaded (the server log says why)";

test("serve: a model that fails to load gives 503; the reason is logged once, not sent", async () => {
  const logged: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => void logged.push(args);
  try {
    const missing = join(MODEL_DIR, "missing");
    const handler = serve.createHandler(serve.loadModelDir(missing));
    for (const request of [post('{"rows": []}'), new Request(`${URL_BASE}/healthz`), post("{")]) {
      const body = await expectError(await handler(request), 503, NOT_LOADED);
      assert.doesNotMatch(JSON.stringify(body), /missing|ENOENT/);
    }
    assert.equal(logged.length, 1);
    assert.match(
      String(logged[0][0]),
      /^denorec serve: model not loaded: .*(ENOENT|No such file)/i,
    );
    // A corrupt artifact is a load failure too, with the problem named.
    const corrupt = ARTIFACT.slice();
    corrupt[corrupt.length - 5] ^= 1;
    const other = serve.createHandler(
      Promise.resolve().then(() => serve.loadEmbeddedModel(corrupt)),
    );
    await expectError(await other(new Request(`${URL_BASE}/healthz`)), 503, NOT_LOADED);
    assert.equal(logged.length, 2);
    assert.match(
      String(logged[1][0]),
      /^denorec serve: model not loaded: embedded model: data checksum mismatch \(stored [0-9a-f]{8}, computed [0-9a-f]{8}\): the file is corrupt$/,
    );
    // A promise of something else than a loaded model is a load failure too.
    const wrong = serve.createHandler(Promise.resolve({ predictor: "x" } as never));
    await expectError(await wrong(new Request(`${URL_BASE}/healthz`)), 503, NOT_LOADED);
    assert.equal(logged.length, 3);
    assert.match(String(logged[2][0]), /model not loaded: model must be \{ predictor: Predictor/);
  } finally {
    console.error = original;
  }
});

test("serve: a model embedded by examples/embed_model.ts loads with no file access", async () => {
  // What the script writes: the serving artifact of the model dir's config and checkpoint.
  const embedded = await exportModelDir(MODEL_DIR, "f32");
  assert.deepEqual(embedded, ARTIFACT);
  // Optimizer state dropped: the artifact is smaller than the trained checkpoint.
  assert.ok(embedded.length < CHECKPOINT.length);
  const loaded = serve.loadEmbeddedModel(embedded);
  assert.equal(loaded.source, "embedded");
  const handler = serve.createHandler(Promise.resolve(loaded));
  const response = await handler(post(JSON.stringify({ rows: ROWS })));
  assert.deepEqual(await response.json(), expectedScores(ROWS));
});

test("serve: loopback on 127.0.0.1 (Deno.serve, or Bun.serve under Bun)", async () => {
  const server = await listen(serve.default);
  try {
    const ok = await fetch(`${server.url}/predict`, {
      method: "POST",
      body: JSON.stringify({ rows: ROWS }),
      headers: { "content-type": "application/json" },
    });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), expectedScores(ROWS));
    const bad = await fetch(`${server.url}/predict`, {
      method: "POST",
      body: "{",
      headers: { "content-type": "application/json" },
    });
    await expectError(bad, 400, /^body is not valid JSON: /);
    const plain = await fetch(`${server.url}/predict`, {
      method: "POST",
      body: "{}",
      headers: { "content-type": "text/plain" },
    });
    await expectError(plain, 415, /^content-type "text\/plain" is not supported/);
    // Over the wire the declared length is refused before the body is read.
    const big = await fetch(`${server.url}/predict`, {
      method: "POST",
      body: new Uint8Array(2 << 20).fill(0x20),
      headers: { "content-type": "application/json" },
    });
    await expectError(big, 413, "request body of 2097152 bytes is over the 1048576-byte limit");
    const health = await fetch(`${server.url}/healthz`);
    assert.equal((await health.json()).status, "ok");
  } finally {
    await server.close();
  }
});

test("serve: the body must be application/json (UTF-8): 415 otherwise", async () => {
  const body = JSON.stringify({ rows: ROWS });
  for (
    const type of [
      "application/json",
      "Application/JSON; charset=UTF-8",
      'application/json;charset="utf-8"',
    ]
  ) {
    const response = await fetchDefault(post(body, { "content-type": type }));
    assert.equal(response.status, 200, type);
    assert.deepEqual(await response.json(), expectedScores(ROWS));
  }
  for (
    const type of [
      "text/plain",
      "application/x-www-form-urlencoded",
      "application/json; charset=latin1",
      "application/jsonx",
      "",
    ]
  ) {
    const response = await fetchDefault(post(body, { "content-type": type }));
    const error = await expectError(response, 415, /content-type|send the body as/);
    assert.match(error.error, /application\/json/, type);
    assert.equal(response.headers.get("accept-post"), "application/json");
  }
  const none = new Request(`${URL_BASE}/predict`, { method: "POST", body: new Uint8Array(2) });
  assert.equal(none.headers.get("content-type"), null);
  await expectError(
    await fetchDefault(none),
    415,
    "no content-type: send the body as content-type: application/json",
  );
});

/** A request whose body sends `first` and then nothing, ever (a client holding half a body). */
function stalledPost(first: string): Request {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(first));
    },
  });
  return new Request(`${URL_BASE}/predict`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json" },
    duplex: "half",
  } as RequestInit);
}

test("serve: a body not complete in time is 408; busy is 503 with Retry-After; slots are freed", async () => {
  const loaded = serve.loadEmbeddedModel(ARTIFACT);
  const handler = serve.createHandler(loaded, { bodyTimeoutMs: 300, maxConcurrent: 2 });
  const started = performance.now();
  const held = [handler(stalledPost('{"rows": [')), handler(stalledPost("{"))];
  // Both slots are taken by the held bodies: the next request is refused at once.
  const busy = await handler(post(JSON.stringify({ rows: ROWS })));
  await expectError(busy, 503, "busy: 2 requests in flight; retry shortly");
  assert.equal(busy.headers.get("retry-after"), "1");
  assert.ok(performance.now() - started < 250, "503 before the held bodies time out");
  for (const response of await Promise.all(held)) {
    await expectError(response, 408, "request body not complete after 300 ms");
    assert.equal(response.headers.get("connection"), "close");
  }
  assert.ok(performance.now() - started >= 290);
  // The slots are free again.
  const ok = await handler(post(JSON.stringify({ rows: ROWS })));
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), expectedScores(ROWS));
  assert.throws(() => serve.createHandler(loaded, { bodyTimeoutMs: 0 }), {
    name: "RangeError",
    message: "limits.bodyTimeoutMs must be a positive integer, got 0",
  });
  assert.throws(() => serve.createHandler(null as never), {
    name: "TypeError",
    message:
      "model must be { predictor: Predictor, source, loadMs } (or a promise of it), got null",
  });
});

/** What must never reach a client: a 500, HTML, a stack frame, a path of this machine. */
function assertNoInternals(status: number, body: string, label: string): void {
  assert.notEqual(status, 500, `${label}: 500: ${body}`);
  assert.doesNotMatch(body, /<html|<!doctype/i, `${label}: HTML`);
  assert.doesNotMatch(body, /\bat .*:\d+:\d+|file:\/\/|\.ts:\d+/, `${label}: stack: ${body}`);
  assert.ok(!body.includes(process.cwd()), `${label}: working directory: ${body}`);
  assert.ok(!body.includes(MODEL_DIR), `${label}: model dir: ${body}`);
}

test("serve: loopback: malformed Host headers and absolute URLs are answered, never a 500", async () => {
  const server = await listen(serve.default);
  try {
    const requests = [
      "GET /healthz HTTP/1.0\r\nHost:\r\n\r\n",
      "GET /healthz HTTP/1.0\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: x:99999\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: %zz\r\n\r\n",
      "GET /healthz?x=[ HTTP/1.1\r\nHost: [\r\n\r\n",
      "GET http://[::1/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /predict HTTP/1.1\r\nHost: [::1\r\ncontent-type: application/json\r\n" +
      `content-length: ${'{"rows":[]}'.length}\r\n\r\n{"rows":[]}`,
      "GET /nowhere HTTP/1.1\r\nHost: [::1\r\n\r\n",
    ];
    for (const request of requests) {
      const label = JSON.stringify(request.slice(0, 60));
      const answer = await rawExchange(server.port, request, { complete: true });
      assertNoInternals(answer.status, answer.body, label);
      if (answer.status === 400 && answer.body === "") continue; // the runtime's own parser refused it
      assert.match(answer.headers["content-type"] ?? "", /^application\/json/, label);
      const body = JSON.parse(answer.body);
      if (request.includes("/healthz")) assert.equal(body.status, "ok", label);
      else if (request.includes("/predict")) {
        assert.deepEqual(body, { logits_ctr: [], probs_ctr: [], logits_cvr: [], probs_cvr: [] });
      } else assert.equal(answer.status, 404, label);
    }
  } finally {
    await server.close();
  }
});

test("serve: loopback: a client holding half a body gets 408 in time", async () => {
  const loaded = serve.loadEmbeddedModel(ARTIFACT);
  const handler = serve.createHandler(loaded, { bodyTimeoutMs: 400, maxConcurrent: 1 });
  const server = await listen({ ...serve.default, fetch: handler });
  try {
    const half = "POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n" +
      'content-length: 100\r\n\r\n{"rows": [';
    // Under Bun, wait for the server to close the connection; under Deno, for the answer.
    const bun = (globalThis as { Bun?: unknown }).Bun !== undefined;
    const holding = rawExchange(server.port, half, { waitMs: 3000, complete: !bun });
    await new Promise((resolve) => setTimeout(resolve, 100));
    // The held body takes the only slot.
    const busy = await fetch(`${server.url}/predict`, {
      method: "POST",
      body: JSON.stringify({ rows: ROWS }),
      headers: { "content-type": "application/json" },
    });
    await expectError(busy, 503, "busy: 1 requests in flight; retry shortly");
    const answer = await holding;
    assert.equal(answer.status, 408);
    assert.ok(answer.firstByteMs >= 390 && answer.firstByteMs < 2500, `${answer.firstByteMs} ms`);
    assert.match(answer.body, /request body not complete after 400 ms/);
    assert.equal(answer.headers.connection, "close");
    // Bun closes the connection; Deno 2.9.6 keeps it while the body read is pending, whatever
    // the handler answers (see ServeLimits.bodyTimeoutMs), until the client closes it.
    if (bun) assert.ok(answer.closedByServer);
    // Its slot is free again.
    const ok = await fetch(`${server.url}/predict`, {
      method: "POST",
      body: JSON.stringify({ rows: ROWS }),
      headers: { "content-type": "application/json" },
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  } finally {
    await server.close();
  }
});

test("serve: a failing handler is a JSON 500 without internals (Bun's error page is off)", async () => {
  const original = console.error;
  const logged: unknown[] = [];
  console.error = (...args: unknown[]) => void logged.push(args);
  const server = await listen({
    ...serve.default,
    fetch: () => Promise.reject(new Error(`broken at ${process.cwd()}/examples/serve.ts:1:1`)),
  });
  try {
    const response = await fetch(`${server.url}/healthz`);
    const text = await response.text();
    assert.equal(response.status, 500);
    assert.deepEqual(JSON.parse(text), { error: "internal error" });
    assert.ok(!text.includes(process.cwd()));
    assert.equal(logged.length, 1); // the server log has it
  } finally {
    await server.close();
    console.error = original;
  }
});

test("serve: outputs are never NaN: NaN weights are a JSON 500, an overflowing row a 400", async () => {
  const text = `
feature_configs { id_feature { feature_name: "user_id" expression: "user:user_id" num_buckets: 10 embedding_dim: 4 } }
feature_configs { raw_feature { feature_name: "price" expression: "item:price" } }
model_config {
  feature_groups { group_name: "all" feature_names: ["user_id", "price"] group_type: DEEP }
  mmoe {
    expert_mlp { hidden_units: [4] }
    num_expert: 2
    task_towers { tower_name: "ctr" label_name: "clk" losses { binary_cross_entropy {} } }
  }
}`;
  const pipeline = parsePipelineConfig(text);
  const bytes = modelCheckpoint(new MMoEModel(resolveConfig(pipeline), { maxBatch: 4, seed: 1 }));
  const request = (rows: unknown[]) => post(JSON.stringify({ rows }));
  // Finite but huge weights: a large finite price overflows float32 inside the model.
  const huge = new Predictor(pipeline, bytes);
  for (const expert of [0, 1]) {
    huge.model.parameter(`mmoe.expert_mlps.${expert}.mlp.0.perceptron.0.weight`).fill(1e30);
  }
  const hugeHandler = serve.createHandler({ predictor: huge, source: "test", loadMs: 0 });
  const ok = await hugeHandler(request([{ user_id: 1, price: 0 }]));
  assert.equal(ok.status, 200);
  assert.ok((await ok.json()).probs_ctr.every(Number.isFinite));
  const overflow = await expectError(
    await hugeHandler(request([{ user_id: 1, price: 0 }, { user_id: 2, price: 1e20 }])),
    400,
    /^row 1: output logits_ctr is -?Infinity|NaN: the row's values overflow the model/,
  );
  assert.equal(overflow.row, 1);
  // NaN parameters: every row is NaN; a 500 that names nothing, the parameter in the log.
  const broken = new Predictor(pipeline, bytes);
  broken.model.parameter("mmoe.gate_finals.0.bias")[1] = NaN;
  const brokenHandler = serve.createHandler({ predictor: broken, source: "test", loadMs: 0 });
  const original = console.error;
  const logged: unknown[][] = [];
  console.error = (...args: unknown[]) => void logged.push(args);
  try {
    const response = await brokenHandler(request([{ user_id: 1, price: 3 }]));
    assert.equal(response.status, 500);
    assert.deepEqual(await response.json(), { error: "internal error" });
    assert.match(
      String(logged[0][1]),
      /parameter mmoe\.gate_finals\.0\.bias has non-finite values/,
    );
  } finally {
    console.error = original;
  }
});

test("serve: null values are missing; nested objects are a 400 naming row and column", async () => {
  const nulls = [{ user_id: null, pid: null, tags: null, price: null }, {
    user_id: 3,
    tags: [1, null],
  }];
  const response = await fetchDefault(post(JSON.stringify({ rows: nulls })));
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), expectedScores([{}, { user_id: 3, tags: [1] }]));
  const nested = await expectError(
    await fetchDefault(post('{"rows": [{"user_id": 1}, {"user_id": 2, "pid": {"a": 1}}]}')),
    400,
    "row 1: column 'pid': expected a string, number, boolean, null or an array of strings and " +
      "numbers, got an object",
  );
  assert.equal(nested.row, 1);
  assert.equal(nested.column, "pid");
});

/** A child process's output callbacks, exit and kill, from whichever API spawns it faithfully. */
interface Child {
  onOutput(listener: (text: string) => void): void;
  exited: Promise<number | null>;
  kill(): void;
}

/**
 * Spawns `command`. Under Deno through `Deno.Command`: Deno's node:child_process
 * treats its own executable as `node` and runs it with every permission, which
 * would hide a missing permission flag.
 */
function spawnChild(command: string, args: string[], env: Record<string, string>): Child {
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (deno !== undefined) {
    const child = new deno.Command(command, { args, env, stdout: "piped", stderr: "piped" })
      .spawn();
    const listeners: ((text: string) => void)[] = [];
    for (const stream of [child.stdout, child.stderr]) {
      stream.pipeThrough(new TextDecoderStream()).pipeTo(
        new WritableStream({ write: (text) => listeners.forEach((l) => l(text)) }),
      ).catch(() => {});
    }
    return {
      onOutput: (listener) => listeners.push(listener),
      exited: child.status.then((status) => status.code),
      kill: () => {
        try {
          child.kill();
        } catch {
          // already exited
        }
      },
    };
  }
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return {
    onOutput: (listener) => {
      child.stdout!.on("data", (data: Uint8Array) => listener(new TextDecoder().decode(data)));
      child.stderr!.on("data", (data: Uint8Array) => listener(new TextDecoder().decode(data)));
    },
    exited: new Promise((resolve) => child.on("exit", resolve)),
    kill: () => child.kill(),
  };
}

/**
 * Runs `command` until it prints a listening port (`pattern`'s group 1),
 * calls `check` with the base URL and the output so far, and stops it (by
 * its own pid).
 */
async function withServerProcess(
  command: string,
  args: string[],
  env: Record<string, string>,
  pattern: RegExp,
  check: (base: string, output: () => string) => Promise<void>,
): Promise<void> {
  const child = spawnChild(command, args, env);
  let output = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const base = await new Promise<string>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no listening line in 20 s:\n${output}`)), 20000);
      child.onOutput((text) => {
        output += text;
        const match = output.match(pattern);
        if (match) resolve(`http://127.0.0.1:${match[1]}`);
      });
      child.exited.then((code) => reject(new Error(`exited with ${code}:\n${output}`)));
    });
    clearTimeout(timer);
    await check(base, () => output);
  } finally {
    clearTimeout(timer);
    child.kill();
    await child.exited;
  }
}

/** POST ROWS and GET /healthz against a served model dir. */
async function scoresFromServer(base: string, output: () => string): Promise<void> {
  const response = await fetch(`${base}/predict`, {
    method: "POST",
    body: JSON.stringify({ rows: ROWS }),
    headers: { "content-type": "application/json" },
  });
  assert.equal(response.status, 200, output());
  // Another runtime may round differently: relaxed SIMD lets V8 fuse multiply-add where
  // JavaScriptCore does not, so outputs agree to float32 rounding, not bit for bit.
  const scores = await response.json();
  for (const [name, expected] of Object.entries(expectedScores(ROWS))) {
    assertClose(scores[name], expected, name, { rtol: 1e-5, atol: 1e-6 });
  }
  const health = await fetch(`${base}/healthz`);
  assert.equal((await health.json()).source, `dir ${basename(MODEL_DIR)}`);
  assert.doesNotMatch(output(), /not loaded|error/i);
}

// The runtimes' own binaries, not node_modules/.bin/deno (a Node wrapper that would outlive
// a kill and leave the server running).
const runtime = globalThis as { Deno?: typeof Deno; Bun?: unknown };
const DENO_BIN = runtime.Deno?.execPath() ?? join(process.cwd(), "node_modules/deno/deno");
const BUN_BIN = runtime.Bun !== undefined
  ? process.execPath
  : join(process.cwd(), "node_modules/bun/bin/bun.exe");

test("serve: both runtimes' binaries are here (npm ci installs them): the process tests need them", () => {
  assert.ok(existsSync(DENO_BIN), `no deno binary at ${DENO_BIN}`);
  assert.ok(existsSync(BUN_BIN), `no bun binary at ${BUN_BIN}`);
});

test(
  "serve: the documented least-permission `deno serve` command serves the model",
  () =>
    withServerProcess(
      DENO_BIN,
      [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        `--allow-read=${MODEL_DIR}`,
        "--allow-env=DENOREC_MODEL_DIR",
        "examples/serve.ts",
      ],
      { DENOREC_MODEL_DIR: MODEL_DIR },
      /Listening on http:\/\/127\.0\.0\.1:(\d+)/,
      scoresFromServer,
    ),
);

test(
  "serve: `deno serve` with no permissions answers 503 naming what is missing, without prompting",
  () =>
    withServerProcess(
      DENO_BIN,
      ["serve", "--host", "127.0.0.1", "--port", "0", "examples/serve.ts"],
      { DENOREC_MODEL_DIR: MODEL_DIR },
      /Listening on http:\/\/127\.0\.0\.1:(\d+)/,
      async (base, output) => {
        for (const path of ["/healthz", "/predict"]) {
          const response = await fetch(`${base}${path}`, {
            method: path === "/predict" ? "POST" : "GET",
            body: path === "/predict" ? '{"rows": []}' : undefined,
            headers: { "content-type": "application/json" },
          });
          await expectError(response, 503, NOT_LOADED);
        }
        // The reason, logged once at start.
        assert.equal(output().match(/model not loaded/g)?.length, 1, output());
        assert.match(
          output(),
          /denorec serve: model not loaded: no model: set DENOREC_MODEL_DIR to a directory with serving_model\.bin \(and allow reading it and the variable\), or embed one with examples\/embed_model\.ts/,
        );
      },
    ),
);

test(
  "serve: `bun run examples/serve.ts` serves the same file",
  () =>
    withServerProcess(
      BUN_BIN,
      ["run", "examples/serve.ts"],
      { DENOREC_MODEL_DIR: MODEL_DIR, HOST: "127.0.0.1", PORT: "0" },
      /server: http:\/\/[\w.]+:(\d+)/,
      scoresFromServer,
    ),
);

/** POST ROWS to a server of the embedded model; its /healthz says so. */
async function scoresFromEmbedded(base: string, output: () => string): Promise<void> {
  const response = await fetch(`${base}/predict`, {
    method: "POST",
    body: JSON.stringify({ rows: ROWS }),
    headers: { "content-type": "application/json" },
  });
  assert.equal(response.status, 200, output());
  const scores = await response.json();
  for (const [name, expected] of Object.entries(expectedScores(ROWS))) {
    assertClose(scores[name], expected, name, { rtol: 1e-5, atol: 1e-6 });
  }
  assert.equal((await (await fetch(`${base}/healthz`)).json()).source, "embedded");
}

test("serve: the embedded model (examples/model_embedded.bin) serves with no permissions (deno serve) and under Bun", async () => {
  const embedded = join(process.cwd(), "examples/model_embedded.bin");
  await writeFile(embedded, ARTIFACT);
  try {
    await withServerProcess(
      DENO_BIN,
      ["serve", "--host", "127.0.0.1", "--port", "0", "examples/serve.ts"],
      { DENOREC_MODEL_DIR: "" }, // inherited otherwise (and then unreadable without --allow-env)
      /Listening on http:\/\/127\.0\.0\.1:(\d+)/,
      scoresFromEmbedded,
    );
    await withServerProcess(
      BUN_BIN,
      ["run", "examples/serve.ts"],
      { DENOREC_MODEL_DIR: "", HOST: "127.0.0.1", PORT: "0" },
      /server: http:\/\/[\w.]+:(\d+)/,
      scoresFromEmbedded,
    );
  } finally {
    await writeFile(embedded, new Uint8Array(0));
  }
});

/** Runs `command` to its end (at most 20 s): exit code and output. */
async function runToEnd(
  command: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; output: string }> {
  const child = spawnChild(command, args, env);
  let output = "";
  child.onOutput((text) => output += text);
  const timer = setTimeout(() => child.kill(), 20000);
  const code = await child.exited;
  clearTimeout(timer);
  return { code, output };
}

test(
  "serve: a server that cannot start says why in one line and exits with 1 (deno serve, bun run)",
  async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const port = String((busy.address() as AddressInfo).port);
    try {
      const env = { DENOREC_MODEL_DIR: MODEL_DIR };
      const runs = [
        await runToEnd(
          DENO_BIN,
          ["serve", "-A", "--host", "127.0.0.1", "--port", port, "examples/serve.ts"],
          env,
        ),
        await runToEnd(BUN_BIN, ["run", "examples/serve.ts"], {
          ...env,
          HOST: "127.0.0.1",
          PORT: port,
        }),
      ];
      for (const { code, output } of runs) {
        assert.equal(code, 1, output);
        const errors = output.split("\n").filter((line) => line.startsWith("error"));
        assert.equal(errors.length, 1, output);
        assert.match(errors[0], /^error: .*(in use|Address already in use)/i, output);
        assert.doesNotMatch(output, /\bat .*:\d+:\d+|\^/, output);
      }
      const badPort = await runToEnd(BUN_BIN, ["run", "examples/serve.ts"], {
        ...env,
        PORT: "80a",
      });
      assert.equal(badPort.code, 1, badPort.output);
      assert.equal(
        badPort.output.trim(),
        'error: PORT must be a port number in [0, 65535], got "80a"',
      );
    } finally {
      busy.close();
    }
  },
);

test("serve: clean up the model dir", async () => {
  await rm(MODEL_DIR, { recursive: true });
});

// HTTP test helpers shared by serve_test.ts and fuzz_http_test.ts: a loopback
// server (Deno.serve under Deno, Bun.serve under Bun) and a raw TCP client
// that can send what `fetch` refuses to (malformed Host headers, half bodies).
import { connect } from "node:net";

/** A server on 127.0.0.1 and how to stop it. */
export interface LoopbackServer {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  /** The port. */
  port: number;
  /** Stops the server and closes its connections. */
  close(): Promise<void>;
}

/** What `deno serve` and Bun take as a default export. */
export interface ServeExport {
  /** The handler. */
  fetch: (request: Request) => Promise<Response>;
  /** Bun: the answer when `fetch` throws. */
  error?: (error: unknown) => Response;
  /** Bun: the development error page. */
  development?: boolean;
}

/**
 * A default export served on 127.0.0.1, port 0, as its runtime serves it:
 * `Deno.serve` with `fetch` (and `error` as `onError`) under Deno,
 * `Bun.serve(entry)` (with its `error` and `development` options) under Bun.
 */
export function listen(entry: ServeExport): Promise<LoopbackServer> {
  const host = globalThis as {
    Deno?: typeof Deno;
    Bun?: {
      serve(options: ServeExport & { port: number; hostname: string }): {
        port: number;
        stop(force?: boolean): Promise<void>;
      };
    };
  };
  if (host.Deno !== undefined) {
    const controller = new AbortController();
    return new Promise((resolve) => {
      const server = host.Deno!.serve({
        port: 0,
        hostname: "127.0.0.1",
        signal: controller.signal,
        ...(entry.error ? { onError: entry.error } : {}),
        onListen: ({ port }) =>
          resolve({
            url: `http://127.0.0.1:${port}`,
            port,
            close: async () => {
              controller.abort();
              await server.finished;
            },
          }),
      }, entry.fetch);
    });
  }
  const server = host.Bun!.serve({ ...entry, port: 0, hostname: "127.0.0.1" });
  return Promise.resolve({
    url: `http://127.0.0.1:${server.port}`,
    port: server.port,
    close: () => server.stop(true),
  });
}

/** What a raw TCP exchange gave. */
export interface RawExchange {
  /** Status code of the first response, or 0 for none. */
  status: number;
  /** Response headers, lower-cased names (first response). */
  headers: Record<string, string>;
  /** Everything after the first response's header block, as Latin-1 text. */
  body: string;
  /** Whether the server ended the connection before `waitMs`. */
  closedByServer: boolean;
  /** Milliseconds from connecting to the first response byte (or to giving up). */
  firstByteMs: number;
}

/**
 * Sends `request` bytes on a new connection to 127.0.0.1:`port` and collects
 * what comes back until the server closes the connection or `waitMs` pass
 * (then the client closes it). With `complete`, returns as soon as one
 * response whose body is complete by its `content-length` arrived.
 */
export function rawExchange(
  port: number,
  request: string | Uint8Array,
  { waitMs = 2000, complete = false }: { waitMs?: number; complete?: boolean } = {},
): Promise<RawExchange> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = connect(port, "127.0.0.1");
    const chunks: Uint8Array[] = [];
    let firstByteMs = -1;
    let done = false;
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      let length = 0;
      for (const chunk of chunks) length += chunk.length;
      const bytes = new Uint8Array(length);
      let at = 0;
      for (const chunk of chunks) bytes.set(chunk, at), at += chunk.length;
      resolve({
        ...parseResponse(new TextDecoder("latin1").decode(bytes)),
        closedByServer,
        firstByteMs: firstByteMs < 0 ? performance.now() - started : firstByteMs,
      });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on("data", (data: Uint8Array) => {
      if (firstByteMs < 0) firstByteMs = performance.now() - started;
      chunks.push(new Uint8Array(data));
      if (complete && responseComplete(chunks)) finish(false);
    });
    socket.on("end", () => finish(true));
    socket.on("close", () => finish(true));
    socket.on("error", () => finish(true));
    socket.write(request);
  });
}

function parseResponse(text: string): Omit<RawExchange, "closedByServer" | "firstByteMs"> {
  const end = text.indexOf("\r\n\r\n");
  if (end === -1) return { status: 0, headers: {}, body: text };
  const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) {
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
  }
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
  return { status, headers, body: text.slice(end + 4) };
}

function responseComplete(chunks: Uint8Array[]): boolean {
  const text = new TextDecoder("latin1").decode(
    chunks.length === 1 ? chunks[0] : new Uint8Array(chunks.flatMap((c) => [...c])),
  );
  const { status, headers, body } = parseResponse(text);
  if (status === 0) return false;
  const length = headers["content-length"];
  return length !== undefined && body.length >= Number(length);
}

// How every example program ends on an error, under Deno and Bun: one line on
// stderr, `error: <message>` (`error: data.csv:17: column 'user_id': ...`,
// `error: my.config:12:5: model_config.mmoe.num_expert: ...`: the library's
// messages start with their place), exit code 1, and the stack trace only
// with `--debug` or `DENOREC_DEBUG=1`. Installed once per process by
// `exitOnErrors()`, so that every uncaught error (thrown at the top level, a
// rejected top-level await, a timer, a server that cannot listen) ends the
// same way without a try/catch in each program. No imports: examples/serve.ts
// uses it, and loading the Node layer would cost it ~30 ms of cold start.

/** The Deno namespace, or undefined under Bun and Node. */
const deno = (globalThis as { Deno?: typeof Deno }).Deno;

/** The parts of Node's `process` used here (Bun and Node; Deno has `Deno`). */
interface NodeProcess {
  argv: string[];
  env: Record<string, string | undefined>;
  exit(code: number): never;
  on(event: string, listener: (error: unknown) => void): void;
  stdout: { write(text: string): boolean };
}

function nodeProcess(): NodeProcess {
  return (globalThis as unknown as { process: NodeProcess }).process;
}

/** The flag that asks for stack traces (accepted by every example's flag parser). */
export const DEBUG_FLAG = "--debug";

/** Set while a `\r` status line is on the terminal, so that an error starts a new line. */
export const terminal = { lineOpen: false };

function commandLine(): string[] {
  return deno !== undefined ? deno.args : nodeProcess().argv.slice(2);
}

/** `DENOREC_DEBUG`, read without a permission prompt under Deno. */
function debugVariable(): string | undefined {
  if (deno === undefined) return nodeProcess().env.DENOREC_DEBUG;
  const query = { name: "env", variable: "DENOREC_DEBUG" } as const;
  return deno.permissions.querySync(query).state === "granted"
    ? deno.env.get("DENOREC_DEBUG")
    : undefined;
}

/** Whether this process was asked for stack traces (`--debug`, `DENOREC_DEBUG=1`). */
function debugRequested(): boolean {
  return commandLine().includes(DEBUG_FLAG) || debugVariable() === "1";
}

/**
 * The report of an uncaught error: `error: <message>` on one line (line
 * breaks of multi-line messages become "; "), or with `debug` the stack and
 * every cause.
 */
function formatCliError(error: unknown, debug: boolean): string {
  if (debug) {
    const parts: string[] = [];
    for (let e: unknown = error, depth = 0; e !== undefined && depth < 8; depth++) {
      parts.push(e instanceof Error ? e.stack ?? `${e.name}: ${e.message}` : String(e));
      e = e instanceof Error ? e.cause : undefined;
    }
    return `error: ${parts.join("\ncaused by: ")}`;
  }
  const text = error instanceof Error ? error.message || error.name : String(error);
  const line = text.split(/\r?\n/).map((part) => part.trim()).filter((part) => part !== "")
    .join("; ");
  return `error: ${line}`;
}

let installed = false;

/**
 * Makes every uncaught error or unhandled rejection of this process print
 * {@link formatCliError} and exit with code 1. Call it first in a program.
 */
export function exitOnErrors(): void {
  if (installed) return;
  installed = true;
  const report = (error: unknown): never => {
    if (terminal.lineOpen) {
      if (deno !== undefined) deno.stdout.writeSync(new TextEncoder().encode("\n"));
      else nodeProcess().stdout.write("\n");
    }
    console.error(formatCliError(error, debugRequested()));
    return deno !== undefined ? deno.exit(1) : nodeProcess().exit(1);
  };
  if (deno !== undefined) {
    globalThis.addEventListener("error", (event) => {
      event.preventDefault();
      report(event.error);
    });
    globalThis.addEventListener("unhandledrejection", (event) => {
      event.preventDefault();
      report(event.reason);
    });
  } else {
    const process = nodeProcess();
    process.on("uncaughtException", report);
    process.on("unhandledRejection", report);
  }
}

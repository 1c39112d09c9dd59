// The fuzz harness of tests/fuzz_*_test.ts: seeded cases run in a child
// process (tests/_fuzz_worker.ts) under a watchdog, so that a case that never
// finishes, even in a synchronous loop, is counted as a hang (the child is
// killed and another continues after it) instead of freezing the suite.
// Outcomes are tallied per area and printed.
//
//   FUZZ_ITERATIONS=5000 deno test -A tests/fuzz_http_test.ts   # a long run
//   FUZZ_SEED=7 ...                                               # another sequence
import assert from "node:assert/strict";
import process from "node:process";
import { spawn } from "node:child_process";
import { mulberry32 } from "../src/core/random.ts";

/** What one case did. `tried` is their count. */
export type Outcome =
  /** Refused with a clear error: JSON with a message, or an error naming its place. */
  | "clear error"
  /** Accepted, and the result equals an independent computation of it. */
  | "accepted correct"
  /** Accepted with nothing to compare against (config text that still parses and resolves). */
  | "accepted"
  /** Accepted with a wrong result, or an answer that should have been an error. */
  | "silently wrong"
  /** Refused although it was valid: the independent computation accepts it. */
  | "wrongly refused"
  /** An exception of the wrong kind, an error without its place, a non-JSON answer, internals. */
  | "crash"
  /** No answer within the watchdog's time. */
  | "hang"
  /** An HTTP 500. */
  | "500";

/** Outcomes in print order; those after "accepted" must never happen. */
const OUTCOMES: readonly Outcome[] = [
  "clear error",
  "accepted correct",
  "accepted",
  "silently wrong",
  "wrongly refused",
  "crash",
  "hang",
  "500",
];

const BAD: readonly Outcome[] = ["silently wrong", "wrongly refused", "crash", "hang", "500"];

/** A case's result, with what it tried and what went wrong (for the report). */
export interface CaseResult {
  /** The outcome. */
  outcome: Outcome;
  /** What was tried and, for a bad outcome, what happened. */
  detail?: string;
  /** A kind of result worth counting apart (printed after the outcomes). */
  note?: string;
}

/** A fuzz area's cases: case `i` draws from `random`, seeded by (seed, i). */
export type CaseRunner = (i: number, random: () => number) => Promise<CaseResult>;

/** Iterations: `FUZZ_ITERATIONS` if set, else `fallback` (what CI runs). */
export function iterations(fallback: number): number {
  const text = process.env.FUZZ_ITERATIONS;
  if (text === undefined || text === "") return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`FUZZ_ITERATIONS must be a positive integer, got ${text}`);
  }
  return value;
}

/** The seed of every sequence: `FUZZ_SEED` if set, else 1. */
function fuzzSeed(): number {
  const text = process.env.FUZZ_SEED;
  return text === undefined || text === "" ? 1 : Number(text) >>> 0;
}

/** Counts of each outcome, with the first few details of the bad ones. */
class Tally {
  readonly counts: Record<Outcome, number> = Object.fromEntries(
    OUTCOMES.map((o) => [o, 0]),
  ) as Record<Outcome, number>;
  readonly examples: string[] = [];
  readonly notes: Record<string, number> = {};
  tried = 0;

  /** Records one case. */
  add({ outcome, detail = "", note }: CaseResult): void {
    this.tried++;
    this.counts[outcome]++;
    if (note !== undefined) this.notes[note] = (this.notes[note] ?? 0) + 1;
    if (BAD.includes(outcome) && this.examples.length < 8) {
      this.examples.push(`${outcome}: ${detail.slice(0, 600)}`);
    }
  }

  /** `tried N | clear error N | ...` */
  line(): string {
    const notes = Object.entries(this.notes).map(([note, n]) => ` (${note}: ${n})`).join("");
    return [`tried ${this.tried}`, ...OUTCOMES.map((o) => `${o} ${this.counts[o]}`)].join(" | ") +
      notes;
  }

  /** Prints the counts and asserts that no bad outcome happened. */
  report(area: string): void {
    console.log(`fuzz ${area} (seed ${fuzzSeed()}): ${this.line()}`);
    const bad = BAD.reduce((sum, o) => sum + this.counts[o], 0);
    assert.equal(bad, 0, `fuzz ${area}: ${this.line()}\n${this.examples.join("\n")}`);
  }
}

/** Messages from the child process (tests/_fuzz_worker.ts), one JSON line each after {@link MESSAGE}. */
export type WorkerMessage =
  | { type: "start"; i: number }
  | { type: "done"; i: number; result: CaseResult }
  | { type: "finished" };

/** The prefix of the child's protocol lines on stdout (anything else it prints is passed on). */
export const MESSAGE = "\u0001fuzz ";

/** What the child is asked to run: cases [from, to) of the runner its module exports. */
export interface WorkerTask {
  /** URL of the module. */
  module: string;
  /** Its export `(): Promise<CaseRunner>` that makes the runner. */
  runner: string;
  /** The sequence's seed. */
  seed: number;
  /** First case. */
  from: number;
  /** End of the cases (exclusive). */
  to: number;
}

/**
 * Runs cases [0, count) of the runner that `module`'s export `runner` makes,
 * in a child process of this runtime (`deno run --no-check`: a Worker would
 * be type-checked again on every start, ~7 s); a case that does not finish
 * within `caseTimeoutMs` is a hang: the child is killed and a new one
 * continues with the next case.
 */
export async function runIsolated(
  module: URL,
  count: number,
  caseTimeoutMs: number,
  runner = "createRunner",
): Promise<Tally> {
  const tally = new Tally();
  const seed = fuzzSeed();
  const deno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
  const entry = new URL("./_fuzz_worker.ts", import.meta.url).pathname;
  let from = 0;
  while (from < count) {
    const task: WorkerTask = { module: module.href, runner, seed, from, to: count };
    const args = deno ? ["run", "-A", "--no-check", entry] : [entry];
    const child = spawn(process.execPath, [...args, JSON.stringify(task)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    from = await new Promise<number>((resolve) => {
      let current = from, pending = "", finished = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const end = (next: number) => {
        clearTimeout(timer);
        finished = true;
        resolve(next);
      };
      child.stdout!.on("data", (data: Uint8Array) => {
        pending += new TextDecoder().decode(data);
        let newline;
        while ((newline = pending.indexOf("\n")) !== -1) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          if (!line.startsWith(MESSAGE)) {
            if (line !== "") console.log(line);
            continue;
          }
          const message = JSON.parse(line.slice(MESSAGE.length)) as WorkerMessage;
          if (message.type === "start") {
            current = message.i;
            clearTimeout(timer);
            timer = setTimeout(() => {
              tally.add({ outcome: "hang", detail: `case ${current} (seed ${seed})` });
              child.kill("SIGKILL");
              end(current + 1);
            }, caseTimeoutMs);
          } else if (message.type === "done") {
            clearTimeout(timer);
            tally.add(message.result);
          } else {
            end(count);
          }
        }
      });
      child.on("exit", (code) => {
        if (finished) return;
        tally.add({ outcome: "crash", detail: `case ${current}: the process exited with ${code}` });
        end(current + 1);
      });
    });
    if (child.exitCode === null) await new Promise((resolve) => child.on("exit", resolve));
  }
  return tally;
}

/** Seeded draws for one case: mulberry32 seeded from (seed, case). */
export function caseRandom(seed: number, i: number): () => number {
  return mulberry32((Math.imul(seed, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0);
}

/** Helpers for drawing from a `random()`. */
export function draws(random: () => number) {
  const int = (n: number) => Math.floor(random() * n);
  return {
    int,
    pick: <T>(items: readonly T[]): T => items[int(items.length)],
    chance: (p: number) => random() < p,
  };
}

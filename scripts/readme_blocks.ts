/**
 * Runs every `ts` and `sh` code block of README.md as printed, in order, from
 * the repository root (CI: `.ci/run`), and prints `N passed, N failed`.
 *
 *   deno run -A scripts/readme_blocks.ts [README.md]
 *
 * `ts` blocks are written to a temporary file in the repository (so that
 * `@denorec/mmoe` resolves to this checkout, as it does for a user who
 * installed the package) and run with `deno run -A`. `sh` blocks run with
 * `bash -euo pipefail`, with `node_modules/.bin` first on the PATH (the
 * pinned deno, bun and asc that `npm ci` installs).
 *
 * An HTML comment on the line before a block (blank lines between allowed)
 * says how to run it:
 * - `<!-- ci: background URL -->` starts the block, waits until URL answers
 *   (60 s at most), and stops it (the whole process group) before the next
 *   background block or at the end: servers.
 * - `<!-- ci: lines A-B (why) -->` runs only those lines of the block (e.g.
 *   the test command, which `.ci/run` runs itself).
 * A failing block (or one running longer than 15 minutes) prints its output
 * and the script exits 1 after the rest. At the end `examples/model_embedded.bin`
 * (committed empty, filled by the Deploy block) is emptied again.
 * @module
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";

const ROOT = new URL("..", import.meta.url).pathname;
const readme = process.argv[2] ?? join(ROOT, "README.md");
const PATH = `${join(ROOT, "node_modules/.bin")}:${process.env.PATH}`;

interface Block {
  line: number;
  lang: string;
  code: string;
  directive: string;
}

function blocks(text: string): Block[] {
  const lines = text.split("\n");
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = lines[i].match(/^```(\w+)\s*$/);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== "```"; i++) body.push(lines[i]);
    if (open[1] !== "ts" && open[1] !== "sh") continue;
    let above = start - 1;
    while (above > 0 && lines[above].trim() === "") above--; // deno fmt puts a blank line after it
    const before = lines[above]?.match(/^<!-- ci: (.*) -->$/);
    out.push({
      line: start + 1,
      lang: open[1],
      code: body.join("\n"),
      directive: before?.[1] ?? "",
    });
  }
  return out;
}

/** The block's code restricted to `lines A-B` (1-based, inclusive) when the directive says so. */
function selected(block: Block): string {
  const range = block.directive.match(/^lines (\d+)-(\d+)/);
  if (!range) return block.code;
  return block.code.split("\n").slice(Number(range[1]) - 1, Number(range[2])).join("\n");
}

async function waitFor(url: string, seconds: number): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url);
      await response.body?.cancel();
      if (response.ok) return true;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}

const dir = mkdtempSync(join(ROOT, ".readme-"));
let passed = 0, failed = 0;
let server: { pid: number; output: string[] } | null = null;
const stopServer = () => {
  if (server === null) return;
  try {
    process.kill(-server.pid, "SIGTERM");
  } catch {
    // already gone
  }
  server = null;
};

try {
  for (const block of blocks(readFileSync(readme, "utf8"))) {
    const where = `README.md:${block.line} (${block.lang})`;
    const code = selected(block);
    const command = block.lang === "ts"
      ? (() => {
        const file = join(dir, `block_${block.line}.ts`);
        writeFileSync(file, code + "\n");
        return ["deno", ["run", "-A", file]] as const;
      })()
      : (["bash", ["-euo", "pipefail", "-c", code]] as const);
    const background = block.directive.match(/^background (\S+)/);
    const started = performance.now();
    if (background) {
      stopServer();
      const child = spawn(command[0], [...command[1]], {
        cwd: ROOT,
        env: { ...process.env, PATH },
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
      });
      const output: string[] = [];
      child.stdout!.on("data", (d) => output.push(String(d)));
      child.stderr!.on("data", (d) => output.push(String(d)));
      server = { pid: child.pid!, output };
      if (await waitFor(background[1], 60)) {
        passed++;
        console.log(`ok ${where}: serving ${background[1]}`);
      } else {
        failed++;
        console.log(`FAILED ${where}: ${background[1]} did not answer\n${output.join("")}`);
        stopServer();
      }
      continue;
    }
    const result = spawnSync(command[0], [...command[1]], {
      cwd: ROOT,
      env: { ...process.env, PATH },
      encoding: "utf8",
      maxBuffer: 64 << 20,
      timeout: 15 * 60_000,
      killSignal: "SIGKILL",
    });
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    if (result.status === 0) {
      passed++;
      console.log(`ok ${where} (${seconds} s)`);
    } else {
      failed++;
      console.log(
        `FAILED ${where}: exit ${result.status ?? result.signal} (${seconds} s)\n` +
          `${result.stdout.slice(-4000)}${result.stderr.slice(-4000)}`,
      );
    }
  }
} finally {
  stopServer();
  rmSync(dir, { recursive: true, force: true });
  // The Deploy block embeds a model into this tracked file, committed empty: empty it again so
  // that running the README leaves the checkout as it found it.
  writeFileSync(join(ROOT, "examples/model_embedded.bin"), new Uint8Array(0));
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

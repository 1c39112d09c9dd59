// The walls README's "Layout" draws, checked on the real module graph
// (`deno info --json`, which lists every module an entry reaches, type-only
// imports included): folders of src/ import only folders below them, config
// and data never reach the Wasm module or the model, and the serving entry
// point never reaches the protobuf text parser or the data readers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const SRC = `file://${join(ROOT, "src")}/`;

/** Folders of src/, lowest first: a module may import its own folder and those before it. */
const LAYERS = ["core", "proto", "config", "kernels", "model", "io", "train", "data", "serve"];

interface InfoModule {
  specifier: string;
  dependencies?: {
    specifier: string;
    code?: { specifier: string };
    type?: { specifier: string };
  }[];
}

/** The modules `entry` (a path from the repository root) reaches, from `deno info --json`. */
function graph(entry: string): InfoModule[] {
  const run = spawnSync("deno", ["info", "--json", entry], {
    cwd: ROOT,
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
  assert.equal(run.error, undefined, `deno info (deno on the PATH, npm ci): ${run.error}`);
  assert.equal(run.status, 0, `deno info ${entry}: ${run.stderr}`);
  return JSON.parse(run.stdout).modules;
}

/** `src/<folder>/...` of a module specifier, or null outside src/. */
const inSrc = (specifier: string) => specifier.startsWith(SRC) ? specifier.slice(SRC.length) : null;
const folderOf = (specifier: string) => inSrc(specifier)?.split("/")[0] ?? null;

/** Every module of src/<folder>/ (not generated code's own tests: there are none). */
const modulesOf = (folder: string) =>
  readdirSync(join(ROOT, "src", folder)).filter((f) => f.endsWith(".ts")).map((f) =>
    `src/${folder}/${f}`
  );

test("every import in src/ points to the same folder or one below it", () => {
  const upward: string[] = [];
  for (const module of graph("mod.ts").concat(graph("src/serve/mod.ts"))) {
    const from = folderOf(module.specifier);
    if (from === null) continue;
    assert.ok(LAYERS.includes(from), `src/${from}/ is not in the layer list of this test`);
    for (const dependency of module.dependencies ?? []) {
      for (const to of [dependency.code?.specifier, dependency.type?.specifier]) {
        const target = to === undefined ? null : folderOf(to);
        if (target !== null && LAYERS.indexOf(target) > LAYERS.indexOf(from)) {
          upward.push(`${inSrc(module.specifier)} -> ${inSrc(to!)}`);
        }
      }
    }
  }
  assert.deepEqual([...new Set(upward)], []);
});

test("config and data never reach the Wasm module, the kernels or the model", () => {
  for (const entry of [...modulesOf("config"), ...modulesOf("data")]) {
    const reached = graph(entry).map((m) => inSrc(m.specifier)).filter((s) => s !== null);
    const heavy = reached.filter((s) => s!.startsWith("kernels/") || s!.startsWith("model/"));
    assert.deepEqual(heavy, [], `${entry} reaches ${heavy.join(", ")}`);
  }
});

test("the serving entry point reaches no protobuf text parser, data reader or trainer", () => {
  for (const entry of ["src/serve/mod.ts", "src/serve/inference.ts"]) {
    const reached = graph(entry).map((m) => m.specifier);
    const heavy = reached.filter((s) =>
      /protobuf|papaparse|hyparquet/.test(s) ||
      ["config/config_text.ts", "data/readers.ts", "train/trainer.ts"].includes(inSrc(s) ?? "")
    );
    assert.deepEqual(heavy, [], `${entry} reaches ${heavy.join(", ")}`);
  }
});

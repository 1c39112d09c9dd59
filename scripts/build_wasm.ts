/**
 * Builds the AssemblyScript kernels in `assembly/` into four Wasm binaries
 * (relaxed-simd and plain simd, each on an unshared and a shared memory
 * import), each with its GEMM tiles module (scripts/gemm_tiles.ts), and
 * writes them base64-inlined to `src/kernels/kernels_wasm.json`, imported by
 * `src/kernels/kernels_wasm.ts`, so the library loads them with no file
 * access (JSR, Bun, Deno Deploy). A JSON module, because a cold start parses
 * it ~3x faster than the same strings as TypeScript literals (2.7-3.0 vs
 * 8.7-12 ms for 770 KB, measured), together with the `Kernels` TypeScript interface of
 * their exports: signatures from asc's own bindings (`--bindings raw`, whose
 * `.d.ts` maps usize/i32/f32/f64 to number and bool to boolean), documentation
 * from each kernel's doc comment in `assembly/`. A changed kernel signature is
 * then a type error at every call, and `--check` catches a stale interface.
 *
 * Usage:
 *   deno task build            rebuild and write the generated module
 *   deno task build --check    rebuild in memory, exit 1 if the module is stale
 *
 * Builds are byte-identical between runs (TOOLCHAIN.md), so `--check` is an
 * exact comparison of the generated text.
 */
import asc from "assemblyscript/asc";
import { buildTiles, tileGeometry } from "./gemm_tiles.ts";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const TILES_SOURCE = join(ROOT, "scripts", "gemm_tiles.ts");
const ASSEMBLY = join(ROOT, "assembly");
const OUTPUT = join(ROOT, "src", "kernels", "kernels_wasm.ts");
const OUTPUT_JSON = join(ROOT, "src", "kernels", "kernels_wasm.json");

/** Flags shared by every variant: pointer kernels, no runtime, imported memory. */
const COMMON_FLAGS = [
  "--runtime",
  "stub",
  "-O3",
  "--noAssert",
  "--importMemory",
  "--initialMemory",
  "1",
  "--use",
  "abort=",
];

/**
 * Shared-memory builds for the worker pool (src/kernels/threads.ts): the import is
 * declared `shared` with the wasm32 maximum of 65536 pages, so any arena
 * memory (whose maximum is its own size) satisfies it.
 */
const SHARED_FLAGS = ["--enable", "threads", "--sharedMemory", "--maximumMemory", "65536"];

const VARIANTS = [
  {
    constant: "RELAXED_SIMD_WASM",
    flags: ["--enable", "simd", "--enable", "relaxed-simd"],
    relaxed: true,
    shared: false,
  },
  { constant: "SIMD_WASM", flags: ["--enable", "simd"], relaxed: false, shared: false },
  {
    constant: "RELAXED_SIMD_SHARED_WASM",
    flags: ["--enable", "simd", "--enable", "relaxed-simd", ...SHARED_FLAGS],
    relaxed: true,
    shared: true,
  },
  {
    constant: "SIMD_SHARED_WASM",
    flags: ["--enable", "simd", ...SHARED_FLAGS],
    relaxed: false,
    shared: true,
  },
] as const;

/** One build: the binary and asc's TypeScript declaration of its exports. */
interface Build {
  binary: Uint8Array;
  declarations: string;
}

async function compile(flags: readonly string[]): Promise<Build> {
  let binary: Uint8Array | null = null;
  let declarations = "";
  const stderr: string[] = [];
  // `--bindings raw` only adds the glue files: the binary is byte-identical without it.
  const { error } = await asc.main(
    [
      join(ASSEMBLY, "index.ts"),
      ...COMMON_FLAGS,
      ...flags,
      "--outFile",
      "out.wasm",
      "--bindings",
      "raw",
    ],
    {
      writeFile(name: string, contents: Uint8Array | string) {
        if (name.endsWith(".wasm") && typeof contents !== "string") binary = contents;
        if (name.endsWith(".d.ts")) {
          declarations = typeof contents === "string"
            ? contents
            : new TextDecoder().decode(contents);
        }
      },
      stderr: {
        write(chunk: Uint8Array | string) {
          stderr.push(typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk));
          return true;
        },
      } as never,
    },
  );
  if (error || binary === null) {
    throw new Error(`asc failed (${flags.join(" ")}):\n${stderr.join("")}${error ?? ""}`);
  }
  return { binary, declarations };
}

/** The doc comment right above `export function <name>(` in one of the assembly sources. */
function kernelDoc(name: string, sources: Map<string, string>): string {
  for (const [file, text] of sources) {
    const at = text.search(new RegExp(`^export function ${name}\\(`, "m"));
    if (at < 0) continue;
    const doc = /\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*$/.exec(text.slice(0, at));
    if (!doc) throw new Error(`assembly/${file}: export ${name} has no doc comment above it`);
    return doc[1].split("\n").map((line) => line.replace(/^\s*\* ?/, "").trimEnd())
      .join("\n").trim();
  }
  throw new Error(`no assembly source exports ${name}`);
}

/**
 * The `Kernels` interface: every function of asc's declaration of the module,
 * with the Wasm parameter types from its `@param` tags and the kernel's own
 * doc comment.
 */
function kernelsInterface(declarations: string): string {
  const sources = new Map(
    readdirSync(ASSEMBLY).filter((f) => f.endsWith(".ts")).sort().map((
      f,
    ) => [f, readFileSync(join(ASSEMBLY, f), "utf8")]),
  );
  const members: string[] = [];
  const pattern = /\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*export function (\w+)\(([^)]*)\): (\w+);/g;
  for (const [, tags, name, params, result] of declarations.matchAll(pattern)) {
    const wasmTypes = [...tags.matchAll(/@param (\w+) `(\w+)`/g)].map(([, p, t]) => `${p}: ${t}`);
    const returns = /@returns `(\w+)`/.exec(tags)?.[1] ?? "void";
    const doc = [
      ...kernelDoc(name, sources).split("\n"),
      "",
      `Wasm: \`${name}(${wasmTypes.join(", ")}): ${returns}\``,
    ];
    const args = params.split(", ").filter((p) => p !== "");
    const oneLine = `  ${name}(${args.join(", ")}): ${result};`;
    members.push(
      "  /**",
      ...doc.map((line) => (line === "" ? "   *" : `   * ${line}`)),
      "   */",
      oneLine.length <= 100
        ? oneLine
        : `  ${name}(\n${args.map((a) => `    ${a},`).join("\n")}\n  ): ${result};`,
    );
  }
  if (members.length === 0) throw new Error("asc declared no kernel functions");
  // An export with a default parameter gets asc's varargs trampoline, which
  // traps unless the host calls __setArgumentsLength first: none may have one.
  const optional = /export function (\w+)\([^)]*\?:/.exec(declarations);
  if (optional) throw new Error(`assembly/: export ${optional[1]} has a default parameter`);
  return [
    "/**",
    " * The kernel exports, generated from `assembly/`: signatures from asc's bindings,",
    " * documentation from each kernel's doc comment. Pointers are byte offsets into the",
    " * instance memory (f32 unless a kernel says i32); kernels never allocate, validate or throw.",
    " */",
    "export interface Kernels {",
    ...members,
    "}",
    "",
  ].join("\n");
}

/**
 * Kernels get memory only from the caller's arena, which starts at byte 0, so
 * the module must own no static data: AssemblyScript places such data (e.g.
 * the lookup table of `Mathf.exp`) at fixed low addresses that the arena
 * would overwrite. Walks the binary's sections and rejects a data section.
 */
function assertNoDataSection(bytes: Uint8Array, flags: readonly string[]): void {
  let pos = 8; // magic + version
  const leb = () => {
    let value = 0, shift = 0, byte;
    do {
      byte = bytes[pos++];
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return value;
  };
  while (pos < bytes.length) {
    const id = bytes[pos++];
    const size = leb();
    if (id === 11 && size > 1) {
      throw new Error(
        `the module built with ${flags.join(" ")} has a data section (${size} bytes): ` +
          "a kernel uses static data (e.g. Mathf.exp's table); use a table-free routine",
      );
    }
    pos += size;
  }
}

function sourceHash(): string {
  const hash = createHash("sha256");
  hash.update(`assemblyscript ${asc.version}\n${COMMON_FLAGS.join(" ")}\n`);
  for (const name of readdirSync(ASSEMBLY).filter((f) => f.endsWith(".ts")).sort()) {
    hash.update(`${name}\n`);
    hash.update(readFileSync(join(ASSEMBLY, name)));
  }
  hash.update(`binaryen ${binaryenVersion()}\n`);
  hash.update(readFileSync(TILES_SOURCE));
  return hash.digest("hex");
}

/** The binaryen package version (the tiles assembler), for the source hash. */
function binaryenVersion(): string {
  return JSON.parse(readFileSync(join(ROOT, "node_modules", "binaryen", "package.json"), "utf8"))
    .version;
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64");
}

async function generate(): Promise<{ text: string; json: string }> {
  const lines = [
    "// GENERATED by scripts/build_wasm.ts from assembly/*.ts. Do not edit.",
    "// Rebuild with `deno task build`; `deno task check` fails when this is stale.",
    `// assemblyscript ${asc.version}, binaryen ${binaryenVersion()}; source sha256 ${sourceHash()}`,
    'import builds from "./kernels_wasm.json" with { type: "json" };',
    "",
  ];
  const json: Record<string, string> = {};
  let declarations = "";
  const geometry = tileGeometry(readFileSync(join(ASSEMBLY, "gemm.ts"), "utf8"));
  for (const variant of VARIANTS) {
    const { binary: bytes, declarations: d } = await compile(variant.flags);
    if (declarations !== "" && d !== declarations) {
      throw new Error(`the build with ${variant.flags.join(" ")} declares different exports`);
    }
    declarations = d;
    assertNoDataSection(bytes, variant.flags);
    json[variant.constant] = base64(bytes);
    lines.push(
      `/** Kernel module built with \`${
        variant.flags.join(" ")
      }\` (${bytes.length} bytes), base64. */`,
      `export const ${variant.constant}: string = builds.${variant.constant};`,
      "",
    );
    const tiles = buildTiles(geometry, variant);
    assertNoDataSection(tiles, variant.flags);
    const tilesName = variant.constant.replace(/_WASM$/, "_TILES_WASM");
    json[tilesName] = base64(tiles);
    lines.push(
      `/** Its GEMM tiles (scripts/gemm_tiles.ts, imported as "tiles"; ${tiles.length} bytes), base64. */`,
      `export const ${tilesName}: string = builds.${tilesName};`,
      "",
    );
  }
  lines.push(kernelsInterface(declarations));
  return { text: lines.join("\n"), json: JSON.stringify(json, null, 1) + "\n" };
}

const { text, json } = await generate();
if (process.argv.includes("--check")) {
  for (const [path, expected] of [[OUTPUT, text], [OUTPUT_JSON, json]]) {
    let current = "";
    try {
      current = readFileSync(path, "utf8");
    } catch {
      // missing counts as stale
    }
    if (current !== expected) {
      console.error(`${path} is stale: run \`deno task build\` and commit the result.`);
      process.exit(1);
    }
  }
  console.log("generated wasm module is up to date");
} else {
  writeFileSync(OUTPUT_JSON, json);
  writeFileSync(OUTPUT, text);
  console.log(`wrote ${OUTPUT} and ${OUTPUT_JSON}`);
}

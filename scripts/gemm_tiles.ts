/**
 * The GEMM's main micro-kernel, written out as WebAssembly text and
 * assembled without an optimizer: `scripts/build_wasm.ts` builds one such
 * "tiles" module per kernel build and the AssemblyScript GEMM
 * (`assembly/gemm.ts`) imports its functions.
 *
 * Why a generated module. Deno's V8 runs Wasm with explicit bounds checks
 * (no trap handler, denoland/deno#35658): every load from a computed address
 * costs a compare and a branch, and the AssemblyScript 5x8 loop topped out at
 * ~0.85 of the FMA peak. A load from a constant address below the module's
 * declared minimum memory needs no check at all. So the 16 (24) columns of op(B)
 * a tile sweep uses are copied into a fixed region, and the k loop is
 * written out in full (64 steps, the k-block KC), every B load at a constant
 * address: per k a 2x16 tile does 2 checked broadcasts of A, 4 unchecked
 * loads of B and 8 FMAs (~0.95-0.97 of peak measured on Zen 3, vs 0.85).
 * AssemblyScript can't be used to write it: binaryen's -O3 hoists the
 * constant loads and nests the FMA chains into one expression per
 * accumulator (spilling everything), so the text below is assembled as is.
 *
 * Two tile widths: t<slot> runs 2x16 tiles (8 accumulator chains), w<slot>
 * 2x24 (12 chains: on Zen 4/5 cores the FMA into an accumulator needs more
 * than 8 chains in flight to reach the peak; 12 accumulators, two A
 * broadcasts and one B vector are 15 of the 16 XMM registers V8 allocates).
 *
 * A call runs `count` tiles down one region: tile t reads its two
 * rows of op(A), k contiguous, at `pa + t * paStride` and `aRow` bytes
 * after it (a packed pair panel [2][kc + 4], or A itself when it is not
 * transposed: no copy) and writes C rows 2t and 2t+1, 16 (24) columns from
 * `c`. A k-block shorter than KC enters the written-out loop part way
 * (`skip` = KC - kc steps, a `br_table`), with B copied into the region's
 * last kc rows, so every chain is acc = fma(a, b, acc) over k ascending
 * from 0, as in every other GEMM tile. Then (+ C when `flags & 1`,
 * + bias when `bias` is not 0, ReLU when `flags & 2`) exactly as
 * `finishRow` in assembly/gemm.ts does.
 *
 * The region's address must be a constant in the code, so a module shared by
 * worker threads (same memory) holds one copy of the function per thread
 * slot, each with its own region; the exports `t` and `w` take the slot
 * first and branch (`br_table`) to that slot's copy. Region geometry (base,
 * stride, slots, KC) is read from
 * `assembly/gemm.ts`, the one place it is stated.
 *
 * @module
 */
// @ts-types="./binaryen.d.ts"
import binaryen from "binaryen";

/** Region geometry, as `assembly/gemm.ts` states it. */
export interface TileGeometry {
  /** k steps written out (the GEMM's k-block, KC). */
  kc: number;
  /** Byte address of slot 0's region. */
  base: number;
  /** Bytes between two slots' regions. */
  stride: number;
  /** Regions (function copies) in a shared-memory build. */
  slots: number;
  /** Byte address of the few-rows kernels' A region (slot 0 only). */
  rowsBase: number;
  /** Most rows a few-rows kernel holds (kernels r2 .. r<rowsMax>). */
  rowsMax: number;
}

/** Reads `const NAME: i32 = <number>;` values from the GEMM source. */
export function tileGeometry(gemmSource: string): TileGeometry {
  const value = (name: string) => {
    const match = new RegExp(`const ${name}: (?:i32|usize) = (\\d+);`).exec(gemmSource);
    if (!match) throw new Error(`assembly/gemm.ts: no numeric constant ${name}`);
    return Number(match[1]);
  };
  const geometry = {
    kc: value("KC"),
    base: value("REGION_BASE"),
    stride: value("REGION_STRIDE"),
    slots: value("REGION_SLOTS"),
    rowsBase: value("ROWS_REGION"),
    rowsMax: value("ROWS_MAX"),
  };
  const regionBytes = geometry.kc * WIDE_VECTORS * 4 * 4;
  if (regionBytes > geometry.stride) {
    throw new Error(`a region of ${regionBytes} bytes does not fit REGION_STRIDE`);
  }
  // Constant addresses are unchecked only below the declared minimum memory
  // (one page), and the kernels reserve the first 64 KiB (KERNEL_RESERVED_BYTES).
  if (geometry.base + geometry.slots * geometry.stride > geometry.rowsBase) {
    throw new Error("the GEMM's B regions overlap ROWS_REGION");
  }
  if (geometry.rowsBase + geometry.kc * geometry.rowsMax * 4 > 65536) {
    throw new Error("the GEMM regions end past the kernels' reserved first 64 KiB");
  }
  return geometry;
}

/** Options of one tiles module. */
export interface TilesOptions {
  /** relaxed_madd (one FMA) or mul then add, as `fma` in assembly/simd.ts. */
  relaxed: boolean;
  /** Import a shared memory (the worker pool's builds) and hold one copy per slot. */
  shared: boolean;
}

/** The WebAssembly text of one tiles module. */
export function tilesText(geometry: TileGeometry, options: TilesOptions): string {
  const copies = options.shared ? geometry.slots : 1;
  const memory = options.shared ? "(memory 1 65536 shared)" : "(memory 1)";
  const functions: string[] = [];
  // The plain simd build runs no wide tiles (mul then add needs a 16th
  // register for the product: 12 accumulators would spill), but its kernel
  // module still imports "w": there it traps.
  const widths = options.relaxed
    ? [["t", NARROW_VECTORS], ["w", WIDE_VECTORS]] as const
    : [["t", NARROW_VECTORS]] as const;
  for (const [name, vectors] of widths) {
    for (let slot = 0; slot < copies; slot++) {
      const region = geometry.base + slot * geometry.stride;
      functions.push(tileFunction(name, vectors, slot, region, geometry.kc, options));
    }
    functions.push(dispatcher(name, copies));
  }
  if (!options.relaxed) {
    functions.push(`(func $w (export "w") (param ${"i32 ".repeat(DISPATCH_PARAMS)}) unreachable)`);
  }
  for (let rows = 2; rows <= geometry.rowsMax; rows++) {
    functions.push(rowsFunction(rows, geometry.rowsBase, geometry.kc, options));
  }
  return `(module\n (import "env" "memory" ${memory})\n${functions.join("\n")}\n)\n`;
}

/** Assembles one tiles module (no optimization pass: the text is the code). */
export function buildTiles(geometry: TileGeometry, options: TilesOptions): Uint8Array {
  const module = binaryen.parseText(tilesText(geometry, options));
  try {
    module.setFeatures(
      binaryen.Features.MVP | binaryen.Features.SIMD128 | binaryen.Features.RelaxedSIMD |
        binaryen.Features.Atomics,
    );
    if (!module.validate()) throw new Error("the generated tiles module does not validate");
    return module.emitBinary();
  } finally {
    module.dispose();
  }
}

const ROWS = 2;
/** Parameters of a dispatcher: the slot, then the tile function's nine. */
const DISPATCH_PARAMS = 10;

/**
 * The export `name` (slot, c, ldc, pa, aRow, paStride, count, skip, bias,
 * flags): calls `name<slot>`, the copy on that slot's region (the last copy
 * for a slot past it, as an unshared build's one copy for any slot).
 */
function dispatcher(name: string, copies: number): string {
  const args = Array.from({ length: DISPATCH_PARAMS - 1 }, (_, i) => `(local.get ${i + 1})`)
    .join(" ");
  const labels = Array.from({ length: copies }, (_, slot) => `$d${slot}`);
  let body = `(block $d0 (br_table ${labels.join(" ")} (local.get 0)))`;
  for (let slot = 0; slot < copies; slot++) {
    const call = `(return (call $${name}${slot} ${args}))`;
    body = slot + 1 < copies ? `(block $d${slot + 1}\n${body}\n${call})` : `${body}\n${call}`;
  }
  return `(func $${name} (export "${name}") (param ${"i32 ".repeat(DISPATCH_PARAMS)})\n${body})`;
}
/** The 2x16 tiles ("t<slot>"): 8 chains. */
const NARROW_VECTORS = 4;
/** The 2x24 tiles ("w<slot>"): 12 chains, 15 of V8's XMM registers with A and B. */
const WIDE_VECTORS = 6;

function acc(row: number, vector: number): string {
  return `$c${row}${vector}`;
}

function fma(relaxed: boolean, a: string, b: string, c: string): string {
  return relaxed ? `(f32x4.relaxed_madd ${a} ${b} ${c})` : `(f32x4.add (f32x4.mul ${a} ${b}) ${c})`;
}

/**
 * One k step s: two broadcasts of A (checked, one per row), `vectors` loads
 * of B (constant addresses), each used by both rows before the next.
 */
function step(s: number, vectors: number, region: number, relaxed: boolean): string {
  const lines = [
    `(local.set $a0 (v128.load32_splat offset=${4 * s} (local.get $p)))`,
    `(local.set $a1 (v128.load32_splat offset=${4 * s} (local.get $p1)))`,
  ];
  for (let j = 0; j < vectors; j++) {
    lines.push(
      `(local.set $b (v128.load offset=${region + 16 * vectors * s + 16 * j} (i32.const 0)))`,
    );
    for (let r = 0; r < ROWS; r++) {
      lines.push(
        `(local.set ${acc(r, j)} ${
          fma(relaxed, `(local.get $a${r})`, "(local.get $b)", `(local.get ${acc(r, j)})`)
        })`,
      );
    }
  }
  return lines.join("\n");
}

/**
 * Steps 0..kc-1 written out behind nested blocks: the `br_table` on `skip`
 * lands before step `skip`, so a call runs steps skip..kc-1.
 */
function writtenOut(kc: number, stepOf: (s: number) => string): string {
  const labels = Array.from({ length: kc }, (_, s) => `$s${s}`);
  let steps = `(block $s0 (br_table ${labels.join(" ")} (local.get $skip)))`;
  for (let s = 0; s < kc - 1; s++) steps = `(block $s${s + 1}\n${steps}\n${stepOf(s)})`;
  return `${steps}\n${stepOf(kc - 1)}`;
}

/**
 * ReLU as f32x4.max(x, 0) computes it (NaN stays NaN, -0 becomes +0) in two
 * single instructions: pmax(x, 0) is `x < 0 ? 0 : x` (one maxps; keeps NaN
 * and -0), and adding +0 turns -0 into +0 and changes nothing else. V8
 * lowers f32x4.max itself to ~8 instructions (its NaN and signed-zero
 * rules), which cost the 2x16 tile's epilogue 2-5% of a forward GEMM.
 * `relu` in assembly/simd.ts is the same two operations.
 */
function relu(x: string): string {
  const zero = "(v128.const i32x4 0 0 0 0)";
  return `(f32x4.add (f32x4.pmax ${x} ${zero}) ${zero})`;
}

/**
 * The tile's epilogue, as `finishRow` in assembly/gemm.ts: acc (+ C when
 * `flags & 1`) (+ bias) (ReLU when `flags & 2`), stored to row r's address
 * `rowAddress(r)`, vector j at byte 16 j. Accumulators are `$c<r><j>`.
 */
function epilogue(rows: number, vectors: number, rowAddress: (r: number) => string): string {
  const each = (f: (r: number, j: number) => string) => {
    const out: string[] = [];
    for (let r = 0; r < rows; r++) for (let j = 0; j < vectors; j++) out.push(f(r, j));
    return out.join("\n");
  };
  const add = (r: number, j: number, from: string) =>
    `(local.set $c${r}${j} (f32x4.add (local.get $c${r}${j}) (v128.load offset=${
      16 * j
    } ${from})))`;
  return [
    `(if (i32.and (local.get $flags) (i32.const 1)) (then\n${
      each((r, j) => add(r, j, rowAddress(r)))
    }))`,
    `(if (local.get $bias) (then\n${each((r, j) => add(r, j, "(local.get $bias)"))}))`,
    `(if (i32.and (local.get $flags) (i32.const 2)) (then\n${
      each((r, j) => `(local.set $c${r}${j} ${relu(`(local.get $c${r}${j})`)})`)
    }))`,
    each((r, j) => `(v128.store offset=${16 * j} ${rowAddress(r)} (local.get $c${r}${j}))`),
  ].join("\n");
}

function tileFunction(
  name: string,
  vectors: number,
  slot: number,
  region: number,
  kc: number,
  options: TilesOptions,
): string {
  const accs: string[] = [];
  for (let r = 0; r < ROWS; r++) for (let j = 0; j < vectors; j++) accs.push(acc(r, j));
  const steps = writtenOut(kc, (s) => step(s, vectors, region, options.relaxed));
  const rowAddress = (r: number) => (r === 0 ? "(local.get $c)" : "(local.get $c1)");
  const finish = epilogue(ROWS, vectors, rowAddress);
  return `(func $${name}${slot}
 (param $c i32) (param $ldc i32) (param $pa i32) (param $aRow i32) (param $paStride i32)
 (param $count i32) (param $skip i32) (param $bias i32) (param $flags i32)
 (local $p i32) (local $p1 i32) (local $c1 i32) (local $a0 v128) (local $a1 v128) (local $b v128)
 ${accs.map((a) => `(local ${a} v128)`).join(" ")}
 (local.set $p (i32.sub (local.get $pa) (i32.shl (local.get $skip) (i32.const 2))))
 (block $done (loop $tile
  (br_if $done (i32.le_s (local.get $count) (i32.const 0)))
  (local.set $p1 (i32.add (local.get $p) (local.get $aRow)))
  ${accs.map((a) => `(local.set ${a} (v128.const i32x4 0 0 0 0))`).join("\n")}
  ${steps}
  (local.set $c1 (i32.add (local.get $c) (local.get $ldc)))
  ${finish}
  (local.set $p (i32.add (local.get $p) (local.get $paStride)))
  (local.set $c (i32.add (local.get $c) (i32.shl (local.get $ldc) (i32.const 1))))
  (local.set $count (i32.sub (local.get $count) (i32.const 1)))
  (br $tile)))
)`;
}

/**
 * The few-rows kernel r<rows> (M below 16: serving a few candidates), slot
 * 0 only: here A is the constant side. The caller copies `rows` rows of
 * op(A)'s k-block into the A region as [k][rows]; the kernel then runs
 * `count` steps of full 8-column panels from `pb` (`panelBytes` apart): a
 * 2 x 16 tile (two panels) a step for two rows, a rows x 8 tile (one panel)
 * for three to five: per k `rows` unchecked broadcasts of A, two or four
 * checked loads of B. Same chains and epilogue as the 2x16 tiles.
 */
function rowsFunction(rows: number, region: number, kc: number, options: TilesOptions): string {
  // Two rows take two panels a step (8 accumulator chains: the FMA latency
  // needs 8), three to five rows one panel (6-10 chains).
  const vectors = rows === 2 ? 4 : 2;
  const panelsPerStep = vectors / 2;
  const accs: string[] = [];
  for (let r = 0; r < rows; r++) for (let j = 0; j < vectors; j++) accs.push(`$c${r}${j}`);
  const stepOf = (s: number) => {
    const lines: string[] = [];
    if (vectors === 4) {
      const a = (r: number) =>
        `(local.set $a${r} (v128.load32_splat offset=${
          region + 4 * (rows * s + r)
        } (i32.const 0)))`;
      lines.push(a(0), a(1));
      for (let j = 0; j < 4; j++) {
        const base = j < 2 ? "$p" : "$p2";
        lines.push(
          `(local.set $b0 (v128.load offset=${32 * s + 16 * (j & 1)} (local.get ${base})))`,
        );
        for (let r = 0; r < 2; r++) {
          lines.push(
            `(local.set $c${r}${j} ${
              fma(
                options.relaxed,
                `(local.get $a${r})`,
                "(local.get $b0)",
                `(local.get $c${r}${j})`,
              )
            })`,
          );
        }
      }
      return lines.join("\n");
    }
    lines.push(
      `(local.set $b0 (v128.load offset=${32 * s} (local.get $p)))`,
      `(local.set $b1 (v128.load offset=${32 * s + 16} (local.get $p)))`,
    );
    for (let r = 0; r < rows; r++) {
      lines.push(
        `(local.set $a0 (v128.load32_splat offset=${region + 4 * (rows * s + r)} (i32.const 0)))`,
      );
      for (let j = 0; j < 2; j++) {
        lines.push(
          `(local.set $c${r}${j} ${
            fma(options.relaxed, "(local.get $a0)", `(local.get $b${j})`, `(local.get $c${r}${j})`)
          })`,
        );
      }
    }
    return lines.join("\n");
  };
  const steps = writtenOut(kc, stepOf);
  const row = (r: number) => `(i32.add (local.get $c) (i32.mul (local.get $ldc) (i32.const ${r})))`;
  const finish = epilogue(rows, vectors, row);
  return `(func $r${rows} (export "r${rows}")
 (param $c i32) (param $ldc i32) (param $pb i32) (param $panelBytes i32) (param $count i32)
 (param $skip i32) (param $bias i32) (param $flags i32)
 (local $p i32) (local $p2 i32) (local $a0 v128) (local $a1 v128) (local $b0 v128) (local $b1 v128)
 ${accs.map((a) => `(local ${a} v128)`).join(" ")}
 (local.set $p (i32.sub (local.get $pb) (i32.shl (local.get $skip) (i32.const 5))))
 (block $done (loop $panel
  (br_if $done (i32.le_s (local.get $count) (i32.const 0)))
  (local.set $p2 (i32.add (local.get $p) (local.get $panelBytes)))
  ${accs.map((a) => `(local.set ${a} (v128.const i32x4 0 0 0 0))`).join("\n")}
  ${steps}
  ${finish}
  (local.set $p (i32.add (local.get $p) (i32.mul (local.get $panelBytes) (i32.const ${panelsPerStep}))))
  (local.set $c (i32.add (local.get $c) (i32.const ${32 * panelsPerStep})))
  (if (local.get $bias) (then (local.set $bias (i32.add (local.get $bias) (i32.const ${
    32 * panelsPerStep
  })))))
  (local.set $count (i32.sub (local.get $count) (i32.const 1)))
  (br $panel)))
)`;
}

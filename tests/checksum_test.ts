// xxhash32 (assembly/checksum.ts) against digests of the xxHash reference
// library (tests/fixtures/xxhash32.json, tools/make_xxhash_fixture.py) and
// its twin, at lengths around the 16-byte stripe and 4-byte word, at every
// alignment, in both builds.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { xxhash32Twin } from "./twins/checksum.ts";
import { rng, TestMemory, VARIANTS } from "./_util.ts";

const FIXTURE = JSON.parse(
  readFileSync(new URL("./fixtures/xxhash32.json", import.meta.url), "utf8"),
) as { cases: { text?: string; length?: number; seed: number; xxh32: number }[] };

/** The fixture's bytes: its text, or byte[i] = (i * 131 + 7) & 255. */
const bytesOf = (c: (typeof FIXTURE.cases)[number]) =>
  c.text !== undefined
    ? new TextEncoder().encode(c.text)
    : Uint8Array.from({ length: c.length! }, (_, i) => (i * 131 + 7) & 255);

test("xxhash32 twin: the reference library's digests", () => {
  for (const c of FIXTURE.cases) {
    assert.equal(xxhash32Twin(bytesOf(c), c.seed), c.xxh32, JSON.stringify(c).slice(0, 80));
  }
});

for (const variant of VARIANTS) {
  test(`xxhash32 ${variant}: the reference library's digests at every alignment`, () => {
    const mem = new TestMemory(variant, 1);
    const base = mem.alloc(70000);
    const memory = new Uint8Array(mem.instance.memory.buffer);
    for (const c of FIXTURE.cases) {
      const bytes = bytesOf(c);
      for (const shift of [0, 1, 2, 3, 5, 8, 13]) {
        memory.set(bytes, base + shift);
        const got = mem.k.xxhash32(base + shift, bytes.length, c.seed) >>> 0;
        assert.equal(got, c.xxh32, `${JSON.stringify(c).slice(0, 60)} at +${shift}`);
      }
    }
  });

  test(`xxhash32 ${variant}: random lengths equal the twin; one flipped bit changes the digest`, () => {
    const mem = new TestMemory(variant, 2);
    const base = mem.alloc(1 << 20);
    const memory = new Uint8Array(mem.instance.memory.buffer, base, 1 << 20);
    const next = rng(17);
    for (let i = 0; i < memory.length; i++) memory[i] = Math.floor(next() * 256);
    for (const n of [15, 16, 17, 31, 32, 33, 100, 4095, 4096, 4097, 1 << 20]) {
      const digest = mem.k.xxhash32(base, n, 7) >>> 0;
      assert.equal(digest, xxhash32Twin(memory.subarray(0, n), 7), `n=${n}`);
      const at = Math.floor(next() * n);
      memory[at] ^= 1 << Math.floor(next() * 8);
      assert.notEqual(mem.k.xxhash32(base, n, 7) >>> 0, digest, `n=${n}, bit flipped at ${at}`);
    }
  });
}

// Plain TypeScript twin of assembly/checksum.ts: XXH32 one 32-bit lane at a
// time, straight from xxhash's doc/xxhash_spec.md.

const PRIME1 = 0x9e3779b1, PRIME2 = 0x85ebca77, PRIME3 = 0xc2b2ae3d;
const PRIME4 = 0x27d4eb2f, PRIME5 = 0x165667b1;

const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;
const mul = (a: number, b: number) => Math.imul(a, b) >>> 0;
const add = (a: number, b: number) => (a + b) >>> 0;

/** XXH32 of `bytes` with `seed`, unsigned. */
export function xxhash32Twin(bytes: Uint8Array, seed: number): number {
  const word = (i: number) =>
    (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24)) >>> 0;
  const n = bytes.length;
  let p = 0, h: number;
  if (n >= 16) {
    const v = [
      add(add(seed, PRIME1), PRIME2),
      add(seed, PRIME2),
      seed >>> 0,
      (seed - PRIME1) >>> 0,
    ];
    for (; p + 16 <= n; p += 16) {
      for (let lane = 0; lane < 4; lane++) {
        v[lane] = mul(rotl(add(v[lane], mul(word(p + 4 * lane), PRIME2)), 13), PRIME1);
      }
    }
    h = add(add(rotl(v[0], 1), rotl(v[1], 7)), add(rotl(v[2], 12), rotl(v[3], 18)));
  } else {
    h = add(seed, PRIME5);
  }
  h = add(h, n);
  for (; p + 4 <= n; p += 4) h = mul(rotl(add(h, mul(word(p), PRIME3)), 17), PRIME4);
  for (; p < n; p++) h = mul(rotl(add(h, mul(bytes[p], PRIME5)), 11), PRIME1);
  h = mul((h ^ (h >>> 15)) >>> 0, PRIME2);
  h = mul((h ^ (h >>> 13)) >>> 0, PRIME3);
  return (h ^ (h >>> 16)) >>> 0;
}

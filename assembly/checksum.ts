// XXH32 (Yann Collet's xxHash, 32-bit, as specified in xxhash's
// doc/xxhash_spec.md) of a byte range: the checksum of a serving artifact's
// data section (src/io/serving.ts), computed where the data lands, in the
// arena. The four accumulators of a 16-byte stripe are the four i32 lanes of
// one v128, so the bulk is one i32x4 multiply-add-rotate-multiply per stripe;
// the tail and the avalanche are scalar, as in the spec.

const PRIME1: u32 = 0x9e3779b1;
const PRIME2: u32 = 0x85ebca77;
const PRIME3: u32 = 0xc2b2ae3d;
const PRIME4: u32 = 0x27d4eb2f;
const PRIME5: u32 = 0x165667b1;

/**
 * XXH32 of the n bytes at `data` with `seed`, as an unsigned 32-bit value
 * (JavaScript sees it as a signed i32: `>>> 0` it).
 */
export function xxhash32(data: usize, n: usize, seed: u32): u32 {
  let p = data;
  const end = data + n;
  let h: u32;
  if (n >= 16) {
    let v = i32x4(
      <i32> (seed + PRIME1 + PRIME2),
      <i32> (seed + PRIME2),
      <i32> seed,
      <i32> (seed - PRIME1),
    );
    const prime1 = i32x4.splat(<i32> PRIME1);
    const prime2 = i32x4.splat(<i32> PRIME2);
    const last = end - 16;
    for (; p <= last; p += 16) {
      // v = rotl(v + lane * PRIME2, 13) * PRIME1, lane by lane.
      v = i32x4.add(v, i32x4.mul(v128.load(p), prime2));
      v = v128.or(i32x4.shl(v, 13), i32x4.shr_u(v, 19));
      v = i32x4.mul(v, prime1);
    }
    h = rotl<u32>(<u32> i32x4.extract_lane(v, 0), 1) +
      rotl<u32>(<u32> i32x4.extract_lane(v, 1), 7) +
      rotl<u32>(<u32> i32x4.extract_lane(v, 2), 12) +
      rotl<u32>(<u32> i32x4.extract_lane(v, 3), 18);
  } else {
    h = seed + PRIME5;
  }
  h += <u32> n;
  for (; p + 4 <= end; p += 4) h = rotl<u32>(h + load<u32>(p) * PRIME3, 17) * PRIME4;
  for (; p < end; p++) h = rotl<u32>(h + <u32> load<u8>(p) * PRIME5, 11) * PRIME1;
  h ^= h >>> 15;
  h *= PRIME2;
  h ^= h >>> 13;
  h *= PRIME3;
  h ^= h >>> 16;
  return h;
}

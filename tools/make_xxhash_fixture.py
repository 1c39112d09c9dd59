#!/usr/bin/python3
"""Writes tests/fixtures/xxhash32.json: XXH32 digests from the xxHash
reference library (Debian's libxxhash0, called through ctypes), for the
`xxhash32` kernel (assembly/checksum.ts), the checksum of serving artifacts.

Inputs are ASCII strings and byte ranges of the generator
``byte[i] = (i * 131 + 7) & 255`` at lengths around the 16-byte stripe and
4-byte word boundaries, with seeds 0, 1 and 0x9E3779B1.

    /usr/bin/python3 tools/make_xxhash_fixture.py
"""

import ctypes
import ctypes.util

from make_fixtures import write_json

LIB = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
LIB.XXH32.restype = ctypes.c_uint32
LIB.XXH32.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32]
LIB.XXH_versionNumber.restype = ctypes.c_uint


def xxh32(data: bytes, seed: int) -> int:
    return LIB.XXH32(data, len(data), seed)


def generated(length: int) -> bytes:
    return bytes((i * 131 + 7) & 255 for i in range(length))


def main() -> None:
    # The spec's own example values, so a wrong library is caught here.
    assert xxh32(b"", 0) == 0x02CC5D05 and xxh32(b"abc", 0) == 0x32D153FF
    lengths = sorted(set(list(range(0, 40)) + [63, 64, 65, 255, 256, 257, 1000, 4103, 65536]))
    cases = []
    for seed in (0, 1, 0x9E3779B1):
        for text in ("", "a", "abc", "Nobody inspects the spammish repetition"):
            cases.append({"text": text, "seed": seed, "xxh32": xxh32(text.encode(), seed)})
        for length in lengths:
            cases.append({"length": length, "seed": seed, "xxh32": xxh32(generated(length), seed)})
    path = write_json(
        "xxhash32.json",
        {
            "source": "tools/make_xxhash_fixture.py: libxxhash %d (Debian libxxhash0) through ctypes"
            % LIB.XXH_versionNumber(),
            "generator": "byte[i] = (i * 131 + 7) & 255",
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

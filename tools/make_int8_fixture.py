#!/usr/bin/python3
"""Writes tests/fixtures/int8_rowwise.json: embedding rows and their INT8
rowwise quantization as TorchEasyRec's export stores them.

tzrec's export quantizes embedding tables by default (QUANT_EMB unset:
``torchrec.inference.modules.quantize_embeddings(dtype=torch.qint8)``,
tzrec/utils/export_util.py), which torchrec turns into
``torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(table, 8)``
(torchrec/quant/embedding_modules.py ``quantize_state_dict``): per row, u8
values, then an f16 scale and an f16 bias. fbgemm_gpu is not installed here,
so ``reference`` below is fbgemm's ``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalfRef``
(fbgemm/src/QuantUtils.cc; the AVX2 version runs the same scalar loop for
8 bits) in numpy, for any bit rate. Before it writes the 8-bit fixture it
must reproduce, byte for byte, the 4-bit rowwise format of Debian's PyTorch
(``torch.ops.quantized.embedding_bag_4bit_prepack``, the same fbgemm/ATen
algorithm with 4 bits): that checks the f16 rounding of the bias and scale,
the zero-scale rule, round-half-even and the clamp against PyTorch.

Run with Debian's torch (apt-get install python3-torch):

    /usr/bin/python3 tools/make_int8_fixture.py

The output is deterministic.
"""

import numpy as np
import torch

from make_fixtures import F32, write_json


def reference(table: np.ndarray, bits: int):
    """fbgemm's rowwise SBHalf quantization: (q per value, f16 scale, f16 bias) per row."""
    table = np.asarray(table, dtype=np.float32)
    levels = np.float32((1 << bits) - 1)
    q = np.zeros(table.shape, dtype=np.uint8)
    scales = np.zeros(table.shape[0], dtype=np.float16)
    biases = np.zeros(table.shape[0], dtype=np.float16)
    for r, row in enumerate(table):
        bias = np.float16(row.min())  # round to nearest even, as cpu_float2half_rn
        minimum = np.float32(bias)
        value_range = np.float32(row.max() - minimum)
        scale = np.float32(np.float16(np.float32(1) if value_range == 0 else value_range / levels))
        if scale == 0:
            scale = np.float32(1)
        inverse = np.float32(np.float32(1) / scale)
        if np.isinf(inverse):
            scale, inverse = np.float32(1), np.float32(1)
        scaled = ((row - minimum).astype(np.float32) * inverse).astype(np.float32)
        q[r] = np.clip(np.rint(scaled), 0, levels).astype(np.uint8)  # lrintf: ties to even
        scales[r] = np.float16(scale)
        biases[r] = bias
    return q, scales, biases


def cases(rng: np.random.Generator):
    """Rows an embedding table can hold, and the corner cases of the rules."""
    dim = 16
    normal = rng.uniform(-0.01, 0.01, (40, dim)).astype(np.float32)
    special = np.stack([
        np.full(dim, 0.25, np.float32),  # constant row: range 0, scale 1
        np.full(dim, -3.0, np.float32),
        np.zeros(dim, np.float32),
        np.linspace(0, 2e-6, dim, dtype=np.float32),  # range / 255 underflows f16: scale 0 -> 1
        np.linspace(-1000, 1000, dim, dtype=np.float32),  # large magnitudes
        np.linspace(0, 255, dim, dtype=np.float32),  # scale exactly 1
        np.array([0.5 * k for k in range(dim)], np.float32) + np.float32(0.0),  # ties
        rng.normal(0, 1, dim).astype(np.float32),
        np.linspace(-0.30001, 0.3, dim, dtype=np.float32),  # the f16 bias rounds up past the min
        np.linspace(1e-5, 3e-5, dim, dtype=np.float32),  # f16 subnormal bias
    ])
    odd = rng.normal(0, 0.05, (7, 5)).astype(np.float32)  # a width off every SIMD block
    return [("normal", normal), ("special", special), ("dim5", odd)]


def torch_4bit_matches(table: np.ndarray) -> None:
    """Our 4-bit reference equals PyTorch's 4-bit rowwise prepack byte for byte."""
    packed = torch.ops.quantized.embedding_bag_4bit_prepack(torch.from_numpy(table)).numpy()
    q, scales, biases = reference(table, 4)
    dim = table.shape[1]
    nibbles = np.zeros((table.shape[0], (dim + 1) // 2), dtype=np.uint8)
    for c in range(dim):
        nibbles[:, c // 2] |= q[:, c] << (4 * (c % 2))
    ours = np.concatenate(
        [nibbles, scales.view(np.uint8).reshape(-1, 2), biases.view(np.uint8).reshape(-1, 2)],
        axis=1,
    )
    if not np.array_equal(ours, packed):
        bad = np.argwhere(ours != packed)[0]
        raise SystemExit(f"4-bit reference differs from torch at {bad}: {ours[bad[0]]} vs {packed[bad[0]]}")


def main() -> None:
    rng = np.random.default_rng(8)
    out = []
    for name, table in cases(rng):
        if table.shape[1] % 2 == 0:
            torch_4bit_matches(table)
        q, scales, biases = reference(table, 8)
        out.append({
            "name": name,
            "rows": int(table.shape[0]),
            "dim": int(table.shape[1]),
            "table": F32(table.reshape(-1).tolist()),
            "q": [int(v) for v in q.reshape(-1)],
            "scale_f16_bits": [int(v) for v in scales.view(np.uint16)],
            "bias_f16_bits": [int(v) for v in biases.view(np.uint16)],
        })
    path = write_json("int8_rowwise.json", {"source": "tools/make_int8_fixture.py", "cases": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

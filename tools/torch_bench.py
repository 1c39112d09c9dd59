#!/usr/bin/python3
"""The PyTorch side of bench/compare.ts: the same MMoE trained and scored in
PyTorch (Debian's torch 1.13, native CPU), driven over stdin/stdout so that
compare.ts can alternate its rounds with ours and TF.js in the same run.

Optional: compare.ts runs it when /usr/bin/python3 can import torch and
prints its figures next to ours; CI never needs it.

The model is tzrec's module tree (the mirror in make_fixtures.py: MMoEModule,
TaskTower, MLP/Perceptron of tzrec/modules/{mmoe,task_tower,mlp}.py) on
sparse embeddings:

- one nn.EmbeddingBag(rows, dim, mode="sum", sparse=True) per table (what
  torchrec's EmbeddingBagCollection holds), uniform(+-sqrt(1/rows)) init;
- the group input concatenates each feature's pooled row in group order;
- loss: BCE with logits, mean per tower, summed over towers;
- dense parameters: torch.optim.Adam (lr, betas, eps from the config);
- tables: torch.optim.Adagrad on their sparse gradients (the config's eps,
  1e-8, initial accumulator 0): with a sparse gradient it coalesces duplicate ids, then
  updates the accumulator and the weight of the touched rows only, which is
  the exact row-wise Adagrad tzrec's sparse adagrad_optimizer runs (fbgemm
  EXACT_ADAGRAD);
- inference: eval mode under torch.inference_mode(), sigmoid of the logits.

Protocol (one JSON object per line):

    -> {"model": M, "threads": N, "seed": S}
       M = {"tables": [{"name", "rows", "dim"}], "features": [table index per feature],
            "expertMlp": {"hiddenUnits"}, "gateMlp": null | {...}, "numExpert": E,
            "towers": [{"name", "numClass", "mlp": null | {"hiddenUnits"}}],
            "adam": {"lr", "beta1", "beta2", "eps"}, "adagrad": {"lr", "eps"}}
    <- {"ready": true, "torch": "...", "threads": N, "params": {...}, "initSeconds": s}
    -> {"op": "run", "mode": "train" | "infer", "batch": B, "steps": k}
    <- {"seconds": s, "loss": l}      k steps on pre-generated random batches
    -> {"op": "quit"}

Errors are one line {"error": "..."} and exit 1. Run by hand:

    echo '{"model": ..., "threads": 1, "seed": 1}' | /usr/bin/python3 tools/torch_bench.py

compare.ts starts it with OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set to the
thread count and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed (they slow
OpenBLAS here).
"""

import json
import math
import os
import re
import sys
import time
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no tools/__pycache__ from the sibling import
from make_fixtures import MMoEModule, TaskTower  # noqa: E402

# make_fixtures pins 1 thread and deterministic algorithms for its fixtures; undo both here.
torch.use_deterministic_algorithms(False)

BATCHES_PER_SIZE = 3  # random batches cycled per batch size (generated outside the timing)


class TorchMMoE(nn.Module):
    """Sparse embedding bags -> concat -> tzrec MMoE module -> task towers."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        super().__init__()
        self.feature_tables: List[int] = spec["features"]
        self.bags = nn.ModuleList()
        for t in spec["tables"]:
            bag = nn.EmbeddingBag(t["rows"], t["dim"], mode="sum", sparse=True)
            bound = math.sqrt(1.0 / t["rows"])  # torchrec's default init range
            nn.init.uniform_(bag.weight, -bound, bound)
            self.bags.append(bag)
        width = sum(spec["tables"][i]["dim"] for i in self.feature_tables)
        self.names = [t["name"] for t in spec["towers"]]
        self.mmoe = MMoEModule(
            width, spec["expertMlp"], spec["numExpert"], len(self.names), spec["gateMlp"]
        )
        self.towers = nn.ModuleList(
            TaskTower(self.mmoe.output_dim(), t["numClass"], t["mlp"]) for t in spec["towers"]
        )

    def forward(self, ids: List[torch.Tensor], offsets: torch.Tensor) -> List[torch.Tensor]:
        x = torch.cat(
            [self.bags[t](ids[f], offsets) for f, t in enumerate(self.feature_tables)], dim=1
        )
        trace: Dict[str, torch.Tensor] = {}
        task_inputs = self.mmoe(x, self.names, trace)
        return [
            tower(h, trace, n).squeeze(1)
            for tower, h, n in zip(self.towers, task_inputs, self.names)
        ]


class Bench:
    def __init__(self, spec: Dict[str, Any], seed: int) -> None:
        torch.manual_seed(seed)
        self.spec = spec
        self.seed = seed
        self.model = TorchMMoE(spec)
        tables = [b.weight for b in self.model.bags]
        table_ids = {id(p) for p in tables}
        dense = [p for p in self.model.parameters() if id(p) not in table_ids]
        adam = spec["adam"]
        self.adam = torch.optim.Adam(
            dense, lr=adam["lr"], betas=(adam["beta1"], adam["beta2"]), eps=adam["eps"]
        )
        self.adagrad = torch.optim.Adagrad(
            tables,
            lr=spec["adagrad"]["lr"],
            eps=spec["adagrad"]["eps"],
            initial_accumulator_value=0.0,
        )
        self.counts = {
            "dense": sum(p.numel() for p in dense),
            "embedding": sum(p.numel() for p in tables),
        }
        self.batches: Dict[int, list] = {}

    def data(self, size: int) -> list:
        """Uniform ids per table and labels (clk 5%, buy 0.3%) as bench/taobao.ts draws them."""
        if size not in self.batches:
            g = torch.Generator().manual_seed(self.seed * 1000003 + size)
            rows = [self.spec["tables"][t]["rows"] for t in self.model.feature_tables]
            made = []
            for _ in range(BATCHES_PER_SIZE):
                ids = [torch.randint(0, r, (size,), generator=g) for r in rows]
                labels = [
                    (torch.rand(size, generator=g) < p).float()
                    for p in [0.05, 0.003][: len(self.model.names)]
                ]
                made.append((ids, labels))
            self.batches[size] = made
        return self.batches[size]

    def run(self, mode: str, size: int, steps: int) -> Dict[str, float]:
        batches = self.data(size)
        offsets = torch.arange(size)
        loss = float("nan")
        start = time.perf_counter()
        if mode == "train":
            self.model.train()
            for i in range(steps):
                ids, labels = batches[i % len(batches)]
                self.adam.zero_grad(set_to_none=True)
                self.adagrad.zero_grad(set_to_none=True)
                logits = self.model(ids, offsets)
                total = sum(
                    F.binary_cross_entropy_with_logits(z, y) for z, y in zip(logits, labels)
                )
                total.backward()
                self.adam.step()
                self.adagrad.step()
                loss = total.item()
        elif mode == "infer":
            self.model.eval()
            with torch.inference_mode():
                for i in range(steps):
                    ids, _ = batches[i % len(batches)]
                    probs = [torch.sigmoid(z) for z in self.model(ids, offsets)]
                    loss = float(probs[0][0])  # reads the result
        else:
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        return {"seconds": time.perf_counter() - start, "loss": loss}


def cpu_capability() -> str:
    """The SIMD level ATen dispatches to ("AVX2" here), from torch's build summary."""
    found = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    return found.group(1) if found else "unknown"


def blas_library() -> str:
    """The BLAS shared library this process loaded (Debian's torch links libblas.so.3, which
    may be the reference BLAS or OpenBLAS; LD_LIBRARY_PATH or the alternatives choose)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "blas" in os.path.basename(path):
                return path
    return "unknown"


def reply(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    bench = None
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            msg = json.loads(line)
            if bench is None:
                torch.set_num_threads(int(msg["threads"]))
                started = time.perf_counter()
                bench = Bench(msg["model"], int(msg["seed"]))
                reply(
                    {
                        "ready": True,
                        "torch": torch.__version__,
                        "threads": torch.get_num_threads(),
                        "capability": cpu_capability(),
                        "blas": blas_library(),
                        "params": bench.counts,
                        "initSeconds": time.perf_counter() - started,
                    }
                )
            elif msg["op"] == "run":
                reply(bench.run(msg["mode"], int(msg["batch"]), int(msg["steps"])))
            elif msg["op"] == "quit":
                return 0
            else:
                raise ValueError(f"unknown op {msg['op']!r}")
    except Exception as e:  # one line for compare.ts, which names this script
        reply({"error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

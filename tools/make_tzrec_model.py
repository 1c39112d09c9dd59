#!/usr/bin/python3
"""Writes tests/fixtures/tzrec_model/: a model trained in PyTorch with
TorchEasyRec's module tree and saved as tzrec saves it.

tzrec cannot be installed here (torchrec, fbgemm), so this rebuilds, module
for module, what tzrec builds for the config below (tzrec commit
54cac3165a2adece9a932616463a5b6a2095b0ce):

- TrainWrapper (tzrec/models/model.py): the model is its `model`, hence the
  `model.` prefix of every checkpoint key.
- MMoE (tzrec/models/mmoe.py on multi_task_rank.py / rank_model.py):
  `embedding_group`, `mmoe`, `_task_tower`.
- EmbeddingGroup (tzrec/modules/embedding.py): `emb_impls[data_group]`, one
  EmbeddingGroupImpl per data group (every feature here is in `__BASE__`),
  whose `ebc` is a torchrec EmbeddingBagCollection: `embedding_bags[table]`,
  one nn.EmbeddingBag per embedding_name (default `<feature>_emb`), features
  with the same embedding_name share it; weighted features pass their weights
  as per_sample_weights. The group output concatenates each feature's output
  in the group's feature_names order; raw features without boundaries are
  dense columns.
- Perceptron / MLP, MMoE module, TaskTower: imported from make_fixtures.py.

It trains 24 steps (dense Adam, sparse Adagrad, BN in train mode), then writes
model.ckpt-24/model as a 2-rank torch DCP (tables sharded row-wise,
column-wise and table-wise, as torchrec shards them), converts it with
tzrec_checkpoint.py to model.safetensors, and writes pipeline.config,
rows.csv (FG_NONE encoded inputs) and expected.json (eval-mode outputs).

    /usr/bin/python3 tools/make_tzrec_model.py     # about 15 s
    /usr/bin/python3 tools/check_tzrec_model.py    # independent numpy check
"""

import csv
import io
import os
import re
import shutil
import sys
from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn

sys.dont_write_bytecode = True  # no tools/__pycache__ from the sibling imports
from make_fixtures import MMoEModule, OUT_DIR, TaskTower, tensor_json, tower_losses, write_json
import torch113_dcp
import tzrec_checkpoint

FIXTURE = "tzrec_model"
FIXTURE_DIR = os.path.join(OUT_DIR, FIXTURE)
TZREC_COMMIT = "54cac3165a2adece9a932616463a5b6a2095b0ce"
STEPS = 24
BATCH = 32
EVAL_ROWS = 48
MULTIVAL_SEP = "\x03"  # data_config.fg_encoded_multival_sep default (tzrec/protos/data.proto)
BASE = "__BASE__"  # tzrec/datasets/utils.py BASE_DATA_GROUP


class Enum(str):
    """A protobuf enum value: written bare in text format."""


# The pipeline.config, camelCase here, snake_case in the file.
CONFIG: Dict[str, Any] = {
    "trainConfig": {
        "sparseOptimizer": {"adagradOptimizer": {"lr": 0.05}, "constantLearningRate": {}},
        "denseOptimizer": {"adamOptimizer": {"lr": 0.01}, "constantLearningRate": {}},
        "numEpochs": 1,
    },
    "evalConfig": {},
    "dataConfig": {
        "batchSize": BATCH,
        "datasetType": Enum("CsvDataset"),
        "fgMode": Enum("FG_NONE"),
        "withHeader": True,
        "labelFields": ["clk", "buy", "like"],
    },
    "featureConfigs": [
        {
            "idFeature": {
                "featureName": "user_id",
                "expression": "user:user_id",
                "numBuckets": 24,
                "embeddingDim": 4,
                "embeddingName": "user_emb",
            }
        },
        {
            "idFeature": {
                "featureName": "friend_id",
                "expression": "user:friend_id",
                "numBuckets": 24,
                "embeddingDim": 4,
                "embeddingName": "user_emb",
            }
        },
        {
            "idFeature": {
                "featureName": "tag_ids",
                "expression": "item:tag_ids",
                "numBuckets": 15,
                "embeddingDim": 4,
            }
        },
        {
            "idFeature": {
                "featureName": "cate_ids",
                "expression": "item:cate_ids",
                "numBuckets": 12,
                "embeddingDim": 3,
                "pooling": "mean",
            }
        },
        {
            "idFeature": {
                "featureName": "clicked_items",
                "expression": "user:clicked_items",
                "numBuckets": 16,
                "embeddingDim": 4,
                "weighted": True,
            }
        },
        {
            "idFeature": {
                "featureName": "pid_hash",
                "expression": "context:pid",
                "hashBucketSize": 10,
                "embeddingDim": 3,
            }
        },
        {
            "idFeature": {
                "featureName": "city",
                "expression": "user:city",
                "vocabList": ["beijing", "shanghai", "hangzhou", "shenzhen"],
                "embeddingDim": 3,
            }
        },
        {"rawFeature": {"featureName": "price", "expression": "item:price"}},
        {
            "rawFeature": {
                "featureName": "age_bucket",
                "expression": "user:age",
                "boundaries": [18.0, 25.0, 35.0, 50.0],
                "embeddingDim": 3,
            }
        },
    ],
    "modelConfig": {
        "featureGroups": [
            {
                "groupName": "all",
                # not the feature_configs order: the group order is the concat order
                "featureNames": [
                    "price",
                    "user_id",
                    "tag_ids",
                    "friend_id",
                    "clicked_items",
                    "cate_ids",
                    "age_bucket",
                    "pid_hash",
                    "city",
                ],
                "groupType": Enum("DEEP"),
            }
        ],
        "mmoe": {
            "expertMlp": {"hiddenUnits": [8, 6], "useBn": True},
            "gateMlp": {"hiddenUnits": [5]},
            "numExpert": 3,
            "taskTowers": [
                {
                    "towerName": "ctr",
                    "labelName": "clk",
                    "mlp": {"hiddenUnits": [4], "dropoutRatio": [0.1]},
                    "metrics": [{"auc": {}}],
                    "losses": [{"binaryCrossEntropy": {}}],
                },
                {
                    "towerName": "cvr",
                    "labelName": "buy",
                    "mlp": {"hiddenUnits": [4, 3]},
                    "metrics": [{"auc": {"thresholds": 1000}}],
                    "losses": [{"binaryCrossEntropy": {}}],
                    "taskSpaceIndicatorLabel": "clk",
                    "inTaskSpaceWeight": 1.0,
                    "outTaskSpaceWeight": 0.0,
                },
                {
                    "towerName": "like",
                    "labelName": "like",
                    "metrics": [{"auc": {}}],
                    "losses": [{"binaryCrossEntropy": {}}],
                },
            ],
        },
    },
}

# How a 2-rank torchrec job could shard each table (checkpoint layout only).
SHARDING = {
    "user_emb": ("table_wise", 1),
    "tag_ids_emb": ("row_wise", 8),  # 15 rows: 8 + 7
    "clicked_items_emb": ("column_wise", 2),
    "cate_ids_emb": ("table_wise", 0),
    "pid_hash_emb": ("table_wise", 0),
    "city_emb": ("table_wise", 1),
    "age_bucket_emb": ("row_wise", 3),
}


# ------------------------------------------------------------ pipeline.config
def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def scalar_text(v: Any) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        assert v.isprintable() and '"' not in v and "\\" not in v, v
        return f'"{v}"'
    return repr(v)


def config_text(msg: Dict[str, Any], indent: int = 0) -> str:
    """protobuf text format as tzrec's configs are written (4-space blocks)."""
    pad = "    " * indent
    out = []
    for key, value in msg.items():
        name = snake(key)
        if isinstance(value, dict):
            out.append(f"{pad}{name} {{\n{config_text(value, indent + 1)}{pad}}}\n")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out.append(f"{pad}{name} {{\n{config_text(item, indent + 1)}{pad}}}\n")
        elif isinstance(value, list) and name in ("label_fields", "feature_names"):
            out.extend(f"{pad}{name}: {scalar_text(v)}\n" for v in value)
        elif isinstance(value, list):
            out.append(f"{pad}{name}: [{', '.join(scalar_text(v) for v in value)}]\n")
        else:
            out.append(f"{pad}{name}: {scalar_text(value)}\n")
    return "".join(out)


# -------------------------------------------------------------- the features
def resolve_features() -> List[Dict[str, Any]]:
    """Group features in order: kind (sparse/dense), table, rows, dim,
    pooling, weighted; rows as tzrec's num_embeddings computes them."""
    by_name = {}
    for fc in CONFIG["featureConfigs"]:
        ((kind, f),) = fc.items()
        name = f["featureName"]
        if kind == "rawFeature" and not f.get("boundaries"):
            by_name[name] = {"name": name, "kind": "dense", "dim": f.get("valueDim", 1)}
            continue
        if kind == "rawFeature":
            rows = len(f["boundaries"]) + 1
        elif "hashBucketSize" in f:
            rows = f["hashBucketSize"]
        elif "numBuckets" in f:
            rows = f["numBuckets"]
        else:
            rows = len(f["vocabList"]) + 2  # [default_value, "<OOV>"] + vocab_list
        by_name[name] = {
            "name": name,
            "kind": "sparse",
            "rows": rows,
            "dim": f["embeddingDim"],
            "table": f.get("embeddingName", f"{name}_emb"),
            "pooling": f.get("pooling", "sum"),
            "weighted": f.get("weighted", False),
        }
    group = CONFIG["modelConfig"]["featureGroups"][0]
    return [by_name[n] for n in group["featureNames"]]


FEATURES = resolve_features()


# ------------------------------------------------------- tzrec module mirror
class EmbeddingBagCollection(nn.Module):
    """torchrec EmbeddingBagCollection: `embedding_bags[table]` nn.EmbeddingBag,
    built as torchrec builds it (include_last_offset=True)."""

    def __init__(self, tables: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.embedding_bags = nn.ModuleDict()
        for t in tables:
            self.embedding_bags[t["table"]] = nn.EmbeddingBag(
                t["rows"], t["dim"], mode=t["pooling"], include_last_offset=True
            )


class EmbeddingGroupImpl(nn.Module):
    """tzrec EmbeddingGroupImpl for one data group: sparse features through
    `ebc`, dense ones as they are, concatenated in the group's order."""

    def __init__(self, features: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.features = features
        tables = {}
        for f in features:
            if f["kind"] == "sparse":
                t = tables.setdefault(f["table"], f)  # tzrec asserts shared tables agree
                assert (t["rows"], t["dim"], t["pooling"]) == (f["rows"], f["dim"], f["pooling"])
        self.ebc = EmbeddingBagCollection(list(tables.values()))

    def forward(self, inputs: Dict[str, Any], trace: Dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for f in self.features:
            if f["kind"] == "dense":
                out = inputs[f["name"]]
            else:
                ids, weights, lengths = inputs[f["name"]]
                offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])
                out = self.ebc.embedding_bags[f["table"]](
                    ids, offsets, per_sample_weights=weights if f["weighted"] else None
                )
            trace[f"feature_{f['name']}"] = out
            parts.append(out)
        return torch.cat(parts, dim=1)


class EmbeddingGroup(nn.Module):
    """tzrec EmbeddingGroup: `emb_impls[data_group]`; the sequence ModuleDicts
    are empty for this config (they hold no state)."""

    def __init__(self, features: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.emb_impls = nn.ModuleDict({BASE: EmbeddingGroupImpl(features)})
        self.seq_emb_impls = nn.ModuleDict()
        self.seq_encoders = nn.ModuleDict()
        self._group_name_to_seq_encoders = nn.ModuleDict()

    def forward(self, inputs, trace):
        return self.emb_impls[BASE](inputs, trace)


class MMoE(nn.Module):
    """tzrec/models/mmoe.py MMoE."""

    def __init__(self) -> None:
        super().__init__()
        mcfg = CONFIG["modelConfig"]["mmoe"]
        self.towers = mcfg["taskTowers"]
        self.embedding_group = EmbeddingGroup(FEATURES)
        in_features = sum(f["dim"] for f in FEATURES)
        self.mmoe = MMoEModule(
            in_features, mcfg["expertMlp"], mcfg["numExpert"], len(self.towers), mcfg.get("gateMlp")
        )
        self._task_tower = nn.ModuleList(
            TaskTower(self.mmoe.output_dim(), t.get("numClass", 1), t.get("mlp"))
            for t in self.towers
        )

    def forward(self, inputs):
        trace: Dict[str, torch.Tensor] = {}
        x = self.embedding_group(inputs, trace)
        trace["group_input"] = x
        names = [t["towerName"] for t in self.towers]
        task_inputs = self.mmoe(x, names, trace)
        preds = {}
        for i, name in enumerate(names):
            logits = torch.squeeze(self._task_tower[i](task_inputs[i], trace, name), dim=1)
            preds[f"logits_{name}"] = logits
            preds[f"probs_{name}"] = torch.sigmoid(logits)
        return preds, trace


class TrainWrapper(nn.Module):
    """tzrec TrainWrapper: holds the model as `model`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


# ------------------------------------------------------------------ the data
COLUMNS = ["clk", "buy", "like"] + [f["name"] for f in FEATURES]


def number(v: float) -> str:
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


def make_rows(gen: torch.Generator, n: int, edge_cases: bool) -> List[Dict[str, str]]:
    """FG_NONE rows as CSV cells: ids already encoded, multi-values joined by
    \\x03, weighted ids as id:weight."""

    def ints(hi: int, k: int) -> List[int]:
        return torch.randint(0, hi, (k,), generator=gen).tolist()

    def count(hi: int) -> int:
        return int(torch.randint(0, hi + 1, (1,), generator=gen))

    rows = []
    for i in range(n):
        clk = int(torch.rand(1, generator=gen) < 0.4)
        row = {
            "clk": str(clk),
            "buy": str(clk * int(torch.rand(1, generator=gen) < 0.5)),
            "like": str(int(torch.rand(1, generator=gen) < 0.3)),
            "user_id": str(ints(24, 1)[0]),
            "friend_id": str(ints(24, 1)[0]),
            "tag_ids": MULTIVAL_SEP.join(map(str, ints(15, count(3)))),
            "cate_ids": MULTIVAL_SEP.join(map(str, ints(12, count(3)))),
            "clicked_items": MULTIVAL_SEP.join(
                f"{k}:{number(w)}"
                for k, w in zip(
                    ints(16, count(3)),
                    (torch.randint(0, 13, (3,), generator=gen) * 0.25 - 0.5).tolist(),
                )
            ),
            "pid_hash": str(ints(10, 1)[0]),
            "city": str(ints(6, 1)[0]),
            "price": number(round(float(torch.randn(1, generator=gen)) * 20 + 30, 2)),
            "age_bucket": str(ints(5, 1)[0]),
        }
        rows.append(row)
    if edge_cases:
        rows[0].update(tag_ids="", cate_ids="", clicked_items="")  # empty bags: zero vectors
        rows[1].update(
            tag_ids=MULTIVAL_SEP.join(["7", "7", "2"]), cate_ids=MULTIVAL_SEP.join(["3", "3"])
        )
        rows[2].update(friend_id="")  # missing single id: no id, zero vector
        rows[3].update(clicked_items=MULTIVAL_SEP.join(["5:0", "5:1.5", "9:-0.25"]))
        rows[4].update(price="0", city="0", pid_hash="9", age_bucket="4")
        rows[5].update(price="-7.125", city="1", user_id="23", friend_id="23")
    return rows


def csv_text(rows: List[Dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def parse_rows(rows: List[Dict[str, str]]) -> Dict[str, Any]:
    """tzrec FG_NONE parsing (tzrec/features/feature.py
    _parse_fg_encoded_{sparse,dense}_feature_impl): the column named by the
    feature; an empty cell is no value; `id:weight` pairs for weighted ids."""
    out: Dict[str, Any] = {}
    for f in FEATURES:
        cells = [r[f["name"]] for r in rows]
        if f["kind"] == "dense":
            out[f["name"]] = torch.tensor([[np.float32(c)] for c in cells], dtype=torch.float32)
            continue
        ids, weights, lengths = [], [], []
        for c in cells:
            items = c.split(MULTIVAL_SEP) if c else []
            for item in items:
                k, _, w = item.partition(":")
                ids.append(int(k))
                weights.append(np.float32(w) if f["weighted"] else np.float32(1))
            lengths.append(len(items))
        out[f["name"]] = (
            torch.tensor(ids, dtype=torch.long),
            torch.tensor(weights, dtype=torch.float32),
            torch.tensor(lengths, dtype=torch.long),
        )
    return out


def labels(rows: List[Dict[str, str]]) -> Dict[str, Any]:
    return {"labels": {k: [int(r[k]) for r in rows] for k in ("clk", "buy", "like")}}


# ------------------------------------------------------------- build + train
def build(seed: int) -> TrainWrapper:
    torch.manual_seed(seed)
    wrapper = TrainWrapper(MMoE())
    with torch.no_grad():
        for bag in wrapper.model.embedding_group.emb_impls[BASE].ebc.embedding_bags.values():
            bound = (1.0 / bag.num_embeddings) ** 0.5  # torchrec's default init
            bag.weight.uniform_(-bound, bound)
        for m in wrapper.modules():
            if isinstance(m, nn.BatchNorm1d):  # not the identity, as after long training
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return wrapper


def is_table(name: str) -> bool:
    return ".ebc.embedding_bags." in name


def train(wrapper: TrainWrapper, gen: torch.Generator):
    tc = CONFIG["trainConfig"]
    params = list(wrapper.named_parameters())
    adam = torch.optim.Adam(
        [p for n, p in params if not is_table(n)], lr=tc["denseOptimizer"]["adamOptimizer"]["lr"]
    )
    # fbgemm EXACT_ADAGRAD: per element G += g^2, w -= lr g / (sqrt(G) + 1e-8);
    # dense torch Adagrad is the same on rows with no gradient (G and w stay)
    adagrad = torch.optim.Adagrad(
        [p for n, p in params if is_table(n)],
        lr=tc["sparseOptimizer"]["adagradOptimizer"]["lr"],
        eps=1e-8,
    )
    wrapper.train()
    for _ in range(STEPS):
        rows = make_rows(gen, BATCH, edge_cases=False)
        preds, _ = wrapper.model(parse_rows(rows))
        losses, _ = tower_losses(wrapper.model, preds, labels(rows))
        adam.zero_grad()
        adagrad.zero_grad()
        torch.stack(list(losses.values())).sum().backward()
        adam.step()
        adagrad.step()
    return adam, adagrad


def optimizer_state(wrapper: TrainWrapper, adam, adagrad) -> Dict[str, Any]:
    """The optimizer state dict as tzrec's DCP flattens it: `state.<param>.<k>`
    for torch's Adam (step, exp_avg, exp_avg_sq) and `state.<table
    param>.<table>.momentum1` for torchrec's fused Adagrad (names as in
    tzrec/utils/checkpoint_util_test.py), plus non-tensor param_groups values."""
    out: Dict[str, Any] = {}
    for name, p in wrapper.named_parameters():
        if is_table(name):
            table = name.split(".")[-2]
            out[f"state.{name}.{table}.momentum1"] = adagrad.state[p]["sum"].clone()
        else:
            for k in ("step", "exp_avg", "exp_avg_sq"):
                out[f"state.{name}.{k}"] = adam.state[p][k].clone()
    out["param_groups.0.lr"] = adam.param_groups[0]["lr"]
    out["param_groups.1.lr"] = adagrad.param_groups[0]["lr"]
    return out


def layouts(state: Dict[str, Any]) -> Dict[str, Any]:
    """Chunk layouts of the table tensors (weights and their momentum1)."""
    out = {}
    for key, value in state.items():
        m = re.search(r"\.ebc\.embedding_bags\.([^.]+)\.weight", key)
        if m:
            kind, arg = SHARDING[m.group(1)]
            out[key] = getattr(torch113_dcp, kind)(tuple(value.shape), arg)
    return out


def trained():
    """(model, its state_dict, the optimizer state dict as tzrec saves it)."""
    wrapper = build(20240710)
    adam, adagrad = train(wrapper, torch.Generator().manual_seed(7))
    model_state = {k: v.detach().clone() for k, v in wrapper.state_dict().items()}
    return wrapper, model_state, optimizer_state(wrapper, adam, adagrad)


# -------------------------------------------------------------------- main
def main() -> int:
    wrapper, model_state, _ = trained()

    eval_rows = make_rows(torch.Generator().manual_seed(11), EVAL_ROWS, edge_cases=True)
    text = csv_text(eval_rows)
    parsed = parse_rows(list(csv.DictReader(io.StringIO(text))))  # what tzrec reads back
    wrapper.eval()
    with torch.no_grad():
        preds, trace = wrapper.model(parsed)

    if os.path.exists(FIXTURE_DIR):
        shutil.rmtree(FIXTURE_DIR)
    os.makedirs(FIXTURE_DIR)
    ckpt = os.path.join(FIXTURE_DIR, f"model.ckpt-{STEPS}")
    # model/ only: the optimizer/ directory (see optimizer_state) would add
    # 150 KB; tools/test_tzrec_checkpoint.py writes one in a temporary directory
    torch113_dcp.save_sharded([(os.path.join(ckpt, "model"), model_state, layouts(model_state))])
    safetensors = os.path.join(FIXTURE_DIR, "model.safetensors")
    tensors = tzrec_checkpoint.tzrec_to_safetensors(ckpt, safetensors, with_optimizer=False)
    assert sorted(tensors) == sorted(model_state), "the DCP keys are the state_dict keys"
    for k, v in model_state.items():
        assert tensors[k].dtype == v.numpy().dtype and np.array_equal(tensors[k], v.numpy()), k

    header = "# Generated by tools/make_tzrec_model.py: see tools/README.md (tzrec_model).\n"
    with open(
        os.path.join(FIXTURE_DIR, "pipeline.config"), "w", encoding="utf-8", newline="\n"
    ) as f:
        f.write(header + config_text(CONFIG))
    with open(os.path.join(FIXTURE_DIR, "rows.csv"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    expected: Dict[str, Any] = {
        "description": (
            "tzrec MMoE (3 experts [8,6] with BN, gate_mlp [5], towers ctr/cvr/like) trained "
            f"{STEPS} steps in torch, eval-mode outputs for the {EVAL_ROWS} rows of rows.csv "
            "(FG_NONE) with "
            "model.safetensors (= model.ckpt-24/model converted by tools/tzrec_checkpoint.py)."
        ),
        "torch_version": torch.__version__,
        "tzrec_commit": TZREC_COMMIT,
        "steps": STEPS,
        "rows": EVAL_ROWS,
        "group_input": tensor_json(trace["group_input"]),
        "features": {f["name"]: tensor_json(trace[f"feature_{f['name']}"]) for f in FEATURES},
    }
    for t in CONFIG["modelConfig"]["mmoe"]["taskTowers"]:
        for k in ("logits", "probs"):
            expected[f"{k}_{t['towerName']}"] = tensor_json(preds[f"{k}_{t['towerName']}"])
    write_json(os.path.join(FIXTURE, "expected.json"), expected)
    for root, _, files in sorted(os.walk(FIXTURE_DIR)):
        for name in sorted(files):
            path = os.path.join(root, name)
            print(f"{os.path.relpath(path, OUT_DIR)}: {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

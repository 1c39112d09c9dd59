#!/usr/bin/python3
"""Writes PyTorch golden training runs for the TypeScript tests:

- tests/fixtures/training_curve.json: tzrec's MMoE rebuilt in torch 1.13
  (module structure and state_dict names as tzrec's, embedding tables under
  `embedding_group.emb_impls.__BASE__.ebc.embedding_bags`), initialised with
  torch's own init (nn.Linear's default, torchrec's U(+-sqrt(1/rows)) for
  tables), trained 30 steps with tzrec's optimizers (exact sparse Adagrad on
  the embedding rows a batch touches, torch.optim.Adam on everything else).
  It carries the initial weights, the batches, every step's losses and the
  final weights. The model covers a weighted multi-value feature (torchrec
  per_sample_weights), a mean-pooled one, a dense one, 3 experts, stacked
  gates without a gate MLP, a tower MLP, task-space weighting and a tower with
  two losses (binary cross-entropy and l2 on one logit, summed as tzrec does).
- tests/fixtures/optimizer_steps.json: torch.optim.SGD (momentum, dampening,
  Nesterov, weight decay), torch.optim.Adagrad (initial_accumulator_value)
  and the sparse row updates run through torch.optim.Adagrad / Adam on the
  touched rows (exact Adagrad; Adam with L2 weight decay and the global step),
  four steps each, with the parameters and state after every step.

The tzrec modules (Perceptron, MLP, MMoE, TaskTower) come from
tools/make_fixtures.py. Run with Debian's torch:

    /usr/bin/python3 tools/make_training_curve.py

Deterministic: two runs write byte-identical JSON.
"""

import math
import os
import sys
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import (  # noqa: E402  (tools/ is not a package)
    F32,
    MLP,
    SPARSE_ADAGRAD_EPS,
    MMoEModule,
    TaskTower,
    f32,
    has_weight,
    tensor_json,
    write_json,
)

STEPS = 30
BATCH = 32
BASE = "embedding_group.emb_impls.__BASE__.ebc.embedding_bags"


# ------------------------------------------------------------------- model
class EmbeddingBagCollection(nn.Module):
    """torchrec EmbeddingBagCollection: `embedding_bags`, one nn.EmbeddingBag per
    table, initialised as EmbeddingBagConfig's default U(+-sqrt(1/rows))."""

    def __init__(self, tables: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.embedding_bags = nn.ModuleDict()
        for t in tables:
            bag = nn.EmbeddingBag(t["rows"], t["dim"], mode=t["pooling"])
            bound = math.sqrt(1.0 / t["rows"])
            nn.init.uniform_(bag.weight, -bound, bound)
            self.embedding_bags[t["name_emb"]] = bag


class EmbeddingGroupImpl(nn.Module):
    def __init__(self, tables: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.ebc = EmbeddingBagCollection(tables)


class EmbeddingGroup(nn.Module):
    """tzrec EmbeddingGroup: `emb_impls[data_group]`; every feature here is in
    tzrec's `__BASE__` data group. Output: the DEEP group concat."""

    def __init__(self, features: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.features = features
        tables = [f for f in features if f["kind"] == "id"]
        self.emb_impls = nn.ModuleDict({"__BASE__": EmbeddingGroupImpl(tables)})

    def forward(self, inputs: Dict[str, Any]) -> torch.Tensor:
        bags = self.emb_impls["__BASE__"].ebc.embedding_bags
        parts = []
        for f in self.features:
            rows = inputs[f["name"]]
            if f["kind"] == "dense":
                parts.append(torch.tensor(rows, dtype=torch.float32))
                continue
            ids = torch.tensor([i for r in rows for i in r], dtype=torch.long)
            offsets = torch.tensor([0] + [len(r) for r in rows][:-1]).cumsum(0)
            weights = None
            if f.get("weighted"):
                weights = torch.tensor(
                    [w for r in inputs[f["name"] + ".weights"] for w in r], dtype=torch.float32
                )
            parts.append(bags[f["name"] + "_emb"](ids, offsets, per_sample_weights=weights))
        return torch.cat(parts, dim=1)


class MMoEModel(nn.Module):
    """tzrec/models/mmoe.py: embedding_group -> mmoe -> _task_tower[i]."""

    def __init__(self, features, mmoe_cfg) -> None:
        super().__init__()
        self.towers = mmoe_cfg["taskTowers"]
        self.embedding_group = EmbeddingGroup(features)
        in_features = sum(f["dim"] for f in features)
        self.mmoe = MMoEModule(
            in_features, mmoe_cfg["expertMlp"], mmoe_cfg["numExpert"], len(self.towers)
        )
        self._task_tower = nn.ModuleList(
            [TaskTower(self.mmoe.output_dim(), 1, t.get("mlp")) for t in self.towers]
        )

    def forward(self, batch) -> Dict[str, torch.Tensor]:
        x = self.embedding_group(batch["features"])
        names = [t["towerName"] for t in self.towers]
        task_inputs = self.mmoe(x, names, {})
        return {
            n: torch.squeeze(self._task_tower[i](task_inputs[i], {}, n), dim=1)
            for i, n in enumerate(names)
        }


def tower_losses(model: MMoEModel, outputs, batch) -> Dict[str, torch.Tensor]:
    """MultiTaskRank.loss with RankModel._loss_impl for binary_cross_entropy and
    l2_loss: every loss of a tower on its one output, with the tower's weights."""
    losses = {}
    for t in model.towers:
        name = t["towerName"]
        label = torch.tensor(batch["labels"][t["labelName"]], dtype=torch.float32)
        weight = None
        if has_weight(t):
            weight = torch.Tensor([1.0])
            if "taskSpaceIndicatorLabel" in t:
                ind = torch.tensor(batch["labels"][t["taskSpaceIndicatorLabel"]])
                in_space = (ind > 0).float()
                weight = weight * (
                    t.get("inTaskSpaceWeight", 1.0) * in_space
                    + t.get("outTaskSpaceWeight", 1.0) * (1 - in_space)
                )
            weight = torch.nan_to_num(
                torch.div(weight, torch.mean(weight)), nan=0.0, posinf=0.0, neginf=0.0
            )
            weight *= t.get("weight", 1.0)
        for loss_cfg in t["losses"]:
            if "binaryCrossEntropy" in loss_cfg:
                kind = "binary_cross_entropy"
                per_row = F.binary_cross_entropy_with_logits(
                    outputs[name], label, reduction="none"
                )
            else:
                kind = "l2_loss"
                per_row = F.mse_loss(outputs[name], label, reduction="none")
            losses[f"{kind}_{name}"] = (
                per_row.mean() if weight is None else torch.mean(per_row * weight)
            )
    return losses


# -------------------------------------------------------------------- data
FEATURES = [
    {"name": "user_id", "kind": "id", "rows": 200, "dim": 8, "pooling": "sum"},
    {"name": "item_id", "kind": "id", "rows": 100, "dim": 8, "pooling": "sum"},
    {"name": "tags", "kind": "id", "rows": 30, "dim": 4, "pooling": "sum", "weighted": True},
    {"name": "history", "kind": "id", "rows": 50, "dim": 4, "pooling": "mean"},
    {"name": "price", "kind": "dense", "dim": 1},
]
for f in FEATURES:
    if f["kind"] == "id":
        f["name_emb"] = f["name"] + "_emb"


def curve_config() -> Dict[str, Any]:
    """Our PipelineConfig (src/config/config.ts) of the model above; `tags` is
    weighted (the fixture's `weighted_features`)."""
    feature_configs = []
    for f in FEATURES:
        if f["kind"] == "dense":
            feature_configs.append(
                {"rawFeature": {"featureName": f["name"], "expression": "item:" + f["name"]}}
            )
            continue
        feature_configs.append(
            {
                "idFeature": {
                    "featureName": f["name"],
                    "expression": "user:" + f["name"],
                    "numBuckets": f["rows"],
                    "embeddingDim": f["dim"],
                    "pooling": f["pooling"],
                }
            }
        )
    return {
        "trainConfig": {
            "sparseOptimizer": {"adagradOptimizer": {"lr": 0.05}, "constantLearningRate": {}},
            "denseOptimizer": {"adamOptimizer": {"lr": 0.003}, "constantLearningRate": {}},
            "numEpochs": 1,
        },
        "dataConfig": {"batchSize": BATCH, "labelFields": ["clk", "buy"]},
        "featureConfigs": feature_configs,
        "modelConfig": {
            "featureGroups": [
                {
                    "groupName": "all",
                    "featureNames": [f["name"] for f in FEATURES],
                    "groupType": "DEEP",
                }
            ],
            "mmoe": {
                "expertMlp": {"hiddenUnits": [32, 16]},
                "numExpert": 3,
                "taskTowers": [
                    {
                        "towerName": "ctr",
                        "labelName": "clk",
                        "mlp": {"hiddenUnits": [16]},
                        "losses": [{"binaryCrossEntropy": {}}],
                    },
                    {
                        "towerName": "cvr",
                        "labelName": "buy",
                        "losses": [{"binaryCrossEntropy": {}}, {"l2Loss": {}}],
                        "taskSpaceIndicatorLabel": "clk",
                        "inTaskSpaceWeight": 1.0,
                        "outTaskSpaceWeight": 0.0,
                    },
                ],
            },
        },
    }


def make_batches(gen: torch.Generator) -> List[Dict[str, Any]]:
    """Planted signal: user and item biases and the tags' weighted sum set the
    click logit; a purchase follows a click with its own logit."""
    user_bias = torch.randn(200, generator=gen) * 0.8
    item_bias = torch.randn(100, generator=gen) * 0.8
    tag_effect = torch.randn(30, generator=gen) * 0.5
    batches = []
    for _ in range(STEPS):
        user = torch.randint(0, 200, (BATCH,), generator=gen)
        item = torch.randint(0, 100, (BATCH,), generator=gen)
        price = torch.rand(BATCH, generator=gen) * 2 - 1
        tags, tag_weights, history = [], [], []
        for _b in range(BATCH):
            n = int(torch.randint(0, 4, (1,), generator=gen))
            tags.append(torch.randint(0, 30, (n,), generator=gen).tolist())
            tag_weights.append(F32((torch.rand(n, generator=gen) * 1.8 + 0.2).tolist()))
            m = int(torch.randint(0, 5, (1,), generator=gen))
            history.append(torch.randint(0, 50, (m,), generator=gen).tolist())
        tag_signal = torch.tensor(
            [sum(tag_effect[t] * w for t, w in zip(ts, ws)) for ts, ws in zip(tags, tag_weights)]
        )
        click = torch.sigmoid(user_bias[user] + item_bias[item] + tag_signal - 0.5 * price - 1)
        clk = (torch.rand(BATCH, generator=gen) < click).long()
        conv = torch.sigmoid(item_bias[item] - price - 0.5)
        buy = clk * (torch.rand(BATCH, generator=gen) < conv).long()
        batches.append(
            {
                "features": {
                    "user_id": [[int(u)] for u in user],
                    "item_id": [[int(i)] for i in item],
                    "tags": tags,
                    "tags.weights": tag_weights,
                    "history": history,
                    "price": [F32([float(p)]) for p in price],
                },
                "labels": {"clk": clk.tolist(), "buy": buy.tolist()},
            }
        )
    return batches


# ---------------------------------------------------------------- training
def state_json(model: nn.Module) -> Dict[str, Any]:
    return {n: tensor_json(t) for n, t in model.state_dict().items()}


def touched_rows(batch, feature: Dict[str, Any]) -> torch.Tensor:
    ids = {int(i) for r in batch["features"][feature["name"]] for i in r}
    return torch.tensor(sorted(ids), dtype=torch.long)


def training_curve() -> Dict[str, Any]:
    config = curve_config()
    torch.manual_seed(20261202)
    model = MMoEModel(FEATURES, config["modelConfig"]["mmoe"])
    gen = torch.Generator().manual_seed(7)
    batches = make_batches(gen)
    fixture: Dict[str, Any] = {
        "description": (
            "tzrec MMoE in torch 1.13 with torch's own init, trained 30 steps: exact sparse "
            "Adagrad (lr 0.05, eps 1e-8) on the touched embedding rows, torch.optim.Adam "
            "(lr 0.003) on every other parameter. Written by tools/make_training_curve.py."
        ),
        "torch_version": torch.__version__,
        "config": config,
        "weighted_features": [f["name"] for f in FEATURES if f.get("weighted")],
        "params": state_json(model),
        "batches": batches,
    }
    bags = model.embedding_group.emb_impls["__BASE__"].ebc.embedding_bags
    tables = {f["name"]: bags[f["name_emb"]].weight for f in FEATURES if f["kind"] == "id"}
    table_ids = {id(p) for p in tables.values()}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    adam = torch.optim.Adam(dense, lr=0.003, betas=(0.9, 0.999), eps=1e-8)
    accumulators = {n: torch.zeros_like(p) for n, p in tables.items()}
    losses = []
    for batch in batches:
        model.train()
        model.zero_grad(set_to_none=True)
        step_losses = tower_losses(model, model(batch), batch)
        total = torch.stack(list(step_losses.values())).sum()
        total.backward()
        adam.step()
        with torch.no_grad():
            for f in FEATURES:
                if f["kind"] != "id":
                    continue
                rows = touched_rows(batch, f)
                if rows.numel() == 0:
                    continue
                p, acc = tables[f["name"]], accumulators[f["name"]]
                g = p.grad[rows]  # duplicate ids already summed by autograd
                acc[rows] += g * g
                p[rows] -= 0.05 * g / (acc[rows].sqrt() + SPARSE_ADAGRAD_EPS)
        record = {k: f32(v) for k, v in step_losses.items()}
        record["total"] = f32(total)
        losses.append(record)
    fixture["losses"] = losses
    fixture["params_after"] = state_json(model)
    return fixture


# -------------------------------------------------------------- optimizers
def optimizer_steps() -> Dict[str, Any]:
    """torch.optim updates over four steps of fixed gradients (7 values), and the
    sparse row updates through torch.optim on the rows each step touches."""
    gen = torch.Generator().manual_seed(11)
    p0 = torch.rand(7, generator=gen) * 2 - 1
    grads = [torch.rand(7, generator=gen) * 2 - 1 for _ in range(4)]

    def run(make, state_key):
        p = nn.Parameter(p0.clone())
        opt = make([p])
        params, states = [], []
        for g in grads:
            p.grad = g.clone()
            opt.step()
            params.append(F32(p.detach().tolist()))
            states.append(F32(opt.state[p][state_key].tolist()))
        return {"params": params, state_key: states}

    sgd = []
    for dampening, nesterov in [(0.0, False), (0.3, False), (0.0, True)]:
        result = run(
            lambda ps, d=dampening, n=nesterov: torch.optim.SGD(
                ps, lr=0.1, momentum=0.9, dampening=d, nesterov=n, weight_decay=0.01
            ),
            "momentum_buffer",
        )
        sgd.append({"dampening": dampening, "nesterov": nesterov, **result})
    adagrad = run(
        lambda ps: torch.optim.Adagrad(
            ps, lr=0.05, initial_accumulator_value=0.1, eps=1e-10, weight_decay=0.02
        ),
        "sum",
    )

    # Sparse rows: a 6 x 3 table, rows touched per step, each step's row gradients.
    rows_per_step = [[0, 4], [4, 5, 1], [4], [2, 0]]
    table0 = torch.rand(6, 3, generator=gen) * 2 - 1
    row_grads = [torch.rand(len(r), 3, generator=gen) * 2 - 1 for r in rows_per_step]

    def rows_run(kind: str):
        table = table0.clone()
        state = {"sum": torch.full_like(table, 0.1)} if kind == "adagrad" else {
            "exp_avg": torch.zeros_like(table),
            "exp_avg_sq": torch.zeros_like(table),
        }
        tables, states = [], []
        for step, (rows, g) in enumerate(zip(rows_per_step, row_grads), start=1):
            idx = torch.tensor(rows)
            p = nn.Parameter(table[idx].clone())
            if kind == "adagrad":
                # fbgemm EXACT_ADAGRAD: torch Adagrad on the touched rows, accumulator carried.
                opt = torch.optim.Adagrad([p], lr=0.05, eps=1e-8)
                opt.state[p]["sum"] = state["sum"][idx].clone()
                opt.state[p]["step"] = torch.tensor(float(step - 1))
            else:
                # fbgemm ADAM: bias correction by the global step; weight decay as L2.
                opt = torch.optim.Adam([p], lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                       weight_decay=0.05)
                opt.state[p]["step"] = torch.tensor(float(step - 1))
                opt.state[p]["exp_avg"] = state["exp_avg"][idx].clone()
                opt.state[p]["exp_avg_sq"] = state["exp_avg_sq"][idx].clone()
            p.grad = g.clone()
            opt.step()
            with torch.no_grad():
                table[idx] = p.detach()
                for key in state:
                    state[key][idx] = opt.state[p][key]
            tables.append(F32(table.reshape(-1).tolist()))
            states.append({k: F32(v.reshape(-1).tolist()) for k, v in state.items()})
        return {"tables": tables, "states": states}

    return {
        "description": (
            "torch.optim steps on fixed gradients (tools/make_training_curve.py): SGD lr 0.1 "
            "momentum 0.9 weight_decay 0.01 with (dampening, nesterov); Adagrad lr 0.05 "
            "initial_accumulator_value 0.1 eps 1e-10 weight_decay 0.02; sparse rows: exact "
            "Adagrad lr 0.05 eps 1e-8 from accumulator 0.1, Adam lr 0.01 weight_decay 0.05 "
            "(L2) with the global step."
        ),
        "torch_version": torch.__version__,
        "param": F32(p0.tolist()),
        "grads": [F32(g.tolist()) for g in grads],
        "sgd": sgd,
        "adagrad": adagrad,
        "rows": {
            "table": F32(table0.reshape(-1).tolist()),
            "dim": 3,
            "rows_per_step": rows_per_step,
            "grads": [F32(g.reshape(-1).tolist()) for g in row_grads],
            "adagrad": rows_run("adagrad"),
            "adam": rows_run("adam"),
        },
    }


def main() -> int:
    for name, fixture in [
        ("training_curve.json", training_curve()),
        ("optimizer_steps.json", optimizer_steps()),
    ]:
        path = write_json(name, fixture)
        print(f"{os.path.relpath(path)}: {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

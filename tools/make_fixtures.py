#!/usr/bin/python3
"""Writes the tzrec-parity fixtures in tests/fixtures/ with plain PyTorch.

tzrec (TorchEasyRec) cannot be installed here, so this script rebuilds the
parts of it that MMoE training touches, module for module, so that the
state_dict names are tzrec's:

- ``Perceptron`` / ``MLP``      (tzrec/modules/mlp.py)
- ``MMoE`` module               (tzrec/modules/mmoe.py)
- ``TaskTower``                 (tzrec/modules/task_tower.py)
- ``MMoE`` model + loss weights (tzrec/models/mmoe.py, multi_task_rank.py,
                                 rank_model.py)
- ``create_activation``         (tzrec/modules/activation.py)
- binned AUROC                  (torchmetrics BinaryAUROC(thresholds=N))
- exact (fused) sparse Adagrad  (fbgemm EXACT_ADAGRAD, what tzrec's
                                 sparse ``adagrad_optimizer`` runs)

Run with Debian's torch (apt-get install python3-torch):

    /usr/bin/python3 tools/make_fixtures.py

The output is deterministic: running it twice gives byte-identical JSON.
See tools/README.md for the schema.
"""

import ast
import math
import os
import sys
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures")

SPARSE_ADAGRAD_EPS = 1e-8  # fbgemm EXACT_ADAGRAD default eps
MIN_MARGIN = 2e-5  # min |prob - threshold| in the model fixtures' eval AUCs


# --------------------------------------------------------------------- JSON
class F32(list):
    """A list of float32 values, written with the shortest float32 repr."""


def f32_str(v: float) -> str:
    x = np.float32(v)
    if not np.isfinite(x):
        raise ValueError(f"non-finite value {x} in fixture")
    if x != 0 and abs(x) < 1e-4:
        return np.format_float_scientific(x, unique=True, trim="0")
    return np.format_float_positional(x, unique=True, trim="0")


def scalar_str(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, np.float32):
        return f32_str(v)
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            raise ValueError(f"non-finite value {v} in fixture")
        return repr(float(v))
    if isinstance(v, str):
        import json

        return json.dumps(v)
    raise TypeError(f"cannot serialise {type(v)}")


def _is_scalar(v: Any) -> bool:
    return not isinstance(v, (dict, list))


INLINE_WIDTH = 96  # deno fmt (dprint json) keeps a one-line array within 100


def dump(v: Any, indent: int, col: int) -> str:
    """JSON text laid out the way `deno fmt` leaves it (2 spaces, LF)."""
    pad = "  " * indent
    if isinstance(v, dict):
        if not v:
            return "{}"
        lines = []
        for k, x in v.items():
            key = scalar_str(str(k)) + ": "
            start = len(pad) + 2 + len(key)
            lines.append(pad + "  " + key + dump(x, indent + 1, start))
        return "{\n" + ",\n".join(lines) + "\n" + pad + "}"
    if isinstance(v, list):
        if not v:
            return "[]"
        is_f32 = isinstance(v, F32)
        fmt = (lambda x: f32_str(x)) if is_f32 else None
        if all(_is_scalar(x) for x in v) or all(
            isinstance(x, list) and all(_is_scalar(y) for y in x) for x in v
        ):
            parts = []
            for x in v:
                if isinstance(x, list):
                    f2 = f32_str if isinstance(x, F32) else scalar_str
                    parts.append("[" + ", ".join(f2(y) for y in x) + "]")
                else:
                    parts.append(fmt(x) if fmt else scalar_str(x))
            inline = "[" + ", ".join(parts) + "]"
            if col + len(inline) + 1 <= INLINE_WIDTH:
                return inline
        lines = []
        for x in v:
            text = f32_str(x) if is_f32 else dump(x, indent + 1, len(pad) + 2)
            lines.append(pad + "  " + text)
        return "[\n" + ",\n".join(lines) + "\n" + pad + "]"
    return scalar_str(v)


def write_json(name: str, obj: Dict[str, Any]) -> str:
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(dump(obj, 0, 0) + "\n")
    return path


def tensor_json(t: torch.Tensor) -> Dict[str, Any]:
    t = t.detach().to(torch.float32).contiguous()
    return {"shape": list(t.shape), "data": F32(t.reshape(-1).tolist())}


def f32(x: Any) -> np.float32:
    if isinstance(x, torch.Tensor):
        x = x.detach().item()
    return np.float32(x)


# ------------------------------------------------------- tzrec module mirror
def create_activation(act_str: str) -> nn.Module:
    """tzrec/modules/activation.py: "nn.X" or "nn.X(k=v,...)"."""
    act_str = act_str.strip()
    parts = act_str.strip(")").split("(", 1)
    assert parts[0].startswith("nn."), act_str
    cls = getattr(nn, parts[0][3:])
    params = {}
    if len(parts) > 1 and parts[1].strip():
        for kv in parts[1].split(","):
            k, val = kv.split("=")
            params[k.strip()] = ast.literal_eval(val.strip())
    return cls(**params)


class Perceptron(nn.Module):
    """tzrec Perceptron: Linear -> [BatchNorm1d] -> [LayerNorm] -> act -> [Dropout]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "nn.ReLU",
        use_bn: bool = False,
        bias: bool = True,
        dropout_ratio: float = 0.0,
        use_ln: bool = False,
    ) -> None:
        super().__init__()
        assert not (use_bn and use_ln)
        self.perceptron = nn.Sequential(
            nn.Linear(in_features, out_features, bias=False if use_bn else bias)
        )
        if use_bn:
            self.perceptron.append(nn.BatchNorm1d(out_features))
        if use_ln:
            self.perceptron.append(nn.LayerNorm(out_features))
        if activation:
            self.perceptron.append(create_activation(activation))
        if dropout_ratio > 0.0:
            self.perceptron.append(nn.Dropout(dropout_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perceptron(x)


class MLP(nn.Module):
    """tzrec MLP: a ModuleList `mlp` of Perceptrons."""

    def __init__(self, in_features: int, cfg: Dict[str, Any]) -> None:
        super().__init__()
        hidden = list(cfg["hiddenUnits"])
        dropout = list(cfg.get("dropoutRatio", []))
        if len(dropout) == 0:
            dropout = [0.0] * len(hidden)
        elif len(dropout) == 1:
            dropout = dropout * len(hidden)
        self.hidden_units = hidden
        self.mlp = nn.ModuleList()
        for i, h in enumerate(hidden):
            self.mlp.append(
                Perceptron(
                    in_features if i == 0 else hidden[i - 1],
                    h,
                    activation=cfg.get("activation", "nn.ReLU"),
                    use_bn=cfg.get("useBn", False),
                    bias=cfg.get("bias", True),
                    dropout_ratio=dropout[i],
                    use_ln=cfg.get("useLn", False),
                )
            )

    def output_dim(self) -> int:
        return self.hidden_units[-1]

    def forward(self, x: torch.Tensor, trace: Optional[Dict] = None, key: str = ""):
        for i, layer in enumerate(self.mlp):
            x = layer(x)
            if trace is not None:
                trace[f"{key}_layer_{i}"] = x
        return x


class MMoEModule(nn.Module):
    """tzrec/modules/mmoe.py."""

    def __init__(self, in_features, expert_mlp, num_expert, num_task, gate_mlp=None):
        super().__init__()
        self.num_expert = num_expert
        self.num_task = num_task
        self.expert_mlps = nn.ModuleList(
            [MLP(in_features, expert_mlp) for _ in range(num_expert)]
        )
        gate_final_in = in_features
        self.has_gate_mlp = gate_mlp is not None
        if self.has_gate_mlp:
            self.gate_mlps = nn.ModuleList(
                [MLP(in_features, gate_mlp) for _ in range(num_task)]
            )
            gate_final_in = self.gate_mlps[0].hidden_units[-1]
        self.gate_finals = nn.ModuleList(
            [nn.Linear(gate_final_in, num_expert) for _ in range(num_task)]
        )

    def output_dim(self) -> int:
        return self.expert_mlps[0].hidden_units[-1]

    def forward(self, x, names: List[str], trace: Dict[str, torch.Tensor]):
        expert_fea_list = []
        for i in range(self.num_expert):
            out = self.expert_mlps[i](x, trace, f"expert_{i}")
            trace[f"expert_{i}"] = out
            expert_fea_list.append(out)
        expert_feas = torch.stack(expert_fea_list, dim=1)
        result = []
        for i in range(self.num_task):
            if self.has_gate_mlp:
                gate = self.gate_mlps[i](x)
                trace[f"gate_mlp_{names[i]}"] = gate
            else:
                gate = x
            gate = self.gate_finals[i](gate)
            gate = F.softmax(gate, dim=1)
            trace[f"gate_{names[i]}"] = gate
            task_input = torch.matmul(gate.unsqueeze(1), expert_feas).squeeze(1)
            trace[f"task_input_{names[i]}"] = task_input
            result.append(task_input)
        return result


class TaskTower(nn.Module):
    """tzrec/modules/task_tower.py: optional `tower_mlp`, then `linear`."""

    def __init__(self, tower_feature_in: int, num_class: int, mlp=None) -> None:
        super().__init__()
        self.tower_mlp = None
        linear_in = tower_feature_in
        if mlp is not None:
            self.tower_mlp = MLP(tower_feature_in, mlp)
            linear_in = self.tower_mlp.output_dim()
        self.linear = nn.Linear(linear_in, num_class)

    def forward(self, x, trace, name):
        if self.tower_mlp is not None:
            x = self.tower_mlp(x)
            trace[f"tower_mlp_{name}"] = x
        return self.linear(x)


class EmbeddingGroup(nn.Module):
    """One DEEP group: sum-pooled bags of every id feature, dense raw values,
    concatenated in feature_names order. Tables are `embedding_group.<table>`.
    """

    def __init__(self, features: List[Dict[str, Any]]) -> None:
        super().__init__()
        self.features = features
        for f in features:
            if f["kind"] == "id" and not hasattr(self, f["table"]):
                self.add_module(f["table"], nn.Embedding(f["rows"], f["dim"]))

    def table_params(self) -> Dict[str, nn.Parameter]:
        return {
            n: m.weight for n, m in self.named_children() if isinstance(m, nn.Embedding)
        }

    def forward(self, inputs: Dict[str, List[List[float]]]) -> torch.Tensor:
        parts = []
        for f in self.features:
            rows = inputs[f["name"]]
            bsz = len(rows)
            if f["kind"] == "id":
                weight = getattr(self, f["table"]).weight
                flat = [int(i) for r in rows for i in r]
                seg = [ri for ri, r in enumerate(rows) for _ in r]
                gathered = weight[torch.tensor(flat, dtype=torch.long)]
                pooled = torch.zeros(bsz, f["dim"], dtype=torch.float32).index_add(
                    0, torch.tensor(seg, dtype=torch.long), gathered
                )
                if f.get("pooling", "sum") == "mean":
                    lens = torch.tensor([max(len(r), 1) for r in rows], dtype=torch.float32)
                    pooled = pooled / lens.unsqueeze(1)
                parts.append(pooled)
            else:
                parts.append(torch.tensor(rows, dtype=torch.float32).reshape(bsz, f["dim"]))
        return torch.cat(parts, dim=1)


def resolve_features(config: Dict[str, Any]) -> List[Dict[str, Any]]:
    by_name = {}
    for fc in config["featureConfigs"]:
        if "idFeature" in fc:
            f = fc["idFeature"]
            by_name[f["featureName"]] = {
                "name": f["featureName"],
                "kind": "id",
                "rows": f["numBuckets"],
                "dim": f["embeddingDim"],
                "table": f.get("embeddingName", f["featureName"] + "_emb"),
                "pooling": f.get("pooling", "sum"),
            }
        else:
            f = fc["rawFeature"]
            assert not f.get("boundaries")
            by_name[f["featureName"]] = {
                "name": f["featureName"],
                "kind": "dense",
                "dim": f.get("valueDim", 1),
            }
    group = config["modelConfig"]["featureGroups"][0]
    return [by_name[n] for n in group["featureNames"]]


class MMoEModel(nn.Module):
    """tzrec/models/mmoe.py: embedding_group -> mmoe -> _task_tower[i]."""

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        mcfg = config["modelConfig"]["mmoe"]
        self.features = resolve_features(config)
        self.towers = mcfg["taskTowers"]
        self.embedding_group = EmbeddingGroup(self.features)
        in_features = sum(f["dim"] for f in self.features)
        self.mmoe = MMoEModule(
            in_features,
            mcfg["expertMlp"],
            mcfg["numExpert"],
            len(self.towers),
            mcfg.get("gateMlp"),
        )
        self._task_tower = nn.ModuleList()
        for t in self.towers:
            self._task_tower.append(
                TaskTower(self.mmoe.output_dim(), t.get("numClass", 1), t.get("mlp"))
            )

    def forward(self, batch: Dict[str, Any]):
        trace: Dict[str, torch.Tensor] = {}
        x = self.embedding_group(batch["features"])
        trace["x"] = x
        names = [t["towerName"] for t in self.towers]
        task_inputs = self.mmoe(x, names, trace)
        preds = {}
        for i, t in enumerate(self.towers):
            out = self._task_tower[i](task_inputs[i], trace, names[i])
            # rank_model._output_to_prediction_impl, binary_cross_entropy
            logits = torch.squeeze(out, dim=1)
            preds[f"logits_{names[i]}"] = logits
            preds[f"probs_{names[i]}"] = torch.sigmoid(logits)
        trace.update(preds)
        return preds, trace


# ------------------------------------------------------------------- losses
def has_weight(t: Dict[str, Any]) -> bool:
    """multi_task_rank.has_weight: any of the three fields set explicitly."""
    return "sampleWeightName" in t or "weight" in t or "taskSpaceIndicatorLabel" in t


def tower_losses(model: MMoEModel, preds, batch):
    """MultiTaskRank.loss + RankModel._loss_impl for binary_cross_entropy."""
    losses = {}
    weights = {}
    for t in model.towers:
        name = t["towerName"]
        label = torch.tensor(batch["labels"][t["labelName"]], dtype=torch.int64)
        if has_weight(t):
            if t.get("sampleWeightName"):
                loss_weight = torch.tensor(
                    batch["sample_weights"][t["sampleWeightName"]], dtype=torch.float32
                )
            else:
                loss_weight = torch.Tensor([1.0])
            if "taskSpaceIndicatorLabel" in t:
                ind = torch.tensor(
                    batch["labels"][t["taskSpaceIndicatorLabel"]], dtype=torch.int64
                )
                in_space = (ind > 0).float()
                loss_weight = loss_weight * (
                    t.get("inTaskSpaceWeight", 1.0) * in_space
                    + t.get("outTaskSpaceWeight", 1.0) * (1 - in_space)
                )
            # tzrec.modules.utils.div_no_nan
            loss_weight = torch.nan_to_num(
                torch.div(loss_weight, torch.mean(loss_weight)),
                nan=0.0,
                posinf=0.0,
                neginf=0.0,
            )
            loss_weight *= t.get("weight", 1.0)
        else:
            loss_weight = None
        (loss_cfg,) = t["losses"]
        bce = loss_cfg["binaryCrossEntropy"]
        smoothing = bce.get("labelSmoothing", 0.0)
        y = label.to(torch.float32)
        if smoothing > 0:
            # SPEC.md: y <- y (1 - s) + 0.5 s (not in tzrec's loss.proto, see README)
            y = y * (1 - smoothing) + 0.5 * smoothing
        logits = preds[f"logits_{name}"]
        loss_name = f"binary_cross_entropy_{name}"
        if loss_weight is None:
            losses[loss_name] = F.binary_cross_entropy_with_logits(logits, y, reduction="mean")
            weights[name] = None
        else:
            per_row = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
            losses[loss_name] = torch.mean(per_row * loss_weight)
            weights[name] = loss_weight.expand_as(per_row).clone()
    return losses, weights


# ------------------------------------------------------------------ metrics
def binned_auc(probs: torch.Tensor, labels: torch.Tensor, n: int) -> np.float32:
    """torchmetrics BinaryAUROC(thresholds=n): vectorized confmat + trapz."""
    probs = probs.detach().to(torch.float32).flatten()
    labels = labels.flatten().long()
    if not torch.all((probs >= 0) * (probs <= 1)):
        probs = probs.sigmoid()
    thresholds = torch.linspace(0, 1, n)
    preds_t = (probs.unsqueeze(-1) >= thresholds.unsqueeze(0)).long()
    mapping = preds_t + 2 * labels.unsqueeze(-1) + 4 * torch.arange(n)
    state = torch.bincount(mapping.flatten(), minlength=4 * n).reshape(n, 2, 2)
    tps, fps = state[:, 1, 1], state[:, 0, 1]
    fns, tns = state[:, 1, 0], state[:, 0, 0]

    def safe_divide(num, denom):
        num, denom = num.float(), denom.float()
        return torch.where(denom != 0, num / denom, torch.zeros_like(num))

    tpr = safe_divide(tps, tps + fns).flip(0)
    fpr = safe_divide(fps, fps + tns).flip(0)
    return np.float32(torch.trapz(tpr, fpr).item())


def exact_auc(probs, labels) -> Optional[float]:
    """Rank-based AUC (Mann-Whitney U), tied scores get their average rank;
    float64. None when one class is absent."""
    p = np.asarray(probs, dtype=np.float32).astype(np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sp = p[order]
    i = 0
    while i < len(sp):
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def min_threshold_margin(probs: torch.Tensor, n: int) -> float:
    thr = torch.linspace(0, 1, n)
    return float((probs.detach().flatten().unsqueeze(-1) - thr.unsqueeze(0)).abs().min())


# ---------------------------------------------------------------- training
class Trainer:
    """One tzrec train step: forward (train mode), tower losses summed,
    backward, dense torch.optim.Adam over every non-embedding parameter,
    exact sparse Adagrad over the embedding rows seen in the batch."""

    def __init__(self, model: MMoEModel, config: Dict[str, Any]) -> None:
        self.model = model
        tc = config["trainConfig"]
        self.sparse_lr = tc["sparseOptimizer"]["adagradOptimizer"]["lr"]
        adam = tc["denseOptimizer"]["adamOptimizer"]
        self.table_params = {
            "embedding_group." + k + ".weight": v
            for k, v in model.embedding_group.table_params().items()
        }
        table_ids = {id(p) for p in self.table_params.values()}
        self.dense_params = [
            (n, p) for n, p in model.named_parameters() if id(p) not in table_ids
        ]
        self.adam = torch.optim.Adam(
            [p for _, p in self.dense_params],
            lr=adam["lr"],
            betas=(adam.get("beta1", 0.9), adam.get("beta2", 0.999)),
            eps=1e-8,
            weight_decay=adam.get("weightDecay", 0.0),
        )
        self.adagrad_sum = {n: torch.zeros_like(p) for n, p in self.table_params.items()}

    def touched_rows(self, batch, table_name: str) -> torch.Tensor:
        ids = set()
        for f in self.model.features:
            if f["kind"] == "id" and "embedding_group." + f["table"] + ".weight" == table_name:
                for r in batch["features"][f["name"]]:
                    ids.update(int(i) for i in r)
        return torch.tensor(sorted(ids), dtype=torch.long)

    def step(self, batch):
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        preds, trace = self.model(batch)
        losses, weights = tower_losses(self.model, preds, batch)
        total = torch.stack(list(losses.values())).sum()
        total.backward()
        grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()}
        self.adam.step()
        with torch.no_grad():
            for n, p in self.table_params.items():
                rows = self.touched_rows(batch, n)
                if rows.numel() == 0:
                    continue
                g = p.grad[rows]  # duplicates already summed by autograd
                acc = self.adagrad_sum[n]
                acc[rows] += g * g
                p[rows] -= self.sparse_lr * g / (acc[rows].sqrt() + SPARSE_ADAGRAD_EPS)
        out_losses = {k: f32(v) for k, v in losses.items()}
        out_losses["total"] = f32(total)
        return trace, out_losses, weights, grads


def state_json(model: MMoEModel) -> Dict[str, Any]:
    """Every parameter and float buffer by its state_dict name
    (num_batches_tracked omitted)."""
    out = {}
    for n, t in model.state_dict().items():
        if n.endswith("num_batches_tracked"):
            continue
        out[n] = tensor_json(t)
    return out


def trace_json(trace: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    return {k: tensor_json(v) for k, v in trace.items()}


def eval_block(model: MMoEModel, batches, metric_towers) -> Dict[str, Any]:
    model.eval()
    probs: Dict[str, List[torch.Tensor]] = {}
    labels: Dict[str, List[int]] = {}
    batch_losses = []
    with torch.no_grad():
        for b in batches:
            preds, _ = model(b)
            losses, _ = tower_losses(model, preds, b)
            batch_losses.append({k: f32(v) for k, v in losses.items()})
            for t in model.towers:
                name = t["towerName"]
                probs.setdefault(name, []).append(preds[f"probs_{name}"])
                labels.setdefault(name, []).extend(b["labels"][t["labelName"]])
    out: Dict[str, Any] = {}
    sizes = [len(b["labels"][model.towers[0]["labelName"]]) for b in batches]
    for t in model.towers:
        name = t["towerName"]
        out[f"probs_{name}"] = tensor_json(torch.cat(probs[name]))
    for t in metric_towers:
        name = t["towerName"]
        p = torch.cat(probs[name])
        y = torch.tensor(labels[name])
        for m in t.get("metrics", []):
            if "auc" in m:
                n = m["auc"].get("thresholds", 200)
                out[f"auc_{name}"] = binned_auc(p, y, n)
                check_auc_variants(f"auc_{name}", p, y, n, out[f"auc_{name}"])
                margin = min_threshold_margin(p, n)
                # A prob this close to a threshold could fall in the other bin under
                # another float32 implementation; the seeds are chosen to avoid it.
                if margin < MIN_MARGIN:
                    raise RuntimeError(f"auc_{name}: a prob is {margin:.2e} from a threshold")
                out[f"auc_{name}_min_threshold_margin"] = margin
        out[f"exact_auc_{name}"] = exact_auc(p.tolist(), labels[name])
    # Eval losses: torchmetrics.MeanMetric weighted by batch size.
    out["batch_losses"] = batch_losses
    for k in batch_losses[0]:
        total = sum(float(bl[k]) * s for bl, s in zip(batch_losses, sizes))
        out[k] = total / sum(sizes)
    return out


# -------------------------------------------------------------------- data
def make_batches(gen: torch.Generator, label_pattern, id_rows: int, tag_rows: int,
                 with_weight: bool) -> List[Dict[str, Any]]:
    """3 batches x 7 rows: user_id (1 id/row), tag_ids (0..3 ids/row, sum
    pooled), price (dense), labels clk/buy, optional sample weight w."""
    batches = []
    for bi, (clk, buy) in enumerate(label_pattern):
        bsz = len(clk)
        user = torch.randint(0, id_rows, (bsz,), generator=gen).tolist()
        lens = torch.randint(0, 4, (bsz,), generator=gen).tolist()
        tags = [torch.randint(0, tag_rows, (n,), generator=gen).tolist() for n in lens]
        price = (torch.rand(bsz, generator=gen) * 4.0 - 1.0).tolist()
        if bi == 0:
            user[5] = user[1]  # duplicate id across rows of one batch
            tags[2] = []  # empty bag -> zero vector
            tags[4] = [7, 7, 2]  # duplicate id inside one bag
            tags[6] = [user[0] % tag_rows, 3]
        if bi == 1:
            tags[3] = []
        b: Dict[str, Any] = {
            "features": {
                "user_id": [[u] for u in user],
                "tag_ids": tags,
                "price": [F32([p]) for p in price],
            },
            "labels": {"clk": list(clk), "buy": list(buy)},
        }
        if with_weight:
            w = (torch.rand(bsz, generator=gen) * 1.5 + 0.5).tolist()
            b["sample_weights"] = {"w": F32(w)}
        batches.append(b)
    return batches


LABELS = [
    ([1, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0]),
    ([0, 1, 0, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0, 0]),
    ([0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]),  # no click: cvr weights all 0
]


def base_config(expert_mlp, gate_mlp, towers, with_weight: bool) -> Dict[str, Any]:
    mmoe: Dict[str, Any] = {"expertMlp": expert_mlp}
    if gate_mlp is not None:
        mmoe["gateMlp"] = gate_mlp
    mmoe["numExpert"] = 2
    mmoe["taskTowers"] = towers
    data: Dict[str, Any] = {"batchSize": 7, "labelFields": ["clk", "buy"]}
    if with_weight:
        data["sampleWeightFields"] = ["w"]
    return {
        "trainConfig": {
            "sparseOptimizer": {"adagradOptimizer": {"lr": 0.1}, "constantLearningRate": {}},
            "denseOptimizer": {"adamOptimizer": {"lr": 0.01}, "constantLearningRate": {}},
            "numEpochs": 1,
        },
        "dataConfig": data,
        "featureConfigs": [
            {
                "idFeature": {
                    "featureName": "user_id",
                    "expression": "user:user_id",
                    "numBuckets": 10,
                    "embeddingDim": 4,
                }
            },
            {
                "idFeature": {
                    "featureName": "tag_ids",
                    "expression": "item:tag_ids",
                    "numBuckets": 12,
                    "embeddingDim": 4,
                    "pooling": "sum",
                }
            },
            {"rawFeature": {"featureName": "price", "expression": "item:price", "valueDim": 1}},
        ],
        "modelConfig": {
            "featureGroups": [
                {
                    "groupName": "all",
                    "featureNames": ["user_id", "tag_ids", "price"],
                    "groupType": "DEEP",
                }
            ],
            "mmoe": mmoe,
        },
    }


def init_model(config: Dict[str, Any], seed: int, perturb_bn: bool) -> MMoEModel:
    torch.manual_seed(seed)
    model = MMoEModel(config)  # nn.Linear default init: U(+-1/sqrt(fan_in))
    with torch.no_grad():
        for m in model.embedding_group.children():
            # wider than torchrec's U(+-sqrt(1/rows)) so that rows differ visibly;
            # the fixture carries the initial values, so any init works
            m.weight.uniform_(-1.0, 1.0)
        if perturb_bn:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    return model


def run_model_fixture(name: str, config: Dict[str, Any], seed: int, with_weight: bool,
                      bn: bool) -> Dict[str, Any]:
    model = init_model(config, seed, perturb_bn=bn)
    gen = torch.Generator().manual_seed(seed + 1)
    batches = make_batches(gen, LABELS, 10, 12, with_weight)
    fixture: Dict[str, Any] = {
        "description": "",
        "torch_version": torch.__version__,
        "config": config,
        "params": state_json(model),
        "batches": batches,
    }
    trainer = Trainer(model, config)
    losses, loss_weights = [], []
    forward = grads = None
    for i, b in enumerate(batches):
        trace, step_losses, weights, step_grads = trainer.step(b)
        losses.append(step_losses)
        loss_weights.append(
            {k: (F32(v.tolist()) if v is not None else None) for k, v in weights.items()}
        )
        if i == 0:
            forward = trace_json(trace)
            grads = {n: tensor_json(g) for n, g in step_grads.items()}
    fixture["forward"] = forward
    fixture["losses"] = losses
    fixture["loss_weights"] = loss_weights
    fixture["grads"] = grads
    fixture["params_after"] = state_json(model)
    adam_state = trainer.adam.state
    fixture["optimizer_state"] = {
        "adam": {
            "step": int(adam_state[trainer.dense_params[0][1]]["step"].item()),
            "exp_avg": {n: tensor_json(adam_state[p]["exp_avg"]) for n, p in trainer.dense_params},
            "exp_avg_sq": {
                n: tensor_json(adam_state[p]["exp_avg_sq"]) for n, p in trainer.dense_params
            },
        },
        "adagrad": {"sum": {n: tensor_json(s) for n, s in trainer.adagrad_sum.items()}},
    }
    if bn:
        model.eval()
        with torch.no_grad():
            _, trace = model(batches[0])
        fixture["eval_forward"] = trace_json(trace)
    fixture["eval"] = eval_block(model, batches, model.towers)
    return fixture


def tiny_fixture() -> Dict[str, Any]:
    towers = [
        {
            "towerName": "ctr",
            "labelName": "clk",
            "metrics": [{"auc": {}}],
            "losses": [{"binaryCrossEntropy": {}}],
            "mlp": {"hiddenUnits": [4]},
        },
        {
            "towerName": "cvr",
            "labelName": "buy",
            "metrics": [{"auc": {"thresholds": 1000}}],
            "losses": [{"binaryCrossEntropy": {}}],
            "taskSpaceIndicatorLabel": "clk",
            "inTaskSpaceWeight": 1,
            "outTaskSpaceWeight": 0,
        },
    ]
    config = base_config({"hiddenUnits": [6, 5]}, None, towers, with_weight=False)
    fx = run_model_fixture("mmoe_tiny", config, 20240610, with_weight=False, bn=False)
    fx["description"] = (
        "tzrec MMoE, 3 features (F=9), 2 experts [6,5], towers ctr (mlp [4]) and cvr "
        "(no mlp, trained in click space: indicator clk, in 1, out 0). 3 train steps "
        "(sparse exact Adagrad lr 0.1, dense Adam lr 0.01), batch 2 has no click."
    )
    return fx


def bn_gate_fixture() -> Dict[str, Any]:
    towers = [
        {
            "towerName": "ctr",
            "labelName": "clk",
            "metrics": [{"auc": {}}],
            "losses": [{"binaryCrossEntropy": {"labelSmoothing": 0.1}}],
            "mlp": {"hiddenUnits": [4], "activation": "nn.LeakyReLU(negative_slope=0.2)"},
            "weight": 2.0,
            "sampleWeightName": "w",
        },
        {
            "towerName": "cvr",
            "labelName": "buy",
            "metrics": [{"auc": {"thresholds": 1000}}],
            "losses": [{"binaryCrossEntropy": {}}],
            "mlp": {"hiddenUnits": [3]},
            "taskSpaceIndicatorLabel": "clk",
            "inTaskSpaceWeight": 1,
            "outTaskSpaceWeight": 0.25,
        },
    ]
    config = base_config(
        {"hiddenUnits": [6, 5], "useBn": True, "dropoutRatio": [0.0]},
        {"hiddenUnits": [4]},
        towers,
        with_weight=True,
    )
    fx = run_model_fixture("mmoe_bn_gate", config, 20240616, with_weight=True, bn=True)
    fx["description"] = (
        "tzrec MMoE with BatchNorm experts [6,5] (Linear without bias, BN train mode, "
        "momentum 0.1, eps 1e-5), gate_mlp [4], ctr tower mlp [4] LeakyReLU(0.2) with "
        "label smoothing 0.1, sample weight w and weight 2; cvr mlp [3], indicator clk "
        "in 1 out 0.25. eval_forward: batch 0 in eval mode after the 3 train steps."
    )
    return fx


# ------------------------------------------------------------ metrics.json
def linspace_scalar(n: int) -> np.ndarray:
    """float32 linspace(0, 1, n) exactly as src/metrics.ts `torchLinspace`
    computes it (torch 2.x's scalar kernel): step = f32(f32(end - start) /
    f32(n - 1)); index i < n // 2 is f32(start + f32(step * i)), the rest
    f32(end - f32(step * (n - 1 - i))), every operation rounded to float32
    (two roundings in the back half, no FMA); both ends exact."""
    f = np.float32
    start, end = f(0.0), f(1.0)
    step = f(f(end - start) / f(n - 1))
    half = n // 2
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        if i < half:
            out[i] = f(start + f(step * f(i)))
        else:
            out[i] = f(end - f(step * f(n - 1 - i)))
    out[0], out[n - 1] = start, end
    return out


def linspace_variants(n: int) -> Dict[str, torch.Tensor]:
    """float32 linspace(0, 1, n) as different implementations compute it.

    - "torch": this machine's torch.linspace. torch 1.13's CPU kernel (AVX2)
      works in chunks of 2 x 8 lanes: each 8-lane vector starts at an FMA
      from the nearer end and its lanes are base + f32(j * step); the tail
      uses the scalar path.
    - "exact": correctly rounded f32(i / (n - 1)).
    - "symmetric_fma": one rounding of start + step * i (front half) or
      end - step * (n - 1 - i) (back half), as CUDA does.
    - "scalar": src/metrics.ts `torchLinspace` (torch 2.x's scalar kernel),
      the same formula with the product rounded before the subtraction.

    They differ by 1 ulp at some indices. The fixture only puts probabilities
    on indices where all of them agree, and every AUC must be the same under
    each of them.
    """
    idx = np.arange(n, dtype=np.float64)
    step = np.float64(np.float32(1.0) / np.float32(n - 1))
    half = n // 2
    sym = np.where(idx < half, step * idx, 1.0 - step * (n - 1 - idx)).astype(np.float32)
    return {
        "torch": torch.linspace(0, 1, n),
        "exact": torch.from_numpy((idx / (n - 1)).astype(np.float32)),
        "symmetric_fma": torch.from_numpy(sym),
        "scalar": torch.from_numpy(linspace_scalar(n)),
    }


def check_auc_variants(what: str, probs: torch.Tensor, labels: torch.Tensor, n: int,
                       auc: np.float32) -> None:
    """Raises unless the binned AUC is `auc` under every linspace variant."""
    for vname, thr in linspace_variants(n).items():
        other = binned_auc_with(probs, labels, thr)
        if other != auc:
            raise RuntimeError(
                f"{what}: auc_{n} depends on the linspace ({vname}: {other} != {auc})"
            )


def binned_auc_with(probs, labels, thresholds: torch.Tensor) -> np.float32:
    n = len(thresholds)
    preds_t = (probs.unsqueeze(-1) >= thresholds.unsqueeze(0)).long()
    mapping = preds_t + 2 * labels.long().unsqueeze(-1) + 4 * torch.arange(n)
    state = torch.bincount(mapping.flatten(), minlength=4 * n).reshape(n, 2, 2)
    tps, fps, fns, tns = state[:, 1, 1], state[:, 0, 1], state[:, 1, 0], state[:, 0, 0]
    den_p, den_n = (tps + fns).float(), (fps + tns).float()
    tpr = torch.where(den_p != 0, tps.float() / den_p, torch.zeros_like(den_p)).flip(0)
    fpr = torch.where(den_n != 0, fps.float() / den_n, torch.zeros_like(den_n)).flip(0)
    return np.float32(torch.trapz(tpr, fpr).item())


def metrics_fixture() -> Dict[str, Any]:
    gen = torch.Generator().manual_seed(20240603)
    variants = {n: linspace_variants(n) for n in (200, 1000)}
    thr200, thr1000 = variants[200]["torch"], variants[1000]["torch"]

    def agreed(n: int) -> torch.Tensor:
        v = variants[n]
        same = torch.ones(n, dtype=torch.bool)
        for thr in v.values():
            same &= thr == v["torch"]
        return torch.nonzero(same).flatten()

    grid200, grid1000 = agreed(200), agreed(1000)
    sets = []

    def add(name: str, probs: torch.Tensor, labels: torch.Tensor, note: str) -> None:
        probs = probs.to(torch.float32)
        labels = labels.long()
        entry = {
            "name": name,
            "note": note,
            "probs": F32(probs.tolist()),
            "labels": labels.tolist(),
        }
        for n in (200, 1000):
            auc = binned_auc(probs, labels, n)
            check_auc_variants(name, probs, labels, n, auc)
            entry[f"auc_{n}"] = auc
        entry["exact_auc"] = exact_auc(probs.tolist(), labels.tolist())
        sets.append(entry)

    # 1. cvr-like: 1000 rows, small probabilities, ties, probs == thresholds.
    n = 1000
    z = torch.randn(n, generator=gen) * 1.2 - 4.0
    p = torch.sigmoid(z)
    labels = (torch.rand(n, generator=gen) < p * 4.0).long()
    idx = torch.randperm(n, generator=gen)
    low1000 = grid1000[grid1000 < 40]
    low200 = grid200[grid200 < 10]
    p[idx[:60]] = thr1000[low1000[torch.randint(0, len(low1000), (60,), generator=gen)]]
    p[idx[60:90]] = thr200[low200[torch.randint(0, len(low200), (30,), generator=gen)]]
    p[idx[90:190]] = p[idx[190:290]]  # 100 exact ties with other rows
    p[idx[290:300]] = 0.0
    p[idx[300:305]] = 1.0
    labels[idx[300]] = 1
    labels[idx[0]] = 1
    add("cvr_like", p, labels,
        "1000 rows, sigmoid(N(-4,1.2)) probs, labels Bernoulli(4p); 60 probs equal to "
        "a linspace(0,1,1000) threshold below 0.04, 30 equal to a linspace(0,1,200) "
        "threshold below 0.05, 100 exact ties, ten 0.0 and five 1.0")

    # 2. ctr-like: 1000 rows, broad probabilities, probs snapped onto the 200-grid.
    z = torch.randn(n, generator=gen) * 1.5 - 1.0
    p = torch.sigmoid(z)
    labels = (torch.rand(n, generator=gen) < torch.sigmoid(z * 1.3 + 0.2)).long()
    q = idx[:300]
    want = (p[q] * 199).round()
    nearest = grid200[(want.unsqueeze(1) - grid200.unsqueeze(0).float()).abs().argmin(1)]
    p[q] = thr200[nearest]
    add("ctr_like", p, labels,
        "1000 rows, sigmoid(N(-1,1.5)) probs, correlated labels; 300 probs snapped "
        "exactly onto linspace(0,1,200) thresholds where every float32 linspace variant "
        "agrees")

    # 3. small hand-made sets.
    add("torchmetrics_doc", torch.tensor([0.0, 0.5, 0.7, 0.8]), torch.tensor([0, 1, 1, 0]),
        "torchmetrics docstring example (binary_auroc = 0.5)")
    add("all_tied", torch.full((6,), 0.3), torch.tensor([0, 1, 0, 1, 1, 0]),
        "every prob equal: exact AUC 0.5")
    add("perfect", torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]),
        torch.tensor([0, 0, 0, 1, 1, 1]), "perfect ranking")
    add("no_positive", torch.tensor([0.1, 0.4, 0.6]), torch.tensor([0, 0, 0]),
        "no positive: TPR 0/0 -> 0 everywhere, binned AUC 0; exact AUC undefined (null)")
    add("no_negative", torch.tensor([0.1, 0.4, 0.6]), torch.tensor([1, 1, 1]),
        "no negative: FPR 0/0 -> 0 everywhere, binned AUC 0; exact AUC undefined (null)")
    return {
        "description": (
            "Binned AUROC as torchmetrics BinaryAUROC(thresholds=N) in float32 "
            "(thresholds = torch.linspace(0,1,N), positive iff prob >= tau), and exact "
            "rank AUC (ties averaged, float64). Every auc_N is the same whichever float32 "
            "linspace is used (torch 1.13 CPU AVX2, correctly rounded i/(N-1), symmetric "
            "FMA, torch 2.x scalar kernel)."
        ),
        "torch_version": torch.__version__,
        "thresholds_200": F32(thr200.tolist()),
        "thresholds_1000": F32(thr1000.tolist()),
        "sets": sets,
    }


def main() -> int:
    outputs = [
        ("mmoe_tiny.json", tiny_fixture()),
        ("mmoe_bn_gate.json", bn_gate_fixture()),
        ("metrics.json", metrics_fixture()),
    ]
    for name, fx in outputs:
        path = write_json(name, fx)
        print(f"{os.path.relpath(path, ROOT)}: {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Re-derives tests/fixtures/tzrec_model/expected.json from the fixture's
pipeline.config, model.safetensors and rows.csv with plain numpy (float64),
written from tzrec's rules, not from make_tzrec_model.py's modules; no torch.

1. The safetensors keys and shapes are exactly the state_dict that tzrec's
   naming rules give for the config (every parameter and buffer, nothing else).
2. Every BatchNorm's num_batches_tracked is an I64 scalar equal to the steps.
3. The FG_NONE rows, encoded and pooled by hand, and the MMoE forward in eval
   mode give expected.json's feature outputs, group input, logits and probs.

    /usr/bin/python3 tools/check_tzrec_model.py
"""

import csv
import json
import os
import re
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tzrec_model")
BN_EPS = 1e-5  # nn.BatchNorm1d default, tzrec's Perceptron does not change it
failures = []


# ------------------------------------------------ protobuf text format, tiny
TOKEN = re.compile(r'\s*(?:#[^\n]*\n?|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def parse_config(text):
    """pipeline.config -> nested dicts; every field is a list of values."""
    tokens = [m.group(1) or m.group(2) or m.group(3) for m in TOKEN.finditer(text)]
    tokens = [t for t in tokens if t]
    pos = 0

    def value(tok):
        if tok.startswith('"'):
            return json.loads(tok)
        if tok in ("true", "false"):
            return tok == "true"
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                return tok  # enum

    def message(end):
        nonlocal pos
        msg = {}
        while pos < len(tokens) and tokens[pos] != end:
            name = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            if tokens[pos] == "{":
                pos += 1
                msg.setdefault(name, []).append(message("}"))
                pos += 1
            elif tokens[pos] == "[":
                pos += 1
                while tokens[pos] != "]":
                    if tokens[pos] != ",":
                        msg.setdefault(name, []).append(value(tokens[pos]))
                    pos += 1
                pos += 1
            else:
                msg.setdefault(name, []).append(value(tokens[pos]))
                pos += 1
        return msg

    return message(None)


def one(msg, name, default=None):
    return msg[name][0] if name in msg else default


# ------------------------------------------------------------ safetensors
def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": "<f4", "I64": "<i8"}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = (
            info["dtype"],
            np.frombuffer(data[8 + n + b : 8 + n + e], dtypes[info["dtype"]]).reshape(
                info["shape"]
            ),
        )
    return out, meta


# --------------------------------------------------- tzrec's naming rules
def features_of(cfg):
    feats = {}
    for fc in cfg["feature_configs"]:
        ((kind, (f,)),) = fc.items()
        name = one(f, "feature_name")
        if kind == "raw_feature" and "boundaries" not in f:
            feats[name] = {"kind": "dense", "dim": one(f, "value_dim", 1)}
            continue
        if kind == "raw_feature":
            rows = len(f["boundaries"]) + 1
        elif "hash_bucket_size" in f:
            rows = one(f, "hash_bucket_size")
        elif "num_buckets" in f:
            rows = one(f, "num_buckets")
        else:  # vocab_list without default_bucketize_value: 0 default, 1 <OOV>
            rows = len(f["vocab_list"]) + 2
        feats[name] = {
            "kind": "sparse",
            "rows": rows,
            "dim": one(f, "embedding_dim"),
            "table": one(f, "embedding_name", f"{name}_emb"),
            "pooling": one(f, "pooling", "sum"),
            "weighted": one(f, "weighted", False),
        }
    return feats


def mlp_keys(prefix, mlp, in_dim, keys):
    use_bn, use_ln = one(mlp, "use_bn", False), one(mlp, "use_ln", False)
    for i, h in enumerate(mlp["hidden_units"]):
        p = f"{prefix}.mlp.{i}.perceptron"
        keys[f"{p}.0.weight"] = ("F32", [h, in_dim])
        if not use_bn and one(mlp, "bias", True):
            keys[f"{p}.0.bias"] = ("F32", [h])
        if use_bn:
            for k in ("weight", "bias", "running_mean", "running_var"):
                keys[f"{p}.1.{k}"] = ("F32", [h])
            keys[f"{p}.1.num_batches_tracked"] = ("I64", [])
        elif use_ln:
            keys[f"{p}.1.weight"] = ("F32", [h])
            keys[f"{p}.1.bias"] = ("F32", [h])
        in_dim = h
    return in_dim


def expected_keys(cfg, feats, group):
    keys = {}
    for name in group:
        f = feats[name]
        if f["kind"] == "sparse":
            key = f"model.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.{f['table']}.weight"
            keys[key] = ("F32", [f["rows"], f["dim"]])
    in_dim = sum(feats[n]["dim"] for n in group)
    mmoe = one(one(cfg, "model_config"), "mmoe")
    num_expert = one(mmoe, "num_expert")
    towers = mmoe["task_towers"]
    for e in range(num_expert):
        out_dim = mlp_keys(f"model.mmoe.expert_mlps.{e}", one(mmoe, "expert_mlp"), in_dim, keys)
    for t in range(len(towers)):
        gate_in = in_dim
        if "gate_mlp" in mmoe:
            gate_in = mlp_keys(f"model.mmoe.gate_mlps.{t}", one(mmoe, "gate_mlp"), in_dim, keys)
        keys[f"model.mmoe.gate_finals.{t}.weight"] = ("F32", [num_expert, gate_in])
        keys[f"model.mmoe.gate_finals.{t}.bias"] = ("F32", [num_expert])
    for t, tower in enumerate(towers):
        tin = out_dim
        if "mlp" in tower:
            tin = mlp_keys(f"model._task_tower.{t}.tower_mlp", one(tower, "mlp"), out_dim, keys)
        keys[f"model._task_tower.{t}.linear.weight"] = ("F32", [one(tower, "num_class", 1), tin])
        keys[f"model._task_tower.{t}.linear.bias"] = ("F32", [one(tower, "num_class", 1)])
    return keys


# -------------------------------------------------------------- forward
def mlp_forward(P, prefix, mlp, x):
    for i in range(len(mlp["hidden_units"])):
        p = f"{prefix}.mlp.{i}.perceptron"
        y = x @ P[f"{p}.0.weight"].T
        if one(mlp, "use_bn", False):
            y = (y - P[f"{p}.1.running_mean"]) / np.sqrt(P[f"{p}.1.running_var"] + BN_EPS)
            y = y * P[f"{p}.1.weight"] + P[f"{p}.1.bias"]
        else:
            y = y + P[f"{p}.0.bias"]
        assert one(mlp, "activation", "nn.ReLU") == "nn.ReLU"
        x = np.maximum(y, 0.0)  # dropout is the identity in eval mode
    return x


def encode(feats, group, rows, sep):
    """FG_NONE inputs: the column named by the feature; an empty cell is no
    value; multi-values split on the separator; `id:weight` when weighted."""
    outs = {}
    for name in group:
        f = feats[name]
        if f["kind"] == "dense":
            outs[name] = np.array([[float(np.float32(r[name]))] for r in rows])
            continue
        pooled = np.zeros((len(rows), f["dim"]))
        for i, r in enumerate(rows):
            items = r[name].split(sep) if r[name] != "" else []
            ids = [int(it.split(":")[0]) for it in items]
            if f["weighted"]:
                weights = [float(np.float32(it.split(":")[1])) for it in items]
            else:
                weights = [1.0] * len(ids)
            for k, w in zip(ids, weights):
                if not 0 <= k < f["rows"]:
                    raise ValueError(
                        f"rows.csv row {i + 2} {name}: id {k} outside [0, {f['rows']})"
                    )
                pooled[i] += w * f["W"][k]
            if f["pooling"] == "mean" and ids:
                pooled[i] /= len(ids)
        outs[name] = pooled
    return outs


def close(what, got, want, rtol, atol):
    # the JSON holds float32 values in their shortest decimal form
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float32).astype(
        np.float64
    )
    if got.shape != want.shape:
        failures.append(f"{what}: shape {got.shape} != {want.shape}")
        return 0.0
    err = np.abs(got - want)
    if np.any(err > atol + rtol * np.abs(want)):
        failures.append(f"{what}: max abs error {err.max():.3g}")
    return float(err.max()) if err.size else 0.0


def main():
    with open(os.path.join(FIXTURE, "pipeline.config"), encoding="utf-8") as f:
        cfg = parse_config(f.read())
    with open(os.path.join(FIXTURE, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    tensors, meta = read_safetensors(os.path.join(FIXTURE, "model.safetensors"))
    data_cfg = one(cfg, "data_config")
    model_cfg = one(cfg, "model_config")
    group = one(model_cfg, "feature_groups")["feature_names"]
    feats = features_of(cfg)

    # 1. names, shapes and dtypes
    want = expected_keys(cfg, feats, group)
    got = {k: (dt, list(a.shape)) for k, (dt, a) in tensors.items()}
    for k in sorted(set(want) | set(got)):
        if want.get(k) != got.get(k):
            failures.append(
                f"{k}: tzrec rules give {want.get(k)}, model.safetensors has {got.get(k)}"
            )
    # 2. num_batches_tracked
    for k, (dt, a) in tensors.items():
        if k.endswith("num_batches_tracked") and int(a) != expected["steps"]:
            failures.append(f"{k}: {int(a)} != {expected['steps']} steps")
    if meta.get("step") != str(expected["steps"]):
        failures.append(f"metadata step {meta.get('step')!r} != {expected['steps']}")
    if failures:
        return report()

    # 3. the numbers
    P = {k: a.astype(np.float64) for k, (_, a) in tensors.items()}
    for f in feats.values():
        if f["kind"] == "sparse":
            f["W"] = P[
                f"model.embedding_group.emb_impls.__BASE__.ebc.embedding_bags.{f['table']}.weight"
            ]
    with open(os.path.join(FIXTURE, "rows.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter=one(data_cfg, "delimiter", ",")))
    sep = one(data_cfg, "fg_encoded_multival_sep", "\x03")
    outs = encode(feats, group, rows, sep)
    rtol, atol = 1e-5, 1e-6  # float64 here vs torch float32
    worst = {}
    for name in group:
        worst[f"features.{name}"] = close(
            f"features.{name}",
            outs[name],
            np.reshape(expected["features"][name]["data"], expected["features"][name]["shape"]),
            rtol,
            atol,
        )
    x = np.concatenate([outs[n] for n in group], axis=1)
    worst["group_input"] = close(
        "group_input",
        x,
        np.reshape(expected["group_input"]["data"], expected["group_input"]["shape"]),
        rtol,
        atol,
    )
    mmoe = one(model_cfg, "mmoe")
    experts = [
        mlp_forward(P, f"model.mmoe.expert_mlps.{e}", one(mmoe, "expert_mlp"), x)
        for e in range(one(mmoe, "num_expert"))
    ]
    for t, tower in enumerate(mmoe["task_towers"]):
        name = one(tower, "tower_name")
        g = (
            mlp_forward(P, f"model.mmoe.gate_mlps.{t}", one(mmoe, "gate_mlp"), x)
            if "gate_mlp" in mmoe
            else x
        )
        z = g @ P[f"model.mmoe.gate_finals.{t}.weight"].T + P[f"model.mmoe.gate_finals.{t}.bias"]
        gate = np.exp(z - z.max(axis=1, keepdims=True))
        gate /= gate.sum(axis=1, keepdims=True)
        h = sum(gate[:, e : e + 1] * experts[e] for e in range(len(experts)))
        if "mlp" in tower:
            h = mlp_forward(P, f"model._task_tower.{t}.tower_mlp", one(tower, "mlp"), h)
        logits = (
            h @ P[f"model._task_tower.{t}.linear.weight"].T
            + P[f"model._task_tower.{t}.linear.bias"]
        )[:, 0]
        probs = 1.0 / (1.0 + np.exp(-logits))
        worst[f"logits_{name}"] = close(
            f"logits_{name}", logits, expected[f"logits_{name}"]["data"], rtol, atol
        )
        worst[f"probs_{name}"] = close(
            f"probs_{name}", probs, expected[f"probs_{name}"]["data"], rtol, atol
        )
    for k, v in worst.items():
        print(f"{k}: max abs error {v:.3g}")
    return report()


def report():
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(f"tzrec_model: {len(failures)} failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

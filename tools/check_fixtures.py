#!/usr/bin/python3
"""Cross-checks tests/fixtures/*.json against a second, independent
implementation: functional float64 forward written from SPEC.md (explicit
matmuls, hand-written BatchNorm, LeakyReLU, softmax, BCE, tzrec loss
weighting), hand-written Adam and sparse Adagrad, central finite differences
for the step-0 gradients, and plain-loop binned / exact AUC. It reads only the
JSON, so it catches wiring mistakes in make_fixtures.py.

    /usr/bin/python3 tools/check_fixtures.py
"""

import json
import math
import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
D = torch.float64
failures = []


def t(j):
    return torch.tensor(j["data"], dtype=D).reshape(j["shape"])


def close(name, got, want, rtol=1e-4, atol=2e-6):
    got = torch.as_tensor(got, dtype=D).flatten()
    want = torch.as_tensor(want, dtype=D).flatten()
    assert got.shape == want.shape, (name, got.shape, want.shape)
    err = (got - want).abs()
    bad = err > atol + rtol * want.abs()
    worst = float(err.max()) if err.numel() else 0.0
    if bad.any():
        failures.append(f"{name}: max abs err {worst:.3g}")
    return worst


def act_fn(cfg):
    a = (cfg.get("activation") or "nn.ReLU").replace(" ", "")
    if a == "nn.ReLU":
        return lambda v: torch.clamp(v, min=0)
    if a.startswith("nn.LeakyReLU"):
        slope = float(a.split("negative_slope=")[1].rstrip(")")) if "=" in a else 0.01
        return lambda v: torch.where(v >= 0, v, v * slope)
    raise ValueError(a)


def mlp(P, prefix, cfg, x, train, bn_out, trace=None, key=None):
    act = act_fn(cfg)
    for i in range(len(cfg["hiddenUnits"])):
        base = f"{prefix}.mlp.{i}.perceptron"
        y = x @ P[f"{base}.0.weight"].T
        if cfg.get("useBn"):
            g, b = P[f"{base}.1.weight"], P[f"{base}.1.bias"]
            if train:
                mu = y.mean(0)
                var_b = ((y - mu) ** 2).mean(0)
                n = y.shape[0]
                bn_out[f"{base}.1"] = (mu, var_b * n / (n - 1))
                y = (y - mu) / torch.sqrt(var_b + 1e-5) * g + b
            else:
                rm, rv = P[f"{base}.1.running_mean"], P[f"{base}.1.running_var"]
                y = (y - rm) / torch.sqrt(rv + 1e-5) * g + b
        else:
            y = y + P[f"{base}.0.bias"]
        x = act(y)
        if trace is not None:
            trace[f"{key}_layer_{i}"] = x
    return x


def forward(cfg, P, batch, train):
    feats = {}
    for fc in cfg["featureConfigs"]:
        (kind, f), = fc.items()
        feats[f["featureName"]] = (kind, f)
    parts = []
    for name in cfg["modelConfig"]["featureGroups"][0]["featureNames"]:
        kind, f = feats[name]
        rows = batch["features"][name]
        if kind == "idFeature":
            W = P["embedding_group." + f.get("embeddingName", name + "_emb") + ".weight"]
            parts.append(torch.stack([
                sum((W[i] for i in r), torch.zeros(W.shape[1], dtype=D)) for r in rows
            ]))
        else:
            parts.append(torch.tensor(rows, dtype=D))
    x = torch.cat(parts, 1)
    m = cfg["modelConfig"]["mmoe"]
    trace, bn_out = {"x": x}, {}
    experts = []
    for e in range(m["numExpert"]):
        o = mlp(P, f"mmoe.expert_mlps.{e}", m["expertMlp"], x, train, bn_out, trace, f"expert_{e}")
        trace[f"expert_{e}"] = o
        experts.append(o)
    preds = {}
    for i, tw in enumerate(m["taskTowers"]):
        n = tw["towerName"]
        gi = x
        if "gateMlp" in m:
            gi = mlp(P, f"mmoe.gate_mlps.{i}", m["gateMlp"], x, train, bn_out)
            trace[f"gate_mlp_{n}"] = gi
        z = gi @ P[f"mmoe.gate_finals.{i}.weight"].T + P[f"mmoe.gate_finals.{i}.bias"]
        z = torch.exp(z - z.max(1, keepdim=True).values)
        g = z / z.sum(1, keepdim=True)
        trace[f"gate_{n}"] = g
        ti = sum(g[:, e : e + 1] * experts[e] for e in range(len(experts)))
        trace[f"task_input_{n}"] = ti
        h = ti
        if "mlp" in tw:
            h = mlp(P, f"_task_tower.{i}.tower_mlp", tw["mlp"], ti, train, bn_out)
            trace[f"tower_mlp_{n}"] = h
        logit = (h @ P[f"_task_tower.{i}.linear.weight"].T + P[f"_task_tower.{i}.linear.bias"])[:, 0]
        preds[f"logits_{n}"] = logit
        preds[f"probs_{n}"] = 1 / (1 + torch.exp(-logit))
    trace.update(preds)
    return preds, trace, bn_out


def losses(cfg, preds, batch):
    out, weights = {}, {}
    for tw in cfg["modelConfig"]["mmoe"]["taskTowers"]:
        n = tw["towerName"]
        y = torch.tensor(batch["labels"][tw["labelName"]], dtype=D)
        s = tw["losses"][0]["binaryCrossEntropy"].get("labelSmoothing", 0.0)
        y = y * (1 - s) + 0.5 * s
        z = preds[f"logits_{n}"]
        l = torch.clamp(z, min=0) - z * y + torch.log1p(torch.exp(-z.abs()))
        if any(k in tw for k in ("weight", "sampleWeightName", "taskSpaceIndicatorLabel")):
            w = torch.ones_like(l)
            if "sampleWeightName" in tw:
                w = torch.tensor(batch["sample_weights"][tw["sampleWeightName"]], dtype=D)
            if "taskSpaceIndicatorLabel" in tw:
                ind = torch.tensor(batch["labels"][tw["taskSpaceIndicatorLabel"]], dtype=D) > 0
                w = w * torch.where(ind, torch.tensor(float(tw.get("inTaskSpaceWeight", 1.0)), dtype=D),
                                    torch.tensor(float(tw.get("outTaskSpaceWeight", 1.0)), dtype=D))
            mean = w.mean()
            w = w / mean if mean != 0 else torch.zeros_like(w)
            w = w * tw.get("weight", 1.0)
            out[f"binary_cross_entropy_{n}"] = (l * w).mean()
            weights[n] = w
        else:
            out[f"binary_cross_entropy_{n}"] = l.mean()
            weights[n] = None
    out["total"] = sum(out.values())
    return out, weights


def linspace_torch_avx2(n):
    """torch 1.13 CPU linspace(0, 1, n) in float32 on an AVX2 build: chunks of
    2 x 8 lanes; each vector's base is an FMA from the nearer end (start side
    while its first index < n // 2), lanes are base + f32(j * step); the last
    n % 16 values take the scalar path (FMA from the nearer end)."""
    f = np.float32
    step = f(1) / f(n - 1)

    def fma_from_end(i):  # exact in float64, then one rounding
        if i < n // 2:
            return f(np.float64(step) * i)
        return f(1.0 - np.float64(step) * (n - 1 - i))

    out = [None] * n
    i = 0
    while i + 16 <= n:
        for _ in range(2):
            base = fma_from_end(i)
            for j in range(8):
                out[i + j] = f(base + f(f(j) * step))
            i += 8
    while i < n:
        out[i] = fma_from_end(i)
        i += 1
    return out


def linspace_exact(n):
    return [np.float32(i / (n - 1)) for i in range(n)]


def linspace_symmetric_fma(n):
    """One rounding from the nearer end (CUDA): f32(i * step) for i < n // 2,
    else f32(1 - (n - 1 - i) * step), with the product and difference exact."""
    f = np.float32
    step = np.float64(f(1) / f(n - 1))
    return [f(step * i) if i < n // 2 else f(1.0 - step * (n - 1 - i)) for i in range(n)]


def linspace_scalar(n):
    """src/metrics.ts torchLinspace (torch 2.x scalar kernel): the product is
    rounded to f32 before the subtraction in the back half; ends exact."""
    f = np.float32
    step = f(f(1) / f(n - 1))
    out = [f(f(0) + f(step * f(i))) if i < n // 2 else f(f(1) - f(step * f(n - 1 - i)))
           for i in range(n)]
    out[0], out[-1] = f(0), f(1)
    return out


def roc_counts(probs, labels, thresholds):
    """(TP, FP) at every threshold, by binary search on the sorted f32 probs."""
    p = np.asarray(probs, dtype=np.float32)
    y = np.asarray(labels)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    thr = np.asarray(thresholds, dtype=np.float32)
    return list(zip((len(pos) - np.searchsorted(pos, thr, side="left")).tolist(),
                    (len(neg) - np.searchsorted(neg, thr, side="left")).tolist()))


def binned_auc_loop(probs, labels, n, thresholds=None):
    thr = thresholds if thresholds is not None else linspace_exact(n)
    P = sum(labels)
    N = len(labels) - P
    tpr, fpr = [], []
    for tau in thr:
        tp = sum(1 for p, y in zip(probs, labels) if y == 1 and np.float32(p) >= tau)
        fp = sum(1 for p, y in zip(probs, labels) if y == 0 and np.float32(p) >= tau)
        tpr.append(tp / P if P else 0.0)
        fpr.append(fp / N if N else 0.0)
    tpr, fpr = tpr[::-1], fpr[::-1]
    return sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(thr) - 1))


def exact_auc_pairs(probs, labels):
    pos = [p for p, y in zip(probs, labels) if y == 1]
    neg = [p for p, y in zip(probs, labels) if y == 0]
    if not pos or not neg:
        return None
    s = sum((1.0 if a > b else 0.5 if a == b else 0.0) for a in pos for b in neg)
    return s / (len(pos) * len(neg))


def check_model(fname):
    fx = json.load(open(os.path.join(FIX, fname)))
    cfg = fx["config"]
    P = {k: t(v) for k, v in fx["params"].items()}
    batches = fx["batches"]
    tc = cfg["trainConfig"]
    lr_s = tc["sparseOptimizer"]["adagradOptimizer"]["lr"]
    lr_d = tc["denseOptimizer"]["adamOptimizer"]["lr"]
    tables = [k for k in P if k.startswith("embedding_group.")]
    buffers = [k for k in P if "running_" in k]
    dense = [k for k in P if k not in tables and k not in buffers]
    m1 = {k: torch.zeros_like(P[k]) for k in dense}
    m2 = {k: torch.zeros_like(P[k]) for k in dense}
    G = {k: torch.zeros_like(P[k]) for k in tables}
    for step, b in enumerate(batches):
        leaves = {k: v.clone().requires_grad_(k not in buffers) for k, v in P.items()}
        preds, trace, bn_out = forward(cfg, leaves, b, True)
        ls, ws = losses(cfg, preds, b)
        for k, v in fx["losses"][step].items():
            close(f"{fname} step{step} {k}", ls[k].detach(), v)
        for n, w in ws.items():
            want = fx["loss_weights"][step][n]
            if w is None or want is None:
                if (w is None) != (want is None):
                    failures.append(f"{fname} step{step} loss_weights {n}: None mismatch")
            else:
                close(f"{fname} step{step} loss_weights {n}", w, want)
        ls["total"].backward()
        grads = {k: leaves[k].grad for k in P if k not in buffers}
        if step == 0:
            for k, v in fx["forward"].items():
                close(f"{fname} forward {k}", trace[k].detach(), t(v))
            for k, v in fx["grads"].items():
                close(f"{fname} grad {k}", grads[k], t(v), rtol=1e-3, atol=1e-6)
            # central finite differences on a few coordinates of every parameter
            with torch.no_grad():
                for k in grads:
                    flat = P[k].flatten()
                    for idx in sorted({0, flat.numel() // 2, flat.numel() - 1}):
                        h = 1e-6
                        vals = []
                        for sgn in (1, -1):
                            Q = dict(P)
                            q = flat.clone()
                            q[idx] += sgn * h
                            Q[k] = q.reshape(P[k].shape)
                            pr, _, _ = forward(cfg, Q, b, True)
                            vals.append(losses(cfg, pr, b)[0]["total"])
                        fd = (vals[0] - vals[1]) / (2 * h)
                        close(f"{fname} fd {k}[{idx}]", fd, t(fx["grads"][k]).flatten()[idx],
                              rtol=1e-3, atol=1e-6)
        with torch.no_grad():
            # BatchNorm running stats, momentum 0.1, unbiased var
            for base, (mu, var_u) in bn_out.items():
                P[f"{base}.running_mean"] = 0.9 * P[f"{base}.running_mean"] + 0.1 * mu
                P[f"{base}.running_var"] = 0.9 * P[f"{base}.running_var"] + 0.1 * var_u
            # dense Adam (torch.optim.Adam, bias-corrected, eps after sqrt)
            tstep = step + 1
            for k in dense:
                g = grads[k]
                m1[k] = 0.9 * m1[k] + 0.1 * g
                m2[k] = 0.999 * m2[k] + 0.001 * g * g
                denom = torch.sqrt(m2[k]) / math.sqrt(1 - 0.999 ** tstep) + 1e-8
                P[k] = P[k] - lr_d / (1 - 0.9 ** tstep) * m1[k] / denom
            # sparse exact Adagrad on the rows seen in the batch
            for k in tables:
                rows = set()
                for fc in cfg["featureConfigs"]:
                    f = fc.get("idFeature")
                    if f and "embedding_group." + f.get("embeddingName", f["featureName"] + "_emb") + ".weight" == k:
                        for r in b["features"][f["featureName"]]:
                            rows.update(r)
                for r in sorted(rows):
                    g = grads[k][r]
                    G[k][r] = G[k][r] + g * g
                    P[k][r] = P[k][r] - lr_s * g / (torch.sqrt(G[k][r]) + 1e-8)
    for k, v in fx["params_after"].items():
        close(f"{fname} params_after {k}", P[k], t(v), rtol=1e-3, atol=1e-5)
    st = fx["optimizer_state"]
    assert st["adam"]["step"] == len(batches)
    for k in dense:
        close(f"{fname} exp_avg {k}", m1[k], t(st["adam"]["exp_avg"][k]), rtol=1e-3, atol=1e-6)
        close(f"{fname} exp_avg_sq {k}", m2[k], t(st["adam"]["exp_avg_sq"][k]), rtol=1e-3, atol=1e-9)
    for k in tables:
        close(f"{fname} adagrad sum {k}", G[k], t(st["adagrad"]["sum"][k]), rtol=1e-3, atol=1e-9)
    # eval with the fixture's own trained params (isolates eval from training drift)
    Pa = {k: t(v) for k, v in fx["params_after"].items()}
    if "eval_forward" in fx:
        _, trace, _ = forward(cfg, Pa, batches[0], False)
        for k, v in fx["eval_forward"].items():
            close(f"{fname} eval_forward {k}", trace[k], t(v))
    ev = fx["eval"]
    eval_losses = []
    allp = {}
    for b in batches:
        pr, _, _ = forward(cfg, Pa, b, False)
        eval_losses.append(losses(cfg, pr, b)[0])
        for tw in cfg["modelConfig"]["mmoe"]["taskTowers"]:
            allp.setdefault(tw["towerName"], []).extend(pr[f"probs_{tw['towerName']}"].tolist())
    for tw in cfg["modelConfig"]["mmoe"]["taskTowers"]:
        n = tw["towerName"]
        close(f"{fname} eval probs_{n}", torch.tensor(allp[n]), t(ev[f"probs_{n}"]))
        labels = [y for b in batches for y in b["labels"][tw["labelName"]]]
        probs32 = ev[f"probs_{n}"]["data"]
        thr = tw["metrics"][0]["auc"].get("thresholds", 200)
        close(f"{fname} auc_{n}", binned_auc_loop(probs32, labels, thr), ev[f"auc_{n}"], atol=1e-6)
        close(f"{fname} auc_{n} (float64 probs)", binned_auc_loop(allp[n], labels, thr), ev[f"auc_{n}"], atol=1e-6)
        close(f"{fname} exact_auc_{n}", exact_auc_pairs(probs32, labels), ev[f"exact_auc_{n}"], atol=1e-12)
        k = f"binary_cross_entropy_{n}"
        close(f"{fname} eval {k}", sum(float(l[k]) for l in eval_losses) / len(eval_losses), ev[k])
    print(f"{fname}: checked")


def check_metrics():
    fx = json.load(open(os.path.join(FIX, "metrics.json")))
    for n in (200, 1000):
        got = fx[f"thresholds_{n}"]
        want = linspace_torch_avx2(n)
        if any(np.float32(a) != b for a, b in zip(got, want)):
            failures.append(f"thresholds_{n} differ from the AVX2 linspace emulation")
    variants = {
        n: {
            "torch 1.13 (fixture)": [np.float32(v) for v in fx[f"thresholds_{n}"]],
            "f32(i/(n-1))": linspace_exact(n),
            "symmetric FMA": linspace_symmetric_fma(n),
            "torchLinspace scalar": linspace_scalar(n),
        }
        for n in (200, 1000)
    }
    for s in fx["sets"]:
        for n in (200, 1000):
            # Every row must fall in the same bin whichever linspace is used, so
            # the ROC counts (and so auc_N) are identical under every variant.
            ref = roc_counts(s["probs"], s["labels"], variants[n]["torch 1.13 (fixture)"])
            for vname, thr in variants[n].items():
                if roc_counts(s["probs"], s["labels"], thr) != ref:
                    failures.append(f"metrics {s['name']}: ROC counts at {n} thresholds "
                                    f"differ under the {vname} linspace")
            got = binned_auc_loop(s["probs"], s["labels"], n, [np.float32(v) for v in fx[f"thresholds_{n}"]])
            close(f"metrics {s['name']} auc_{n}", got, s[f"auc_{n}"], rtol=1e-5, atol=1e-6)
            got = binned_auc_loop(s["probs"], s["labels"], n, linspace_exact(n))
            close(f"metrics {s['name']} auc_{n} (f32(i/(n-1)) thresholds)", got, s[f"auc_{n}"],
                  rtol=1e-5, atol=1e-6)
        e = exact_auc_pairs(s["probs"], s["labels"])
        if e is None or s["exact_auc"] is None:
            if (e is None) != (s["exact_auc"] is None):
                failures.append(f"metrics {s['name']} exact None mismatch")
        else:
            close(f"metrics {s['name']} exact", e, s["exact_auc"], rtol=0, atol=1e-12)
    print("metrics.json: checked")


if __name__ == "__main__":
    check_model("mmoe_tiny.json")
    check_model("mmoe_bn_gate.json")
    check_metrics()
    if failures:
        print("\n".join(failures))
        print(f"{len(failures)} mismatches")
        sys.exit(1)
    print("all fixtures agree with the independent implementation")

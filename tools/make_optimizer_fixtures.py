#!/usr/bin/env python3
"""Generates tests/data/optim/optimizer_steps.json: a few optimiser steps computed by PyTorch, replayed
by tests/grad/test_optimizer.cpp through qlip::train::Optimizer (run from anywhere).

Both cases use the same four small tensors (a matrix and a zero-initialised bias of group 0, a
matrix of group 1, a scalar logit_scale of group 0), two parameter groups with their own peak
learning rate and weight decay, the learning-rate schedule of include/qlip/train/schedule.hpp
(linear warm-up with factor (t+1)/W, then cosine to min_ratio; step index t = 0 for the first step)
and, before every step, torch.nn.utils.clip_grad_norm_ with the given max_norm. Gradients are drawn
per step with a per-step scale so that some steps are clipped and some are not.

  adamw: torch.optim.AdamW(foreach=False), one torch param group per (group, decay flag), the
         group's lr set from the schedule before each step; tensors without decay get weight_decay 0.
  lamb:  LAMB written here in torch from You et al. 2019 (Algorithm 2, with bias correction), in the
         element order of include/qlip/reference/optimizer.hpp; the norms of p and r in float64.

Values are float32 stored as JSON numbers (exact: a float32 widened to a Python float round-trips).

Needs: torch (CPU).
"""
import json
import math
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "optim", "optimizer_steps.json")

TENSORS = [  # name, shape, group, decay (the default_no_decay rule of train/parameter_store.hpp)
    ("vision_model.encoder.layers.0.mlp.fc1.weight", [3, 4], 0, True),
    ("vision_model.encoder.layers.0.layer_norm1.bias", [5], 0, False),
    ("decoder.head.weight", [2, 3], 1, True),
    ("logit_scale", [], 0, False),
]
GROUPS = [
    {"name": "vision", "peak_lr": 0.05, "weight_decay": 0.05},
    {"name": "decoder", "peak_lr": 0.2, "weight_decay": 0.1},
]
SCHEDULE = {"warmup_steps": 2, "total_steps": 5, "min_ratio": 0.1}
STEPS = 6
GRAD_SCALES = [0.5, 3.0, 1.0, 5.0, 0.2, 2.0]  # norm of a unit-variance draw of 24 values is about 4.9
MAX_NORM = 5.0
BETAS = (0.9, 0.95)


def schedule_factor(t):
    w, total, rho = SCHEDULE["warmup_steps"], SCHEDULE["total_steps"], SCHEDULE["min_ratio"]
    if t < w:
        return (t + 1) / w
    if t >= total:
        return rho
    return rho + 0.5 * (1.0 - rho) * (1.0 + math.cos(math.pi * (t - w) / (total - w)))


def initial_params(gen):
    params = []
    for name, shape, _, _ in TENSORS:
        if name.endswith(".bias"):
            params.append(torch.zeros(shape, dtype=torch.float32))  # ‖p‖ = 0: LAMB's trust = 1 branch
        else:
            params.append(torch.randn(shape, generator=gen, dtype=torch.float32))
    return params


def draw_grads(gen):
    out = []
    for step in range(STEPS):
        out.append([torch.randn(shape, generator=gen, dtype=torch.float32) * GRAD_SCALES[step]
                    for _, shape, _, _ in TENSORS])
    return out


def flat(t):
    return [float(x) for x in t.reshape(-1).tolist()]


@torch.no_grad()
def lamb_step(params, states, t, lrs, wds, eps):
    b1, b2 = BETAS
    for p, st, lr, wd in zip(params, states, lrs, wds):
        g = p.grad
        m, v = st["m"], st["v"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        r = (m_hat / (v_hat.sqrt() + eps)).add(p, alpha=wd)
        p_norm = float(p.double().norm())
        r_norm = float(r.double().norm())
        trust = p_norm / r_norm if (p_norm > 0 and r_norm > 0) else 1.0
        p.add_(r, alpha=-(lr * trust))


def run_case(kind, eps, seed):
    gen = torch.Generator().manual_seed(seed)
    init = initial_params(gen)
    grads = draw_grads(gen)
    params = [torch.nn.Parameter(p.clone()) for p in init]

    groups = []  # one torch group per (group, decay)
    for gi, g in enumerate(GROUPS):
        for decay in (True, False):
            members = [p for p, (_, _, pg, d) in zip(params, TENSORS) if pg == gi and d == decay]
            if members:
                groups.append({"params": members, "lr": g["peak_lr"], "weight_decay": g["weight_decay"] if decay else 0.0,
                               "qlip_group": gi})
    if kind == "adamw":
        opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "qlip_group"} for g in groups],
                                betas=BETAS, eps=eps, foreach=False)
    states = [{"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in params]

    steps = []
    for step in range(STEPS):
        factor = schedule_factor(step)
        for p, g in zip(params, grads[step]):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        lrs = [GROUPS[pg]["peak_lr"] * factor for _, _, pg, _ in TENSORS]
        if kind == "adamw":
            for tg, g in zip(opt.param_groups, groups):
                tg["lr"] = GROUPS[g["qlip_group"]]["peak_lr"] * factor
            opt.step()
        else:
            wds = [GROUPS[pg]["weight_decay"] if d else 0.0 for _, _, pg, d in TENSORS]
            lamb_step(params, states, step + 1, lrs, wds, eps)
        steps.append({
            "lr_factor": factor,
            "grads": [flat(g) for g in grads[step]],
            "grad_norm": float(norm),
            "params": [flat(p.detach()) for p in params],
        })
    return {
        "kind": kind,
        "eps": eps,
        "initial": [flat(p) for p in init],
        "steps": steps,
    }


def main():
    torch.set_num_threads(1)
    fixture = {
        "generator": "tools/make_optimizer_fixtures.py",
        "torch_version": torch.__version__,
        "tensors": [{"name": n, "shape": s, "group": g, "decay": d} for n, s, g, d in TENSORS],
        "groups": GROUPS,
        "schedule": SCHEDULE,
        "betas": list(BETAS),
        "max_norm": MAX_NORM,
        "cases": [run_case("adamw", 1e-8, 1), run_case("lamb", 1e-6, 2)],
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()

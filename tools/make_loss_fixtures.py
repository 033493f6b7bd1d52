#!/usr/bin/env python3
"""Writes tests/data/losses/losses.json: inputs, loss values and PyTorch-autograd gradients of the
stage-1 losses, the independent oracle of tests/grad/test_loss_fixtures.cpp.

    python3 tools/make_loss_fixtures.py [--out tests/data/losses/losses.json]

Written from the formulas of docs/MODEL.md (§3.1-3.2 BSQ, §4.3 contrastive and MSE), not from the
C++ code. Inputs are drawn with a fixed seed and rounded to float32 (so the C++ side reads exactly
the values used here); everything is then computed in float64, so the fixture holds the exact
answer for those float32 inputs. Values are printed with 9 significant digits (float32 round-trips).

- contrastive: s = exp(logit_scale), logits_per_image = s * I[o:o+b] @ T.T, logits_per_text =
  s * T[o:o+b] @ I.T, labels = o + arange(b), loss = (CE(lpi, labels) + CE(lpt, labels)) / 2
  (open_clip's local loss; o = 0, b = B is the plain CLIP loss). Gradients of dloss * loss.
- mse: mean((x_hat - x)^2); gradient of dloss * loss w.r.t. x_hat.
- bsq: straight-through quantiser output z_q * c plus loss_q = commitment + penalty / T; gradient of
  dloss * loss_q + sum(dz_q * (z_q * c)) w.r.t. z.
"""
import argparse
import json
import math
import os

import torch

DIGITS = 9


def r9(v):
    return float(f"{v:.{DIGITS}g}")


def flat(t):
    return [r9(v) for v in t.detach().reshape(-1).tolist()]


def f32(t):
    """Round to float32 and go back to float64: the C++ side reads the same float32 values."""
    return t.to(torch.float32).to(torch.float64)


def normal(gen, *shape):
    return f32(torch.randn(*shape, generator=gen, dtype=torch.float64))


def unit_rows(gen, *shape):
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return f32(x / x.norm(dim=-1, keepdim=True))


def contrastive_case(gen, name, batch, dim, logit_scale, offset=0, count=None, dloss=1.0):
    count = batch - offset if count is None else count
    image = unit_rows(gen, batch, dim).requires_grad_()
    text = unit_rows(gen, batch, dim).requires_grad_()
    ls = torch.tensor(float(torch.tensor(logit_scale, dtype=torch.float32)), dtype=torch.float64,
                      requires_grad=True)
    s = ls.exp()
    loc = slice(offset, offset + count)
    labels = torch.arange(count) + offset
    lpi = s * image[loc] @ text.T
    lpt = s * text[loc] @ image.T
    loss = 0.5 * (torch.nn.functional.cross_entropy(lpi, labels) + torch.nn.functional.cross_entropy(lpt, labels))
    (dloss * loss).backward()
    return {
        "name": name, "batch": batch, "dim": dim, "offset": offset, "count": count,
        "logit_scale": r9(ls.item()), "dloss": dloss,
        "image": flat(image), "text": flat(text),
        "loss": r9(loss.item()),
        "image_to_text_accuracy": (lpi.argmax(1) == labels).double().mean().item(),
        "text_to_image_accuracy": (lpt.argmax(1) == labels).double().mean().item(),
        "d_image": flat(image.grad), "d_text": flat(text.grad), "d_logit_scale": r9(ls.grad.item()),
    }


def mse_case(gen, name, rows, cols, dloss):
    x_hat = normal(gen, rows, cols).requires_grad_()
    x = normal(gen, rows, cols)
    loss = ((x_hat - x) ** 2).mean()
    (dloss * loss).backward()
    return {"name": name, "rows": rows, "cols": cols, "dloss": dloss, "x_hat": flat(x_hat), "x": flat(x),
            "loss": r9(loss.item()), "dx_hat": flat(x_hat.grad)}


def bsq_loss(z, inv_temperature, group_size, gamma0, gamma1, beta, mode, l2_norm):
    """MODEL.md §3.2, literally."""
    n, l = z.shape
    c = 1.0 / math.sqrt(l) if l2_norm else 1.0
    t = inv_temperature
    if mode == "group":
        g = group_size
        codes = torch.arange(2 ** g)
        bits = (codes[:, None] >> torch.arange(g - 1, -1, -1)[None, :]) & 1  # MSB first
        codebook = (2 * bits - 1).to(z.dtype) * c                          # [2^g, g]
        logits = 2 * t * torch.einsum("njk,mk->njm", z.reshape(n, l // g, g), codebook)
        prob = logits.softmax(-1)                                          # [N, G, 2^g]
    else:
        p = torch.sigmoid(-4 * t * c * z)                                  # P(bit = -1)
        prob = torch.stack([p, 1 - p], dim=-1)                             # [N, L, 2]
    eps = 1e-8
    h_ps = torch.special.entr(prob + eps).sum((-1, -2)).mean()
    h_cb = torch.special.entr(prob.mean(0) + eps).sum()
    zhat = torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z))
    out = (z + (zhat - z).detach()) * c
    commitment = beta * ((out.detach() - z) ** 2).sum(-1).mean()
    penalty = gamma0 * h_ps - gamma1 * h_cb
    return out, {"loss": commitment + penalty / t, "commitment": commitment, "per_sample_entropy": h_ps,
                 "codebook_entropy": h_cb, "entropy_penalty": penalty}


def bsq_case(gen, name, tokens, bits, mode, group_size, inv_temperature, gamma0, gamma1, beta, l2_norm, unit, dloss):
    z = (unit_rows(gen, tokens, bits) if unit else normal(gen, tokens, bits) * 0.5)
    z = f32(z).requires_grad_()
    dz_q = normal(gen, tokens, bits)
    out, parts = bsq_loss(z, inv_temperature, group_size, gamma0, gamma1, beta, mode, l2_norm)
    (dloss * parts["loss"] + (dz_q * out).sum()).backward()
    case = {"name": name, "tokens": tokens, "bits": bits, "mode": mode, "group_size": group_size,
            "inv_temperature": inv_temperature, "gamma0": gamma0, "gamma1": gamma1, "beta": beta,
            "l2_norm": l2_norm, "dloss": dloss, "z": flat(z), "dz_q": flat(dz_q), "zq": flat(out)}
    case.update({k: r9(v.item()) for k, v in parts.items()})
    case["dz"] = flat(z.grad)
    return case


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "losses", "losses.json"))
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(20250502)
    fixture = {
        "source": "tools/make_loss_fixtures.py (PyTorch " + torch.__version__.split("+")[0] + ", float64 autograd)",
        "contrastive": [
            contrastive_case(gen, "B3 E4 init scale", 3, 4, 2.6592, dloss=1.0),
            contrastive_case(gen, "B5 E6 scale 1", 5, 6, 1.0, dloss=0.7),
            contrastive_case(gen, "B6 E5 local rows [2, 5)", 6, 5, 2.0, offset=2, count=3, dloss=1.3),
        ],
        "mse": [mse_case(gen, "3x7", 3, 7, 1.0), mse_case(gen, "1x5 weight 1000", 1, 5, 1000.0)],
        "bsq": [
            bsq_case(gen, "group L4 g2 T1", 5, 4, "group", 2, 1.0, 0.7, 1.3, 0.25, True, False, 0.9),
            bsq_case(gen, "group L8 g4 T100 unit", 4, 8, "group", 4, 100.0, 1.0, 1.0, 0.5, True, True, 1.0),
            bsq_case(gen, "analytical L8 T100 unit", 4, 8, "analytical", 8, 100.0, 1.0, 1.0, 0.5, True, True, 1.0),
            bsq_case(gen, "analytical L6 T2 no l2", 3, 6, "analytical", 3, 2.0, 0.6, 1.1, 0.2, False, False, 0.8),
        ],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # One case per line: small diffs when a case changes, no line per number.
    lines = ["{", f' "source": {json.dumps(fixture["source"])},']
    groups = [k for k in fixture if k != "source"]
    for gi, key in enumerate(groups):
        lines.append(f' "{key}": [')
        cases = fixture[key]
        for ci, case in enumerate(cases):
            lines.append("  " + json.dumps(case, separators=(",", ":")) + ("," if ci + 1 < len(cases) else ""))
        lines.append(" ]" + ("," if gi + 1 < len(groups) else ""))
    lines.append("}")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(args.out))  # what was written parses
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()

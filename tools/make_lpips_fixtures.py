#!/usr/bin/env python3
"""Golden values of the LPIPS distance for tests/nn/test_lpips.cpp, from the `lpips` PyPI package
(v0.1, VGG16) with its real linear heads and the deterministic backbone of
tests/common/lpips_random.hpp (VGG16's ImageNet weights do not exist offline).

Inputs are crops of scikit-image's photos (PNG: lossless, so the C++ test decodes the same bytes),
mapped to [-1, 1] as u8/127.5 - 1 in float32: 48×48 pairs for the distances, 16×16 pairs for the
gradient. Written: tests/data/lpips/lpips_photos.json (crops, distances per pair and per layer, the
gradient's crops) and lpips_grad.safetensors (the gradient of the mean distance of the 16×16 pairs
with respect to their first images). The photos themselves are not written: the test reads
them from scikit-image's data folder, which scripts/setup.sh installs.

The gradient through VGG's ReLUs and 2×2 max-pools is discontinuous where a pre-activation is 0 or
two values of a pool window tie: there, fp32 rounding of any correct implementation can send the
gradient down another path. At 48×48 some value always sits within ~1e-7 of a kink, so the gradient
uses 16×16 crops chosen so that, in float64, every nonzero ReLU input of x0 is at least
MARGIN·(the image's max in that layer) from 0 and the top two values of every pool window are MARGIN·(window max)
apart or exactly equal; the script fails when a crop does not keep that margin.

    python3 tools/make_lpips_fixtures.py [--photos /usr/lib/python3/dist-packages/skimage/data]
"""
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file

import lpips

CROP = 48
# (photo, top, left) pairs: x0, x1. Similar content, other content, a 1-pixel shift, identical.
PAIRS = [
    (("astronaut.png", 100, 180), ("astronaut.png", 101, 180)),
    (("astronaut.png", 40, 200), ("coffee.png", 150, 250)),
    (("chelsea.png", 120, 180), ("chelsea.png", 124, 186)),
    (("coffee.png", 200, 300), ("coffee.png", 200, 300)),
]
# The gradient's pairs: 16×16 x0 crops that keep MARGIN (searched over a grid of positions), each
# against a 1-pixel shift of itself or another photo.
GRAD_CROP = 16
GRAD_PAIRS = [
    (("astronaut.png", 77, 60), ("astronaut.png", 78, 60)),
    (("chelsea.png", 114, 183), ("coffee.png", 150, 250)),
    (("coffee.png", 114, 101), ("coffee.png", 114, 102)),
]
M64 = (1 << 64) - 1
MARGIN = 1e-5  # relative; fp32 chains of a few convs differ from float64 by ~1e-6


def splitmix64(x):
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(M64)
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(M64)
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(M64)
    return x ^ (x >> np.uint64(31))


def uniform(t, n):
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = splitmix64((np.uint64(t) << np.uint64(32)) + i)
    return (h >> np.uint64(40)).astype(np.float64) / 8388608.0 - 1.0


def fill_backbone(model):
    """tests/common/lpips_random.hpp: tensors numbered in state_dict order (convs, then heads)."""
    sd = model.state_dict()
    names = [k for k in sd if k.startswith("net.") or k.startswith("lin")]
    with torch.no_grad():
        for t, name in enumerate(names):
            if name.startswith("lin"):
                continue
            p = sd[name]
            scale = 0.1 if name.endswith(".bias") else np.sqrt(6.0 / (p.shape[1] * 9))
            v = (uniform(t, p.numel()) * scale).astype(np.float32).reshape(tuple(p.shape))
            p.copy_(torch.from_numpy(v))


def min_margins(model, x0):
    """Smallest relative distance of x0's ReLU inputs from 0 and of pool windows' top two values
    from a tie (exact zeros and exact ties excluded: identical patches round identically), in float64."""
    net = model.net
    relu_min, pool_min = float("inf"), float("inf")
    h = ((x0.detach().double() - model.scaling_layer.shift.double()) / model.scaling_layer.scale.double())
    for sl in (net.slice1, net.slice2, net.slice3, net.slice4, net.slice5):
        for layer in sl:
            if isinstance(layer, torch.nn.ReLU):
                a = h.abs()
                rel = a / a.amax(dim=(1, 2, 3), keepdim=True)  # per image: each is its own chain
                nz = rel[a > 0]
                if nz.numel():
                    relu_min = min(relu_min, float(nz.min()))
            elif isinstance(layer, torch.nn.MaxPool2d):
                b, c, hh, ww = h.shape
                win = h[:, :, : hh // 2 * 2, : ww // 2 * 2].reshape(b, c, hh // 2, 2, ww // 2, 2)
                win = win.permute(0, 1, 2, 4, 3, 5).reshape(-1, 4)
                top = win.topk(2, dim=1).values
                gap, peak = top[:, 0] - top[:, 1], top[:, 0]
                sel = (gap > 0) & (peak > 0)
                if sel.any():
                    pool_min = min(pool_min, float((gap[sel] / peak[sel]).min()))
            h = layer.double()(h) if not isinstance(layer, torch.nn.ReLU) else torch.relu(h)
            layer.float()
    return relu_min, pool_min


def crop(photos, spec, size=CROP):
    name, top, left = spec
    im = np.asarray(Image.open(os.path.join(photos, name)).convert("RGB"))
    c = im[top:top + size, left:left + size, :].astype(np.float32)
    return (c / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default="/usr/lib/python3/dist-packages/skimage/data")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "lpips"))
    a = ap.parse_args()
    torch.manual_seed(0)
    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    fill_backbone(model)
    x0 = torch.from_numpy(np.stack([crop(a.photos, p[0]) for p in PAIRS]))
    x1 = torch.from_numpy(np.stack([crop(a.photos, p[1]) for p in PAIRS]))
    with torch.no_grad():
        d, layers = model(x0, x1, retPerLayer=True)
    d = d.reshape(-1)

    g0 = torch.from_numpy(np.stack([crop(a.photos, p[0], GRAD_CROP) for p in GRAD_PAIRS])).requires_grad_(True)
    g1 = torch.from_numpy(np.stack([crop(a.photos, p[1], GRAD_CROP) for p in GRAD_PAIRS]))
    relu_min, pool_min = min_margins(model, g0)
    print(f"margins: ReLU inputs {relu_min:.3g}, pool windows {pool_min:.3g} (need {MARGIN})")
    if min(relu_min, pool_min) < MARGIN:
        raise SystemExit("a gradient crop sits near a ReLU kink or a pool tie: choose another position")
    model(g0, g1).mean().backward()
    os.makedirs(a.out, exist_ok=True)
    fixture = {
        "source": "lpips " + lpips.__version__ if hasattr(lpips, "__version__") else "lpips",
        "crop": CROP,
        "pairs": [{"x0": list(p[0]), "x1": list(p[1])} for p in PAIRS],
        "distance": [float(v) for v in d.detach()],
        "per_layer": [[float(v) for v in l.detach().reshape(-1)] for l in layers],
        "grad_crop": GRAD_CROP,
        "grad_pairs": [{"x0": list(p[0]), "x1": list(p[1])} for p in GRAD_PAIRS],
    }
    with open(os.path.join(a.out, "lpips_photos.json"), "w") as f:
        json.dump(fixture, f, indent=1)
    # .contiguous(): autograd may hand back a gradient in another memory layout (channels last).
    save_file({"grad_x0": g0.grad.contiguous().numpy()},
              os.path.join(a.out, "lpips_grad.safetensors"))
    print("distances", fixture["distance"])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden values of the LPIPS distance for tests/nn/test_lpips.cpp, from the `lpips` PyPI package
(v0.1, VGG16) with its real linear heads and the deterministic backbone of
tests/common/lpips_random.hpp (VGG16's ImageNet weights do not exist offline).

Inputs are 48×48 crops of scikit-image's photos (PNG: lossless, so the C++ test decodes the same
bytes), mapped to [-1, 1] as u8/127.5 - 1 in float32. Written: tests/data/lpips/lpips_photos.json
(crops, distances per pair and per layer) and lpips_grad.safetensors (the gradient of the mean
distance with respect to the first images). The photos themselves are not written: the test reads
them from scikit-image's data folder, which scripts/setup.sh installs.

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
M64 = (1 << 64) - 1


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


def crop(photos, spec):
    name, top, left = spec
    im = np.asarray(Image.open(os.path.join(photos, name)).convert("RGB"))
    c = im[top:top + CROP, left:left + CROP, :].astype(np.float32)
    return (c / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", default="/usr/lib/python3/dist-packages/skimage/data")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "lpips"))
    a = ap.parse_args()
    torch.manual_seed(0)
    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    fill_backbone(model)
    x0 = torch.from_numpy(np.stack([crop(a.photos, p[0]) for p in PAIRS])).requires_grad_(True)
    x1 = torch.from_numpy(np.stack([crop(a.photos, p[1]) for p in PAIRS]))
    d, layers = model(x0, x1, retPerLayer=True)
    d = d.reshape(-1)
    d.mean().backward()
    os.makedirs(a.out, exist_ok=True)
    fixture = {
        "source": "lpips " + lpips.__version__ if hasattr(lpips, "__version__") else "lpips",
        "crop": CROP,
        "pairs": [{"x0": list(p[0]), "x1": list(p[1])} for p in PAIRS],
        "distance": [float(v) for v in d.detach()],
        "per_layer": [[float(v) for v in l.detach().reshape(-1)] for l in layers],
    }
    with open(os.path.join(a.out, "lpips_photos.json"), "w") as f:
        json.dump(fixture, f, indent=1)
    # .contiguous(): autograd may hand back a gradient in another memory layout (channels last).
    save_file({"grad_x0": x0.grad.contiguous().numpy()},
              os.path.join(a.out, "lpips_grad.safetensors"))
    print("distances", fixture["distance"])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the full LPIPS (VGG16, v0.1) weights that qlip's perceptual loss loads (nn/lpips.hpp,
model/lpips_weights.hpp): torchvision's ImageNet VGG16 features and the `lpips` package's linear
heads, under the package's state_dict names (net.slice{1..5}.{i}.weight/bias, lin{0..4}.model.1.weight).

    python3 tools/make_lpips_weights.py --vgg16 vgg16-397923af.pth --out lpips_vgg.safetensors

--vgg16 is torchvision's checkpoint file (what `torchvision.models.vgg16(weights="IMAGENET1K_V1")`
downloads into the torch hub cache); nothing is downloaded here. --test-backbone writes the
deterministic backbone of tests/common/lpips_random.hpp instead: a file for trying the pipeline,
not a perceptual metric.
"""
import argparse
import re
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import lpips


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--vgg16", help="torchvision vgg16 state_dict (.pth)")
    src.add_argument("--test-backbone", action="store_true", help="the tests' deterministic backbone (not perceptual)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    if a.vgg16:
        vgg = torch.load(a.vgg16, map_location="cpu")
        sd = model.state_dict()
        loaded = 0
        for name in sd:
            if not name.startswith("net.slice"):
                continue
            index = name.split(".")[2]  # net.slice{k}.{index}.weight: the index in vgg16().features
            key = f"features.{index}.{name.split('.')[-1]}"
            if key not in vgg:
                sys.exit(f"make_lpips_weights: {a.vgg16} has no '{key}' (not torchvision's vgg16?)")
            if tuple(vgg[key].shape) != tuple(sd[name].shape):
                sys.exit(f"make_lpips_weights: '{key}' has shape {tuple(vgg[key].shape)}, expected {tuple(sd[name].shape)}")
            sd[name].copy_(vgg[key])
            loaded += 1
        print(f"make_lpips_weights: {loaded} backbone tensors from {a.vgg16}")
    else:
        sys.path.insert(0, __file__.rsplit("/", 1)[0])
        from make_lpips_fixtures import fill_backbone
        fill_backbone(model)
        print("make_lpips_weights: the tests' deterministic backbone (NOT a perceptual metric)")
    # lins.N aliases linN (a ModuleList over the same heads): keep the linN names only.
    tensors = {k: v.contiguous().clone() for k, v in model.state_dict().items()
               if k.startswith("net.") or re.fullmatch(r"lin\d\.model\.1\.weight", k)}
    save_file(tensors, a.out, metadata={"format": "pt", "source": "lpips v0.1 vgg"})
    print(f"make_lpips_weights: wrote {len(tensors)} tensors to {a.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Loads Llama folders written by qlip in transformers and compares the logits with qlip's.

Each folder under --dir (written by `QLIP_LLAMA_EXPORT=DIR test_llama --gtest_filter=LlamaFolder.Written*`)
holds a qlip-written config.json + weights and qlip_logits.safetensors (input_ids, logits). Prints the
largest difference per folder and fails when any exceeds atol + rtol·|ref| (1e-4 each, the tests' kF32Model).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    ok = True
    for name in sorted(os.listdir(args.dir)):
        folder = os.path.join(args.dir, name)
        qlip = load_file(os.path.join(folder, "qlip_logits.safetensors"))
        model = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float64).eval()
        with torch.no_grad():
            ref = model(qlip["input_ids"].long()).logits[0].to(torch.float32)
        got = qlip["logits"]
        excess = ((got - ref).abs() - (1e-4 + 1e-4 * ref.abs())).max().item()
        print(f"{name}: files {sorted(os.listdir(folder))}; max |qlip - transformers| = "
              f"{(got - ref).abs().max().item():.3g} (max |logit| {ref.abs().max().item():.3g}); "
              f"{'ok' if excess <= 0 else 'FAIL'}")
        ok = ok and excess <= 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

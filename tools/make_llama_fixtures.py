#!/usr/bin/env python3
"""Golden fixtures for qlip's Llama model: random-weight Hugging Face LlamaForCausalLM folders and
the logits transformers computes for fixed token ids (tests/data/llama/<name>/).

Each folder is what a user downloads: model.safetensors (or shards + model.safetensors.index.json)
written by save_pretrained, and a config.json. Two configs are rewritten in the diff form (only the
fields that differ from LlamaConfig's defaults, transformers-4 spelling `rope_theta` +
`rope_scaling`), one keeps transformers 5's own full form (`rope_parameters`), so the loader is
tested against every form a folder may come in. expected.safetensors holds input_ids [B, T] (int32)
and logits [B, T, V] (float32, computed in float64 and rounded once).

Weights are drawn wider than HF's initialiser (std 0.02 would make every logit nearly equal and
the comparison blind): linear weights N(0, 0.25²), embeddings N(0, 1), norm gains 1 + N(0, 0.1²).

Usage: python3 tools/make_llama_fixtures.py --out tests/data/llama
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

# name: (config kwargs, config.json form, shard size or None)
CASES = {
    # GQA (4 query heads over 2 kv heads), head_dim 8 != hidden / heads, llama3 RoPE scaling with a
    # short original context so positions 0..11 see scaled frequencies, tied head.
    "gqa-llama3-tied": (
        dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=64, rms_norm_eps=1e-5,
             rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 4}),
        "diff", None),
    # Plain multi-head attention (num_key_value_heads and head_dim absent: derived), default RoPE
    # theta and eps (absent), untied head, weights in shards with an index.
    "mha-untied-sharded": (
        dict(vocab_size=48, hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=6,
             max_position_embeddings=32),
        "diff", "12KB"),
    # GQA 6 over 2, untied, llama3 scaling, transformers 5's full config form (rope_parameters).
    "gqa-untied-v5": (
        dict(vocab_size=36, hidden_size=24, intermediate_size=32, num_hidden_layers=2, num_attention_heads=6,
             num_key_value_heads=2, max_position_embeddings=48, rms_norm_eps=1e-5, rope_theta=20000.0,
             tie_word_embeddings=False,
             rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0,
                           "original_max_position_embeddings": 8}),
        "full", None),
}

BATCH, TOKENS = 2, 12


def diff_form(kwargs):
    """config.json as transformers 4's save_pretrained writes it: only non-default fields."""
    defaults = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                    num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6,
                    tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=1, eos_token_id=2)
    out = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32"}
    for k, v in kwargs.items():
        if k not in defaults or defaults[k] != v:
            out[k] = v
    return out


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(0.25 * torch.randn(p.shape, generator=gen, dtype=torch.float64))


def make_case(out_dir, name, kwargs, form, shard, seed):
    folder = os.path.join(out_dir, name)
    shutil.rmtree(folder, ignore_errors=True)
    cfg = LlamaConfig(**kwargs)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    randomise(model, gen)
    save_kwargs = {"safe_serialization": True}
    if shard:
        save_kwargs["max_shard_size"] = shard
    model.save_pretrained(folder, **save_kwargs)
    if form == "diff":
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(diff_form(kwargs), f, indent=2)
            f.write("\n")
    for extra in ("generation_config.json",):
        path = os.path.join(folder, extra)
        if os.path.exists(path):
            os.remove(path)
    ids = torch.randint(0, kwargs["vocab_size"], (BATCH, TOKENS), generator=gen)
    # Reload from the folder as a user would, then evaluate in float64 (rounded once to float32).
    reloaded = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float64).eval()
    with torch.no_grad():
        logits = reloaded(ids).logits.to(torch.float32)
    save_file({"input_ids": ids.to(torch.int32).contiguous(), "logits": logits.contiguous()},
              os.path.join(folder, "expected.safetensors"))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, logits {tuple(logits.shape)}, "
          f"files {sorted(os.listdir(folder))}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for i, (name, (kwargs, form, shard)) in enumerate(CASES.items()):
        make_case(args.out, name, kwargs, form, shard, seed=1000 + i)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Llama decoding speed: qlip beside Hugging Face transformers on the CPU, alternating, same threads.

  python3 tools/compare_torch_llama.py [--rounds 3] [--threads 2] [--bench build/rt/bench/bench_cpu_llama_decode]

The model is qlip's ~100M config (llama_configs::kLlama100M: 12 layers of 768, 12 query heads over 4
kv heads of 64, SwiGLU 2048, vocabulary 32000, tied), fp32, random weights. Each round runs qlip's
bench_cpu_llama_decode (one token per sequence per step through the KV cache after a 32-token
prompt, batch 1 and 8; it also measures the machine's read bandwidth), then transformers'
LlamaForCausalLM with the same config: a 32-token prefill, then 64 single-token steps with its KV
cache (use_cache, DynamicCache), timed on the wall clock per step. Prints per batch the median
tokens/s of both, the ratio, and each as a fraction of the bandwidth bound (read bandwidth ÷ bytes of
weights read per step). Run it alone on an idle machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT, STEPS = 32, 64


def qlip_round(bench, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([bench, "--benchmark_format=json"], check=True, capture_output=True, text=True, env=env).stdout
    res = {}
    gbps = None
    for b in json.loads(out)["benchmarks"]:
        if b["name"].startswith("BM_ReadBandwidth"):
            gbps = b["GB/s"]
        elif b["name"].startswith("BM_LlamaDecode100M/"):
            res[int(b["name"].split("/")[1])] = b["tokens/s"]
            weight_mb = b["weight_MB"]
    return res, gbps, weight_mb


def torch_model():
    cfg = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=12, num_key_value_heads=4, head_dim=64, tie_word_embeddings=True,
                      max_position_embeddings=PROMPT + STEPS, rms_norm_eps=1e-5)
    return LlamaForCausalLM(cfg).to(torch.float32).eval()


@torch.inference_mode()
def torch_tokens_per_s(model, batch):
    ids = torch.randint(0, 32000, (batch, PROMPT))
    out = model(ids, use_cache=True)
    past = out.past_key_values
    nxt = torch.full((batch, 1), 13, dtype=torch.long)
    t0 = time.perf_counter()
    for _ in range(STEPS):
        out = model(nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
    dt = time.perf_counter() - t0
    return batch * STEPS / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/rt/bench/bench_cpu_llama_decode"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = torch_model()
    qlip_rates = {1: [], 8: []}
    torch_rates = {1: [], 8: []}
    bandwidths = []
    weight_mb = None
    for r in range(args.rounds):
        q, gbps, weight_mb = qlip_round(args.bench, args.threads)
        bandwidths.append(gbps)
        for b in (1, 8):
            qlip_rates[b].append(q[b])
            torch_rates[b].append(torch_tokens_per_s(model, b))
        print(f"round {r + 1}: read bandwidth {gbps:.1f} GB/s; " +
              "; ".join(f"batch {b}: qlip {qlip_rates[b][-1]:.1f} tok/s, transformers {torch_rates[b][-1]:.1f} tok/s"
                        for b in (1, 8)), flush=True)
    bw = statistics.median(bandwidths)
    bound_steps = bw * 1e9 / (weight_mb * 1e6)
    print(f"\nthreads {args.threads}, torch {torch.__version__}, weights {weight_mb:.1f} MB fp32, "
          f"read bandwidth median {bw:.1f} GB/s -> bound {bound_steps:.1f} steps/s")
    print("| batch | qlip tok/s | transformers tok/s | qlip / transformers | qlip % of bound | transformers % of bound |")
    print("| --- | --- | --- | --- | --- | --- |")
    for b in (1, 8):
        q, t = statistics.median(qlip_rates[b]), statistics.median(torch_rates[b])
        bound = bound_steps * b
        print(f"| {b} | {q:.1f} | {t:.1f} | {q / t:.2f} | {100 * q / bound:.0f} % | {100 * t / bound:.0f} % |")


if __name__ == "__main__":
    main()

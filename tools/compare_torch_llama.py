#!/usr/bin/env python3
"""Llama decoding speed: qlip beside Hugging Face transformers on the CPU, alternating, same threads.

  python3 tools/compare_torch_llama.py [--rounds 3] [--threads 2] [--bench build/rt/bench/bench_cpu_llama_decode]

The model is qlip's ~100M config (llama_configs::kLlama100M: 12 layers of 768, 12 query heads over 4
kv heads of 64, SwiGLU 2048, vocabulary 32000, tied), random weights, with fp32 and with bf16
weights. Each round runs qlip's bench_cpu_llama_decode (one token per sequence per step through the
KV cache after a 32-token prompt, batch 1 and 8, fp32 and bf16 decoding weights; it measures the
machine's read bandwidth between every 16 steps and reports the median fraction of the bound over
those segments), then transformers' LlamaForCausalLM with the same config in fp32 and
converted to bf16 (`.to(torch.bfloat16)`: weights and activations): a 32-token prefill, then 64
single-token steps with its KV cache (use_cache, DynamicCache), timed on the wall clock. Prints per
dtype and batch the median tokens/s of both, the ratio, and the median over rounds of each as a
fraction of the bandwidth bound (read bandwidth ÷ bytes of weights read per step: 4 or 2 per
parameter): qlip's as the benchmark measured it segment by segment, transformers' against the median
bandwidth reading of the round (on a shared VM the bandwidth moves within seconds). Run it alone on
an idle machine.
"""
import argparse
import copy
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
    res, case_gbps, of_bound = {}, {}, {}
    for b in json.loads(out)["benchmarks"]:
        if b["name"].startswith("BM_LlamaDecode100M/"):
            # BM_LlamaDecode100M/batch:1/bf16:0/min_time:3.000
            parts = dict(p.split(":") for p in b["name"].split("/")[1:3])
            dtype = "bf16" if parts["bf16"] == "1" else "fp32"
            res[(dtype, int(parts["batch"]))] = b["tokens/s"]
            case_gbps[(dtype, int(parts["batch"]))] = b["GB/s"]
            of_bound[(dtype, int(parts["batch"]))] = b["of_bound"]
            if dtype == "fp32":
                weight_mb = b["weight_MB"]
    return res, case_gbps, of_bound, weight_mb


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
    models = {"fp32": torch_model()}
    models["bf16"] = copy.deepcopy(models["fp32"]).to(torch.bfloat16)
    keys = [(d, b) for d in ("fp32", "bf16") for b in (1, 8)]
    qlip_rates = {k: [] for k in keys}
    torch_rates = {k: [] for k in keys}
    qlip_frac = {k: [] for k in keys}
    torch_frac = {k: [] for k in keys}
    bandwidths = []
    weight_mb = None

    def bound(gbps, dtype, batch):
        bytes_per_step = weight_mb * 1e6 * (0.5 if dtype == "bf16" else 1.0)
        return gbps * 1e9 / bytes_per_step * batch

    for r in range(args.rounds):
        q, case_gbps, of_bound, weight_mb = qlip_round(args.bench, args.threads)
        round_gbps = statistics.median(case_gbps.values())
        bandwidths.extend(case_gbps.values())
        for k in keys:
            qlip_rates[k].append(q[k])
            torch_rates[k].append(torch_tokens_per_s(models[k[0]], k[1]))
            qlip_frac[k].append(of_bound[k])
            torch_frac[k].append(torch_rates[k][-1] / bound(round_gbps, *k))
        print(f"round {r + 1}: read bandwidth " + ", ".join(f"{case_gbps[k]:.1f}" for k in keys) + " GB/s; " +
              "; ".join(f"{d} batch {b}: qlip {qlip_rates[(d, b)][-1]:.1f} ({100 * qlip_frac[(d, b)][-1]:.0f} %), "
                        f"transformers {torch_rates[(d, b)][-1]:.1f}" for d, b in keys) + " tok/s", flush=True)
    print(f"\nthreads {args.threads}, torch {torch.__version__}, weights {weight_mb:.1f} MB in fp32, "
          f"read bandwidth {min(bandwidths):.1f}–{max(bandwidths):.1f} GB/s "
          f"(median {statistics.median(bandwidths):.1f})")
    print("| weights | batch | qlip tok/s | transformers tok/s | qlip / transformers | qlip % of bound "
          "| transformers % of bound |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for d, b in keys:
        k = (d, b)
        q, t = statistics.median(qlip_rates[k]), statistics.median(torch_rates[k])
        print(f"| {d} | {b} | {q:.1f} | {t:.1f} | {q / t:.2f} | {100 * statistics.median(qlip_frac[k]):.0f} % "
              f"| {100 * statistics.median(torch_frac[k]):.0f} % |")

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch on the GPU at the shapes of bench/cuda_kernels.cu, for the side-by-side table of the GPU check.

  python3 tools/bench_torch_cuda.py --out bench_torch_cuda.json

Each entry is named as the qlip benchmark it stands beside and carries the same counter (GB/s or
TFLOP/s, counted the same way): F.linear in fp32 (TF32 off), TF32 (allow_tf32) and bf16; F.layer_norm;
torch.optim.AdamW(fused=True) over 100M parameters in 4M tensors; the cross-entropy gradient
(F.cross_entropy(...).backward(): PyTorch's forward and backward, beside qlip's backward kernel, which
recomputes the logsumexp itself); F.scaled_dot_product_attention in fp32. Timed with CUDA events: 3 warm-ups, then the median of 20 runs.
bench/gpu_check.sh runs it; tools/gpu_check_summary.py sets it beside qlip's numbers.
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F


def time_ms(fn, warmup=3, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def linear_entries():
    out = []
    for m, k, n in ((16384, 768, 3072), (16384, 3072, 768), (8192, 2048, 8192)):
        for mode, name in ((0, "fp32"), (1, "tf32"), (2, "bf16")):
            dtype = torch.bfloat16 if mode == 2 else torch.float32
            torch.backends.cuda.matmul.allow_tf32 = mode == 1
            x = torch.zeros(m, k, device="cuda", dtype=dtype)
            w = torch.zeros(n, k, device="cuda", dtype=dtype)
            ms = time_ms(lambda: F.linear(x, w))
            out.append({"name": f"BM_CudaLinear/M:{m}/K:{k}/N:{n}/fp32_tf32_bf16:{mode}", "math": name,
                        "ms": ms, "TFLOP/s": 2.0 * m * k * n / (ms * 1e-3) / 1e12})
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def layer_norm_entries():
    out = []
    for m, d in ((256, 768), (2048, 768), (65536, 768)):
        x = torch.zeros(m, d, device="cuda")
        g, b = torch.zeros(d, device="cuda"), torch.zeros(d, device="cuda")
        ms = time_ms(lambda: F.layer_norm(x, (d,), g, b, 1e-6))
        out.append({"name": f"BM_CudaLayerNorm/{m}/{d}", "ms": ms, "GB/s": m * d * 2 * 4 / (ms * 1e-3) / 1e9})
    return out


def adamw_entries():
    n, seg = 100_000_000, 1 << 22
    params = [torch.zeros(min(seg, n - o), device="cuda", requires_grad=True) for o in range(0, n, seg)]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, fused=True)
    ms = time_ms(opt.step)
    return [{"name": f"BM_CudaAdamW/{n}", "ms": ms, "GB/s": n * 7 * 4 / (ms * 1e-3) / 1e9}]


def cross_entropy_entries():
    out = []
    for rows, vocab in ((2048, 32000), (4096, 128256)):
        z = torch.zeros(rows, vocab, device="cuda", requires_grad=True)
        t = torch.ones(rows, dtype=torch.long, device="cuda")

        def step():
            z.grad = None
            F.cross_entropy(z, t).backward()

        ms = time_ms(step)
        out.append({"name": f"BM_CudaCrossEntropyBackward/{rows}/{vocab}", "ms": ms,
                    "GB/s": rows * vocab * 3 * 4 / (ms * 1e-3) / 1e9})
        del z
        torch.cuda.empty_cache()
    return out


def attention_entries():
    out = []
    for b, t, hq, hkv, causal in ((64, 257, 12, 12, 0), (4, 2048, 32, 8, 1)):
        q = torch.zeros(b, hq, t, 64, device="cuda")
        kv = torch.zeros(b, hkv, t, 64, device="cuda")
        ms = time_ms(lambda: F.scaled_dot_product_attention(q, kv, kv, is_causal=bool(causal), enable_gqa=hq != hkv))
        pairs = t * (t + 1) / 2 if causal else t * t
        out.append({"name": f"BM_CudaAttention/B:{b}/T:{t}/Hq:{hq}/Hkv:{hkv}/causal:{causal}", "ms": ms,
                    "TFLOP/s": 4.0 * 64 * pairs * hq * b / (ms * 1e-3) / 1e12})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    entries = (linear_entries() + layer_norm_entries() + adamw_entries() + cross_entropy_entries() +
               attention_entries())
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "entries": entries}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for e in entries:
        rate = f"{e['TFLOP/s']:.1f} TFLOP/s" if "TFLOP/s" in e else f"{e['GB/s']:.0f} GB/s"
        print(f"{e['name']}: {e['ms']:.3f} ms, {rate}")


if __name__ == "__main__":
    main()

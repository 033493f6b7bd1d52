#!/usr/bin/env python3
"""qlip's packed SGEMM beside PyTorch at the ViT-B linear shapes, alternating, in the same run:

  python3 tools/compare_torch_gemm.py [--rounds 5] [--threads 1] [--bench-dir build/bench/bench]

Each round runs, one after the other: bench_cpu_fma_peak (the machine's fp32 FMA peak for that many
threads), bench_cpu_gemm (every shape and form), then PyTorch at the same shapes and forms:
  NT        y = F.linear(x, w, b)             qlip: BM_LinearNT (w packed per call)
  PackedNT  the same                          qlip: BM_LinearPackedNT (w packed once)
  NN        dx = dy @ w                       qlip: BM_LinearNN
  TN        dw += dyᵀ @ x  (dw.addmm_)        qlip: BM_LinearTN
Shapes: M ∈ {256, 2048}, (K, N) ∈ {768↔768, 768↔2048, 768↔3072} of the forward x[M,K]·w[N,K]ᵀ.
1 thread is timed on process CPU time, 2 threads on the wall clock, on both sides (as the C++
benchmarks do). Prints per case the median GFLOP/s of both, the ratio and the % of the median
measured peak. Run it alone on an idle machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(m, k, n) for m in (256, 2048) for k, n in ((768, 768), (768, 2048), (2048, 768), (768, 3072), (3072, 768))]
FORMS = ["NT", "PackedNT", "NN", "TN"]


def bench_json(path, flt):
    out = subprocess.run([path, f"--benchmark_filter={flt}", "--benchmark_format=json"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["benchmarks"]


def qlip_rates(bench_dir, threads):
    rates = {}
    for b in bench_json(os.path.join(bench_dir, "bench_cpu_gemm"), f"threads:{threads}/"):
        form = b["name"].split("/")[0].removeprefix("BM_Linear")
        args = dict(part.split(":") for part in b["name"].split("/")[1:5])
        rates[(form, int(args["M"]), int(args["K"]), int(args["N"]))] = b["GFLOP"]
    return rates


def fma_peak(bench_dir, threads):
    clock = "process_time" if threads == 1 else "real_time"
    for b in bench_json(os.path.join(bench_dir, "bench_cpu_fma_peak"), f"avx512/threads:{threads}/{clock}|avx2/threads:{threads}/{clock}"):
        return b["GFLOP"], b["name"].split("/")[0].removeprefix("BM_FmaPeak_")
    raise SystemExit("bench_cpu_fma_peak printed nothing for that thread count")


def seconds_per_call(fn, clock, min_time=0.2):
    for _ in range(2):
        fn()
    t0 = clock()
    fn()
    n = max(1, int(min_time / max(clock() - t0, 1e-6)))
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n


def torch_rates(threads):
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    rates = {}
    with torch.inference_mode():
        for m, k, n in SHAPES:
            x, w, b = torch.randn(m, k), torch.randn(n, k) / k**0.5, torch.randn(n) * 0.1
            dy, dw = torch.randn(m, n), torch.zeros(n, k)
            flop = 2.0 * m * n * k
            nt = flop / seconds_per_call(lambda: F.linear(x, w, b), clock) * 1e-9
            rates[("NT", m, k, n)] = rates[("PackedNT", m, k, n)] = nt
            rates[("NN", m, k, n)] = flop / seconds_per_call(lambda: dy @ w, clock) * 1e-9
            rates[("TN", m, k, n)] = flop / seconds_per_call(lambda: dw.addmm_(dy.t(), x), clock) * 1e-9
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench-dir", default=os.path.join(ROOT, "build", "bench", "bench"))
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}; " + "; ".join(
        line.strip() for line in torch.__config__.show().splitlines() if "CPU capability" in line or "BLAS_INFO" in line))
    peaks, qlip, ref = [], [], []
    isa = "?"
    for r in range(args.rounds):
        peak, isa = fma_peak(args.bench_dir, args.threads)
        peaks.append(peak)
        qlip.append(qlip_rates(args.bench_dir, args.threads))
        ref.append(torch_rates(args.threads))
        print(f"round {r + 1}/{args.rounds}: FMA peak {peak:.1f} GFLOP/s ({isa})", flush=True)
    peak = statistics.median(peaks)
    print(f"\nthreads {args.threads}; FMA peak ({isa}) median {peak:.1f} GFLOP/s "
          f"(min {min(peaks):.1f}, max {max(peaks):.1f}); medians of {args.rounds} rounds")
    print(f"{'form':9s} {'M':>5s} {'K':>5s} {'N':>5s} {'qlip':>8s} {'% peak':>7s} {'torch':>8s} {'% peak':>7s} {'ratio':>6s}")
    worst = (1e9, None)
    for form in FORMS:
        for m, k, n in SHAPES:
            key = (form, m, k, n)
            q = statistics.median(d[key] for d in qlip)
            t = statistics.median(d[key] for d in ref)
            worst = min(worst, (q / peak, key))
            print(f"{form:9s} {m:5d} {k:5d} {n:5d} {q:8.1f} {100 * q / peak:6.1f}% {t:8.1f} {100 * t / peak:6.1f}% {q / t:6.2f}")
    print(f"lowest qlip share of the peak: {100 * worst[0]:.1f}% at {worst[1]}")


if __name__ == "__main__":
    main()

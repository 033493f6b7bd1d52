#!/usr/bin/env python3
"""PyTorch baseline for bench/cpu_gemm.cpp and bench/cpu_attention.cpp: the same shapes, the same
FLOP counts, so docs/PERFORMANCE.md can put qlip's numbers next to torch's.

    python3 tools/bench_torch_ops.py [--threads 2] [--reps 5]

For each case: warm up, then `reps` samples, each the mean over enough calls to last ~0.3 s; prints
min/median/max GFLOP/s (median is what the doc quotes). 2 threads are timed on the wall clock,
1 thread on process CPU time, like the C++ benchmarks. Prints which BLAS torch was built with,
because on this CPU the kernel torch really runs decides the result (see docs/PERFORMANCE.md "Machine facts").
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def sample(fn, clock, min_time=0.3):
    """Mean seconds per call over at least min_time (after one call to size the batch)."""
    t0 = clock()
    fn()
    once = max(clock() - t0, 1e-6)
    n = max(1, int(min_time / once))
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n


def measure(fn, flops, reps, clock):
    for _ in range(3):
        fn()
    rates = sorted(flops / sample(fn, clock) * 1e-9 for _ in range(reps))
    return rates[0], statistics.median(rates), rates[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}")
    cfg = torch.__config__.show()
    for line in cfg.splitlines():
        if any(k in line for k in ("BLAS", "MKL", "LAPACK", "oneDNN", "CPU capability")):
            print("  " + line.strip())
    kn = [(768, 768), (768, 2048), (2048, 768), (768, 3072), (3072, 768)]
    print(f"{'case':44s} {'min':>8s} {'median':>8s} {'max':>8s}  GFLOP/s")
    with torch.inference_mode():
        for threads in args.threads:
            torch.set_num_threads(threads)
            # Same policy as bench/cpu_*.cpp: wall time for 2 threads, process CPU time for 1 thread
            # (robust to other processes on the shared machine).
            clock = time.process_time if threads == 1 else time.perf_counter
            for m in (256, 2048):
                for k, n in kn:
                    x = torch.randn(m, k)
                    w = torch.randn(n, k) / k**0.5
                    b = torch.randn(n) * 0.1
                    lo, med, hi = measure(lambda: F.linear(x, w, b), 2.0 * m * n * k, args.reps, clock)
                    name = f"linear M={m} K={k} N={n} threads={threads}"
                    print(f"{name:44s} {lo:8.1f} {med:8.1f} {hi:8.1f}")
            for batch, heads, t, dh, causal in ((1, 12, 257, 64, False), (8, 12, 257, 64, False), (8, 8, 77, 64, True)):
                qkv = torch.randn(batch, t, 3, heads, dh)
                q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [B, H, T, Dh] views
                pairs = t * (t + 1) / 2 if causal else t * t
                lo, med, hi = measure(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
                                      4.0 * batch * heads * dh * pairs, args.reps, clock)
                name = f"sdpa B={batch} H={heads} T={t} Dh={dh} causal={int(causal)} threads={threads}"
                print(f"{name:44s} {lo:8.1f} {med:8.1f} {hi:8.1f}")


if __name__ == "__main__":
    main()

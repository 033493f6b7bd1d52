#!/usr/bin/env python3
"""One checkpoint folder through qlip, PyTorch eager and torch.compile, alternating, in separate
processes: the QLIP round trip (encode -> quantize -> decode) at batch 1 and 8.

  python3 tools/qlip_reference.py make-checkpoint --config qlip-b-16-256 --out /tmp/qlip-b16
  python3 tools/compare_torch_qlip.py --ckpt /tmp/qlip-b16 [--rounds 3] [--threads 2] [--no-compile]
        [--bench-dir build/bench/bench]

Each round runs bench_cpu_fma_peak (the FMA ceiling at that thread count), then qlip
(bench_cpu_qlip_model BM_RoundTrip), then tools/bench_torch_qlip.py eager, then with --compile.
Prints each round, then the medians over rounds of each program's median run, the ratios and the
share of the FLOP ceiling (the model's FLOPs per image, counted by the qlip bench, over the
median peak). Run it alone on an idle machine: other load distorts every number.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env=None):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def fma_peak(bench_dir, threads):
    out = run([os.path.join(bench_dir, "bench_cpu_fma_peak"), "--benchmark_format=json",
               f"--benchmark_filter=(avx512|avx2)/threads:{threads}/real_time"])
    b = json.loads(out)["benchmarks"][0]
    return b["GFLOP"]


def qlip_round_trip(bench_dir, ckpt, threads, batches):
    """Median ms per batch and GFLOP per image, from bench_cpu_qlip_model's repetitions."""
    env = dict(os.environ, QLIP_BENCH_CKPT=ckpt, QLIP_BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    flt = "BM_RoundTrip/batch:(" + "|".join(str(b) for b in batches) + ")/"
    doc = json.loads(run([os.path.join(bench_dir, "bench_cpu_qlip_model"), f"--benchmark_filter={flt}",
                          "--benchmark_repetitions=3", "--benchmark_format=json"], env))
    ms, gflop = {}, {}
    for b in doc["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        batch = int(re.search(r"batch:(\d+)", b["name"]).group(1))
        ms[batch] = b["real_time"]  # the bench's unit is ms
        gflop[batch] = b["GFLOP"] * b["real_time"] * 1e-3 / batch  # rate x seconds / images
    return ms, gflop


def torch_round_trip(ckpt, threads, batches, compile_):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench_torch_qlip.py"), "--ckpt", ckpt, "--threads",
           str(threads), "--runs", "3", "--batches", *map(str, batches)]
    if compile_:
        cmd.append("--compile")
    ms = {}
    for line in run(cmd).splitlines():
        m = re.match(r"batch\s+(\d+) encode->quantize->decode.*median\s+([\d.]+) ms", line)
        if m:
            ms[int(m.group(1))] = float(m.group(2))
    return ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--bench-dir", default=os.path.join(ROOT, "build", "bench", "bench"))
    a = ap.parse_args()
    names = ["qlip", "eager"] + ([] if a.no_compile else ["compile"])
    peaks, times, gflop = [], {n: {b: [] for b in a.batches} for n in names}, {}
    for r in range(a.rounds):
        peaks.append(fma_peak(a.bench_dir, a.threads))
        q, gflop = qlip_round_trip(a.bench_dir, a.ckpt, a.threads, a.batches)
        got = {"qlip": q, "eager": torch_round_trip(a.ckpt, a.threads, a.batches, False)}
        if not a.no_compile:
            got["compile"] = torch_round_trip(a.ckpt, a.threads, a.batches, True)
        for n in names:
            for b in a.batches:
                times[n][b].append(got[n][b])
        print(f"round {r + 1}/{a.rounds}: peak {peaks[-1]:.1f} GFLOP/s; " + "; ".join(
            f"{n} " + " ".join(f"b{b} {got[n][b]:.0f} ms" for b in a.batches) for n in names), flush=True)
    peak = statistics.median(peaks)
    print(f"\nthreads {a.threads}; FMA peak median {peak:.1f} GFLOP/s (min {min(peaks):.1f}, max {max(peaks):.1f}); "
          f"medians of {a.rounds} rounds (each a median of 3 runs)")
    for b in a.batches:
        ceiling = peak / gflop[b]  # images/s at the FMA peak
        row = {n: statistics.median(times[n][b]) for n in names}
        img_s = {n: b / (row[n] * 1e-3) for n in names}
        print(f"batch {b}: {gflop[b]:.1f} GFLOP/image, ceiling {ceiling:.2f} img/s")
        for n in names:
            print(f"  {n:8s} {row[n]:9.1f} ms  {img_s[n]:6.2f} img/s  {100 * img_s[n] / ceiling:5.1f}% of ceiling"
                  + ("" if n == "qlip" else f"  qlip/{n} {img_s['qlip'] / img_s[n]:.2f}x"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The side-by-side table of the GPU check: qlip's kernel benchmarks beside PyTorch's on the same shapes.

  python3 tools/gpu_check_summary.py bench_cuda_kernels.json bench_torch_cuda.json

Reads Google Benchmark's JSON (bench/cuda_kernels.cu: the TFLOP/s counter, or bytes_per_second) and
tools/bench_torch_cuda.py's JSON, and prints a Markdown table: each shape's rate in both and their
ratio (qlip / PyTorch), for docs/PERFORMANCE.md.
"""
import json
import sys


def qlip_rates(path):
    rates = {}
    for b in json.load(open(path))["benchmarks"]:
        if b.get("error_occurred"):
            continue
        name = b["name"].removesuffix("/manual_time")
        if "TFLOP/s" in b:
            rates[name] = (b["TFLOP/s"], "TFLOP/s")
        elif "bytes_per_second" in b:
            rates[name] = (b["bytes_per_second"] / 1e9, "GB/s")
    return rates


def main():
    qlip = qlip_rates(sys.argv[1])
    torch_run = json.load(open(sys.argv[2]))
    print(f"device: {torch_run['device']}, torch {torch_run['torch']}")
    print("| benchmark | unit | qlip | PyTorch | qlip / PyTorch |")
    print("| --- | --- | --- | --- | --- |")
    for e in torch_run["entries"]:
        unit = "TFLOP/s" if "TFLOP/s" in e else "GB/s"
        theirs = e[unit]
        mine = qlip.get(e["name"], (None, unit))[0]
        ours = f"{mine:.1f}" if mine is not None else "missing"
        ratio = f"{mine / theirs:.2f}" if mine is not None and theirs > 0 else "-"
        print(f"| {e['name']} | {unit} | {ours} | {theirs:.1f} | {ratio} |")


if __name__ == "__main__":
    main()

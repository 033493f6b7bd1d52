#!/usr/bin/env python3
"""Times the PyTorch reference (tools/qlip_reference.py) on CPU: encode -> quantize -> decode.

  python3 tools/qlip_reference.py make-checkpoint --config qlip-b-16-256 --out /tmp/qlip-b16
  python3 tools/bench_torch_qlip.py --ckpt /tmp/qlip-b16 [--threads 2] [--runs 5] [--batches 1 8]
        [--compile] [--dump-image IMG --dump-out /tmp/qlip-b16/fixtures.safetensors]

Pixels for timing are N(0,1) (timing does not depend on content). Each configuration gets one
warm-up run, then --runs timed runs (time.perf_counter, torch.no_grad, float32, eager). With
--compile only the whole round trip is timed, through torch.compile (inductor; its compilation
happens in the warm-up runs, two of them so a recompile for the new batch size is not timed).
With --dump-image it also writes the full-size golden tensors (same names as the small fixtures,
docs/REFERENCE.md) for that image + the three standard captions.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qlip_reference as ref  # noqa: E402

CAPTIONS = ["a photo of a cat", "a diagram", "two dogs playing in the snow"]


def blas_summary():
    keep = ("Math Kernel", "MKL-DNN", "OpenMP", "OpenBLAS", "BLAS_INFO", "CPU capability", "LAPACK")
    lines = []
    for line in torch.__config__.show().splitlines():
        if any(k in line for k in keep):
            if "Build settings" in line:  # huge line: keep only the BLAS/LAPACK fields
                parts = [p.strip().split("Build settings: ")[-1] for p in line.split(",")
                         if "BLAS_INFO" in p or "LAPACK_INFO" in p]
                line = "  - Build settings (excerpt): " + ", ".join(parts)
            lines.append(line.rstrip())
    return "\n".join(lines)


def timeit(fn, runs):
    """Returns (min, median, max) wall seconds and the median process CPU seconds per run."""
    fn()  # warm-up
    ts, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(ts), statistics.median(ts), max(ts), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--compile", action="store_true", help="time the round trip under torch.compile")
    ap.add_argument("--dump-image", default=None)
    ap.add_argument("--dump-out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"interop {torch.get_num_interop_threads()}")
    print(blas_summary())
    print(f"os.cpu_count {os.cpu_count()}, load average at start {os.getloadavg()} "
          "(other processes on the machine distort the numbers)")

    t0 = time.perf_counter()
    model = ref.load_model(args.ckpt)
    print(f"loaded {args.ckpt} in {time.perf_counter() - t0:.1f} s; "
          f"{sum(v.numel() for v in model.state_dict().values()):,} parameters")
    vc = model.config["vision_config"]
    size = vc["image_size"]
    vm, dec = model.vision_model, model.vision_decoder

    for b in args.batches:
        px = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(0))

        @torch.no_grad()
        def enc():
            return vm.encode(px)[-1]

        with torch.no_grad():
            last = enc()
            qd = vm.quantize(last[:, 1:])

        @torch.no_grad()
        def quant():
            d = vm.quantize(last[:, 1:])
            ref.indices_from_bits(d["bits"])
            return vm.dequantize(d["q"])

        with torch.no_grad():
            zhat = quant()

        @torch.no_grad()
        def decode():
            return dec(zhat)[1]

        @torch.no_grad()
        def full():
            h = vm.encode(px)[-1]
            d = vm.quantize(h[:, 1:])
            ref.indices_from_bits(d["bits"])
            return dec(vm.dequantize(d["q"]))[1]

        cases = (("encode (vision tower)", enc), ("quantize+indices+post-MLP", quant),
                 ("decode (pixel decoder)", decode), ("encode->quantize->decode", full))
        if args.compile:
            compiled = torch.compile(full)
            t0 = time.perf_counter()
            compiled()
            print(f"batch {b:2d} torch.compile warm-up (compilation) {time.perf_counter() - t0:.1f} s", flush=True)
            cases = (("encode->quantize->decode (torch.compile)", compiled),)
        for name, fn in cases:
            mn, md, mx, cpu = timeit(fn, args.runs)
            print(f"batch {b:2d} {name:28s} min {mn * 1e3:9.1f} ms  median {md * 1e3:9.1f} ms  "
                  f"max {mx * 1e3:9.1f} ms  ({md * 1e3 / b:8.1f} ms/image, median)  "
                  f"cpu {cpu:7.2f} s  load {os.getloadavg()[0]:.1f}", flush=True)
        del qd

    if args.dump_image:
        out_path = args.dump_out or os.path.join(args.ckpt, "fixtures.safetensors")
        pixels = ref.preprocess_images(args.ckpt, [args.dump_image])
        t0 = time.perf_counter()
        out = ref.dump(args.ckpt, pixels, CAPTIONS, out_path,
                       {"image0": os.path.basename(args.dump_image), "ckpt": os.path.abspath(args.ckpt)})
        print(f"dump: wrote {out_path} ({len(out)} tensors, {os.path.getsize(out_path):,} B) "
              f"in {time.perf_counter() - t0:.1f} s")
        print(f"  |u|<1e-6: {int(out['quant.count_abs_u_lt_1e-6'][0])}, min|u| {float(out['quant.min_abs_u'][0]):.3e}, "
              f"|u|<1e-4: {int((out['quant.u'].abs() < 1e-4).sum())} of {out['quant.u'].numel()}")
        print(f"  probs {out['probs'].tolist()}")
        print(f"  recon std {float(out['decoder.recon'].std()):.4f}, image_embeds std "
              f"{float(out['image_embeds'].std()):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

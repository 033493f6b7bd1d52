#!/usr/bin/env python3
"""qlip's training step beside the PyTorch trainer's, alternating, in separate processes:

  python3 tools/compare_torch_train.py [--rounds 5] [--threads 2] [--bench build/bench/bench/bench_cpu_train_step]

Cases, each measured `rounds` times as qlip, PyTorch, qlip, PyTorch, ...:
  demo  the main job's config (qlip-demo-fashion), batch 64, a whole step (forward, backward,
        clipping, LAMB): bench_cpu_train_step BM_DemoStep vs tools/bench_torch_train.py --mode step
  b16   QLIP-B-16-256, batch 8, forward + backward: BM_B16ForwardBackward vs --mode fwdbwd
  stage2, stage2_gan  the main job's stage 2, batch 64 (E_v forward only, quantizer + decoder, AdamW),
        without / with the GAN loss (the generator's L_G, a discriminator step, R1 every 16th):
        BM_DemoStage2Step/gan:0|1 vs tools/qlip_stage2_reference.py bench --alpha-g 0|0.1
Prints each run, then per case the median images/s of both, the ratio qlip / PyTorch and the
peak resident set of each process. Run it alone on an idle machine: other load distorts both.
The PyTorch side needs checkpoint folders; they are made once under --work (the demo one by
qlip_train --steps 1, the B-16-256 one by tools/qlip_reference.py make-checkpoint).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return out


QLIP_FILTERS = {"demo": "BM_DemoStep/", "b16": "BM_B16ForwardBackward", "stage2": "BM_DemoStage2Step/batch:64/gan:0",
                "stage2_gan": "BM_DemoStage2Step/batch:64/gan:1"}


def qlip_run(bench, case, threads):
    flt = QLIP_FILTERS[case]
    env = dict(os.environ, QLIP_BENCH_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    doc = json.loads(run_json([bench, f"--benchmark_filter={flt}", "--benchmark_format=json"], env))
    b = doc["benchmarks"][0]
    return {"images_per_s": b["img/s"], "peak_rss_mb": b["peak_rss_MB"]}


def torch_run(ckpt, case, threads, runs):
    if case.startswith("stage2"):
        out = run_json([sys.executable, os.path.join(ROOT, "tools", "qlip_stage2_reference.py"), "bench", "--ckpt", ckpt,
                        "--batch", "64", "--threads", str(threads), "--runs", str(runs),
                        "--alpha-g", "0.1" if case == "stage2_gan" else "0"])
        return json.loads(out.strip().splitlines()[-1])
    batch, mode = (64, "step") if case == "demo" else (8, "fwdbwd")
    out = run_json([sys.executable, os.path.join(ROOT, "tools", "bench_torch_train.py"), "--ckpt", ckpt,
                    "--batch", str(batch), "--mode", mode, "--threads", str(threads), "--runs", str(runs)])
    return json.loads(out.strip().splitlines()[-1])


def make_checkpoints(work, train_bin):
    demo = os.path.join(work, "demo")
    if not os.path.exists(os.path.join(demo, "checkpoint", "model.safetensors")):
        subprocess.run([train_bin, "--out", demo, "--steps", "1", "--warmup", "0", "--batch", "4", "--threads", "1"], check=True,
                       cwd=ROOT, capture_output=True)
    b16 = os.path.join(work, "b16")
    if not os.path.exists(os.path.join(b16, "model.safetensors")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "qlip_reference.py"), "make-checkpoint",
                        "--config", "qlip-b-16-256", "--out", b16], check=True, capture_output=True)
    return {"demo": os.path.join(demo, "checkpoint"), "b16": b16, "stage2": os.path.join(demo, "checkpoint"),
            "stage2_gan": os.path.join(demo, "checkpoint")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/bench/bench/bench_cpu_train_step"))
    ap.add_argument("--train-bin", default=os.path.join(ROOT, "build/release/examples/qlip_train"))
    ap.add_argument("--work", default="/tmp/qlip-compare-train")
    ap.add_argument("--cases", nargs="+", default=["demo", "b16"], choices=list(QLIP_FILTERS))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    ckpts = make_checkpoints(args.work, args.train_bin)
    print(f"cpu: {cpu_name()}; threads {args.threads}; load average at start {os.getloadavg()}")
    results = {}
    for case in args.cases:
        q, t = [], []
        for r in range(args.rounds):
            q.append(qlip_run(args.bench, case, args.threads))
            t.append(torch_run(ckpts[case], case, args.threads, {"b16": 3, "demo": 10}.get(case, 32)))
            print(f"{case} round {r + 1}: qlip {q[-1]['images_per_s']:.2f} img/s, "
                  f"pytorch {t[-1]['images_per_s']:.2f} img/s", flush=True)
        mq = statistics.median(x["images_per_s"] for x in q)
        mt = statistics.median(x["images_per_s"] for x in t)
        results[case] = dict(qlip_images_per_s=mq, torch_images_per_s=mt, ratio=mq / mt,
                             qlip_peak_rss_mb=max(x["peak_rss_mb"] for x in q),
                             torch_peak_rss_mb=max(x["peak_rss_mb"] for x in t), rounds=args.rounds)
    print(f"load average at end {os.getloadavg()}")
    for case, r in results.items():
        print(f"{case}: qlip {r['qlip_images_per_s']:.2f} img/s, pytorch {r['torch_images_per_s']:.2f} img/s "
              f"(medians of {r['rounds']}), ratio {r['ratio']:.2f}x; peak RSS qlip {r['qlip_peak_rss_mb']:.0f} MB, "
              f"pytorch {r['torch_peak_rss_mb']:.0f} MB")
    print(json.dumps(results))
    return 0


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())

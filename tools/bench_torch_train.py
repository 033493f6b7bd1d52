#!/usr/bin/env python3
"""Times the PyTorch stage-1 trainer (tools/qlip_train_reference.py: autograd, eager, float32) on
the CPU, the counterpart of bench/cpu_train_step.cpp (same shapes, same threads):

  python3 tools/bench_torch_train.py --ckpt DIR --batch 64 --mode step    [--threads 2] [--runs 10]
  python3 tools/bench_torch_train.py --ckpt DIR --batch 8  --mode fwdbwd

--mode step: a whole step (zero_grad, forward, backward, global-norm clipping, LAMB, logit-scale
clamp); fwdbwd: forward + backward only. DIR is a checkpoint folder (qlip-train writes one for the
demo config; `tools/qlip_reference.py make-checkpoint --config qlip-b-16-256` for B-16-256).
Pixels N(0, 1); token ids drawn uniformly from CAPTION_IDS (the 45 ids of the demo's 160 Fashion-MNIST
captions), an end-of-text token at a random position. Timing does not depend on the values (qlip's
optimiser does depend on how many embedding rows ever see a gradient, hence the caption ids). Prints one JSON line: median / min / max seconds per step, images/s and the peak
resident set (ru_maxrss) of this process.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qlip_reference as ref  # noqa: E402
import qlip_train_reference as trainer  # noqa: E402

EOS = 49407
# Every token id of the 16 templates x 10 class names, as `qlip tokenize` gives them (with 0, the padding).
# Same list as bench/cpu_train_step.cpp's kCaptionIds.
CAPTION_IDS = [0, 268, 269, 270, 320, 339, 518, 528, 529, 537, 539, 637, 705, 886, 943, 1042, 1125, 1253, 1449, 1579, 1674, 2442, 2523, 2595, 2660, 2728, 2867, 3144, 3365, 4852, 5879, 7356, 8087, 9977, 12703, 14384, 14777, 19727, 24781, 28891, 31139, 42185, 44020, 49406, 49407]


def random_batch(model, batch):
    vc, tc = model.config["vision_config"], model.config["text_config"]
    size, ctx = vc["image_size"], tc.get("max_position_embeddings", 77)
    g = torch.Generator().manual_seed(7)
    pixels = torch.randn(batch, 3, size, size, generator=g)
    ids = torch.tensor(CAPTION_IDS)[torch.randint(0, len(CAPTION_IDS), (batch, ctx), generator=g)]
    for b in range(batch):
        end = int(torch.randint(2, ctx - 1, (1,), generator=g))
        ids[b, end] = EOS
        ids[b, end + 1:] = 0
    return pixels, ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--mode", choices=["step", "fwdbwd"], required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = ref.load_model(args.ckpt)
    model.train()
    hp = dict(trainer.DEFAULTS)
    hp["steps"], hp["warmup_steps"] = 1_000_000, 100
    hp = trainer.resolve_hparams(hp, "lamb", model.config)
    opt = trainer.make_optimizer(trainer.param_groups(model, hp), hp)
    params = [p for _, p in model.named_parameters()]
    pixels, ids = random_batch(model, args.batch)

    def one():
        opt.zero_grad(set_to_none=True)
        out = trainer.forward_losses(model, pixels, ids, hp)
        out["total"].backward()
        if args.mode == "step":
            torch.nn.utils.clip_grad_norm_(params, hp["grad_clip"])
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(hp["logit_scale_min"], hp["logit_scale_max"])

    for _ in range(args.warmup):
        one()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(), "mode": args.mode,
        "batch": args.batch, "runs": args.runs, "median_s": med, "min_s": min(times), "max_s": max(times),
        "images_per_s": args.batch / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Independent PyTorch (autograd) reference of QLIP stage-2 training with the GAN loss, for parity
with the C++ trainer (qlip-train --stage 2; include/qlip/train/adversary.hpp).

Written from the spec (QLIP_SPEC.md §4.1-4.3) on top of tools/qlip_train_reference.py (the stage-1
reference: model, BSQ losses, schedule). float32 on CPU, one thread, deterministic algorithms.

Generator G (the quantizer MLPs quant_embed / quant_embed_post and vision_decoder): E_v runs under
no_grad (frozen), the text tower is not run.
  recon = decoder(quant_embed_post(straight_through(normalize(quant_embed(E_v(x)[:, 1:])))))
  L_G   = mean softplus(-D(recon))                                    (non-saturating, §4.3)
  total = alpha_r * mse(recon, x) + alpha_q * penalty / T + alpha_z * commitment + alpha_g * L_G
AdamW (torch.optim.AdamW, foreach=False, betas (0.9, 0.95), eps 1e-8, wd 0.05 on rank >= 2 tensors),
groups (stage-2 recipe, §4.2): quantizer (names with "quant_embed") lr_base, decoder lr_decoder;
global-norm clipping at 1 over the generator's parameters; warm-up + cosine (qlip_train_reference.lr_at).

Discriminator D (StyleGAN2 "resnet", §4.3), resolution R, widths ch(r) = min(base // r, max):
  Conv layer: y = act_gain * lrelu_0.2(conv(x, w / sqrt(fan_in)) + b)   (lrelu layers, act_gain sqrt 2,
              conv1 sqrt 2 * sqrt 1/2);  linear layers: y = gain * conv(x, w / sqrt(fan_in)) (+ b)
  blur:       depthwise [1,3,3,1] x [1,3,3,1] / 64 after zero padding p, stride d
              (upfirdn2d: pad 2, d 1 before the stride-2 3x3 conv1; pad 1, d 2 before the 1x1 skip)
  block r:    fromrgb (first block) 1x1 lrelu; skip = sqrt(1/2) conv1x1(blur(x), no bias);
              x' = conv1(blur(conv0(x))) + skip
  epilogue:   minibatch std (group min(4, N), one channel, StyleGAN2-ADA's MinibatchStdLayer),
              conv 3x3 lrelu, fc lrelu, out (1 logit)
  L_D = 1/2 [mean softplus(-D(x)) + mean softplus(D(recon.detach()))]
        + (gamma / 2) * k * mean_n ||grad_x sum D(x)||^2_n   on D steps 0, k, 2k, ... (R1, create_graph)
  D's AdamW: lr_disc, betas (0.9, 0.95), eps 1e-8, wd 0.05 on rank >= 2, its own warm-up + cosine over
  the same step count; no clipping. Order per step: G forward/backward/step, then the D step on the
  same (pre-update) reconstruction.

Sub-commands
  make-fixtures [--out tests/data/train/stage2]  writes the initial D, the per-step records and the final
                                                 parameters for the C++ parity test
  bench --ckpt DIR --batch B [--threads 2]       times stage-2 steps (the counterpart of qlip-train --stage 2)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qlip_reference as ref  # noqa: E402
import qlip_train_reference as st1  # noqa: E402

FIXTURE_DIR = os.path.join(ref.REPO_ROOT, "tests", "data", "train", "stage2")

DEFAULTS = dict(
    steps=20, warmup_steps=5, lr_base=5e-4, lr_decoder=1e-4, weight_decay=0.05, beta1=0.9, beta2=0.95,
    eps=1e-8, grad_clip=1.0, alpha_r=1.0, alpha_q=1.0, alpha_z=0.0, alpha_g=0.1,
    lr_disc=1e-4, r1_gamma=10.0, r1_every=16,
    disc_resolution=16, disc_channel_base=128, disc_channel_max=8, mbstd_group=4,
)
# The committed fixture: D's rate 10x the recipe's so that 20 steps move D by far more than float
# rounding (the parity test compares D's parameters too); everything else as the recipe.
FIXTURE_OVERRIDES = dict(lr_disc=1e-3)


# ----------------------------------------------------------------------------------------------
# StyleGAN2 discriminator
# ----------------------------------------------------------------------------------------------

def blur(x, pad, down):
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
    f2 = torch.outer(f, f) / 64.0
    c = x.shape[1]
    return F.conv2d(F.pad(x, [pad, pad, pad, pad]), f2.expand(c, 1, 4, 4), stride=down, groups=c)


class Layer(torch.nn.Module):
    def __init__(self, cin, cout, k, bias=True, lrelu=True, gain=1.0, stride=1, pad=0, blur_pad=None,
                 blur_down=1, fc=False):
        super().__init__()
        shape = (cout, cin) if fc else (cout, cin, k, k)
        self.weight = torch.nn.Parameter(torch.zeros(shape))
        self.bias = torch.nn.Parameter(torch.zeros(cout)) if bias else None
        self.fan_in = cin * k * k
        self.lrelu, self.gain, self.stride, self.pad = lrelu, gain, stride, pad
        self.blur_pad, self.blur_down, self.fc = blur_pad, blur_down, fc

    def forward(self, x):
        w = self.weight * (1.0 / math.sqrt(self.fan_in))
        if self.fc:
            y = F.linear(x, w, self.bias)
        else:
            if self.blur_pad is not None:
                x = blur(x, self.blur_pad, self.blur_down)
            y = F.conv2d(x, w, self.bias, stride=self.stride, padding=self.pad)
        if self.lrelu:
            return F.leaky_relu(y, 0.2) * (math.sqrt(2.0) * self.gain)
        return y * self.gain


class Block(torch.nn.Module):
    def __init__(self, cin, cout, first):
        super().__init__()
        if first:
            self.fromrgb = Layer(3, cin, 1)
        self.first = first
        self.conv0 = Layer(cin, cin, 3, pad=1)
        self.conv1 = Layer(cin, cout, 3, gain=math.sqrt(0.5), stride=2, blur_pad=2, blur_down=1)
        self.skip = Layer(cin, cout, 1, bias=False, lrelu=False, gain=math.sqrt(0.5), blur_pad=1, blur_down=2)

    def forward(self, x):
        if self.first:
            x = self.fromrgb(x)
        y = self.skip(x)
        return self.conv1(self.conv0(x)) + y


def minibatch_std(x, group):
    n, c, h, w = x.shape
    g = min(group, n)
    y = x.reshape(g, -1, 1, c, h, w)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class Epilogue(torch.nn.Module):
    def __init__(self, c, group):
        super().__init__()
        self.group = group
        self.conv = Layer(c + 1, c, 3, pad=1)
        self.fc = Layer(c * 16, c, 1, fc=True)
        self.out = Layer(c, 1, 1, lrelu=False, fc=True)

    def forward(self, x):
        x = self.conv(minibatch_std(x, self.group))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(torch.nn.Module):
    def __init__(self, resolution, base, cmax, group):
        super().__init__()
        ch = lambda r: min(base // r, cmax)  # noqa: E731
        self.res = []
        r = resolution
        while r > 4:
            setattr(self, f"b{r}", Block(ch(r), ch(r // 2), r == resolution))
            self.res.append(r)
            r //= 2
        self.b4 = Epilogue(ch(4), group)

    def forward(self, x):
        for r in self.res:
            x = getattr(self, f"b{r}")(x)
        return self.b4(x).squeeze(1)


def make_discriminator(hp):
    return Discriminator(hp["disc_resolution"], hp["disc_channel_base"], hp["disc_channel_max"], hp["mbstd_group"])


def initialize_discriminator(d, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in d.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.zero_()


# ----------------------------------------------------------------------------------------------
# Stage 2
# ----------------------------------------------------------------------------------------------

def generator_params(model):
    return [(n, p) for n, p in model.named_parameters() if "quant_embed" in n or n.startswith("vision_decoder.")]


def make_optimizers(model, d, hp):
    gg = []
    for group, lr, pick in (("quantizer", hp["lr_base"], lambda n: "quant_embed" in n),
                            ("decoder", hp["lr_decoder"], lambda n: n.startswith("vision_decoder."))):
        for dec in (True, False):
            ps = [p for n, p in generator_params(model) if pick(n) and (p.ndim >= 2) == dec]
            if ps:
                gg.append(dict(params=ps, group=group, peak_lr=lr, lr=lr,
                               weight_decay=hp["weight_decay"] if dec else 0.0))
    kw = dict(betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], foreach=False)
    opt_g = torch.optim.AdamW(gg, lr=hp["lr_base"], weight_decay=hp["weight_decay"], **kw)
    dg = [dict(params=[p for p in d.parameters() if p.ndim >= 2], weight_decay=hp["weight_decay"]),
          dict(params=[p for p in d.parameters() if p.ndim < 2], weight_decay=0.0)]
    for g in dg:
        g["peak_lr"] = g["lr"] = hp["lr_disc"]
    opt_d = torch.optim.AdamW(dg, lr=hp["lr_disc"], **kw)
    return opt_g, opt_d


def generator_losses(model, d, pixels, hp):
    vm = model.vision_model
    with torch.no_grad():
        last = vm.encode(pixels)[-1]
    h = vm.quant_embed(last[:, 1:])
    u = F.normalize(h, dim=-1) if hp["quantizer_l2_norm"] else h
    q = st1.straight_through(u, hp["l2_norm"])
    _, recon = model.vision_decoder(vm.dequantize(q))
    out = {"mse": F.mse_loss(recon, pixels)}
    h_ps, h_cb = st1.bsq_entropies(u, hp["group_size"], hp["inv_temperature"], hp["persample_entropy_compute"],
                                   hp["l2_norm"])
    out["entropy_penalty"] = (hp["gamma_0"] * h_ps - hp["gamma_1"] * h_cb) / hp["inv_temperature"]
    out["commitment"] = st1.commitment_loss(u, q, hp["beta"])
    total = hp["alpha_r"] * out["mse"] + hp["alpha_q"] * out["entropy_penalty"] + hp["alpha_z"] * out["commitment"]
    if hp["alpha_g"] > 0:
        out["adversarial"] = F.softplus(-d(recon)).mean()
        total = total + hp["alpha_g"] * out["adversarial"]
    out["total"] = total
    return out, recon


def discriminator_loss(d, real, fake, with_r1, hp):
    lf = d(fake)
    real = real.detach().requires_grad_(with_r1)
    lr = d(real)
    out = {"d_loss": 0.5 * (F.softplus(-lr).mean() + F.softplus(lf).mean())}
    logits = {"real_logits": lr.detach().tolist(), "fake_logits": lf.detach().tolist()}
    total = out["d_loss"]
    if with_r1:
        (g,) = torch.autograd.grad(lr.sum(), real, create_graph=True)
        out["r1"] = g.square().sum(dim=[1, 2, 3]).mean()
        total = total + 0.5 * hp["r1_gamma"] * hp["r1_every"] * out["r1"]
    return out, total, logits


def train(model, d, pixels, hp, log=None):
    opt_g, opt_d = make_optimizers(model, d, hp)
    gparams = [p for _, p in generator_params(model)]
    for n, p in model.named_parameters():
        p.requires_grad_(any(p is q for q in gparams))
    records = []
    for t in range(hp["steps"]):
        for opt in (opt_g, opt_d):
            for g in opt.param_groups:
                g["lr"] = st1.lr_at(g["peak_lr"], t, hp["warmup_steps"], hp["steps"])
        # Generator: D frozen.
        d.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        out, recon = generator_losses(model, d, pixels[t], hp)
        out["total"].backward()
        gn = torch.nn.utils.clip_grad_norm_(gparams, hp["grad_clip"], foreach=False)
        opt_g.step()
        rec = {"step": t, "grad_norm": float(gn)}
        rec.update({k: float(v.detach()) for k, v in out.items()})
        # Discriminator on the same reconstruction.
        if hp["alpha_g"] > 0:
            d.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            with_r1 = hp["r1_every"] > 0 and hp["r1_gamma"] > 0 and t % hp["r1_every"] == 0
            dout, dtotal, logits = discriminator_loss(d, pixels[t], recon.detach(), with_r1, hp)
            rec.update(logits)
            dtotal.backward()
            rec["d_grad_norm"] = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in d.parameters())))
            opt_d.step()
            rec.update({k: float(v.detach()) for k, v in dout.items()})
        records.append(rec)
        if log:
            log(f"  step {t:2d}  total {rec['total']:.6f}  mse {rec['mse']:.6f}  L_G {rec.get('adversarial', 0):.5f}"
                f"  L_D {rec.get('d_loss', 0):.5f}  R1 {rec.get('r1', float('nan')):.5f}  |g| {rec['grad_norm']:.4f}"
                f"  |g_D| {rec.get('d_grad_norm', 0):.4f}")
    return records


def resolve(hp, model):
    qc = model.config["vision_config"]["quantizer_cfg"]
    hp = dict(hp)
    for k, dflt in dict(inv_temperature=100.0, gamma_0=1.0, gamma_1=1.0, beta=0.0, group_size=1,
                        persample_entropy_compute="group").items():
        hp.setdefault(k, qc.get(k, dflt))
    hp["l2_norm"] = bool(qc.get("l2_norm", True))
    hp["quantizer_l2_norm"] = bool(model.config["vision_config"]["quantizer_l2_norm"])
    return hp


def make_fixtures(out_dir, seed=3, log=print):
    from safetensors.torch import save_file
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(out_dir, exist_ok=True)
    ckpt = os.path.join(st1.FIXTURE_DIR, st1.FIXTURE_CONFIG)
    batches = os.path.join(st1.FIXTURE_DIR, "batches.safetensors")
    model = ref.load_model(ckpt)
    model.train()
    hp = dict(DEFAULTS)
    hp.update(FIXTURE_OVERRIDES)
    hp = resolve(hp, model)
    d = make_discriminator(hp)
    initialize_discriminator(d, seed)
    save_file({n: p.detach().contiguous() for n, p in d.named_parameters()},
              os.path.join(out_dir, "disc_init.safetensors"), metadata={"format": "pt"})
    pixels, _ = st1.load_batches(batches)
    records = train(model, d, pixels, hp, log)
    rel = lambda p: os.path.relpath(os.path.abspath(p), ref.REPO_ROOT)  # noqa: E731
    st1.write_json({
        "description": "QLIP stage-2 training reference with the StyleGAN2 discriminator and R1 "
                       "(tools/qlip_stage2_reference.py): per-step generator losses (before its update), "
                       "its grad norm before clipping, the discriminator's loss, R1 (its steps only), its "
                       "logits of the real and the reconstructed images, and its gradient norm (before its update); formulas in the script's docstring.",
        "checkpoint": rel(ckpt), "batches": rel(batches), "torch_version": torch.__version__.split("+")[0],
        "hyperparameters": hp, "seeds": {"discriminator_init": seed}, "steps": records,
    }, os.path.join(out_dir, "stage2_steps.json"))
    final = {n: p.detach().contiguous() for n, p in generator_params(model)}
    final.update({"discriminator." + n: p.detach().contiguous() for n, p in d.named_parameters()})
    save_file(final, os.path.join(out_dir, "stage2_final.safetensors"), metadata={"format": "pt"})
    for f in ("disc_init.safetensors", "stage2_final.safetensors"):
        os.chmod(os.path.join(out_dir, f), 0o644)


def bench(args):
    """Seconds per stage-2 step (generator + discriminator), the qlip-train --stage 2 counterpart:
    images/s from the mean over the timed steps (R1 included on its schedule)."""
    torch.set_num_threads(args.threads)
    model = ref.load_model(args.ckpt)
    model.train()
    hp = dict(DEFAULTS)
    hp.update(steps=1_000_000, warmup_steps=100, disc_resolution=model.config["vision_config"]["image_size"],
              disc_channel_base=args.disc_channel_base, disc_channel_max=args.disc_channel_max,
              alpha_g=args.alpha_g, r1_every=args.r1_every)
    hp = resolve(hp, model)
    d = make_discriminator(hp)
    initialize_discriminator(d, 0)
    size = model.config["vision_config"]["image_size"]
    pixels = torch.randn(args.runs + args.warmup, args.batch, 3, size, size, generator=torch.Generator().manual_seed(7))
    hp["steps"] = args.runs + args.warmup
    times = []
    opt_g, opt_d = make_optimizers(model, d, hp)
    gparams = [p for _, p in generator_params(model)]
    for n, p in model.named_parameters():
        p.requires_grad_(any(p is q for q in gparams))
    for t in range(args.runs + args.warmup):
        t0 = time.perf_counter()
        d.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        out, recon = generator_losses(model, d, pixels[t], hp)
        out["total"].backward()
        torch.nn.utils.clip_grad_norm_(gparams, hp["grad_clip"])
        opt_g.step()
        if hp["alpha_g"] > 0:
            d.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            _, total, _ = discriminator_loss(d, pixels[t], recon.detach(), hp["r1_every"] > 0 and t % hp["r1_every"] == 0, hp)
            total.backward()
            opt_d.step()
        if t >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    mean = statistics.fmean(times)  # R1 falls on every r1_every-th step: the mean amortises it, as Google Benchmark does
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "batch": args.batch, "alpha_g": args.alpha_g, "runs": args.runs, "median_s": med,
                      "mean_s": mean, "images_per_s": args.batch / mean,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-fixtures")
    m.add_argument("--out", default=FIXTURE_DIR)
    b = sub.add_parser("bench")
    b.add_argument("--ckpt", required=True)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--runs", type=int, default=32)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--alpha-g", type=float, default=0.1)
    b.add_argument("--r1-every", type=int, default=16)
    b.add_argument("--disc-channel-base", type=int, default=1024)
    b.add_argument("--disc-channel-max", type=int, default=32)
    a = ap.parse_args(argv)
    if a.cmd == "make-fixtures":
        make_fixtures(a.out)
    else:
        bench(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())

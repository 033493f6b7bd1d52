#!/usr/bin/env python3
"""Writes the committed small QLIP test fixtures (tests/data/qlip/<config>/...).

For each of qlip-test-tiny and qlip-test-plain:
  config.json, model.safetensors, preprocessor_config.json   (tools/qlip_reference.py make-checkpoint)
  fixtures.safetensors                                       (every intermediate, see docs/REFERENCE.md)
  fixtures_manifest.json                                     (name -> shape/dtype, plus a few stats)
and <config>-diff/: the same checkpoint with config.json in the form save_pretrained writes
(only fields that differ from the config classes' defaults), model.safetensors a symlink.

Usage: python3 tools/make_qlip_fixtures.py [--out tests/data/qlip] [--seed 0] [--configs ...] [--diff-twins-only]
Self-checks run after writing (tokenizer cross-check vs HF CLIPTokenizer, index round trips,
checkpoint reload), and the script exits non-zero if one fails.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qlip_reference as ref  # noqa: E402

CAPTIONS = ["a photo of a cat", "a diagram", "two dogs playing in the snow"]
PHOTO = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png"
SMALL_CONFIGS = ["qlip-test-tiny", "qlip-test-plain"]


def check_tokenizer(ids):
    """vocab.json/merges.txt built from the gz + HF CLIPTokenizer must give the same ids as open_clip."""
    from transformers import CLIPTokenizer
    with tempfile.TemporaryDirectory() as d:
        ref.write_tokenizer_files(d)
        tok = CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))
        for i, c in enumerate(CAPTIONS):
            hf = tok(c)["input_ids"]
            mine = ids[i][: len(hf)].tolist()
            assert hf == mine, (c, hf, mine)
            assert int((ids[i][len(hf):] != 0).sum()) == 0


def self_check(out, cfg):
    bits = out["quant.bits"].to(torch.int64)
    idx = out["quant.indices"]
    assert torch.equal(ref.bits_from_indices(idx).to(torch.int64), bits)
    for g in (1, 2, 4, 7, 14, 28):
        gi = out[f"quant.group_indices.g{g}"]
        G = 28 // g
        recon = sum(gi[..., j] << (g * (G - 1 - j)) for j in range(G))
        assert torch.equal(recon, idx), g
    assert torch.equal((out["quant.u"] > 0).to(torch.uint8), out["quant.bits"])
    qn = out["quant.q"].norm(dim=-1)
    assert torch.allclose(qn, torch.ones_like(qn), atol=1e-6)
    assert out["text.eot_index"].tolist() == [6, 3, 7], out["text.eot_index"]


def check_against_hf_and_math(seed=0):
    """Cross-checks of the reference building blocks against independent implementations:
    text tower vs transformers.CLIPTextModel; plain vision tower (rope off, conv bias 0) vs
    transformers.CLIPVisionModel (pre_layrnorm replaced by Identity); 2-D RoPE vs a float64 complex-number
    formulation; unpatchify vs an explicit loop."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel
    import copy
    for name in SMALL_CONFIGS:
        cfg = ref.get_config(name)
        m = ref.QLIPModel(cfg)
        ref.random_init(m, seed)
        tc = cfg["text_config"]
        hf = CLIPTextModel(CLIPTextConfig(
            vocab_size=tc["vocab_size"], hidden_size=tc["hidden_size"],
            intermediate_size=tc["intermediate_size"], num_hidden_layers=tc["num_hidden_layers"],
            num_attention_heads=tc["num_attention_heads"], max_position_embeddings=77,
            hidden_act=tc["hidden_act"], layer_norm_eps=tc["layer_norm_eps"],
            bos_token_id=49406, eos_token_id=49407, pad_token_id=1)).eval()
        missing, unexpected = hf.text_model.load_state_dict(m.text_model.state_dict(), strict=False)
        assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
        ids = ref.tokenize(CAPTIONS)
        with torch.no_grad():
            o = hf(input_ids=ids, output_hidden_states=True)
            hs, final, idx, pooled = m.text_model(ids)
        for a, b in zip(hs, o.hidden_states):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
        assert torch.allclose(final, o.last_hidden_state, atol=1e-5)
        assert torch.allclose(pooled, o.pooler_output, atol=1e-5)
        # vision, plain path only (HF CLIP has no rope / swiglu / subln)
        vc = copy.deepcopy(cfg["vision_config"])
        if vc["swiglu"] or vc["subln"]:
            continue
        vc["rope"] = False
        cfg2 = copy.deepcopy(cfg)
        cfg2["vision_config"] = vc
        m2 = ref.QLIPModel(cfg2)
        ref.random_init(m2, seed)
        with torch.no_grad():
            m2.vision_model.embeddings.patch_embedding.bias.zero_()
        hv = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=vc["hidden_size"], intermediate_size=vc["intermediate_size"],
            num_hidden_layers=vc["num_hidden_layers"], num_attention_heads=vc["num_attention_heads"],
            image_size=vc["image_size"], patch_size=vc["patch_size"], hidden_act=vc["hidden_act"],
            layer_norm_eps=vc["layer_norm_eps"])).eval()
        sd = {k: v for k, v in m2.vision_model.state_dict().items()
              if not k.startswith(("quant_embed", "rope")) and k != "embeddings.patch_embedding.bias"}
        missing, unexpected = hv.vision_model.load_state_dict(sd, strict=False)
        assert not unexpected and all(("position_ids" in k or "pre_layrnorm" in k) for k in missing), \
            (missing, unexpected)
        hv.vision_model.pre_layrnorm = torch.nn.Identity()  # QLIP has no pre-LN
        px = torch.randn(2, 3, vc["image_size"], vc["image_size"], generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            o = hv(pixel_values=px, output_hidden_states=True)
            hs = m2.vision_model.encode(px)
            cls = m2.vision_model.post_layernorm(hs[-1][:, 0])
        for a, b in zip(hs, o.hidden_states):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
        assert torch.allclose(cls, o.pooler_output, atol=1e-5)
    # RoPE vs complex numbers in float64
    for dh, grid in ((16, 4), (16, 6), (64, 16), (64, 28), (64, 32)):
        rope = ref.Rope2D(dh, grid)
        x = torch.randn(2, 3, grid * grid, dh, dtype=torch.float64)
        y = rope(x.float()).double()
        quarter = dh // 4
        k = torch.arange(quarter, dtype=torch.float64)
        freq = 10000.0 ** (-2.0 * k / (dh // 2))
        t = torch.arange(grid, dtype=torch.float64) * 16.0 / grid
        r, c = torch.arange(grid * grid) // grid, torch.arange(grid * grid) % grid
        theta = torch.cat([t[r][:, None] * freq, t[c][:, None] * freq], dim=1)  # (T, dh/2) pair angles
        xc = torch.view_as_complex(x.reshape(2, 3, grid * grid, dh // 2, 2).contiguous())
        yc = torch.view_as_real(xc * torch.polar(torch.ones_like(theta), theta)).reshape(x.shape)
        err = (y - yc).abs().max().item()
        assert err < 1e-5 * max(1.0, x.abs().max().item()), (dh, grid, err)
    # unpatchify
    cfg = ref.get_config("qlip-test-plain")
    dec = ref.QLIPModel(cfg).vision_decoder
    s, p = dec.grid, dec.patch
    x = torch.randn(2, s * s, 3 * p * p)
    dec.conv_out = torch.nn.Identity(); dec.ffn = torch.nn.Identity(); dec.norm = torch.nn.Identity()
    dec.encoder.layers = torch.nn.ModuleList()
    dec.position_embeddings = torch.nn.Parameter(torch.zeros(1))
    with torch.no_grad():
        _, img = dec(x)
    for b in range(2):
        for n in range(s * s):
            hh, ww = divmod(n, s)
            for j in range(3 * p * p):
                ch, rem = divmod(j, p * p)
                sh, sw = divmod(rem, p)
                assert img[b, ch, hh * p + sh, ww * p + sw] == x[b, n, j]
    print("cross-checks vs HF CLIPTextModel / CLIPVisionModel / complex RoPE / unpatchify loop: OK")


def stats(out):
    s = {}
    for k, v in out.items():
        if v.dtype == torch.float32 and v.numel() > 1:
            s[k] = {"std": round(float(v.std()), 4), "absmax": round(float(v.abs().max()), 4)}
    return s


def make_one(name, root, seed):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    n_t, n_p = ref.make_checkpoint(name, d, seed=seed, tokenizer_files=False)
    cfg = json.load(open(os.path.join(d, "config.json")))
    size = cfg["vision_config"]["image_size"]
    photo = ref.preprocess_images(d, [PHOTO])
    gen = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(1, 3, size, size, generator=gen, dtype=torch.float32)
    pixels = torch.cat([photo, noise], dim=0)
    fx = os.path.join(d, "fixtures.safetensors")
    out = ref.dump(d, pixels, CAPTIONS, fx, {"config": name, "seed": str(seed),
                                             "image0": os.path.basename(PHOTO), "image1": "randn"})
    # reload from disk and recompute: the fixtures must come from the stored (rounded) weights
    from safetensors.torch import load_file
    back = load_file(fx)
    again = ref.load_model(d).run_all(back["pixels"], back["text.input_ids"])
    for k, v in again.items():
        assert torch.equal(v, back[k]), k
    self_check(back, cfg)
    check_tokenizer(back["text.input_ids"])
    manifest = {
        "config": name, "seed": seed, "captions": CAPTIONS,
        "images": [os.path.basename(PHOTO) + " via CLIPImageProcessor", "randn N(0,1), torch.Generator seed+1"],
        "checkpoint_tensors": n_t, "checkpoint_parameters": n_p,
        "count_abs_u_lt_1e-6": int(back["quant.count_abs_u_lt_1e-6"][0]),
        "min_abs_u": float(back["quant.min_abs_u"][0]),
        "probs": back["probs"].tolist(),
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                    for k, v in sorted(back.items())},
        "stats": stats(back),
    }
    with open(os.path.join(d, "fixtures_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    print(f"{name}: {n_t} tensors, {n_p:,} params; files {sizes}; total {sum(sizes.values()):,} B")
    print(f"  |u|<1e-6: {manifest['count_abs_u_lt_1e-6']}, min|u| = {manifest['min_abs_u']:.3e}")
    print(f"  probs = {back['probs'].tolist()}")
    for k in ("vision.hidden_states.0", f"vision.hidden_states.{cfg['vision_config']['num_hidden_layers']}",
              "quant.u", "quant.zhat", "decoder.recon", "text.final", "image_embeds", "text_embeds"):
        print(f"  {k:32s} std {manifest['stats'][k]['std']:.4f} absmax {manifest['stats'][k]['absmax']:.4f}")
    return out


def write_diff_twin(name, root):
    """<name>-diff/: the same checkpoint with config.json in save_pretrained's diff form.

    model.safetensors is a relative symlink to the full-form folder's file (no second copy in the
    repository); preprocessor_config.json is copied. The C++ tests require identical outputs.
    """
    src = os.path.join(root, name)
    dst = os.path.join(root, name + "-diff")
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        full = json.load(f)
    diff = ref.diff_form(full)
    back = ref.full_form(diff)
    back.pop("transformers_version")
    assert back == full, f"{name}: diff form does not round-trip"
    ref.write_config(full, dst, "diff")
    shutil.copyfile(os.path.join(src, "preprocessor_config.json"), os.path.join(dst, "preprocessor_config.json"))
    link = os.path.join(dst, "model.safetensors")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.join("..", name, "model.safetensors"), link)
    print(f"{name}-diff: config.json with {sum(len(v) if isinstance(v, dict) else 1 for v in diff.values())} "
          f"entries (full form: {sum(len(v) if isinstance(v, dict) else 1 for v in full.values())})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ref.REPO_ROOT, "tests", "data", "qlip"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=SMALL_CONFIGS)
    ap.add_argument("--diff-twins-only", action="store_true",
                    help="only (re)write the <config>-diff folders from the existing full-form ones")
    args = ap.parse_args()
    if args.diff_twins_only:
        for name in args.configs:
            write_diff_twin(name, args.out)
        return 0
    torch.set_num_threads(1)  # determinism across machines is not guaranteed anyway; keep it simple
    for name in args.configs:
        make_one(name, args.out, args.seed)
        write_diff_twin(name, args.out)
    check_against_hf_and_math(args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

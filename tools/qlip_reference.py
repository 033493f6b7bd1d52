#!/usr/bin/env python3
"""Independent PyTorch reference of QLIP (arXiv 2502.05178), written from docs/MODEL.md.

This is NOT the official NVlabs code. It is a plain-torch re-derivation of the math of
docs/MODEL.md §2.2-§2.9 / §3.1 / §3.4 with module names chosen so that ``state_dict()`` yields exactly the
tensor names of MODEL.md §5.3. It exists to produce golden tensors for the C++ implementation.

Sub-commands
  make-checkpoint --config NAME --out DIR [--seed 0] [--dtype f32|f16|bf16] [--config-form full|diff]
      writes DIR/config.json, DIR/model.safetensors (random, deterministic), DIR/preprocessor_config.json,
      DIR/vocab.json + DIR/merges.txt (built from third_party_data/bpe_simple_vocab_16e6.txt.gz)
  dump --ckpt DIR --image PATH [PATH ...] --captions "a,b,c" --out FILE.safetensors
      preprocesses the images with transformers.CLIPImageProcessor (DIR/preprocessor_config.json),
      tokenises the captions (open_clip convention: SOT ids EOT, zero padding to 77) and writes every
      intermediate tensor (see docs/REFERENCE.md for the names).
  count --config NAME     prints tensor / parameter counts without writing anything.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import os
import sys
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPE_GZ = os.path.join(REPO_ROOT, "third_party_data", "bpe_simple_vocab_16e6.txt.gz")

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
ROPE_PT_SEQ_LEN = 16  # hard-coded in the official code for every model (MODEL.md §2.4)
ROPE_THETA = 10000.0
NUM_BITS = 28

# ----------------------------------------------------------------------------------------------
# Configs (official field names, MODEL.md §1.3 / §1.4)
# ----------------------------------------------------------------------------------------------

_TOWER_DEFAULTS = dict(
    hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
    num_attention_heads=12, num_channels=3, image_size=224, patch_size=32, hidden_act="gelu",
    layer_norm_eps=1e-5, attention_dropout=0.0, q_bias=True, k_bias=True, v_bias=True,
    subln=False, swiglu=False, rope=False, post_layernorm=False, quantizer="none",
    quantizer_l2_norm=False, quantizer_embed_type="identity", hidden_size_post_q=None,
    quantizer_cfg={},
)
_TEXT_DEFAULTS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512,
    num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77, hidden_act="gelu",
    layer_norm_eps=1e-5, attention_dropout=0.0, q_bias=True, k_bias=True, v_bias=True,
    subln=False, swiglu=False, rope=False, post_layernorm=False,
    pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
)


def _bsq_cfg(group_size):
    # inv_temperature / gamma_0 / gamma_1 / beta / persample_entropy_compute are [UNKNOWN] for the
    # released models (training only); BinarySphericalQuantizer class defaults are used.
    return dict(embed_dim=NUM_BITS, l2_norm=True, input_format="blc", group_size=group_size,
                inv_temperature=100.0, gamma_0=1.0, gamma_1=1.0, beta=0.0,
                persample_entropy_compute="group")


def _vision(**kw):
    d = copy.deepcopy(_TOWER_DEFAULTS)
    d.update(quantizer="bsq", quantizer_l2_norm=True, quantizer_embed_type="mlp")
    d.update(kw)
    return d


def _decoder(**kw):
    d = copy.deepcopy(_TOWER_DEFAULTS)
    d.update(kw)
    return d


def _text(**kw):
    d = copy.deepcopy(_TEXT_DEFAULTS)
    d.update(kw)
    return d


def _top(text, vision, decoder, projection_dim, vpb, tpb):
    for c in (text, vision, decoder):
        c["projection_dim"] = projection_dim
    return {
        "architectures": ["QLIPModel"],
        "model_type": "clip",
        "torch_dtype": "float32",
        "projection_dim": projection_dim,
        "logit_scale_init_value": 2.6592,
        "vision_projection_bias": vpb,
        "text_projection_bias": tpb,
        "text_config": text,
        "vision_config": vision,
        "decoder_config": decoder,
    }


def _eva_tower(width, layers, heads, inter, image, patch, eps=1e-6):
    return dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=inter, image_size=image, patch_size=patch, layer_norm_eps=eps,
                q_bias=True, k_bias=False, v_bias=True, subln=True, swiglu=True, rope=True,
                hidden_act="gelu")


def _real_config(width, layers, heads, inter, image, patch, text_w, text_heads, text_inter, proj):
    vision = _vision(**_eva_tower(width, layers, heads, inter, image, patch),
                     hidden_size_post_q=width, quantizer_cfg=_bsq_cfg(14))
    decoder = _decoder(**_eva_tower(width, layers, heads, inter, image, patch))
    text = _text(hidden_size=text_w, intermediate_size=text_inter, num_hidden_layers=12,
                 num_attention_heads=text_heads, hidden_act="gelu", layer_norm_eps=1e-5)
    return _top(text, vision, decoder, proj, True, False)


def _tiny():
    vision = _vision(**_eva_tower(64, 2, 4, 176, 32, 8), hidden_size_post_q=64,
                     quantizer_cfg=_bsq_cfg(4))
    decoder = _decoder(**_eva_tower(64, 2, 4, 176, 32, 8))
    text = _text(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 hidden_act="gelu", layer_norm_eps=1e-5)
    return _top(text, vision, decoder, 32, True, False)


def _plain():
    vision = _vision(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                     intermediate_size=96, image_size=24, patch_size=4, layer_norm_eps=1e-5,
                     q_bias=True, k_bias=True, v_bias=True, subln=False, swiglu=False, rope=True,
                     hidden_act="quick_gelu", hidden_size_post_q=40, quantizer_cfg=_bsq_cfg(7))
    decoder = _decoder(hidden_size=40, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=80, image_size=24, patch_size=4, layer_norm_eps=1e-5,
                       q_bias=True, k_bias=True, v_bias=True, subln=False, swiglu=False,
                       rope=False, hidden_act="gelu")
    text = _text(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 hidden_act="quick_gelu", layer_norm_eps=1e-5)
    return _top(text, vision, decoder, 24, False, True)


def _train_tiny():
    """Stage-1 training parity config (tools/qlip_train_reference.py, tests/data/train/).

    EVA-02 block layout (SwiGLU, sub-LN, q/v bias without k bias, 2-D RoPE) in vision encoder and
    decoder, plain GELU text tower; the real 28-bit BSQ code. Whole float32 checkpoint < 400 kB.
    quantizer_cfg: group_size 4 (G = 7 groups of 16 codes), inv_temperature 100, gamma_0 = gamma_1 = 1
    (QLIP class defaults; the paper gives none), persample_entropy_compute "group" (class default),
    beta 1.0: the commitment is weighted once more by alpha_z = 1.0 of paper Table 8, so beta = 1
    leaves that weight as the single one. Text ids: BOS 510, EOS 511 (the largest id, as in CLIP).
    The text tower has no k bias either: softmax is invariant to q.b_k (the same for every key), so that
    gradient is exactly 0 and the computed one is rounding noise, which Adam/LAMB normalise into
    +-lr steps that differ between any two implementations (float32 vs float64 here: 2e-4 relative
    per tensor after 20 LAMB steps); such a tensor cannot take part in a parity test."""
    qc = _bsq_cfg(4)
    qc.update(beta=1.0)
    vision = _vision(**_eva_tower(32, 2, 2, 64, 16, 4), hidden_size_post_q=32, quantizer_cfg=qc)
    decoder = _decoder(**_eva_tower(32, 2, 2, 64, 16, 4))
    text = _text(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=16, hidden_act="gelu",
                 layer_norm_eps=1e-5, k_bias=False, bos_token_id=510, eos_token_id=511)
    return _top(text, vision, decoder, 16, True, False)


CONFIG_BUILDERS = {
    "qlip-b-16-256": lambda: _real_config(768, 12, 12, 2048, 256, 16, 512, 8, 2048, 512),
    "qlip-b-8-256": lambda: _real_config(768, 12, 12, 2048, 256, 8, 512, 8, 2048, 512),
    "qlip-l-14-392": lambda: _real_config(1024, 24, 16, 2730, 392, 14, 768, 12, 3072, 768),
    "qlip-test-tiny": _tiny,
    "qlip-test-plain": _plain,
    "train-tiny": _train_tiny,
}

# ----------------------------------------------------------------------------------------------
# The two forms of config.json
# ----------------------------------------------------------------------------------------------
# Hugging Face `PretrainedConfig.save_pretrained` (transformers 4.x, which the official release used)
# writes the "diff" form: per sub-config only the fields that differ from that config class's
# defaults, plus `model_type`; at the top level only what differs from QLIPConfig's defaults.
# `from_pretrained` fills the rest from the class defaults. make-checkpoint writes the full form by
# default and the diff form with --config-form diff; load_model accepts both.

_SECTION_DEFAULTS = {"text_config": _TEXT_DEFAULTS, "vision_config": _TOWER_DEFAULTS,
                     "decoder_config": _TOWER_DEFAULTS}
_SECTION_MODEL_TYPES = {"text_config": "clip_text_model", "vision_config": "clip_vision_model",
                        "decoder_config": "clip_vision_model"}
_TOP_DEFAULTS = dict(projection_dim=512, logit_scale_init_value=2.6592)


def diff_form(cfg):
    """config.json as save_pretrained writes it (fields equal to the class defaults dropped)."""
    out = {}
    for key, value in cfg.items():
        if key in _SECTION_DEFAULTS:
            defaults = _SECTION_DEFAULTS[key]
            sec = {k: v for k, v in value.items() if k not in defaults or v != defaults[k]}
            sec["model_type"] = _SECTION_MODEL_TYPES[key]
            out[key] = dict(sorted(sec.items()))
        elif key in _TOP_DEFAULTS and value == _TOP_DEFAULTS[key]:
            continue
        else:
            out[key] = value
    out["transformers_version"] = "4.37.2"
    return dict(sorted(out.items()))


def full_form(cfg):
    """The inverse: every absent field takes its class default (what from_pretrained does)."""
    out = copy.deepcopy(_TOP_DEFAULTS)
    for key, value in cfg.items():
        if key not in _SECTION_DEFAULTS:
            out[key] = copy.deepcopy(value)
    for key, defaults in _SECTION_DEFAULTS.items():
        sec = copy.deepcopy(defaults)
        sec.update({k: copy.deepcopy(v) for k, v in cfg.get(key, {}).items() if k != "model_type"})
        out[key] = sec
    return out


# Storage dtype policy of make-checkpoint when --dtype is not given.
#   value: (default dtype, {key: dtype overrides}); rope buffers are always stored as F32.
STORAGE_POLICY = {
    "qlip-test-tiny": ("f32", {"text_model.embeddings.token_embedding.weight": "f16"}),
    "qlip-test-plain": ("bf16", {}),
}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def get_config(name):
    if name not in CONFIG_BUILDERS:
        raise SystemExit(f"unknown config {name!r}; known: {', '.join(CONFIG_BUILDERS)}")
    return CONFIG_BUILDERS[name]()


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def act_fn(name):
    if name == "gelu":
        return lambda x: F.gelu(x)  # exact erf GELU
    if name == "quick_gelu":
        return quick_gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "silu":
        return F.silu
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported hidden_act {name!r}")


def rope_tables(head_dim, grid):
    """2-D RoPE tables (MODEL.md §2.4), float32 like PyTorch. Returns (cos, sin) of shape (grid^2, head_dim).

    dim = head_dim/2 per axis; freq_k = 1/(10000^(arange(0,dim,2)/dim)); t_n = n/grid*16
    (computed as arange(grid)/grid*pt_seq_len, in float32); per-axis table repeats each angle twice
    (interleaved pairs); token (r, c) -> concat(A[r], A[c]) (row half first), row-major flatten.
    """
    dim = head_dim // 2
    assert head_dim % 4 == 0, "2-D RoPE needs head_dim divisible by 4"
    freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))
    t = torch.arange(grid, dtype=torch.float32) / grid * ROPE_PT_SEQ_LEN
    ang = t[:, None] * freqs[None, :]                    # (S, dim/2)
    ang = ang.repeat_interleave(2, dim=-1)               # (S, dim)   a0 a0 a1 a1 ...
    rows = ang[:, None, :].expand(grid, grid, dim)
    cols = ang[None, :, :].expand(grid, grid, dim)
    full = torch.cat([rows, cols], dim=-1).reshape(grid * grid, 2 * dim)
    return full.cos().contiguous(), full.sin().contiguous()


class Rope2D(nn.Module):
    def __init__(self, head_dim, grid):
        super().__init__()
        cos, sin = rope_tables(head_dim, grid)
        self.register_buffer("freqs_cos", cos, persistent=True)
        self.register_buffer("freqs_sin", sin, persistent=True)

    def forward(self, x):  # x (..., T, Dh), T == grid^2
        x2 = x.reshape(*x.shape[:-1], -1, 2)
        rot = torch.stack((-x2[..., 1], x2[..., 0]), dim=-1).reshape(x.shape)
        return x * self.freqs_cos + rot * self.freqs_sin


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg["hidden_size"], cfg["num_attention_heads"]
        assert d % h == 0
        self.num_heads, self.head_dim = h, d // h
        self.scale = self.head_dim ** -0.5
        self.k_proj = nn.Linear(d, d, bias=cfg["k_bias"])
        self.v_proj = nn.Linear(d, d, bias=cfg["v_bias"])
        self.q_proj = nn.Linear(d, d, bias=cfg["q_bias"])
        if cfg["subln"]:
            self.inner_attn_ln = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, rope=None, rope_shift=0, causal=False):
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        q = split(self.q_proj(x) * self.scale)   # scale BEFORE RoPE (MODEL.md §2.3)
        k = split(self.k_proj(x))
        v = split(self.v_proj(x))
        if rope is not None:
            s = rope_shift
            q = torch.cat([q[:, :, :s], rope(q[:, :, s:])], dim=2)
            k = torch.cat([k[:, :, :s], rope(k[:, :, s:])], dim=2)
        logits = q @ k.transpose(-1, -2)
        if causal:
            mask = torch.full((t, t), float("-inf"), dtype=logits.dtype).triu(1)
            logits = logits + mask
        # float32 softmax for half types; float64 stays float64 (gradchecks of the training reference)
        p = torch.softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1).to(v.dtype)
        o = (p @ v).transpose(1, 2).reshape(b, t, d)
        if hasattr(self, "inner_attn_ln"):
            o = self.inner_attn_ln(o)
        return self.out_proj(o)


class SwiGLU(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.w1 = nn.Linear(d, i)  # gated branch
        self.w2 = nn.Linear(d, i)  # linear branch
        if cfg["subln"]:
            self.ffn_ln = nn.LayerNorm(i, eps=cfg["layer_norm_eps"])
        self.w3 = nn.Linear(i, d)

    def forward(self, x):
        h = F.silu(self.w1(x)) * self.w2(x)
        if hasattr(self, "ffn_ln"):
            h = self.ffn_ln(h)
        return self.w3(h)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.act = act_fn(cfg["hidden_act"])
        self.fc1 = nn.Linear(d, i)
        if cfg["subln"]:
            self.ffn_ln = nn.LayerNorm(i, eps=cfg["layer_norm_eps"])
        self.fc2 = nn.Linear(i, d)

    def forward(self, x):
        h = self.act(self.fc1(x))
        if hasattr(self, "ffn_ln"):
            h = self.ffn_ln(h)
        return self.fc2(h)


class EncoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.self_attn = Attention(cfg)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = SwiGLU(cfg) if cfg["swiglu"] else MLP(cfg)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x, rope=None, rope_shift=0, causal=False):
        x = x + self.self_attn(self.layer_norm1(x), rope, rope_shift, causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x, rope=None, rope_shift=0, causal=False):
        hs = [x]
        for layer in self.layers:
            x = layer(x, rope, rope_shift, causal)
            hs.append(x)
        return hs


class ProjMLP(nn.Module):  # quantizer_embed_type "mlp": c_proj(GELU(c_fc(x)))
    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.c_fc = nn.Linear(d_in, d_hidden)
        self.c_proj = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


# ----------------------------------------------------------------------------------------------
# Towers
# ----------------------------------------------------------------------------------------------

class VisionEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, p = cfg["hidden_size"], cfg["patch_size"]
        self.grid = cfg["image_size"] // p
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(cfg["num_channels"], d, kernel_size=p, stride=p, bias=True)
        self.position_embedding = nn.Embedding(self.grid * self.grid + 1, d)

    def forward(self, pixels):
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # (B, N, D), n = row*S + col
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.position_embedding.weight[None]


class VisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d = cfg["hidden_size"]
        grid = cfg["image_size"] // cfg["patch_size"]
        self.embeddings = VisionEmbeddings(cfg)
        if cfg["rope"]:
            self.rope = Rope2D(d // cfg["num_attention_heads"], grid)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        assert cfg["quantizer"] == "bsq" and cfg["quantizer_embed_type"] == "mlp"
        qc = cfg["quantizer_cfg"]
        self.bits = qc.get("embed_dim", NUM_BITS)
        dq = cfg["hidden_size_post_q"] or d
        self.quant_embed = ProjMLP(d, d, self.bits)
        self.quant_embed_post = ProjMLP(self.bits, dq, dq)

    def encode(self, pixels):
        hs = self.encoder(self.embeddings(pixels), getattr(self, "rope", None), rope_shift=1)
        return hs

    def quantize(self, z):
        """z: raw last-layer patch tokens (B, N, D). Returns dict of quantizer intermediates."""
        h = self.quant_embed(z)
        u = F.normalize(h, dim=-1) if self.cfg["quantizer_l2_norm"] else h
        bits = (u > 0)
        scale = 1.0 / math.sqrt(self.bits) if self.cfg["quantizer_cfg"].get("l2_norm", True) else 1.0
        q = (bits.float() * 2.0 - 1.0) * scale
        return dict(pre_norm=h, u=u, bits=bits.to(torch.uint8), q=q)

    def dequantize(self, q):
        return self.quant_embed_post(q)


class VisionDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, p = cfg["hidden_size"], cfg["patch_size"]
        self.grid = cfg["image_size"] // p
        self.patch = p
        self.channels = cfg["num_channels"]
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.grid * self.grid, d))
        if cfg["rope"]:
            self.rope = Rope2D(d // cfg["num_attention_heads"], self.grid)
        self.encoder = Encoder(cfg)
        self.norm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.ffn = nn.Sequential(nn.Linear(d, cfg["intermediate_size"]), nn.Tanh())
        self.conv_out = nn.Linear(cfg["intermediate_size"], self.channels * p * p)

    def forward(self, zhat):
        hs = self.encoder(self.position_embeddings + zhat, getattr(self, "rope", None), rope_shift=0)
        x = self.conv_out(self.ffn(self.norm(hs[-1])))
        b, s, p, c = x.shape[0], self.grid, self.patch, self.channels
        # "b (hh ww) (c sh sw) -> b c (hh sh) (ww sw)"
        img = x.view(b, s, s, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, s * p, s * p)
        return hs, img


class TextEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.position_embedding = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]][None]


class TextTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, ids):
        hs = self.encoder(self.embeddings(ids), None, 0, causal=True)
        final = self.final_layer_norm(hs[-1])
        eos = self.cfg["eos_token_id"]
        if eos == 2:
            idx = ids.argmax(dim=-1)
        else:  # first EOT position
            idx = (ids == eos).int().argmax(dim=-1)
        pooled = final[torch.arange(ids.shape[0]), idx]
        return hs, final, idx, pooled


class QLIPModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        proj = config["projection_dim"]
        self.logit_scale = nn.Parameter(torch.tensor(float(config["logit_scale_init_value"])))
        self.text_model = TextTransformer(config["text_config"])
        self.vision_model = VisionTransformer(config["vision_config"])
        self.vision_decoder = VisionDecoder(config["decoder_config"])
        self.visual_projection = nn.Linear(config["vision_config"]["hidden_size"], proj,
                                           bias=config["vision_projection_bias"])
        self.text_projection = nn.Linear(config["text_config"]["hidden_size"], proj,
                                         bias=config["text_projection_bias"])

    # ---- full forward, every intermediate ----
    @torch.no_grad()
    def run_all(self, pixels, input_ids):
        out = {}
        vm, dec = self.vision_model, self.vision_decoder
        hs = vm.encode(pixels)
        for k, h in enumerate(hs):
            out[f"vision.hidden_states.{k}"] = h
        last = hs[-1]
        cls = vm.post_layernorm(last[:, 0])
        out["vision.cls_post_layernorm"] = cls
        img = self.visual_projection(cls)
        out["image_embeds"] = img
        out["image_embeds_normalized"] = F.normalize(img, dim=-1)
        qd = vm.quantize(last[:, 1:])
        for k in ("pre_norm", "u", "bits", "q"):
            out[f"quant.{k}"] = qd[k]
        bits = qd["bits"].to(torch.int64)
        for g in (1, 2, 4, 7, 14, 28):
            out[f"quant.group_indices.g{g}"] = group_indices_from_bits(bits, g)
        out["quant.indices"] = indices_from_bits(bits)
        absu = qd["u"].abs()
        out["quant.count_abs_u_lt_1e-6"] = torch.tensor([int((absu < 1e-6).sum())], dtype=torch.int64)
        out["quant.min_abs_u"] = absu.min().reshape(1)
        zhat = vm.dequantize(qd["q"])
        out["quant.zhat"] = zhat
        dhs, recon = dec(zhat)
        for k, h in enumerate(dhs):
            out[f"decoder.hidden_states.{k}"] = h
        out["decoder.recon"] = recon
        # text
        out["text.input_ids"] = input_ids
        ths, final, idx, pooled = self.text_model(input_ids)
        for k, h in enumerate(ths):
            out[f"text.hidden_states.{k}"] = h
        out["text.final"] = final
        out["text.eot_index"] = idx.to(torch.int64)
        out["text.pooled"] = pooled
        txt = self.text_projection(pooled)
        out["text_embeds"] = txt
        out["text_embeds_normalized"] = F.normalize(txt, dim=-1)
        cos = out["image_embeds_normalized"] @ out["text_embeds_normalized"].T
        out["logits_per_image"] = 100.0 * cos
        out["probs"] = torch.softmax(out["logits_per_image"], dim=-1)
        out["logit_scale"] = self.logit_scale.detach().reshape(1)
        out["logits_per_image_model_scale"] = self.logit_scale.exp() * cos
        return {k: v.detach().contiguous() for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# BSQ indices (integer arithmetic, MODEL.md §3.4; dim 0 = MSB)
# ----------------------------------------------------------------------------------------------

def indices_from_bits(bits):
    """bits (..., L) int {0,1} -> (...) int64, index = sum bit_i << (L-1-i)."""
    L = bits.shape[-1]
    shifts = torch.arange(L - 1, -1, -1, dtype=torch.int64)
    return (bits.to(torch.int64) << shifts).sum(-1)


def group_indices_from_bits(bits, g):
    L = bits.shape[-1]
    assert L % g == 0
    return indices_from_bits(bits.reshape(*bits.shape[:-1], L // g, g))


def bits_from_indices(idx, L=NUM_BITS):
    shifts = torch.arange(L - 1, -1, -1, dtype=torch.int64)
    return ((idx.to(torch.int64)[..., None] >> shifts) & 1).to(torch.uint8)


# ----------------------------------------------------------------------------------------------
# Deterministic random init
# ----------------------------------------------------------------------------------------------

EMBED_STD = 0.5     # class / position / token embeddings, decoder position_embeddings
LN_NOISE = 0.1      # LayerNorm weight = 1 + N(0, LN_NOISE), bias = N(0, LN_NOISE)
BIAS_STD = 0.1      # Linear / Conv biases


@torch.no_grad()
def random_init(model, seed):
    """Weights: N(0, 1/fan_in) (so activations stay O(1) through the layers; quant_embed_post.c_fc:
    N(0, 1) because its input has unit norm), biases N(0, 0.1), LayerNorm weight 1+N(0,0.1) /
    bias N(0,0.1), class/position/token embeddings N(0, 0.5^2), logit_scale = init value.
    Deterministic: torch.manual_seed(seed) then parameters in named_parameters() order."""
    torch.manual_seed(seed)
    ln_names = {n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    for name, p in model.named_parameters():
        mod, _, leaf = name.rpartition(".")
        if name == "logit_scale":
            continue  # keep logit_scale_init_value
        if mod in ln_names:
            if leaf == "weight":
                p.copy_(1.0 + LN_NOISE * torch.randn_like(p))
            else:
                p.copy_(LN_NOISE * torch.randn_like(p))
        elif leaf in ("class_embedding", "position_embeddings") or mod.endswith(
                ("token_embedding", "position_embedding")):
            p.copy_(EMBED_STD * torch.randn_like(p))
        elif name == "vision_model.quant_embed_post.c_fc.weight":
            # its input q has unit L2 norm (entries +-1/sqrt(28)), not unit variance -> std 1
            p.copy_(torch.randn_like(p))
        elif leaf == "weight":  # Linear (out, in) / Conv2d (out, in, kh, kw)
            fan_in = p[0].numel()
            p.copy_(torch.randn_like(p) / math.sqrt(fan_in))
        elif leaf == "bias":
            p.copy_(BIAS_STD * torch.randn_like(p))
        else:
            raise RuntimeError(f"no init rule for {name}")


def export_state_dict(model):
    """state_dict with rope buffers only under vision_model.rope.* / vision_decoder.rope.* (the rope
    module is not registered inside the layers here, so there are no aliases to drop)."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------
# Tokenizer files (HF CLIPTokenizer format) built from the CLIP BPE gz
# ----------------------------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2 / CLIP reversible byte -> unicode-char map (written from its definition)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    bs, cs, n = list(printable), list(printable), 0
    for b in range(256):
        if b not in printable:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_vocab_and_merges(gz_path=BPE_GZ):
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = [tuple(l.split()) for l in lines[1:49152 - 256 - 2 + 1]]  # 48894 merges
    byte_syms = list(bytes_to_unicode().values())
    vocab_list = byte_syms + [s + "</w>" for s in byte_syms] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab_list) == 49408
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return vocab, merges_txt


def write_tokenizer_files(out_dir):
    vocab, merges_txt = build_vocab_and_merges()
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write(merges_txt)


def tokenize(captions, context_length=77):
    """open_clip convention: [SOT] ids [EOT], zero padding to 77 (truncate -> last token EOT)."""
    from open_clip.tokenizer import SimpleTokenizer
    tok = SimpleTokenizer(bpe_path=BPE_GZ)
    sot, eot = tok.sot_token_id, tok.eot_token_id
    assert (sot, eot) == (49406, 49407), (sot, eot)
    out = torch.zeros(len(captions), context_length, dtype=torch.int64)
    for i, c in enumerate(captions):
        ids = [sot] + tok.encode(c) + [eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = eot
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def preprocessor_config(image_size):
    return {
        "crop_size": image_size,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "size": image_size,
    }


# ----------------------------------------------------------------------------------------------
# Checkpoint I/O
# ----------------------------------------------------------------------------------------------

def write_config(cfg, out_dir, form="full"):
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(diff_form(cfg) if form == "diff" else cfg, f, indent=2)
        f.write("\n")


def make_checkpoint(name, out_dir, seed=0, dtype=None, tokenizer_files=True, config_form="full"):
    from safetensors.torch import save_file
    cfg = get_config(name)
    model = QLIPModel(cfg)
    random_init(model, seed)
    sd = export_state_dict(model)
    default, overrides = STORAGE_POLICY.get(name, ("f32", {}))
    if dtype is not None:
        default, overrides = dtype, {}
    stored = {}
    for k, v in sd.items():
        dt = "f32" if k.endswith(("rope.freqs_cos", "rope.freqs_sin")) else overrides.get(k, default)
        stored[k] = v.to(DTYPES[dt]).contiguous()
    os.makedirs(out_dir, exist_ok=True)
    save_file(stored, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(out_dir, "model.safetensors"), 0o644)
    write_config(cfg, out_dir, config_form)
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessor_config(cfg["vision_config"]["image_size"]), f, indent=2)
        f.write("\n")
    if tokenizer_files:
        write_tokenizer_files(out_dir)
    n_params = sum(v.numel() for v in stored.values())
    return len(stored), n_params


def load_model(ckpt_dir):
    from safetensors.torch import load_file
    with open(os.path.join(ckpt_dir, "config.json")) as f:
        cfg = full_form(json.load(f))
    model = QLIPModel(cfg)
    sd = {k: v.to(torch.float32) for k, v in load_file(os.path.join(ckpt_dir, "model.safetensors")).items()}
    model.load_state_dict(sd, strict=True)
    return model.eval()


def preprocess_images(ckpt_dir, paths):
    from PIL import Image
    from transformers import CLIPImageProcessor
    proc = CLIPImageProcessor.from_pretrained(ckpt_dir)
    imgs = [Image.open(p).convert("RGB") for p in paths]
    return proc(images=imgs, return_tensors="pt")["pixel_values"].to(torch.float32)


def dump(ckpt_dir, pixels, captions, out_path, extra_meta=None):
    from safetensors.torch import save_file
    model = load_model(ckpt_dir)
    ids = tokenize(captions)
    out = model.run_all(pixels, ids)
    out = {"pixels": pixels.contiguous(), **out}
    # one metadata key only: safetensors writes a multi-key metadata map in random order, which
    # would make regenerated files differ byte-wise
    meta = {"captions": json.dumps(captions), **(extra_meta or {})}
    save_file(out, out_path, metadata={"qlip_reference": json.dumps(meta, sort_keys=True)})
    os.chmod(out_path, 0o644)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("make-checkpoint")
    a.add_argument("--config", required=True, choices=list(CONFIG_BUILDERS))
    a.add_argument("--out", required=True)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--dtype", choices=list(DTYPES), default=None,
                   help="storage dtype for all weights (rope buffers stay f32); default: per-config policy")
    a.add_argument("--no-tokenizer-files", action="store_true")
    a.add_argument("--config-form", choices=["full", "diff"], default="full",
                   help="diff: only fields that differ from the config classes' defaults, as save_pretrained writes")
    c = sub.add_parser("count")
    c.add_argument("--config", required=True, choices=list(CONFIG_BUILDERS))
    d = sub.add_parser("dump")
    d.add_argument("--ckpt", required=True)
    d.add_argument("--image", nargs="+", required=True)
    d.add_argument("--captions", required=True, help="comma separated")
    d.add_argument("--out", required=True)
    d.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)

    if args.cmd == "make-checkpoint":
        n_t, n_p = make_checkpoint(args.config, args.out, args.seed, args.dtype,
                                   not args.no_tokenizer_files, config_form=args.config_form)
        print(f"{args.config}: wrote {args.out}: {n_t} tensors, {n_p:,} parameters "
              f"(sum of numel incl. logit_scale and rope buffers)")
    elif args.cmd == "count":
        sd = QLIPModel(get_config(args.config)).state_dict()
        rope = sum(v.numel() for k, v in sd.items() if "rope.freqs" in k)
        n = sum(v.numel() for v in sd.values())
        print(f"{args.config}: {len(sd)} tensors, {n:,} parameters ({rope:,} of them rope buffers)")
        towers = {}
        for k, v in sd.items():
            t = k.split(".")[0]
            towers[t] = towers.get(t, 0) + v.numel()
        for t, v in towers.items():
            print(f"  {t:20s} {v:,}")
    elif args.cmd == "dump":
        if args.threads:
            torch.set_num_threads(args.threads)
        pixels = preprocess_images(args.ckpt, args.image)
        caps = [c.strip() for c in args.captions.split(",")]
        out = dump(args.ckpt, pixels, caps, args.out, {"images": json.dumps(args.image)})
        print(f"wrote {args.out}: {len(out)} tensors")
        print("probs:", out["probs"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

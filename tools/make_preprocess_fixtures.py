#!/usr/bin/env python3
"""Generates the committed fixtures of tests/io (run from anywhere; writes into tests/data/io/).

Outputs:
  py_written.safetensors  tensors of every dtype written by the Python safetensors library; the
                          expected values are hard-coded in tests/io/test_safetensors.cpp too.
  metrics.json            PSNR (numpy, float64) and SSIM (pytorch_msssim, float64 tensors) on pairs of
                          real photos from Debian's python3-skimage package.
  decode/                 small PNG/JPEG/WebP files of every PNG colour type and bit depth and the
                          common JPEG/WebP variants, with decode_cases.json: PIL's
                          Image.open(f).convert("RGB") of each (size and sha256 of the RGB bytes).
  preprocess.safetensors  transformers.CLIPImageProcessor (QLIP's preprocessor config, MODEL.md §2.1:
                          size/crop 256, CLIP mean/std) applied to photos from the same package. Stored
                          compactly as the uint8 levels round((x*std+mean)*255) of the processed
                          tensors, which is exact: the script asserts that HF's float output equals
                          (level/255 - mean)/std to float32 precision. Metadata records the photo file
                          names, their sha256 and the library versions.

Needs: torch, transformers, safetensors, numpy, pillow, pytorch_msssim (pip install pytorch-msssim),
and python3-skimage (Debian) for the photos.
"""
import hashlib
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
import PIL.features
from PIL import Image

PHOTO_DIR = "/usr/lib/python3/dist-packages/skimage/data"
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "io")

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# (file, why it is here)
PREPROCESS_PHOTOS = [
    ("astronaut.png", "square RGB PNG"),
    ("chelsea.png", "landscape 451x300 RGB PNG: non-square resize + crop offsets"),
    ("rocket.jpg", "JPEG, landscape 640x427"),
    ("hubble_deep_field.jpg", "JPEG with EXIF, 1000x872"),
    ("cell.png", "grayscale (L) portrait 550x660: grey->RGB path"),
    ("horse.png", "RGBA 400x328: alpha dropped by convert('RGB')"),
    ("microaneurysms.png", "small grayscale 102x102: upscaling path"),
]

# (a, b, crop of a, crop of b); a crop is (top, left, height, width) or None
METRIC_PAIRS = [
    ("motorcycle_left.png", "motorcycle_right.png", None, None),  # stereo pair
    ("astronaut.png", "astronaut.png", (0, 0, 500, 480), (1, 2, 500, 480)),  # similar: shifted by (1, 2)
    ("astronaut.png", "coffee.png", (10, 20, 300, 400), (10, 20, 300, 400)),
    ("chelsea.png", "coffee.png", (5, 7, 8, 37), (5, 7, 8, 37)),  # height < 11: pytorch_msssim skips that axis
]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_py_written():
    import torch
    from safetensors.torch import save_file

    t = {
        "f32": torch.tensor([[0.0, 1.5, -2.25], [3.0e-8, 65504.0, -1.0e30]], dtype=torch.float32),
        "f16": torch.tensor([1.0, -0.5, 65504.0, 2.0**-24], dtype=torch.float16),
        "bf16": torch.tensor([[1.0, -2.0], [3.140625, 2.0**100]], dtype=torch.bfloat16),
        "i32": torch.tensor([-7, 0, 2147483647], dtype=torch.int32),
        "i64": torch.tensor([-9007199254740993, 1 << 40], dtype=torch.int64),
        "u8": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
        "u32": torch.tensor([0, 4294967295, 123456789], dtype=torch.uint32),
        "scalar": torch.tensor(42.0, dtype=torch.float32),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
        "nested.name.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
    }
    path = os.path.join(OUT_DIR, "py_written.safetensors")
    save_file(t, path, metadata={"format": "pt", "note": "qlip fixture"})
    print("wrote", path, os.path.getsize(path), "bytes")


def load_rgb_u8(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def write_metrics():
    import torch
    from pytorch_msssim import ssim

    cases = []
    def cut(img, crop):
        if crop is None:
            return img
        t, l, h, w = crop
        return img[t:t + h, l:l + w]

    for a, b, crop_a, crop_b in METRIC_PAIRS:
        x = cut(load_rgb_u8(os.path.join(PHOTO_DIR, a)), crop_a)
        y = cut(load_rgb_u8(os.path.join(PHOTO_DIR, b)), crop_b)
        assert x.shape == y.shape, (a, b, x.shape, y.shape)
        xd = x.astype(np.float64)
        yd = y.astype(np.float64)
        mse = np.mean((xd - yd) ** 2)
        psnr = 20.0 * np.log10(255.0 / np.sqrt(mse))
        xt = torch.from_numpy(xd).permute(2, 0, 1)[None]
        yt = torch.from_numpy(yd).permute(2, 0, 1)[None]
        s = ssim(xt, yt, data_range=255, size_average=False).item()
        cases.append({"a": a, "b": b, "sha256_a": sha256(os.path.join(PHOTO_DIR, a)),
                      "sha256_b": sha256(os.path.join(PHOTO_DIR, b)),
                      "crop_a": list(crop_a) if crop_a else None, "crop_b": list(crop_b) if crop_b else None,
                      "psnr": psnr, "ssim": s})
        print(f"{a}{crop_a} vs {b}{crop_b}: psnr {psnr:.6f} ssim {s:.8f}")
    path = os.path.join(OUT_DIR, "metrics.json")
    with open(path, "w") as f:
        json.dump({"generator": "tools/make_preprocess_fixtures.py",
                   "psnr": "numpy float64, 20*log10(255/sqrt(mse)) over C,H,W",
                   "ssim": "pytorch_msssim.ssim(data_range=255, size_average=False) on float64 NCHW",
                   "cases": cases}, f, indent=1)
    print("wrote", path)


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _raw_png(w, h, bit_depth, colour_type, rng, extra=b""):
    """A PNG written by hand (PIL cannot write 2-bit grey, 16-bit RGB, grey+tRNS, ...)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row_bytes = (w * channels * bit_depth + 7) // 8
    rows = b"".join(b"\x00" + bytes(rng.integers(0, 256, row_bytes, dtype=np.uint8)) for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", zlib.compress(rows)) +
            _png_chunk(b"IEND", b""))


def _adam7_png(pixels):
    """An Adam7-interlaced 8-bit RGB PNG (PIL writes no interlaced PNGs)."""
    h, w, _ = pixels.shape
    data = b""
    for xs, ys, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = pixels[ys::dy, xs::dx]
        if sub.size:
            data += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(data)) +
            _png_chunk(b"IEND", b""))


def write_decode_cases():
    """Small files of every PNG colour type / bit depth and common JPEG/WebP variants, and PIL's RGB."""
    out_dir = os.path.join(OUT_DIR, "decode")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(1)
    w, h = 13, 7
    base = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    files = {}

    def pil_bytes(im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()

    files["pil_rgb.png"] = pil_bytes(Image.fromarray(base[:, :, :3]), "PNG")
    files["pil_rgba.png"] = pil_bytes(Image.fromarray(base, "RGBA"), "PNG")
    files["pil_l.png"] = pil_bytes(Image.fromarray(base[:, :, 0]), "PNG")
    files["pil_la.png"] = pil_bytes(Image.fromarray(base[:, :, :2], "LA"), "PNG")
    files["pil_p.png"] = pil_bytes(Image.fromarray(base[:, :, :3]).quantize(37), "PNG")
    files["pil_p_trns.png"] = pil_bytes(Image.fromarray(base[:, :, :3]).quantize(20), "PNG", transparency=3)
    files["pil_1.png"] = pil_bytes(Image.fromarray(base[:, :, 0]).convert("1"), "PNG")
    for bit_depth, colour_type in [(1, 0), (2, 0), (4, 0), (16, 0), (16, 2), (16, 4), (16, 6), (8, 4)]:
        files[f"raw_{bit_depth}bit_type{colour_type}.png"] = _raw_png(w, h, bit_depth, colour_type, rng)
    files["raw_8bit_grey_trns.png"] = _raw_png(w, h, 8, 0, rng, _png_chunk(b"tRNS", b"\x00\x10"))
    files["raw_16bit_grey_trns.png"] = _raw_png(w, h, 16, 0, rng, _png_chunk(b"tRNS", b"\x01\x10"))
    palette = bytes(rng.integers(0, 256, 48, dtype=np.uint8))
    files["raw_4bit_palette_trns.png"] = _raw_png(w, h, 4, 3, rng, _png_chunk(b"PLTE", palette) +
                                                  _png_chunk(b"tRNS", b"\x00\x80\xff"))
    photo = np.asarray(Image.open(os.path.join(PHOTO_DIR, "chelsea.png")).convert("RGB"))[:45, :67]
    files["adam7_rgb.png"] = _adam7_png(np.ascontiguousarray(photo))
    files["q75_420.jpg"] = pil_bytes(Image.fromarray(photo), "JPEG")
    files["q95_444.jpg"] = pil_bytes(Image.fromarray(photo), "JPEG", quality=95, subsampling=0)
    files["q75_422.jpg"] = pil_bytes(Image.fromarray(photo), "JPEG", subsampling=1)
    files["progressive.jpg"] = pil_bytes(Image.fromarray(photo), "JPEG", progressive=True)
    files["grey.jpg"] = pil_bytes(Image.fromarray(photo).convert("L"), "JPEG")
    files["cmyk.jpg"] = pil_bytes(Image.fromarray(photo).convert("CMYK"), "JPEG")
    files["lossy.webp"] = pil_bytes(Image.fromarray(photo), "WEBP", quality=80)
    files["lossless.webp"] = pil_bytes(Image.fromarray(photo), "WEBP", lossless=True)
    alpha = np.concatenate([photo, rng.integers(0, 256, photo.shape[:2] + (1,), dtype=np.uint8)], 2)
    files["alpha_lossy.webp"] = pil_bytes(Image.fromarray(alpha, "RGBA"), "WEBP", quality=70)
    files["alpha_lossless.webp"] = pil_bytes(Image.fromarray(alpha, "RGBA"), "WEBP", lossless=True)
    cases = []
    for name, data in sorted(files.items()):
        path = os.path.join(out_dir, name)
        with open(path, "wb") as f:
            f.write(data)
        im = Image.open(path)
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
        cases.append({"file": name, "mode": im.mode, "width": im.size[0], "height": im.size[1],
                      "rgb_sha256": hashlib.sha256(rgb.tobytes()).hexdigest()})
    with open(os.path.join(out_dir, "decode_cases.json"), "w") as f:
        json.dump({"generator": "tools/make_preprocess_fixtures.py decode",
                   "reference": "PIL Image.open(file).convert('RGB'), sha256 of the HWC uint8 bytes",
                   "versions": f"pillow {PIL.__version__}, {PIL.features.version('jpg')} (libjpeg), "
                               f"libwebp {PIL.features.version('webp')}",
                   "cases": cases}, f, indent=1)
    print("wrote", len(cases), "decode cases to", out_dir)


def write_preprocess():
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor

    # QLIP's preprocessor_config.json (MODEL.md §2.1): the OpenAI CLIP config with 256 instead of 224.
    config = {"crop_size": 256, "do_center_crop": True, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN,
              "image_std": CLIP_STD, "resample": 3, "size": 256}
    with open(os.path.join(OUT_DIR, "preprocessor_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    proc = CLIPImageProcessor(**{k: v for k, v in config.items() if k != "feature_extractor_type"})
    mean = np.array(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(CLIP_STD, dtype=np.float32)[:, None, None]
    tensors, meta = {}, {}
    for i, (name, why) in enumerate(PREPROCESS_PHOTOS):
        path = os.path.join(PHOTO_DIR, name)
        im = Image.open(path)
        px = proc(images=im, return_tensors="np")["pixel_values"][0]  # [3, 256, 256] float32
        assert px.shape == (3, 256, 256), px.shape
        levels = np.rint((px * std + mean) * 255.0)
        assert levels.min() >= 0 and levels.max() <= 255
        levels = levels.astype(np.uint8)
        recon = ((levels.astype(np.float64) / 255.0).astype(np.float32) - mean) / std
        err = float(np.abs(recon - px).max())
        assert err < 1e-5, (name, err)  # the uint8 levels represent HF's output exactly
        tensors[f"image{i}"] = torch.from_numpy(levels)
        meta[f"image{i}.file"] = name
        meta[f"image{i}.sha256"] = sha256(path)
        meta[f"image{i}.mode"] = im.mode
        meta[f"image{i}.size"] = f"{im.size[0]}x{im.size[1]}"
        meta[f"image{i}.why"] = why
        meta[f"image{i}.max_level_recon_error"] = f"{err:.3g}"
        print(f"{name}: {im.mode} {im.size} -> levels, recon err {err:.3g}")
    meta["count"] = str(len(PREPROCESS_PHOTOS))
    meta["versions"] = f"transformers {transformers.__version__}, pillow {PIL.__version__}, numpy {np.__version__}"
    meta["layout"] = "uint8 [3,256,256] CHW levels; pixel_values = (level/255 - mean)/std"
    path = os.path.join(OUT_DIR, "preprocess.safetensors")
    save_file(tensors, path, metadata=meta)
    print("wrote", path, os.path.getsize(path), "bytes")


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    what = sys.argv[1:] or ["safetensors", "metrics", "decode", "preprocess"]
    if "safetensors" in what:
        write_py_written()
    if "metrics" in what:
        write_metrics()
    if "decode" in what:
        write_decode_cases()
    if "preprocess" in what:
        write_preprocess()


if __name__ == "__main__":
    main()

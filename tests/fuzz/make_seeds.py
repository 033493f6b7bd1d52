#!/usr/bin/env python3
"""Writes the seed corpora (tests/fuzz/corpus/<name>/) and the hand-made regression inputs
(tests/fuzz/regressions/<name>/) of the fuzz targets. Standard library only; reads the committed
fixtures and, for the tokenizer, the CLIP vocabulary that scripts/setup.sh fetches.

Run from the repository root: python3 tests/fuzz/make_seeds.py. Regressions that the fuzzers
found are copied in by scripts/fuzz.sh and are not regenerated here.
"""
import gzip
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ = os.path.join(ROOT, "tests", "fuzz")
DATA = os.path.join(ROOT, "tests", "data")
TINY = os.path.join(DATA, "qlip", "qlip-test-tiny")


def put(kind, name, target, data):
    d = os.path.join(FUZZ, kind, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def safetensors(tensors, metadata=None, raw_header=None):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":"))
    text = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(text)) + text + data


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    deep = "[" * 100_000  # the stack-overflow reproducer class (200 kB crashed the release CLI)

    # ---- json ----
    put("corpus", "config.json", "json", read(os.path.join(TINY, "config.json")))
    put("corpus", "preprocessor_config.json", "json", read(os.path.join(TINY, "preprocessor_config.json")))
    put("corpus", "mixed.json", "json", '{"a":{"b":[1,2.5,"x",null,true,-3,1e300]},"s":"\\u00e9\\n"}')
    put("corpus", "depth64.json", "json", "[" * 64 + "]" * 64)
    put("regressions", "deep_100k.json", "json", deep)
    put("regressions", "duplicate_key.json", "json", '{"a":1,"b":{"c":1,"c":2}}')
    put("regressions", "deep_in_string_ok.json", "json", '["' + "[" * 1000 + '"]')

    # ---- safetensors ----
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    put("corpus", "py_written.safetensors", "safetensors", read(os.path.join(DATA, "io", "py_written.safetensors")))
    put("corpus", "every_dtype.safetensors", "safetensors", safetensors(
        [("f32", "F32", [2, 3], f32), ("f16", "F16", [2], b"\x00\x3c\x00\xc0"), ("bf16", "BF16", [1], b"\x80\x3f"),
         ("i32", "I32", [1], struct.pack("<i", -7)), ("i64", "I64", [1], struct.pack("<q", 1 << 40)),
         ("u8", "U8", [3], b"\x00\x01\xff"), ("u32", "U32", [], struct.pack("<I", 7)), ("empty", "F32", [0, 5], b"")],
        {"format": "pt"}))
    big_zero = '{"t":{"dtype":"F32","shape":[9223372036854775807,0],"data_offsets":[0,0]}}'
    put("regressions", "zero_size_huge_dim.safetensors", "safetensors", safetensors([], raw_header=big_zero))
    put("regressions", "duplicate_tensor.safetensors", "safetensors", safetensors([], raw_header=(
        '{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')) + b"ab")
    put("regressions", "deep_offsets.safetensors", "safetensors", safetensors([], raw_header=(
        '{"t":{"dtype":"U8","shape":[1],"data_offsets":' + deep + "}}")))

    # ---- codes (read_codes_file for 16 tokens of 28 bits) ----
    idx = struct.pack("<32I", *[(i * 2654435761) % (1 << 28) for i in range(32)])
    bits = bytes((i * 7 // 3) % 2 for i in range(16 * 28))
    groups = bytes(i % 16 for i in range(16 * 7))
    meta = {"config": "qlip-test-tiny", "images": '["cat.png","dog.png"]', "format": "pt"}
    put("corpus", "indices_u32.safetensors", "codes", safetensors([("indices", "U32", [2, 16], idx)], meta))
    put("corpus", "bits_u8.safetensors", "codes", safetensors([("bits", "U8", [1, 16, 28], bits)], {"images": '["a.png"]'}))
    put("corpus", "groups_u8.safetensors", "codes", safetensors([("group_indices", "U8", [1, 16, 7], groups)]))
    put("corpus", "indices_i64.safetensors", "codes",
        safetensors([("indices", "I64", [1, 16], struct.pack("<16q", *range(16)))], {"images": "[]"}))
    put("regressions", "nested_metadata.safetensors", "codes", safetensors([], raw_header=(
        '{"__metadata__":{"images":"' + deep + '"},"indices":' + deep + "}")))

    # ---- preprocess ----
    put("corpus", "qlip_b.json", "preprocess", read(os.path.join(TINY, "preprocessor_config.json")))
    put("corpus", "io.json", "preprocess", read(os.path.join(DATA, "io", "preprocessor_config.json")))
    put("corpus", "int_sizes.json", "preprocess", '{"size":256,"crop_size":256,"resample":3,"image_std":[1,1,1]}')
    put("regressions", "deep_size.json", "preprocess", '{"size":' + "[" * 10000 + "}")
    put("regressions", "deep_size_valid.json", "preprocess", '{"size":{"a":' + "[" * 60 + "]" * 60 + "}}")

    # ---- checkpoint_config (config.json against the tiny weights) ----
    put("corpus", "tiny.json", "checkpoint_config", read(os.path.join(TINY, "config.json")))
    plain = os.path.join(DATA, "qlip", "qlip-test-plain", "config.json")
    put("corpus", "plain.json", "checkpoint_config", read(plain))
    cfg = json.loads(read(os.path.join(TINY, "config.json")))
    cfg["vision_config"]["quantizer_cfg"] = {"embed_dim": "x", "group_size": [1], "l2_norm": 3}
    put("corpus", "quantizer_cfg_types.json", "checkpoint_config", json.dumps(cfg))

    # ---- checkpoint_header (mode byte + the tiny checkpoint's header; data synthesized) ----
    weights = read(os.path.join(TINY, "model.safetensors"))
    n = struct.unpack("<Q", weights[:8])[0]
    header = weights[8:8 + n].rstrip(b" ")
    put("corpus", "tiny_fix_offsets", "checkpoint_header", b"\x01" + header)
    put("corpus", "tiny_raw", "checkpoint_header", b"\x00" + header)
    h = json.loads(header)

    def variant(name, change):
        v = json.loads(header)
        change(v)
        put("regressions", name, "checkpoint_header", b"\x01" + json.dumps(v, separators=(",", ":")).encode())

    pos = "vision_model.embeddings.position_embedding.weight"
    variant("pos_embedding_huge_zero", lambda v: v[pos].update(shape=[9223372036854775807, 0]))
    variant("pos_embedding_2p40_zero", lambda v: v[pos].update(shape=[1 << 40, 0]))
    layer = next(k for k in h if k.startswith("vision_model.encoder.layers.0."))
    variant("layer_index_overflow", lambda v: v.update({layer.replace(".0.", ".99999999999.", 1): v[layer]}))
    variant("layer_index_4096", lambda v: v.update({layer.replace(".0.", ".4096.", 1): v[layer]}))

    # ---- tokenizer ----
    cases = json.loads(read(os.path.join(DATA, "tokenizer", "cases.json")))["cases"]
    for i in (0, 1, 5, 50, 100, 200, 300, 400, 500, 600):
        if i < len(cases):
            put("corpus", "text_%03d" % i, "tokenizer", b"\x00" + cases[i]["text"].encode())
    longest = max(cases, key=lambda c: max(len(w.encode()) for w in c["clean"].split() or [""]))
    put("corpus", "text_longest_word", "tokenizer", b"\x00" + longest["text"].encode())
    put("corpus", "text_specials", "tokenizer", b"\x00<start_of_text>A &amp; B's 1234 \xff\xfe <end_of_text>")
    put("regressions", "word_100k", "tokenizer", b"\x00" + b"ab" * 50_000)
    put("regressions", "word_100k_utf8", "tokenizer", b"\x00" + "日本".encode() * 16_000)
    gz = os.path.join(ROOT, "third_party_data", "bpe_simple_vocab_16e6.txt.gz")
    if os.path.exists(gz):
        # A small but valid HF vocabulary: the 512 byte symbols, the first 64 merges, the specials.
        lines = gzip.open(gz).read().decode("utf-8").split("\n")[1:65]
        tok = json.loads(json.dumps(None))
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs, k = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + k)
                k += 1
        symbols = [chr(c) for c in sorted(cs)]
        tok = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in lines] + ["<|startoftext|>", "<|endoftext|>"]
        vocab = json.dumps({t: i for i, t in enumerate(tok)}, ensure_ascii=False, separators=(",", ":")).encode()
        merges = ("#version: 0.2\n" + "\n".join(lines) + "\n").encode()
        put("corpus", "hf_small", "tokenizer", b"\x01" + struct.pack("<I", len(vocab)) + vocab + merges)


if __name__ == "__main__":
    main()

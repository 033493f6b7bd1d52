#!/usr/bin/env python3
"""Checks that checkpoint folders written by qlip's C++ trainer (train/checkpoint_writer.hpp) load in
the PyTorch reference (tools/qlip_reference.py: load_model, strict state_dict) -- run by hand, the C++
tests never run Python.

    QLIP_TRAIN_IO_OUT=/tmp/qlip-io ./build/test/tests/test_train \
        --gtest_filter=CheckpointIo.WritesFoldersForThePyTorchCheckWhenAsked
    python3 tools/check_trained_checkpoint.py --source tests/data/train/train-tiny \
        --roundtrip /tmp/qlip-io/roundtrip --trained /tmp/qlip-io/trained

--roundtrip (saved without training) must hold every tensor of --source bit for bit and give the same
outputs bit for bit; --trained must load strictly (every tensor present, no extra one, official shapes),
keep the RoPE buffers, differ from the source in its parameters and give finite outputs.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qlip_reference as ref  # noqa: E402


def outputs(model, cfg):
    g = torch.Generator().manual_seed(0)
    size = cfg["vision_config"]["image_size"]
    pixels = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    ctx = cfg["text_config"]["max_position_embeddings"]
    eos = cfg["text_config"]["eos_token_id"]
    ids = torch.zeros(2, ctx, dtype=torch.int64)
    ids[0, :4] = torch.tensor([cfg["text_config"]["bos_token_id"], 17, 301, eos])
    ids[1, :3] = torch.tensor([cfg["text_config"]["bos_token_id"], 9, eos])
    with torch.no_grad():
        return model.run_all(pixels, ids)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True)
    ap.add_argument("--roundtrip", required=True)
    ap.add_argument("--trained", required=True)
    a = ap.parse_args()
    import json
    with open(os.path.join(a.source, "config.json")) as f:
        cfg = ref.full_form(json.load(f))

    src = ref.load_model(a.source)
    rt = ref.load_model(a.roundtrip)
    tr = ref.load_model(a.trained)  # strict=True inside: names and shapes are the official ones
    s_sd, r_sd, t_sd = src.state_dict(), rt.state_dict(), tr.state_dict()
    bad = [k for k in s_sd if not torch.equal(s_sd[k], r_sd[k])]
    assert not bad, f"round trip changed {bad[:5]}"
    changed = [k for k in s_sd if not torch.equal(s_sd[k], t_sd[k])]
    rope = [k for k in s_sd if k.endswith(("rope.freqs_cos", "rope.freqs_sin"))]
    assert changed and not any(k in changed for k in rope), "training should change parameters, never the RoPE tables"
    so, ro, to = outputs(src, cfg), outputs(rt, cfg), outputs(tr, cfg)
    diff = [k for k in so if not torch.equal(so[k], ro[k])]
    assert not diff, f"round-trip outputs differ: {diff[:5]}"
    nonfinite = [k for k, v in to.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not nonfinite, f"trained outputs not finite: {nonfinite[:5]}"
    print(f"ok: {len(s_sd)} state_dict entries; round trip bit-identical (tensors and {len(so)} outputs); "
          f"trained checkpoint loads strictly, {len(changed)} tensors changed, RoPE buffers kept, outputs finite")


if __name__ == "__main__":
    main()

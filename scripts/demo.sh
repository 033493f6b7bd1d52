#!/usr/bin/env bash
# The main job, from a fresh machine: set up, build the qlip CLI, and run the encode → quantize →
# decode round trip of a real photo through the small reference checkpoint in tests/data.
# (Random weights: the picture shows the pipeline works end to end, not a trained model's quality.)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target qlip_cli
ckpt=tests/data/qlip/qlip-test-tiny
photo=/usr/lib/python3/dist-packages/skimage/data/chelsea.png
mkdir -p out
./build/release/examples/qlip info "$ckpt"
./build/release/examples/qlip encode "$ckpt" "$photo" -o out/codes.safetensors --group-size 14
./build/release/examples/qlip reconstruct "$ckpt" "$photo" -o out/roundtrip.png
echo "demo: wrote out/codes.safetensors and out/roundtrip.png"

#!/usr/bin/env bash
# Installs everything qlip needs on a fresh Debian machine (idempotent), and fetches the CLIP BPE
# vocabulary from the open_clip_torch wheel and the LPIPS linear heads from the lpips wheel on PyPI
# into third_party_data/ (never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(cmake g++ make pkg-config ccache
          libeigen3-dev libcli11-dev nlohmann-json3-dev libutf8proc-dev zlib1g-dev
          libpng-dev libjpeg62-turbo-dev libwebp-dev
          libgtest-dev libgmock-dev libbenchmark-dev
          python3-skimage  # python3-skimage: real photos for tests and the demo (no Python runs)
          dataset-fashion-mnist  # IDX files in /usr/share/datasets/fashion-mnist (data/fashion_mnist.hpp, its tests)
          fortunes  # text corpus in /usr/share/games/fortunes (data/text_corpus.hpp, the byte-BPE tests)
          clang libclang-rt-14-dev)  # the fuzzers: clang++ -fsanitize=fuzzer links libclang_rt.fuzzer from libclang-rt-14-dev
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

vocab=third_party_data/bpe_simple_vocab_16e6.txt.gz
if [ ! -s "$vocab" ]; then
  echo "setup: fetching the CLIP BPE vocabulary from the open_clip_torch wheel"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --quiet -d "$tmp" "open_clip_torch==3.3.0"
  mkdir -p third_party_data
  python3 - "$tmp" "$vocab" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/open_clip_torch-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("open_clip/bpe_simple_vocab_16e6.txt.gz") as src, \
        open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  mv "$vocab.part" "$vocab"
fi
# The LPIPS v0.1 linear heads (the perceptual loss, nn/lpips.hpp) from the lpips wheel, converted to
# safetensors with the standard library (tools/lpips_heads_to_safetensors.py).
heads=third_party_data/lpips_vgg_v0.1_heads.safetensors
if [ ! -s "$heads" ]; then
  echo "setup: fetching the LPIPS linear heads from the lpips wheel"
  tmp_l=$(mktemp -d)
  python3 -m pip download --no-deps --quiet -d "$tmp_l" "lpips==0.1.4"
  mkdir -p third_party_data
  python3 tools/lpips_heads_to_safetensors.py "$tmp_l"/lpips-0.1.4-py3-none-any.whl "$heads"
  rm -rf "$tmp_l"
fi
echo "setup: ok"

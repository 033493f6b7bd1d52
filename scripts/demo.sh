#!/usr/bin/env bash
# The main job, from a fresh machine: set up, build, train a small QLIP from scratch on Fashion-MNIST
# (stage 1: contrastive + MSE + BSQ, LAMB; at most 10 minutes of training), evaluate it on the test
# split (zero-shot, linear probe, PSNR/SSIM, code usage) and on scikit-image's photos, and write
#   out/demo/metrics.json   the metrics (zero_shot_top1, linear_probe_top1, psnr_db, ssim, distinct_codes, train_seconds, ...)
#   out/demo/loss.png       the loss curves            out/demo/recon_test.png  test images above their reconstructions
#   out/demo/train/         the run: checkpoint/ (official layout), log.csv, recon.png, train_summary.json
# QLIP_DEMO_THREADS (default: all cores) and QLIP_DEMO_MINUTES (default 10) change the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target qlip_cli qlip_train qlip_eval

bin=./build/release/examples
out=out/demo
threads=${QLIP_DEMO_THREADS:-$(nproc)}
minutes=${QLIP_DEMO_MINUTES:-10}
photos=/usr/lib/python3/dist-packages/skimage/data
rm -rf "$out/train"
mkdir -p "$out"

# The demo's rates and loss balance (docs/TRAINING.md, "The main job"): from scratch, LAMB needs
# rates far above the recipe's (which are for a pretrained encoder), and α_a : α_r = 1 : 100.
"$bin/qlip_train" --out "$out/train" --threads "$threads" --max-minutes "$minutes" \
  --steps 4000 --batch 64 --warmup 100 \
  --lr-vision 3e-3 --lr-text 3e-3 --lr-decoder 1e-2 --lr-base 3e-3 --alpha-recon 100 \
  --save-every 500 --grid-every 500 --log-every 100
"$bin/qlip" info "$out/train/checkpoint"
"$bin/qlip_eval" "$out/train/checkpoint" --threads "$threads" --photos "$photos" \
  --train-summary "$out/train/train_summary.json" --json "$out/metrics.json" --grid "$out/recon_test.png"
cp "$out/train/loss.png" "$out/loss.png"
echo "demo: wrote $out/metrics.json, $out/loss.png, $out/recon_test.png and the run in $out/train"
cat "$out/metrics.json"

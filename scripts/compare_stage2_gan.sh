#!/usr/bin/env bash
# Stage 2 with and without the GAN loss on Fashion-MNIST, from one stage-1 checkpoint: stage 1 with
# the demo's flags, then stage-2 runs with the demo's stage-2 flags that differ only in the GAN
# flags (--alpha-gan 0; the recipe's 0.1 with its discriminator rate 1e-4; 0.1 with the rate 1e-3),
# each scored by qlip_eval on the test split. Runs with a metrics.json are kept.
#   out/stage2_gan/stage1/  out/stage2_gan/{mse,gan,gan_fast_d}/{train/, metrics.json, recon_test.png}
#   out/stage2_gan/table.md
# GAN_STAGE1_STEPS (default 1000), GAN_STAGE2_STEPS (default 300) and GAN_THREADS (default: all
# cores) change the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target qlip_train qlip_eval

bin=./build/release/examples
out=out/stage2_gan
steps1=${GAN_STAGE1_STEPS:-1000}
steps2=${GAN_STAGE2_STEPS:-300}
threads=${GAN_THREADS:-$(nproc)}
mkdir -p "$out"
if [ ! -s "$out/stage1/metrics.json" ]; then
  rm -rf "$out/stage1"
  "$bin/qlip_train" --out "$out/stage1/train" --threads "$threads" --steps "$steps1" --batch 64 --warmup 100 \
    --lr-vision 3e-3 --lr-text 3e-3 --lr-decoder 1e-2 --lr-base 3e-3 --alpha-recon 100 \
    --save-every "$steps1" --grid-every "$steps1" --log-every 250
  "$bin/qlip_eval" "$out/stage1/train/checkpoint" --threads "$threads" --quiet \
    --json "$out/stage1/metrics.json" --grid "$out/stage1/recon_test.png"
fi
for run in "mse|--alpha-gan 0" "gan|--alpha-gan 0.1" "gan_fast_d|--alpha-gan 0.1 --lr-disc 1e-3"; do
  name=${run%%|*}
  flags=${run#*|}
  dir="$out/$name"
  if [ -s "$dir/metrics.json" ]; then echo "stage2_gan: $name done already ($dir)"; continue; fi
  rm -rf "$dir"
  # shellcheck disable=SC2086
  "$bin/qlip_train" --stage 2 --init "$out/stage1/train/checkpoint" --out "$dir/train" --threads "$threads" \
    --steps "$steps2" --batch 64 --warmup 30 --lr-decoder 3e-3 --lr-base 1e-4 --alpha-recon 100 \
    $flags --save-every "$steps2" --grid-every "$steps2" --log-every 50
  "$bin/qlip_eval" "$dir/train/checkpoint" --threads "$threads" --quiet \
    --train-summary "$dir/train/train_summary.json" --stage1-metrics "$out/stage1/metrics.json" \
    --json "$dir/metrics.json" --grid "$dir/recon_test.png"
done

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
s1 = json.load(open(os.path.join(out, "stage1", "metrics.json")))
rows = ["| checkpoint | PSNR (dB) | SSIM | distinct codes | training images/s |", "|---|---|---|---|---|",
        f"| stage 1 | {s1['psnr_db']:.2f} | {s1['ssim']:.4f} | {s1['distinct_codes']} | |"]
for name, label in [("mse", "stage 2, MSE + BSQ"), ("gan", "stage 2, + GAN (α_g 0.1, discriminator rate 1e-4)"),
                    ("gan_fast_d", "stage 2, + GAN (α_g 0.1, discriminator rate 1e-3)")]:
    m = json.load(open(os.path.join(out, name, "metrics.json")))
    t = json.load(open(os.path.join(out, name, "train", "train_summary.json")))
    rows.append(f"| {label} | {m['psnr_db']:.2f} | {m['ssim']:.4f} | {m['distinct_codes']} | {t['images_per_second']:.0f} |")
open(os.path.join(out, "table.md"), "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY

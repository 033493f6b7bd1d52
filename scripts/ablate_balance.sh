#!/usr/bin/env bash
# The paper's Table 3a at the demo's scale: stage 1 on Fashion-MNIST with the loss balance
# α_a : α_r ∈ {1:0, 1:10², 1:10³, 1:10⁴, 0:1} and with --balance auto (which also logs the
# gradient magnitudes of both losses at E_v's last MLP linear: the paper's Fig. 5), each run then
# scored by qlip_eval (zero-shot top-1, linear probe, PSNR on the test split).
#   out/ablate_balance/<name>/{train/, metrics.json}    out/ablate_balance/table.md
# ABLATE_STEPS (default 1500) and ABLATE_THREADS (default: all cores) change the budget.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target qlip_train qlip_eval

bin=./build/release/examples
out=out/ablate_balance
steps=${ABLATE_STEPS:-1500}
threads=${ABLATE_THREADS:-$(nproc)}
mkdir -p "$out"
# The demo's rates (scripts/demo.sh); only the loss weights change between runs.
common=(--threads "$threads" --steps "$steps" --batch 64 --warmup 100
        --lr-vision 3e-3 --lr-text 3e-3 --lr-decoder 1e-2 --lr-base 3e-3
        --save-every "$steps" --grid-every "$steps" --log-every 250)
runs=("1:0|--alpha-align 1 --alpha-recon 0"
      "1:1e2|--alpha-align 1 --alpha-recon 100"
      "1:1e3|--alpha-align 1 --alpha-recon 1000"
      "1:1e4|--alpha-align 1 --alpha-recon 10000"
      "0:1|--alpha-align 0 --alpha-recon 1"
      "auto|--alpha-align 1 --alpha-recon 100 --balance auto --balance-steps 20 --grad-probe-every 25")
for r in "${runs[@]}"; do
  name=${r%%|*}
  flags=${r#*|}
  dir="$out/${name/:/-}"
  if [ -s "$dir/metrics.json" ]; then echo "ablate: $name done already ($dir)"; continue; fi
  rm -rf "$dir"
  echo "ablate: $name ($flags)"
  # shellcheck disable=SC2086
  "$bin/qlip_train" --out "$dir/train" "${common[@]}" $flags
  "$bin/qlip_eval" "$dir/train/checkpoint" --threads "$threads" --quiet --probe-train 20000 \
    --train-summary "$dir/train/train_summary.json" --json "$dir/metrics.json"
done

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = ["| α_a : α_r | α_r used | zero-shot top-1 | linear probe top-1 | PSNR (dB) | distinct codes |",
        "|---|---|---|---|---|---|"]
for name in ["1:0", "1:1e2", "1:1e3", "1:1e4", "0:1", "auto"]:
    d = os.path.join(out, name.replace(":", "-"))
    m = json.load(open(os.path.join(d, "metrics.json")))
    s = json.load(open(os.path.join(d, "train", "train_summary.json")))
    rows.append(f"| {name} | {s.get('alpha_recon', float('nan')):.4g} | {100*m['zero_shot_top1']:.2f} % | "
                f"{100*m['linear_probe_top1']:.2f} % | {m['psnr_db']:.2f} | {m['distinct_codes']} |")
open(os.path.join(out, "table.md"), "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
PY

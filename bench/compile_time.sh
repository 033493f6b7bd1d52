#!/usr/bin/env bash
# Compile time, peak compiler memory and stripped binary size of one consumer TU that includes
# qlip/qlip.hpp and loads a model, for several config lists (docs/PERFORMANCE.md, "Compile time").
# Usage: bench/compile_time.sh [CXX]    (default g++; flags as a Release consumer with the package's)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cxx=${1:-g++}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/body.inc" <<'CPP'
#include <cstdio>
#include <string>
#include "qlip/qlip.hpp"
#include "configs/small_qlip_configs.hpp"
template <class Model> void use(Model& model, const std::string& dir) {
  auto cfg = qlip::ClipPreprocessConfig::load(dir + "/preprocessor_config.json");
  qlip::Tensor<float, 4> pixels({1, 3, model.image_size(), model.image_size()});
  qlip::Arena ws(model.workspace_bytes(1));
  auto codes = model.encode_image(ws, pixels.view());
  auto recon = model.decode(ws, codes.indices);
  qlip::write_png("recon.png", qlip::postprocess_clip(recon.pixels.select(0, 0), cfg.mean, cfg.std));
}
CPP
declare -A calls=(
  [include_only]=''
  [five_configs]='qlip::with_qlip_model<qlip::ExampleQlipConfigs>(argv[1], [&](auto& m) { use(m, argv[1]); });'
  [released_default]='qlip::with_qlip_model(argv[1], [&](auto& m) { use(m, argv[1]); });'
  [one_config_list]='qlip::with_qlip_model<qlip::TypeList<qlip::QlipB16_256>>(argv[1], [&](auto& m) { use(m, argv[1]); });'
  [load_one]='auto m = qlip::QlipModel<qlip::QlipB16_256>::load(argv[1]); use(m, argv[1]);'
)
flags=(-std=c++20 -O3 -DNDEBUG -march=native -fopenmp -I"$root/include" -I"$root/kernels" -I"$root/examples"
       -isystem /usr/include/eigen3)
for v in include_only five_configs released_default one_config_list load_one; do
  if [ "$v" = include_only ]; then
    printf '#include "qlip/qlip.hpp"\nint main() {}\n' >"$work/$v.cpp"
  else
    printf '#include "body.inc"\nint main(int, char** argv) { %s }\n' "${calls[$v]}" >"$work/$v.cpp"
  fi
  /usr/bin/time -f "%U %M" -o "$work/$v.time" "$cxx" "${flags[@]}" "$work/$v.cpp" -o "$work/$v" -lz -lutf8proc -lpng -ljpeg -lwebp
  strip -o "$work/$v.stripped" "$work/$v"
  read -r user rss <"$work/$v.time"
  printf '%-18s compile %6.1f s user, max RSS %5.2f GB, stripped binary %9d B\n' "$v" "$user" \
    "$(echo "$rss / 1048576" | bc -l)" "$(stat -c %s "$work/$v.stripped")"
done

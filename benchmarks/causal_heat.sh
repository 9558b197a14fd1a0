#!/usr/bin/env bash
# Does evaluate's causal check find the region behind a word? On a demo run's balanced test
# images (whose top non-class word is mostly a background that fills the image), the check
# masks the word's region found by keeping each window alone (keep, the default) and by the
# word's Grad-CAM (gradcam), filled with the preprocessing's mean (zero, the default) or the
# image's own mean colour (mean), and explains the masked image again; the word should fall
# more than under the same mask turned by 180 degrees. Reports land in
# benchmarks/results/causal_heat/HEAT-FILL.json.
#
#   texplain demo --out runs/demo-cnn
#   bash benchmarks/causal_heat.sh runs/demo-cnn [IMAGES]     # a few minutes on two cores
set -euo pipefail
run=$1
images=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/results/causal_heat"
for heat in keep gradcam; do for fill in zero mean; do
  texplain evaluate --captions "$run/world/split/captions.jsonl" --split test --images-dir "$run/world/split" \
      -c "$run/classifier" --translator "$run/translator" --lm "$run/lm" --limit "$images" -n 20 \
      --sanity-images 0 --no-cascade --no-minilm --causal-images "$images" --mask-heat "$heat" \
      --mask-fill "$fill" --json "$here/results/causal_heat/$heat-$fill.json" | grep "^causal" | sed "s/^/$heat, $fill fill: /"
done; done

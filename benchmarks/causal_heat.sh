#!/usr/bin/env bash
# Does evaluate's causal check find the region behind a word? On a demo run's balanced test
# images (whose top non-class word is mostly a background that fills the image), the check
# masks the word's region found by keeping each window alone (keep, the default) and by the
# word's Grad-CAM (gradcam), filled with the preprocessing's mean (zero, the default) or the
# image's own mean colour (mean), and explains the masked image again; the word should fall
# more than under the same mask turned by 180 degrees. Each report's causal section lands
# in benchmarks/results/causal_heat/HEAT-FILL.json.
#
#   texplain demo --out runs/demo-cnn
#   bash benchmarks/causal_heat.sh runs/demo-cnn [IMAGES]     # a few minutes on two cores
set -euo pipefail
run=$1
images=${2:-30}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/results/causal_heat"
work=$(mktemp -d)
for heat in keep gradcam; do for fill in zero mean; do
  texplain evaluate --captions "$run/world/split/captions.jsonl" --split test --images-dir "$run/world/split" \
      -c "$run/classifier" --translator "$run/translator" --lm "$run/lm" --limit "$images" --samples 20 \
      --sanity-images 0 --no-cascade --no-minilm --causal-images "$images" --mask-heat "$heat" \
      --mask-fill "$fill" --json "$work/report.json" | grep "^causal" | sed "s/^/$heat, $fill fill: /"
  python -c "import json, sys; json.dump(json.load(open(sys.argv[1]))['causal'], open(sys.argv[2], 'w'), indent=2)" \
      "$work/report.json" "$here/results/causal_heat/$heat-$fill.json"
done; done
rm -r "$work"

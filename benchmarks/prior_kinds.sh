#!/usr/bin/env bash
# Does the LM prior hide a planted shortcut? Each demo run's balanced test split is
# explained twice, with the null prefixes that go through the translator (blank, mean,
# shuffled) and with the LM alone (--prior lm), and analysed by predicted class; the suspects of each class
# and the rank of its planted place land in benchmarks/results/prior_kinds.json.
#
#   texplain demo --out runs/demo-cnn
#   bash benchmarks/prior_kinds.sh runs/demo-cnn [MORE_DEMO_RUNS ...]     # about a minute a run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
results="$here/results/prior_kinds.json"
work=$(mktemp -d)
rows="$work/rows.jsonl"
for run in "$@"; do
  seed=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['settings']['seed'])" "$run/demo_settings.json")
  for prior in blank,mean,shuffled lm; do
    out="$work/$(basename "$run")-${prior//,/-}"
    texplain explain-dataset "$run/world/split/labels.jsonl" --split test -c "$run/classifier" --translator "$run/translator" \
        --lm "$run/lm" --samples 20 --seed "$seed" --prior "$prior" --out "$out/results" > "$out.log" 2>&1
    texplain analyse "$out/results" --by predicted --out "$out/report" >> "$out.log" 2>&1
    python - "$run" "$prior" "$out/report/analysis.json" >> "$rows" <<'PY'
import json, sys
from texplain.demo.splits import planted_background
from texplain.demo.captions import BACKGROUND_WORDS
run, prior, analysis = sys.argv[1:]
settings = json.load(open(f"{run}/demo_settings.json"))["settings"]
classes = json.load(open(analysis))["classes"]
suspects = {name: [s["word"] for s in c["suspects"]] for name, c in classes.items()}
planted = {name: BACKGROUND_WORDS[planted_background(name)] for name in suspects}
print(json.dumps({"run": run, "classifier": settings["classifier"], "pretrain_epochs": settings["pretrain_epochs"],
                  "seed": settings["seed"], "balanced": settings["balanced"], "prior": prior, "suspects": suspects,
                  "planted_rank": {n: suspects[n].index(w) + 1 if w in suspects[n] else None for n, w in planted.items()}}))
PY
  done
done
python -c "import json, sys; json.dump([json.loads(l) for l in open(sys.argv[1])], open(sys.argv[2], 'w'), indent=1)" "$rows" "$results"
rm -rf "$work"
echo "wrote $results"

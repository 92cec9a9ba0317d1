# The README's two commands: `make run` (the pipeline on the embedded default) and
# `make test`. Both create .venv and install the project first; nothing else is needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

PLOTS_TEMPLATE := build/plots-template.html
REV ?= main

.PHONY: install run test plots plots-diff chromium clean

# Exact versions from requirements.lock, so every machine trains with the same stack.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	pip install --quiet --upgrade pip
	pip install --quiet --constraint requirements.lock --editable '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

test: install $(PLOTS_TEMPLATE) chromium
	pytest

# Offline HTML plots (vega inlined, no CDN): build/plots/index.html and build/plots-diff/index.html.
plots: install $(PLOTS_TEMPLATE)
	dvc plots show --html-template $(PLOTS_TEMPLATE) --out build/plots
	@echo "open build/plots/index.html"

plots-diff: install $(PLOTS_TEMPLATE)
	mkdir -p build
	dvc plots diff $(REV) --html-template $(PLOTS_TEMPLATE) --out build/plots-diff
	@echo "open build/plots-diff/index.html"

$(PLOTS_TEMPLATE): vega/package-lock.json scripts/build_plots_template.py
	cd vega && npm ci --no-audit --no-fund --loglevel=error
	python scripts/build_plots_template.py vega/node_modules $@

# The test of the offline plots renders them in headless Chromium (Debian package).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

# Removes the environment and every pipeline output (they are rebuilt by `make run`).
clean:
	rm -rf $(VENV) build vega/node_modules data/raw data/split data/features models

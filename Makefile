# The README's two commands: `make run` (the pipeline on the embedded default) and
# `make test`. Both create .venv and install the project first; nothing else is needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run test clean

# Exact versions from requirements.lock, so every machine trains with the same stack.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	pip install --quiet --upgrade pip
	pip install --quiet --constraint requirements.lock --editable '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	dvc repro

test: install
	pytest

# Removes the environment and every pipeline output (they are rebuilt by `make run`).
clean:
	rm -rf $(VENV) data/raw data/split data/features models

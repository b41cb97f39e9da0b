# Set-up and entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv, install torch (see TORCH_SPEC), the package and its test
# extra, then run. Re-runs reuse the environment until pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# On a machine with an NVIDIA GPU we let pip pick the default (CUDA) build;
# elsewhere we pin 2.13.0, which this project's CI machines hold locally as a
# CPU wheel. Override with `make TORCH_SPEC='torch==X' ...`.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: setup demo test bench lint docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/pyro-relax demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check pyro_relax tests benchmarks examples

# The documentation site (mkdocs.yml): run every tutorial at its --quick size (each
# must finish within a minute; figures go to docs/tutorials/figures), then a strict
# build into site/ (any warning, broken cross-reference or bad docstring fails).
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -c "import mkdocs, mkdocstrings, material" 2>/dev/null || $(BIN)/pip install -q -e ".[test,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python docs/tutorials/_run_all.py --quick --limit 60
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

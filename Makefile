# colora_jax — every target creates .venv (repo root) and installs what it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: install test demo bench figures proofs smoke clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: a small recovery experiment, a printed result and figures/demo_recovery.png.
demo: $(STAMP)
	$(BIN)/python -m colora_jax.demo

## The test suite (pytest + hypothesis), two workers.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

bench: $(STAMP)
	$(BIN)/colora bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

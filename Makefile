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

## Every claim of proofs_numerics/ checked (sweeps resume from results/): one table of PASS/FAIL,
## measured figures and figure paths. `make proofs SMOKE=1`: the seconds-long smoke configurations.
proofs: $(STAMP)
	$(BIN)/python -m proofs_numerics.run_all $(if $(SMOKE),--smoke,)

## Regenerate every figure in figures/ (PNG + JSON) from scratch: every sweep cell recomputed.
figures: $(STAMP)
	$(BIN)/python -m proofs_numerics.run_all --fresh

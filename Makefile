# colora_jax — every target creates .venv (repo root) and installs what it needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PYTHONUNBUFFERED := 1
# XLA:CPU logs two spurious error lines for every program loaded from the compile cache
# (README, Known issues); keep them off the terminal unless the caller asked for logs.
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: install test demo bench figures proofs smoke clean lint format

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: a small recovery experiment, a printed result and figures/demo_recovery.png.
demo: $(STAMP)
	$(BIN)/python -m colora_jax.demo

## The test suite (pytest + hypothesis), two workers, each file on one of them, longest first
## (tests/conftest.py: LONGEST_FIRST).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q tests

bench: $(STAMP)
	$(BIN)/colora bench

## ruff: lint (docstrings and privacy on the library too) and the formatting check over the whole
## tree, as configured in pyproject.toml; `make format` applies what it can.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

## Every claim of proofs_numerics/ checked (sweeps resume from results/): one table of PASS/FAIL,
## measured figures and figure paths. `make proofs SMOKE=1`: the seconds-long smoke configurations.
proofs: $(STAMP)
	$(BIN)/python -m proofs_numerics.run_all $(if $(SMOKE),--smoke,)

## Regenerate every figure in figures/ (PNG + JSON) from scratch: every sweep cell recomputed.
figures: $(STAMP)
	$(BIN)/python -m proofs_numerics.run_all --fresh

## PEFT interop: the round trip both ways with the real torch + peft, in their own environment
## (interop/.venv-interop: torch's CPU build and peft, about 1.2 GB; not part of `make test`).
## Prints the differences and writes figures/nnx_interop.json; then transformers checkpoints of each
## family through cn.from_pretrained and its adapters back into PEFT (figures/nnx_pretrained.json).
.PHONY: interop
INTEROP := interop/.venv-interop
$(INTEROP)/.installed: interop/requirements.txt
	$(PY) -m venv $(INTEROP)
	$(INTEROP)/bin/python -m pip install -q -r interop/requirements.txt
	touch $@

interop: $(STAMP) $(INTEROP)/.installed
	$(BIN)/python interop/roundtrip.py --torch-python $(INTEROP)/bin/python
	$(BIN)/python interop/pretrained_check.py --torch-python $(INTEROP)/bin/python

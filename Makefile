# Two entry points for a fresh machine (see README):
#   make demo   - the main job end to end
#   make test   - lint + the whole test suite
# Both create .venv and install everything they need on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build from the local wheel here; GPU users: see README ("GPU installs").
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast lint demo clean-demo gpu-check

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q --durations=15 tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

demo: install
	$(BIN)/python -m matris.train.demo --out demo_out

# On a machine with a CUDA GPU (and a CUDA build of torch, see README "GPU installs"):
# the CUDA-path tests, then the 10M preset's phase costs on the GPU in fp32 and bf16
# (benchmarks/results/pipeline_phase_costs_<date>-gpu-*.{md,json,costs.json}).
gpu-check: install
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: no CUDA device visible to torch')"
	$(BIN)/python -m pytest -q tests/gpu
	$(BIN)/python benchmarks/pipeline_phase_costs.py --device cuda --dtype fp32 --repeats 5 --tag gpu-fp32
	$(BIN)/python benchmarks/pipeline_phase_costs.py --device cuda --dtype bf16 --repeats 5 --tag gpu-bf16

# Two entry points that do all set-up on a fresh machine:
#   make demo   train the default CartPole preset (the method: tGELU, no target network)
#   make test   run the test suite
# Both create .venv if it is missing and install the CPU build of PyTorch before the package, so
# pip never resolves `torch` to a multi-gigabyte CUDA build.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dqn_stable-installed

.PHONY: demo test lint bench-tgelu clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dqn_stable.train --config configs/cartpole.yaml

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

bench-tgelu: $(STAMP)
	$(PY) scripts/bench_tgelu.py

clean:
	rm -rf $(VENV) build *.egg-info

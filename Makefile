# Two commands on a fresh machine: `make demo` and `make test`.
PY     ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all gpu-check lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# On a CUDA machine: the cuda tests, a 300-iteration AMP demo, the kernel and balancing
# benchmarks, one report (runs/gpu-check/report.json). Elsewhere: one line, exit 0.
gpu-check: $(STAMP)
	$(BIN)/python tools/gpu_check.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf runs data/shapes .pytest_cache

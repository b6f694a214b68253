# Set-up and everyday commands. `make demo` and `make test` each install what they need first.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: install  ## train a VAE on the bundled digits; figures land in runs/demo
	$(BIN)/vaelab train --out runs/demo --force

test: install  ## the whole test suite, slow tests included (as CI runs it)
	$(BIN)/python -m pytest

test-fast: install  ## everyday work: the suite without the tests marked slow
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

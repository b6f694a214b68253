# Set-up and everyday commands. `make demo` and `make test` each install what they need first.
# The commands land in $(VENV)/bin: `source .venv/bin/activate` puts `vaelab` on your PATH.
PYTHON ?= python3
VENV ?= .venv
# PyTorch's CPU build (about 750 MB installed) comes from PyTorch's own wheel index, since a bare
# `torch` from PyPI is, on Linux, the CUDA build with its NVIDIA libraries (several GB). Where
# that index cannot be reached, pip gives up on it within seconds (--timeout 5 --retries 0) and
# the install falls back to plain PyPI. TORCH_INDEX= (empty) goes to PyPI straight away: the
# CUDA build on a Linux GPU machine.
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
# The explorer page's browser runtime (onnxruntime-web, pinned in web/package-lock.json), copied
# from the npm registry's package into the page's static files: served by vaelab, never a CDN.
VENDOR := src/vaelab/explorer/static/vendor/onnxruntime-web
ORT_DIST := web/node_modules/onnxruntime-web/dist
ORT_FILES := ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm
PIP_INSTALL := $(BIN)/python -m pip install --quiet

.PHONY: install web demo test test-fast lint clean

install: $(VENV)/.installed web

web: $(VENDOR)/.vendored  ## the explorer's in-browser decoder runtime (needs npm)

$(VENDOR)/.vendored: web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error \
	  && mkdir -p $(VENDOR) \
	  && cp $(addprefix $(ORT_DIST)/,$(ORT_FILES)) web/node_modules/onnxruntime-web/package.json $(VENDOR)/ \
	  && touch $@; \
	else \
	  echo "npm not found: the explorer will decode on the server (install Node.js and run make web)" >&2; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifneq ($(strip $(TORCH_INDEX)),)
	$(PIP_INSTALL) --timeout 5 --retries 0 --index-url "$(TORCH_INDEX)" "$(TORCH)" \
	  || { echo "could not install $(TORCH) from $(TORCH_INDEX); trying PyPI" >&2; \
	       $(PIP_INSTALL) "$(TORCH)"; }
else
	$(PIP_INSTALL) "$(TORCH)"
endif
	$(PIP_INSTALL) -e ".[dev]"
	touch $@
	@echo "installed into $(VENV); run 'source $(BIN)/activate' to put vaelab on your PATH"

demo: install  ## train a VAE on the bundled digits; figures land in runs/demo
	$(BIN)/vaelab train --out runs/demo --force

test: install  ## the whole test suite, slow tests included (as CI runs it)
	$(BIN)/python -m pytest

test-fast: install  ## everyday work: the suite without the tests marked slow
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	for f in src/vaelab/explorer/static/*.js; do node --check $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

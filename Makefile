# gon-lightning: `make help` lists the targets. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo test test-fast test-kernels lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch and torchvision as a matched pair (torchvision wheels only import beside their own torch build)
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install gon-lightning with its test tools

demo: $(STAMP)  ## train the GON on the embedded MNIST digits (offline, a few minutes on 2 CPU cores)
	$(BIN)/gon-lightning fit --config configs/quickstart.yaml

test: $(STAMP)  ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## run the tests without the slow ones
	$(BIN)/python -m pytest -q -m "not slow"

# The kernels torch picks (and so float32 summation order) depend on the CPU: AVX-512 here, AVX2 on a Zen 3.
KERNELS_AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-kernels: $(STAMP)  ## rerun the equality tests with an AVX2-only CPU's kernels (what CI also runs)
	$(KERNELS_AVX2) $(BIN)/python -m pytest -q -m equality

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:  ## remove the virtual environment and caches (runs/ and data/ stay)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

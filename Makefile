# gon-lightning: `make help` lists the targets. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_PRIOR_STEPS ?= 2000
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

DEMO_RUNS := runs/demo
demo: $(STAMP)  ## train the GON on the embedded MNIST digits, then a learned prior over its latents (offline, a few minutes on 2 CPU cores)
	$(BIN)/gon-lightning fit --config configs/quickstart.yaml --runs_root $(DEMO_RUNS)
	gon=$$(ls -td $(DEMO_RUNS)/gon-mnist5k-* | head -1) && \
	$(BIN)/gon-lightning fit --config configs/prior.yaml --data.ckpt_path $$gon/checkpoints/last.ckpt \
		--runs_root $(DEMO_RUNS) --trainer.max_steps $(DEMO_PRIOR_STEPS) && \
	prior=$$(ls -td $(DEMO_RUNS)/flowmatchingprior-latent-* | head -1) && \
	$(BIN)/gon-lightning predict --ckpt_path $$prior/checkpoints/last.ckpt --predictions.num_samples 64 && \
	echo "samples from the learned prior (diffusion) over the GON's latents: $$prior/predictions/samples.png" && \
	echo "(the GON's own Gaussian samples, for comparison: $$gon/images/)"

# pytest-xdist: a process per core; a test file stays in one process, so its module fixtures are built once
PYTEST := $(BIN)/python -m pytest -q -n auto --dist loadfile
test: $(STAMP)  ## run the whole test suite (what CI runs), a process per core
	$(PYTEST)

test-fast: $(STAMP)  ## run the tests without the slow ones
	$(PYTEST) -m "not slow"

# The kernels torch picks (and so float32 summation order) depend on the CPU: AVX-512 here, AVX2 on a Zen 3.
KERNELS_AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-kernels: $(STAMP)  ## rerun the equality tests with an AVX2-only CPU's kernels (what CI also runs)
	$(KERNELS_AVX2) $(PYTEST) -m equality

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:  ## remove the virtual environment and caches (runs/ and data/ stay)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

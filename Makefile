# gan-cli: `make train` and `make test` work on a fresh clone (they create .venv when missing).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make train` trains PRESET plus ARGS. PRESET is the MNIST recipe that draws clean digits of every class
# on a 2-core CPU within 10 minutes (conf/experiment/mnist_quick.yaml); `make train PRESET=` runs gan-train's
# bare defaults (the textbook unconditional DCGAN the presets are compared with).
PRESET ?= experiment=mnist_quick
ARGS ?=          # extra overrides for `make train`, e.g. make train ARGS="trainer.time_limit_minutes=3"
PYTEST_ARGS ?=
TORCH_INDEX ?=   # e.g. https://download.pytorch.org/whl/cpu: CPU-only torch wheels instead of the CUDA ones

.PHONY: install train bench test test-fast lint tensorboard clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(strip $(TORCH_INDEX)),$(BIN)/python -m pip install torch torchvision --index-url $(strip $(TORCH_INDEX)))
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

# Ctrl-C stops a run cleanly (checkpoint, grid, metrics.json) and exits 130: not a make error. The
# trap keeps the recipe's shell waiting for gan-train to finish its checkpoint instead of dying first.
train: install
	@echo "gan-train $(strip $(PRESET) $(ARGS))"; trap : INT; $(BIN)/gan-train $(PRESET) $(ARGS) || [ $$? -eq 130 ]

bench: install
	$(BIN)/gan-bench $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install   # without the end-to-end tests marked slow (sweeps, resume, torchrun)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check gan_cli tests
	$(BIN)/mypy gan_cli

tensorboard: install
	$(BIN)/tensorboard --logdir outputs

clean:
	rm -rf outputs/2* outputs/multirun .pytest_cache .ruff_cache dist build

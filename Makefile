# mlbridge: the two commands of the README.
#   make demo   install what is missing, build, run the main job
#   make test   install what is missing, build, run the tests
# Each step is skipped when already done, so the second call is quick.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := gfortran libopenmpi-dev openmpi-bin libnetcdff-dev liboasis3-dev netcdf-bin
TORCH_VERSION := 2.13.0
export MPI4PY_MPIABI := openmpi

.PHONY: all setup apt venv build demo test lint clean

all: test

setup: apt venv build

# System packages: installed only when one is missing.
apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: missing system packages; as root run: apt-get install $(APT_PACKAGES)" >&2; exit 1; \
	  fi; \
	  echo "== installing system packages: $(APT_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

venv: $(VENV)/.installed

# torch first, pinned: a bare torch requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
	  || $(BIN)/python -m pip install -q --disable-pip-version-check torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

build: apt venv
	$(BIN)/mlbridge build

demo: setup
	$(BIN)/python -m bridge.demo

test: setup
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check bridge models tests examples
	$(BIN)/ruff format --check bridge models tests examples

clean:
	rm -rf build runs

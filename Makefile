# mlbridge: the two commands of the README.
#   make demo   install what is missing, build, run the main job
#   make test   install what is missing, build, run the tests
# Each step is skipped when already done, so the second call is quick.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := gfortran g++ libopenmpi-dev openmpi-bin libnetcdff-dev liboasis3-dev netcdf-bin pkg-config \
  slurmd slurmctld slurm-client munge
TORCH_VERSION := 2.13.0
export MPI4PY_MPIABI := openmpi

.PHONY: all setup apt venv build demo test lint clean truth data train evaluate data-h train-h calibrate

all: test

setup: apt venv build

# System packages: installed only when one is missing.
apt:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: missing system packages; as root run: apt-get install --no-install-recommends $(APT_PACKAGES)" >&2; exit 1; \
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
	$(BIN)/python -m mlbridge_models.demo

test: setup
	$(BIN)/python -m pytest -q tests

# Long jobs of the trained closures (docs/closures.md), each resumable; not part of `make test`.
#   make data       fine truth years 1..7 (about 2.5 min a year on 2 cores) + the dataset of 5..7
#                   (the inviscid forcing: the closure learns the eddy fluxes, not the viscosity)
#   make train      the CNN (no biases, input noise) and the Zanna & Bolton fit
#                   -> models/artifacts/subgrid_cnn
#   make data-h     the same truth years, the dataset of 5..7 with the affine residual subtracted
#                   too (--inviscid --subtract-affine) in data/subgrid_h/year_NNN (about 40 s a
#                   year beside the truth: six more tendency runs a chunk)
#   make train-h    the CNN of u, v, h returning su, sv, sh -> models/artifacts/subgrid_cnn_h
#                   (subgrid-cnn-h@1, examples/13_subgrid_cnn_h; about as long as make train)
#   make calibrate  the backscatter's amplitudes by ensemble Kalman inversion: 6 members x 3
#                   iterations of 2 coupled years from a 6-year spin-up, against the truth's
#                   years 5-7 (not the evaluation's) -> runs/calib_bs/eki/eki.json
#   make evaluate   the truth to year 12, then 5 members of baseline, ZB, CNN and the energy-budget
#                   backscatter, 20 years each, scored over their years 11-20 against the truth's
#                   years 8-12 (Ross et al. 2023 scores per layer, bootstrap intervals, noise floor)
TRAIN_YEARS := 5 6 7
TRUTH_YEARS := 12
EVAL_TRUTH := 8-12
EVAL_ARGS := --members 5 --years 20 --eval-years 11-20
ARTIFACTS := models/artifacts/subgrid_cnn
ARTIFACTS_H := models/artifacts/subgrid_cnn_h
TRAIN_DIRS = $(foreach y,$(TRAIN_YEARS),$(1)/$(shell printf 'year_%03d' $(y)))

truth: setup
	$(BIN)/python -m mlbridge_models.subgrid.truth --config examples/02_fine/coupling.toml --out runs/truth \
	  --years $(TRUTH_YEARS) --write-days 5

# $(1): the datasets' folder, $(2): make_data's options of the forcing
define make_datasets
	$(BIN)/python -m mlbridge_models.subgrid.truth --config examples/02_fine/coupling.toml --out runs/truth \
	  --years $(lastword $(TRAIN_YEARS)) --write-days 5
	@for y in $(TRAIN_YEARS); do \
	  d=$$(printf 'year_%03d' $$y); \
	  $(BIN)/python -c "import json,sys; print(json.load(open('runs/truth/'+sys.argv[1]+'.json'))['grid'])" $$d \
	    | xargs -I{} $(BIN)/python -m mlbridge_models.subgrid.make_data runs/truth/{} \
	      --fine-cfg runs/truth/$$d/namelist_cfg --coarse-cfg examples/01_coarse/namelist_cfg \
	      --out $(1)/$$d --chunk 37 $(2) || exit 1; \
	done
endef

data: setup
	$(call make_datasets,data/subgrid,--inviscid)

data-h: setup
	$(call make_datasets,data/subgrid_h,--inviscid --subtract-affine)

train: data
	$(BIN)/python -m mlbridge_models.subgrid.train $(call TRAIN_DIRS,data/subgrid) \
	  --out $(ARTIFACTS) --epochs 40 --input-noise 0.1

train-h: data-h
	$(BIN)/python -m mlbridge_models.subgrid.train $(call TRAIN_DIRS,data/subgrid_h) \
	  --inputs u v h --outputs su sv sh --out $(ARTIFACTS_H) --epochs 40 --input-noise 0.1
calibrate: truth
	$(BIN)/python -m mlbridge_models.subgrid.calibrate_eki --example examples/10_backscatter \
	  --manifest backscatter.toml --param nu_cap=0.3:10 --param c_back=0.1:4 --fixed smooth_passes=3 \
	  --spin runs/calib_bs/spin --spin-config examples/01_coarse/coupling.toml --seed-year 6 \
	  --years 2 --truth runs/truth --truth-years 5-7 --ensemble 6 --iterations 3 \
	  --baseline examples/01_coarse/coupling.toml --out runs/calib_bs/eki

evaluate: truth
	$(BIN)/mlbridge register --manifest $(ARTIFACTS)/manifest.toml --home examples/07_subgrid_cnn/registry --force
	$(BIN)/mlbridge register --manifest $(ARTIFACTS)/zanna_bolton.toml --home examples/06_subgrid_zb/registry
	$(BIN)/mlbridge register --manifest examples/10_backscatter/backscatter.toml --home examples/10_backscatter/registry
	$(BIN)/mlbridge register --manifest examples/12_zb_backscatter/zb_filtered.toml --home examples/12_zb_backscatter/registry
	$(BIN)/mlbridge evaluate --truth runs/truth --truth-years $(EVAL_TRUTH) \
	  --experiments examples/09_evaluate/eval.toml --out runs/eval $(EVAL_ARGS)

lint: venv
	$(BIN)/ruff check bridge models tests examples
	$(BIN)/ruff format --check bridge models tests examples

clean:
	rm -rf build runs

# Two commands for a fresh machine: `make run` (the default WarmFed job) and `make test`.
# `make run RAY_ADDRESS=host:port` runs the simulation on that existing Ray cluster (README: Simulating on a Ray cluster).
# Both create or reuse .venv and set Flower's environment (project-local FLWR_HOME, no telemetry,
# no update check, no runtime dependency installation).

PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
PRESET ?=
RUN_CONFIG ?=
RAY_ADDRESS ?=
BENCH_CSV ?= benchmarks/digits-domains.csv
BENCH_ARGS ?=

export FLWR_HOME ?= $(CURDIR)/.flwr
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup run test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else \"Python >= 3.11 is needed (flwr 1.42)\")"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m warmfed_flwr.launch $(if $(PRESET),--preset $(PRESET)) $(if $(RUN_CONFIG),--run-config '$(RUN_CONFIG)') \
		$(if $(RAY_ADDRESS),--ray-address $(RAY_ADDRESS))

test: setup
	$(PY) -m pytest -q

# The comparison matrix (see README, Benchmarks); e.g. make bench PRESET=conf/digits-scarce.toml
# BENCH_CSV=benchmarks/digits-domains-scarce.csv BENCH_ARGS='--seeds 0'
bench: setup
	$(PY) -m warmfed_flwr.benchmark $(if $(PRESET),--preset $(PRESET)) --csv $(BENCH_CSV) $(BENCH_ARGS)

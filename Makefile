# Two commands for a fresh machine: `make run` (the default WarmFed job) and `make test`.
# `make run RAY_ADDRESS=host:port` runs the simulation on that existing Ray cluster (docs/ray-cluster.md).
# Both create or reuse .venv with the pinned versions of constraints.txt (`make lock` refreshes it) and set
# Flower's environment (project-local FLWR_HOME, no telemetry, no update check, no runtime dependency installation).

PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
CONSTRAINTS := $(CURDIR)/constraints.txt
LOCK_VENV := $(CURDIR)/.lock-venv
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

.PHONY: setup run test bench lock

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else \"Python >= 3.11 is needed (flwr 1.42)\")"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m warmfed_flwr.launch $(if $(PRESET),--preset $(PRESET)) $(if $(RUN_CONFIG),--run-config '$(RUN_CONFIG)') \
		$(if $(RAY_ADDRESS),--ray-address $(RAY_ADDRESS))

test: setup
	$(PY) -m pytest -q

# The comparison matrix (BENCHMARKS.md, Running the benchmarks); e.g. make bench PRESET=conf/digits-scarce.toml
# BENCH_CSV=benchmarks/digits-domains-scarce.csv BENCH_ARGS='--seeds 0'
bench: setup
	$(PY) -m warmfed_flwr.benchmark $(if $(PRESET),--preset $(PRESET)) --csv $(BENCH_CSV) $(BENCH_ARGS)

# Refresh constraints.txt: the newest versions pyproject.toml allows, resolved in a fresh environment and pinned.
# Re-run the benchmark matrices with them before committing the new file (BENCHMARKS.md: Same numbers on every machine).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[test]'
	sed -n '/^#/p' $(CONSTRAINTS) > $(CONSTRAINTS).new
	$(LOCK_VENV)/bin/python -m pip freeze --exclude-editable >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)

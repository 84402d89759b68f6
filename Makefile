# The two commands of the README: `make demo` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ENV    := set -a && . ./.testbed/env && set +a
# -n 3 on 2 cores: most tests wait on containers, registries and sockets (a clean-clone run: 804 s at -n 3,
# 944 s at -n 2); --dist loadscope --no-loadscope-reorder hands whole modules (their fixtures made once) to
# whichever worker is free, the modules of the tests marked slow first (tests/conftest.py), so the long ones
# spread over the workers and the end is short ones (--dist load gave its first quarter, all the slow tests, to
# one worker); --durations: the slowest tests in every CI log, where the 15-minute budget goes
PYTEST_ARGS ?= -n 3 --dist loadscope --no-loadscope-reorder --durations=25

.PHONY: setup testbed test unit lint demo bench reliability down clean cli-docs

# The virtualenv with the package, said how long it took (a shell line, so that `setup` can run it too).
# uv (from PyPI, into the virtualenv) installs: pip took 173 s for these extras on a quiet 2-core machine, the
# longest step of `make setup`; uv downloads side by side and compiles on every core. Modules are compiled at
# install: this machine sets PYTHONDONTWRITEBYTECODE=1, so a module not compiled then is compiled again by
# every process that imports it (--no-compile saved 47 s of install and cost far more). uv compiles what it
# installs, not the editable project's own src/ (nor tests/): compileall does, or each of the test suite's
# hundreds of `modelship` and `pytest` processes compiles them again (0.15-0.2 s of CPU each).
VENV_INSTALL = venv_start=$$(date +%s.%N); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/pip install --quiet --disable-pip-version-check uv && \
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev,azure,s3,example]' && \
	$(BIN)/python -m compileall -q -j0 src tests >/dev/null && \
	touch $(STAMP) && \
	awk -v a=$$venv_start -v b=$$(date +%s.%N) 'BEGIN { printf "setup: virtualenv ready in %.1f s\n", b - a }'

$(STAMP): pyproject.toml
	@$(VENV_INSTALL)

# The virtualenv's pip install and the testbed (apt, npm, debootstrap, services) side by side: neither needs
# the other. Both run to their end; setup fails if either did.
setup:
	@start=$$(date +%s.%N); \
	scripts/testbed.sh up & testbed=$$!; \
	venv=0; [ $(STAMP) -nt pyproject.toml ] || { $(VENV_INSTALL); } || venv=$$?; \
	wait $$testbed; testbed=$$?; \
	awk -v a=$$start -v b=$$(date +%s.%N) 'BEGIN { printf "setup: done in %.1f s\n", b - a }'; \
	[ $$venv -eq 0 ] && [ $$testbed -eq 0 ]

testbed:
	scripts/testbed.sh up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/vulture src/ .vulture_allow.py

test: setup lint
	$(ENV) && $(BIN)/pytest $(PYTEST_ARGS)

# The tests that need no service (tests/unit): no testbed is started.
unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS) tests/unit

demo: setup
	$(ENV) && PATH="$(CURDIR)/$(BIN):$$PATH" scripts/demo.sh

bench: setup
	$(ENV) && for b in benchmarks/[!_]*.py; do $(BIN)/python $$b || exit 1; done
	$(ENV) && $(BIN)/python benchmarks/smoke.py --example

# tests/reliability (faults, hostile input, ...) with many seeded runs per cell (RUNS=N, default 30), then
# docs/reliability.md.
reliability: setup
	$(ENV) && $(BIN)/python scripts/reliability.py $(if $(RUNS),--runs $(RUNS))

# docs/cli.md from the CLI's parser (tests/unit/test_docs.py fails when it is out of date)
cli-docs: $(STAMP)
	$(BIN)/python scripts/cli_reference.py

down:
	scripts/testbed.sh down

clean: down
	rm -rf $(VENV) .testbed demo-out

# The two commands: `make run` and `make test`. Both install what is missing first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test install lock readme lint typecheck unit integration bench schemas clean fuzz \
	compose-test bench-perf

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==0.13.9

MEMBERS := -e libs/kernelbus-core -e libs/kernelbus-runtime -e services/api -e services/kernel-worker -e services/culler -e services/events -e libs/kernelbus-jupyter

# pyvenv.cfg, not bin/python: the latter is a symlink whose target's old mtime would make
# every run recreate the environment.
$(VENV)/pyvenv.cfg: | $(UV)
	$(UV) venv --quiet --python $(PYTHON) $(VENV)

# Pinned install: requirements.lock (names and versions only) is exported from the workspace
# lock with `make lock`; the services are installed editable on top.
install: $(VENV)/pyvenv.cfg
	$(UV) pip install --quiet --python $(VENV)/bin/python -r requirements.lock $(MEMBERS)

lock: $(UV)
	$(UV) lock --python $(PYTHON)
	$(UV) export --format requirements-txt --no-hashes --no-emit-workspace --all-groups \
		--no-header --quiet -o requirements.lock
	rm -f uv.lock

run: install
	$(VENV)/bin/kernelbus run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

test: lint typecheck
	bash scripts/pytest.sh

# The seeded fuzzers alone (also part of `make test`): REST, websocket frames, bus payloads.
fuzz: install
	bash scripts/pytest.sh tests/integration/test_fuzz_rest.py \
		tests/integration/test_fuzz_websocket.py tests/integration/test_fuzz_bus.py

# The compose stack for real (tests/e2e/test_compose.py; also part of `make test`): installs
# and starts a Docker engine if needed and builds the images offline (scripts/compose-env.sh).
# In the pytest process itself: `-s` shows its timings only there, not from an xdist worker.
compose-test: install
	KERNELBUS_TEST_WORKERS=0 bash scripts/pytest.sh tests/e2e/test_compose.py -s

bench: install
	$(VENV)/bin/python bench/roundtrip.py

# Issue 15's benchmark in one run: Kernelbus vs direct ZMQ vs Kernel Gateway 3.0.1 (installed
# by bench/kg_venv.sh into bench/.venv-kg, bench-only). JSON to bench/out/perf.json.
bench-perf: install
	bash bench/kg_venv.sh >/dev/null
	mkdir -p bench/out
	$(VENV)/bin/python bench/perf.py > bench/out/perf.json
	cat bench/out/perf.json

readme: install
	$(VENV)/bin/python -m kernelbus.settings_doc --update README.md

schemas: install
	$(VENV)/bin/python -m kernelbus.schemas --write

clean:
	rm -rf $(VENV) $(TOOLS) .kernelbus .pytest_cache .mypy_cache .ruff_cache

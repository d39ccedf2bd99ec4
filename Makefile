# The two commands of the quick start: `make up` runs the service, `make test` runs the tests.
# Both create the virtual environment in .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint install

$(BIN)/billing: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/billing

install: $(BIN)/billing

up: install
	$(BIN)/billing up

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy billing api tasks celeryconfig.py
	$(BIN)/lint-imports

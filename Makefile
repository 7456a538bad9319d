# The two commands the README opens with. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: lab test setup setup-test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e .

setup-test: $(BIN)/python
	bash scripts/setup-test-env
	$(BIN)/pip install -q -e '.[test]'

lab: setup
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port 8501

test: setup-test
	$(BIN)/python -m pytest

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
	@# The operator profiler's test runs torch on the CPU: install the local CPU wheel where the
	@# machine has one (its test skips without torch).
	@if ls /opt/wheels/torch-*cpu*.whl >/dev/null 2>&1; then $(BIN)/pip install -q --find-links /opt/wheels 'torch==2.13.0'; fi

lab: setup
	$(BIN)/streamlit run app.py --server.address 127.0.0.1 --server.port 8501

test: setup-test
	$(BIN)/python -m pytest

# Every target creates its own virtualenv and installs what it needs: nothing to set up by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/grantgate demo $(DEMO_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check proxy tests bench
	$(BIN)/ruff format --check proxy tests bench

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m bench.stream $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache

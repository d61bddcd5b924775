# One task runner. `make demo` and `make test` work on a fresh clone: they create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench bench-coldstart bench-scale bench-formats bench-throughput bench-timed bench-view bench-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/evalrun run experiments/capitals.yaml --sim

test: $(STAMP)
	$(BIN)/pytest -q -n auto

# The house rules (no import cycle, no SQL outside store/, complexity <= 20, modules <= 600
# lines) are tests in tests/test_structure.py; lint runs them too, they take about a second.
lint: $(STAMP)
	$(BIN)/ruff check evalrun tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider tests/test_structure.py

# Benchmarks (not tests): bench/README.md says what each measures and its targets.
# inspect_ai is benchmark-only: installed into the venv here, never in pyproject.
bench: bench-coldstart bench-scale bench-throughput

bench-tools: $(STAMP)
	$(BIN)/pip install --quiet inspect-ai || echo "inspect_ai did not install: the throughput bench skips it"

bench-coldstart: $(STAMP)
	$(BIN)/python bench/coldstart.py

bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py

# The timings the unit tests no longer assert (a loaded machine made them fail).
bench-timed: $(STAMP)
	$(BIN)/python bench/timed.py

bench-formats: $(STAMP)
	$(BIN)/python bench/formats.py

bench-throughput: $(STAMP) bench-tools
	$(BIN)/python bench/throughput.py

bench-view: $(STAMP)
	$(BIN)/python bench/view.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

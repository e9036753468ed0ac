# The two commands: `make demo` and `make test`. Each sets up .venv first when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck migrations-check pytest bench bench-workers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/digest --config examples/demo/feeds.yaml update
	@echo
	@echo "Open these:"
	@echo "  $(CURDIR)/public/index.html     (the site, in a browser)"
	@echo "  $(CURDIR)/public/index.gmi      (the capsule, in a Gemini client)"
	@echo "  $(CURDIR)/public/feed.xml       (the Atom feed, in a feed reader)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

migrations-check: $(STAMP)
	mkdir -p build && rm -f build/alembic-check.db
	$(BIN)/alembic -x url=sqlite:///build/alembic-check.db upgrade head
	$(BIN)/alembic -x url=sqlite:///build/alembic-check.db check

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck migrations-check pytest

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.poll

bench-workers: $(BENCH_STAMP)
	bash .ci/system-deps.sh
	$(BIN)/python -m bench.workers

clean:
	rm -rf build public .mypy_cache .pytest_cache .ruff_cache

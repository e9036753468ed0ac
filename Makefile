# The two commands: `make demo` and `make test`. Each sets up .venv first when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck migrations-check pytest bench bench-workers bench-history clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/digest --config examples/demo/feeds.yaml poll
	mkdir -p build
	$(BIN)/digest --config examples/demo/feeds.yaml draft > build/draft.txt
	$(BIN)/digest --config examples/demo/feeds.yaml build
	@echo
	@echo "Open these:"
	@echo "  $(CURDIR)/build/draft.txt       (the draft before it closed: items, handles, held back)"
	@echo "  $(CURDIR)/public/index.html     (the site, in a browser)"
	@echo "  $(CURDIR)/public/index.gmi      (the capsule, in a Gemini client)"
	@echo "  $(CURDIR)/public/feed.xml       (the Atom feed, in a feed reader)"
	@echo "  $(CURDIR)/public/feeds.opml     (the feeds it follows, for another reader)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

migrations-check: $(STAMP)
	mkdir -p build && rm -f build/alembic-check.db
	$(BIN)/alembic -x url=sqlite:///build/alembic-check.db upgrade head
	$(BIN)/alembic -x url=sqlite:///build/alembic-check.db check

# pytest-xdist: two workers per core and one more, as much of the suite's time is spent
# waiting (deadlines, leases, daemons' intervals and start-up), more so since the end-to-end
# tests run in their own process the commands that only set the scene (on 2 cores, issue 13:
# 3 workers 162 s, 4 workers 133 s, 5 workers 115 s); PYTEST_WORKERS=0 runs it in one process.
# Each idle worker takes the next test (one at a time), and conftest.py puts the long
# end-to-end tests first, so that no worker ends on one while the others sit idle. Each worker rewrites the
# test modules' asserts at start-up: 3 s a worker unless pytest may cache them in
# __pycache__, hence PYTHONDONTWRITEBYTECODE emptied for pytest alone.
PYTEST_WORKERS ?= $(shell echo $$(( 2 * $$(nproc 2>/dev/null || echo 1) + 1 )))
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1
# The tests' temporary files (pytest's folders, SQLite databases, the PostgreSQL cluster) on
# tmpfs when it has a GB free: nothing there outlives the run, and each PostgreSQL test's
# CREATE DATABASE takes half the time. TEST_TMPDIR= keeps them where TMPDIR says.
TEST_TMPDIR ?= $(shell df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 && $$4 > 1048576 {print "/dev/shm"}')
PYTEST := PYTHONDONTWRITEBYTECODE= $(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR) )$(BIN)/pytest

pytest: $(STAMP)
	$(PYTEST) $(PYTEST_PARALLEL)

test: lint typecheck migrations-check pytest

# Every test but the end-to-end ones (marked slow: real daemons, pollers, servers and faults),
# each property with a fifth of its examples, for a quick check while working; `make test`,
# what CI runs, runs them all in full.
test-fast: $(STAMP)
	DIGEST_TEST_QUICK=1 $(PYTEST) $(PYTEST_PARALLEL) -m "not slow"

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.poll

bench-workers: $(BENCH_STAMP)
	bash .ci/system-deps.sh
	$(BIN)/python -m bench.workers

# Issue 15: 300 feeds over 365 simulated days (about 10 minutes); DAYS=60 for a quick look.
DAYS ?= 365
bench-history: $(BENCH_STAMP)
	$(BIN)/python -m bench.history --days $(DAYS)

clean:
	rm -rf build public .mypy_cache .pytest_cache .ruff_cache

# tfcam: the README's commands call these targets.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install demo test test-fast lint format bench clean

install: $(STAMP)

# A fresh virtual environment with tfcam (editable), its dev tools and the [hub] extra (keras-hub's
# Vision Transformers, tested in CI); redone when setup.cfg changes.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev,hub]"
	touch $(STAMP)

# Train the embedded default experiment (synthetic shapes, no network) and write its report.
demo: install
	$(BIN)/tfcam fit --experiment shapes

# The whole suite, slow tests included (they read ../shared/data, or $$TFCAM_SHARED_DATA), in
# TEST_WORKERS processes (pytest-xdist; each test file stays in one worker).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=30

test-fast: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	@for f in bench/bench_*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

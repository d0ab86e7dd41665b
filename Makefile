# The README's two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint fuzz clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*/*.cpp csrc/*/*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster,serve]'
	$(BIN)/python -m pip install --quiet --no-deps nvidia-pytriton==0.7.0  # its tritonserver only (docs/serving.md)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/spgim demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy spgim train export runtime streaming cluster serving gstreamer

test: $(STAMP) lint
	$(BIN)/python -m pytest

# The suite without the tests marked slow (AOTInductor compiles, training runs, real servers and outages, Ray
# clusters, the demo, wheel builds): minutes, not tens.
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -m "not slow"

# Coverage-guided fuzzing of media files, checkpoints and export folders for FUZZ_SECONDS (findings: .fuzz/crashes).
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[fuzz]'
	$(BIN)/python tests/fuzz/make_seeds.py .fuzz/corpus
	mkdir -p .fuzz/crashes
	$(BIN)/python tests/fuzz/fuzz_inputs.py .fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 \
		-artifact_prefix=.fuzz/crashes/

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .fuzz

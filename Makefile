# Every target sets itself up: it creates .venv and installs the package (with this machine's torch pin from
# constraints.txt) when they are missing or older than pyproject.toml / constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
GLUE_DIR ?= $(if $(wildcard ../shared/data/glue),$(abspath ../shared/data/glue),)

.PHONY: install test test-fast demo bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# Tiny random configs only (no real weights, no GLUE files), under 90 s: for the edit-test loop. CI runs `test`.
test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

demo: $(VENV)/.installed
	GLUE_DIR=$(GLUE_DIR) $(PY) examples/demo.py

bench: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) benchmarks/inference_speed.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/train_cost.py

clean:
	rm -rf $(VENV) .pytest_cache

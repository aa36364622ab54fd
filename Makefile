# --no-compile: pip would byte-compile every file of every package (Ray alone has thousands); Python compiles the
# modules a run imports, once, into __pycache__.
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
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Two workers (pytest-xdist), each test file on one worker so that module fixtures (exports, DDP runs) are built once:
# most of the suite is single-threaded Python (tracing, exporting, tiny models), which one core runs at a time.
test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist loadfile

# Tiny random configs only (no real weights, no GLUE files), under 90 s: for the edit-test loop. CI runs `test`.
# Two workers as well: on one, the 476 fast tests took 93 s; on two, 59 s.
test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 -m "not slow"

demo: $(VENV)/.installed
	GLUE_DIR=$(GLUE_DIR) $(PY) examples/demo.py

bench: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) benchmarks/inference_speed.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/train_cost.py

clean:
	rm -rf $(VENV) .pytest_cache

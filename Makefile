# The two commands: `make test` and (once the demo issue lands) `make demo`.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: test lint format bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch/torchvision are pinned to the releases pip takes from local disk here.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q "torch<=2.14.1" "torchvision<=0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check zfwidgets tests benchmarks
	$(VENV)/bin/ruff format --check zfwidgets tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format zfwidgets tests benchmarks
	$(VENV)/bin/ruff check --fix zfwidgets tests benchmarks

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

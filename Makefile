# The two commands: `make test` and (once the demo issue lands) `make demo`.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
NPM ?= npm
# npm ci / npm install leave this file in node_modules; it stamps the JS toolchain install.
NODE_STAMP := node_modules/.package-lock.json
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: test lint format bench install clean build-js js-test chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch/torchvision are pinned to the releases pip takes from local disk here.
# `pip install -e .` also builds the front end (hatch-jupyter-builder: npm install + esbuild).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q "torch<=2.14.1" "torchvision<=0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The JS toolchain (esbuild, vitest, biome) from package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund
	touch $(NODE_STAMP)

# js/ -> zfwidgets/static/ (git-ignored); esbuild takes well under a second, so always rebuild.
build-js: $(NODE_STAMP)
	$(NPM) run build

js-test: $(NODE_STAMP)
	$(NPM) test

# Debian's Chromium for the browser tests (never `playwright install`).
chromium:
	@test -x $(CHROMIUM) || { \
		echo "installing chromium with apt-get"; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-dejavu-core; }

lint: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check zfwidgets tests benchmarks
	$(VENV)/bin/ruff format --check zfwidgets tests benchmarks
	$(NPM) run lint

format: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff format zfwidgets tests benchmarks
	$(VENV)/bin/ruff check --fix zfwidgets tests benchmarks
	$(NPM) run format

test: lint js-test build-js chromium
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache node_modules zfwidgets/static tests/artifacts

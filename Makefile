# The two commands: `make demo` (serves the Explorer) and `make test`; `make slides` serves the
# teaching deck. All create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
NPM ?= npm
# npm ci / npm install leave this file in node_modules; it stamps the JS toolchain install.
NODE_STAMP := node_modules/.package-lock.json
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: docs test lint format bench install clean build-js js-test chromium demo slides reveal wheel-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The development environment pins the torch/torchvision it is tested with (the releases pip
# takes from local disk here); the package itself only sets lower bounds (pyproject.toml).
# `pip install -e .` also builds the front end (hatch-jupyter-builder: npm install + esbuild).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || $(PY) -m pip install -q "torch<=2.14.1" "torchvision<=0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The documentation site into build/docs/ (git-ignored): mkdocs-material + mkdocstrings, strict
# (a warning fails), then scripts/docs/hooks.py checks that every public name has a reference
# entry, that internal links resolve and that nothing loads from another host. The gallery's
# figures are cached in build/docs-cache/ (rerun when the package or a script changes).
# Open build/docs/index.html from disk, or serve the folder.
$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --config-file mkdocs.yml

# The JS toolchain (esbuild, vitest, biome) from package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund
	touch $(NODE_STAMP)

# js/ -> zfwidgets/static/ (git-ignored); esbuild takes well under a second, so always rebuild.
build-js: $(NODE_STAMP)
	$(NPM) run build

js-test: $(NODE_STAMP)
	$(NPM) test

# reveal.js for the offline slides, from notebooks/package-lock.json into notebooks/node_modules
# (Voila serves its CSS from there: scripts/serve.py slides).
REVEAL_STAMP := notebooks/node_modules/.package-lock.json
$(REVEAL_STAMP): notebooks/package.json notebooks/package-lock.json
	$(NPM) ci --prefix notebooks --no-audit --no-fund
	touch $(REVEAL_STAMP)

reveal: $(REVEAL_STAMP)

# Voila on 127.0.0.1 (8866 / 8867; `make demo PORT=9000`); the command lines live in
# scripts/serve.py, which the browser tests run too. Ctrl-C stops.
demo: $(STAMP) build-js
	$(PY) scripts/serve.py demo $(if $(PORT),--port=$(PORT))

slides: $(STAMP) build-js $(REVEAL_STAMP)
	$(PY) scripts/serve.py slides $(if $(PORT),--port=$(PORT))

# Debian's Chromium for the browser tests (never `playwright install`).
chromium:
	@test -x $(CHROMIUM) || { \
		echo "installing chromium with apt-get"; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-dejavu-core; }

lint: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff check zfwidgets tests benchmarks scripts site-src
	$(VENV)/bin/ruff format --check zfwidgets tests benchmarks scripts site-src
	$(NPM) run lint

format: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/ruff format zfwidgets tests benchmarks scripts site-src
	$(VENV)/bin/ruff check --fix zfwidgets tests benchmarks scripts site-src
	$(NPM) run format

test: lint js-test build-js chromium reveal
	$(PY) -m pytest -q

# The wheel as a user gets it: built from a copy of the sources (npm + esbuild run in the
# build), installed with its declared dependencies alone into a new venv (not $(VENV)), and
# used there: `zfwidgets --help`, Explorer() on the bundled model, `zfwidgets mine` and `site`.
wheel-check:
	$(PYTHON) scripts/check_wheel.py

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache node_modules notebooks/node_modules zfwidgets/static tests/artifacts

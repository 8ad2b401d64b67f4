# RS-CLIP Search: set-up, tests, packaging and benchmarks.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-qgis qgis-providers qgis python3-pytestqt python3-gdal python3-venv xvfb xauth zip mmdebstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup apt venv test test-fast lint format requirements run package bundle bench bench-concepts bench-change bench-million bench-archive screenshot clean

setup: apt venv

apt:
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "Debian packages already installed."; \
	else \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

test: venv
	rm -rf .qgis-settings
	$(PY) -m pytest -q tests

# QGIS 3.40 LTR (Debian 13, Python 3.13, NumPy 2) in a cached Debian root; see tools/qgis340/run.sh.
.PHONY: test-qgis340
test-qgis340:
	$(SUDO) bash tools/qgis340/run.sh

# The edit loop: everything but the tests marked slow (QGIS launches, real pip runs, kill loops).
test-fast: venv
	rm -rf .qgis-settings
	$(PY) -m pytest -q -m "not slow" tests

# ruff (rules in pyproject.toml) over the tree, mypy over the engine; CI runs this too.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format .

# requirements.txt is written from the pins in engine/deps/pins.py.
requirements: venv
	$(PY) tools/requirements.py

# The QGIS desktop with the plugin from this working tree, in the dev profile .qgis-dev/ (git-ignored),
# with a demo project of the rasters in ../shared/data. QGIS_ARGS go to qgis (e.g. --code script.py).
QGIS_ARGS ?=
run: venv
	$(PY) tools/devrun.py $(if $(QGIS_ARGS),-- $(QGIS_ARGS))

package:
	$(PY) tools/package.py --out dist

# An offline bundle for QGIS's Python (Debian: /usr/bin/python3): wheels + model weights + SHA-256 manifest.
BUNDLE_OUT ?= dist/rsclip-bundle
BUNDLE_PYTHON ?= /usr/bin/python3
BUNDLE_VARIANT ?= auto
BUNDLE_MODELS ?=
BUNDLE_ZIP ?=
bundle: venv
	$(PY) -m engine deps bundle --python $(BUNDLE_PYTHON) --variant $(BUNDLE_VARIANT) --out $(BUNDLE_OUT) \
		$(foreach m,$(BUNDLE_MODELS),--model $(m)) $(if $(BUNDLE_ZIP),--zip)

bench: venv $(VENV)/.bench-installed
	$(PY) bench/run.py

$(VENV)/.bench-installed: bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

# Only the find-every-X row of the benchmark (1,000,000 planted tiles; also part of `make bench`).
bench-concepts: venv
	$(PY) bench/concepts.py

# Only the change-between-dates and heat-map rows of the benchmark (also part of `make bench`).
bench-change: venv
	$(PY) bench/change.py

# Only the "million tiles" table (also part of `make bench`); RSCLIP_BENCH_TILES=262144 for a smaller run,
# RSCLIP_BENCH_BASELINE_TILES=0 to skip today's code.
bench-million: venv $(VENV)/.bench-installed
	$(PY) bench/million.py

# Only the Dask row of the benchmark: --dask local:2 against one process (also part of `make bench`).
.PHONY: bench-dask
bench-dask: venv
	$(PY) bench/cluster.py

# Archive-size indexes: 10,000,000 planted 512-d tiles through the indexing path (hours on 2 cores; needs
# about 25 GB of free disk under bench/work). Not part of `make bench`. Results in bench/archive.md.
bench-archive: venv
	$(PY) bench/archive.py

screenshot: venv
	$(PY) tools/screenshot.py --out docs/screenshot.png
	$(PY) tools/screenshot.py --scene concepts --out docs/concepts.png
	$(PY) tools/screenshot.py --scene change --query ponds --out docs/change.png
	$(PY) tools/screenshot.py --scene scales --query "wetland and fields" --out docs/scales.png
	$(PY) tools/screenshot.py --scene heatmap --query ponds --out docs/heatmap.png

clean:
	rm -rf dist build .pytest_cache

# RS-CLIP Search: set-up, tests, packaging and benchmarks.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3-qgis qgis-providers qgis python3-pytestqt python3-gdal python3-venv xvfb xauth zip mmdebstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup apt venv test run package bundle bench screenshot clean

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

run: venv
	QT_QPA_PLATFORM= QGIS_PLUGINPATH=$(CURDIR)/build/plugins $(MAKE) package-dev && qgis --nologo --noversioncheck

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

bench: venv
	$(PY) bench/run.py

screenshot: venv
	$(PY) tools/screenshot.py --out docs/screenshot.png

clean:
	rm -rf dist build .pytest_cache

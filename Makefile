# archiveflow: `make archive URL=…` sets up and archives; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
URL    ?=
DEBS   := wget chromium

.PHONY: setup system-deps archive test lint bench clean abx-wheels pywb

# System packages the plugins and tests need (wget for the wget plugin, chromium for
# screenshots and the HTML index check). Installed only when missing; needs root or sudo.
system-deps:
	@missing=""; for d in $(DEBS); do command -v $$d >/dev/null 2>&1 || missing="$$missing $$d"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "missing system packages:$$missing; install them (apt-get install$$missing)"; exit 1; fi; \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# PostgreSQL for the shared-index tests (tests/distributed start their own server);
	@# its binaries are not on PATH, so it is found by its folder.
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "missing system package: postgresql; install it (apt-get install postgresql)"; exit 1; fi; \
	  echo "installing postgresql"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; \
	fi

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "archiveflow needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=25.1"
	$(BIN)/pip install -q -e . --group dev
	@touch $@

setup: system-deps $(BIN)/.installed

# pywb replays an exported WACZ in tests/browser/test_wacz_pywb.py. It pins redis<3, which
# Prefect cannot share a virtualenv with, so it gets one of its own, built once per version.
PYWB_VENV    := .venv-pywb
PYWB_VERSION := 2.10.0

$(PYWB_VENV)/.installed-$(PYWB_VERSION):
	rm -rf $(PYWB_VENV)
	$(PYTHON) -m venv $(PYWB_VENV)
	$(PYWB_VENV)/bin/pip install -q "pywb==$(PYWB_VERSION)"
	@touch $@

pywb: $(PYWB_VENV)/.installed-$(PYWB_VERSION)

archive: setup
	@test -n "$(URL)" || { echo "usage: make archive URL=https://example.com"; exit 2; }
	$(BIN)/archiveflow add "$(URL)"

# mypy cannot follow setuptools' editable-install mapping (archiveflow.flows -> flows/ ...),
# so it checks a tree of symlinks laid out as the installed package is.
MYPY_TREE := .mypy_tree/archiveflow

lint: setup
	$(BIN)/ruff check .
	@rm -rf .mypy_tree && mkdir -p $(MYPY_TREE) && \
	  for d in flows tasks store deployments; do ln -s ../../$$d $(MYPY_TREE)/$$d; done && \
	  for f in __init__.py __main__.py cli; do ln -s ../../archiveflow/$$f $(MYPY_TREE)/$$f; done
	MYPYPATH=.mypy_tree $(BIN)/mypy

# ArchiveBox's abx-plugins (the version pinned in tasks/abx.py) as wheels, for tests/abx's
# offline `archiveflow plugins install abx --wheels`; downloaded once (a stamp file says so).
# Needs a Python >= 3.12 (found by archiveflow: ABX_PYTHON, python3.N on PATH, or pyenv).
ABX_WHEELS := .cache/abx-wheels
abx-wheels: setup
	$(BIN)/archiveflow plugins download abx $(ABX_WHEELS)

# The fault-injection suite (tests/reliability) runs in a session of its own: it counts
# every process left under its data folders, and a session shared with the rest of the
# suite has been seen to leave processes there (cause not found yet; see the issue notes).
test: setup lint abx-wheels pywb
	$(BIN)/pytest --ignore=tests/reliability
	$(BIN)/pytest tests/reliability

bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(PYWB_VENV) .pytest_cache .ruff_cache .mypy_cache .mypy_tree

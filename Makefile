# gcnet — the two set-up commands: `make demo` and `make test`.
# VENV may point outside the clone (CI keeps a cached one under ~/.cache); default: ./.venv
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/python -m pip
# The install stamp changes when the dependency set or the checkout location changes.
STAMP := $(VENV)/.gcnet-installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)-$(shell printf '%s' "$(CURDIR)" | cksum | cut -d' ' -f1)

.PHONY: install test demo demo-seg demo-det demo-video lint bench docs clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel

$(STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.gcnet-installed-*
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(VENV)/bin/gcnet demo

demo-seg: $(STAMP)
	$(VENV)/bin/gcnet demo --task segmentation

demo-det: $(STAMP)
	$(VENV)/bin/gcnet demo --task detection

demo-video: $(STAMP)
	$(VENV)/bin/gcnet demo --task video

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# The docs site: the [docs] extra into the same VENV, the generated reference pages
# (docs/reference/generated/, from the code), then a strict build (any warning fails) into site/.
DOCS_STAMP := $(VENV)/.gcnet-docs-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)-$(shell printf '%s' "$(CURDIR)" | cksum | cut -d' ' -f1)

$(DOCS_STAMP): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -q -c constraints.txt -e '.[docs]'
	rm -f $(VENV)/.gcnet-docs-*
	touch $@

docs: $(DOCS_STAMP)
	# mkdocs runs docs/gen_reference.py first (the hook in mkdocs.yml): the generated reference pages
	OMP_NUM_THREADS=1 NO_MKDOCS_2_WARNING=1 $(VENV)/bin/python -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_blocks.py

clean:
	rm -rf build dist site src/*.egg-info .pytest_cache .ruff_cache

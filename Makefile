# Two entry points: `make run` (install + segment an image) and `make test` (install + the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DATA ?= ../shared/data
IMAGE ?= $(DATA)/demo/dog.jpg
CLASSES ?= -c dog -c frisbee
OUT ?= out

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: install
	$(VENV)/bin/textseg segment $(IMAGE) $(CLASSES) --out $(OUT)

test: install
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check textseg tests benchmarks examples
	$(VENV)/bin/ruff format --check textseg tests benchmarks examples

bench: install
	$(PY) benchmarks/bench_sam_core.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

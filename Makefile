# Two entry points: `make run` (install + segment an image) and `make test` (install + the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DATA ?= ../shared/data
IMAGE ?= $(DATA)/demo/dog.jpg
CLASSES ?= -c dog -c frisbee
OUT ?= out
CHROMIUM ?= /usr/bin/chromium

SV_FLOOR ?= 0.30.0
LS_VERSION ?= 1.23
LS_VENV := $(VENV)/label-studio

.PHONY: install browser clients run test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The app's browser tests drive Debian's Chromium (Playwright's own browser download cannot
# work offline). Installed when missing and apt is usable (root); otherwise those tests skip,
# unless TEXTSEG_REQUIRE_BROWSER=1 (set by CI) makes a missing browser a failure.
browser:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			>/dev/null) || echo "make: could not install chromium; browser tests will not run"; \
	fi

# supervision's lowest supported version, beside the venv's, for the real-client tests
# (tests/io/test_clients.py runs it in a subprocess); a real Label Studio server in its own
# venv, whose pins are not ours (tests/_labelstudio_server.py starts it once per session).
clients: install
	@test -d $(VENV)/supervision-$(SV_FLOOR)/supervision || $(PY) -m pip install --quiet \
		--no-deps --target $(VENV)/supervision-$(SV_FLOOR) supervision==$(SV_FLOOR)
	@# TrackEval reads tracks.json as TAO; its metadata pins a newer numpy than ours, which its
	@# code does not need: installed without dependencies.
	@$(PY) -c "import trackeval" 2>/dev/null || $(PY) -m pip install --quiet --no-deps trackeval==1.3.0
	@test -f $(LS_VENV)/.installed-$(LS_VERSION) || ( python3 -m venv $(LS_VENV) \
		&& $(LS_VENV)/bin/python -m pip install --quiet 'label-studio==$(LS_VERSION).*' \
		&& touch $(LS_VENV)/.installed-$(LS_VERSION) )

run: install
	$(VENV)/bin/textseg segment $(IMAGE) $(CLASSES) --out $(OUT)

# The suite less the tests marked slow (real-size parity beyond the representative ViT-B core
# one); `make test-all` runs every test. Two pytest-xdist workers, one per core, each test file
# on one worker (its module fixtures built once); OpenMP threads sleep instead of spinning, so a
# busy machine does not multiply the CPU time (docs/performance.md).
PYTEST := OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/pytest -q -n 2 --dist loadfile

test: install browser clients
	$(PYTEST) -m "not slow"

test-all: install browser clients
	$(PYTEST)

lint: install
	$(VENV)/bin/ruff check textseg tests benchmarks examples
	$(VENV)/bin/ruff format --check textseg tests benchmarks examples

bench: install
	$(PY) benchmarks/bench_sam_core.py
	$(PY) benchmarks/bench_encoders.py
	$(PY) benchmarks/bench_amg.py
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_detector_classes.py
	$(PY) benchmarks/bench_grounded.py
	$(PY) benchmarks/bench_everything_clip.py
	$(PY) benchmarks/bench_scaling.py
	$(PY) benchmarks/bench_app_latency.py
	$(PY) benchmarks/bench_specialist.py
	$(PY) benchmarks/bench_video.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

# Two commands on a fresh machine: `make run` serves the API, `make test` passes the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# The embedded store lives under ./data unless the operator says otherwise.
export QDRANT_PATH ?= $(CURDIR)/data/qdrant
# No telemetry from an air-gapped service.
export RAY_USAGE_STATS_ENABLED ?= 0
# Ray Serve's throughput settings (why, and what they bought: configs/ray.env).
include configs/ray.env

.PHONY: install install-gpu run test samples clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# onnxruntime-gpu and the CPU onnxruntime wheel (pulled in by insightface) install the
# same module: put the GPU wheel in last and alone, so it owns `onnxruntime`.
install-gpu: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[gpu]'
	$(BIN)/python -m pip uninstall --yes onnxruntime onnxruntime-gpu
	$(BIN)/python -m pip install --quiet 'onnxruntime-gpu[cuda,cudnn]>=1.21,<2'
	$(BIN)/python -c "import onnxruntime as o; print('onnxruntime providers:', o.get_available_providers())"

# A single-machine Ray binds its metrics agent to loopback only when it does not run as a
# cluster node (Ray's switch for that is named after Windows and macOS, where it is the
# default): no unauthenticated metrics port on the network. To scrape it from another host,
# see README "Monitoring".
run: $(STAMP)
	RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 $(BIN)/serve run serve_config.yaml

test: $(STAMP)
	$(BIN)/ruff check serve_app loadtests scripts tests deploy
	$(BIN)/mypy
	$(BIN)/python -m pytest

# frontal/left/right/probe/different-person JPEGs for the README's curl examples.
samples: $(STAMP)
	$(BIN)/python -m serve_app.samples test_images

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# Load tests and benchmark (README "Load tests and benchmark"); reports go to results/.
# Each starts its own app on a fresh store; override e.g.
#   make loadtest LOADTEST_USERS=20 LOADTEST_RUN_TIME=5m LOADTEST_ARGS="--p95-verify-ms 200"
LOADTEST_USERS      ?= 12
LOADTEST_SPAWN_RATE ?= 4
LOADTEST_RUN_TIME   ?= 90s
LOADTEST_ARGS       ?=
BENCH_ARGS          ?=
# The gallery benchmark's size (faces in the embedded store) and other options.
GALLERY_FACES       ?= 1000000
BENCH_GALLERY_ARGS  ?=

.PHONY: loadtest bench bench-gallery

loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run --users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_SPAWN_RATE) \
		--run-time $(LOADTEST_RUN_TIME) $(LOADTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

bench-gallery: $(STAMP)
	$(BIN)/python -m loadtests.bench_gallery --faces $(GALLERY_FACES) $(BENCH_GALLERY_ARGS)

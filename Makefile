# Every target bootstraps .venv from the locked requirements first (idempotent: the stamp
# file is rebuilt only when requirements/dev.txt or pyproject.toml change).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := data/demo
RUNS   := runs/local
SPEC   ?= specs/pipeline/cluster.yaml
BUILD  := build
# Typed run parameters overriding the specs, e.g. SET="num_epoch=5 input_height=256" (docs/pipeline.md).
SET    ?=
SET_ARGS := $(addprefix --set ,$(SET))
# Images: pushed as $(REGISTRY)/bpnet-{gpu,jetson}:$(TAG), the package version plus the commit, so a
# code change is a new tag (and a new KFP cache key: the image is part of it).
REGISTRY ?= registry.example.com/bpnet
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TAG      ?= $(VERSION)-$(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 60
# The demo's model key; real runs take theirs from the environment (never from a spec or a file).
export BPNET_MODEL_KEY ?= bpnet-demo-key

.PHONY: venv test test-all test-containers docs fuzz lint bench demo-data run run-containers lock image-cpu \
        image-gpu container-engine pipeline-compile pipeline-run pipeline-schedule pipeline-unschedule images clean

venv: $(STAMP)

$(STAMP): requirements/dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# pytest exits 5 when nothing is collected: a failure for the suite, accepted only when PYTEST_ARGS
# narrows the selection (-m/-k/a path) and happens to select nothing.
NO_TESTS_OK := $(if $(strip $(PYTEST_ARGS)),[ $$rc -eq 5 ] && rc=0;,)
test: $(STAMP)
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; $(NO_TESTS_OK) exit $$rc

test-all: $(STAMP)
	@$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS); rc=$$?; $(NO_TESTS_OK) exit $$rc

# The container tests (marked `containers`; not in make test): build bpnet-cpu:local and run the DAG
# with every step in its own container. Sets up podman first (Debian's packages; root or sudo).
test-containers: $(STAMP)
	@$(WITH_ENGINE) $(BIN)/python -m pytest -q -m containers $(PYTEST_ARGS)

# pyproject.toml's ranges -> requirements/*.txt (pinned, hashed; UPGRADE=1 moves the pins).
lock: $(STAMP)
	$(BIN)/python tools/lock.py $(if $(UPGRADE),--upgrade,)

# The references docs/cli.md (from argparse) and docs/run-spec.md (from the run spec's models) are
# generated (tests/test_docs.py checks they are current).
docs: $(STAMP)
	$(BIN)/python tools/cli_docs.py
	$(BIN)/python tools/run_spec_docs.py

# Every fuzz target (tests/fuzz/fuzz_*.py: fuzz_one(data) + main(seconds)) for FUZZ_SECONDS each;
# failing inputs are saved under build/fuzz-crashes (FUZZ_CRASH_DIR).
fuzz: $(STAMP)
	@rc=0; for f in tests/fuzz/fuzz_*.py; do m=$$(echo "$${f%.py}" | tr / .); echo "== $$m ($(FUZZ_SECONDS) s)"; \
	  $(BIN)/python -c "import sys, $$m as t; sys.exit(t.main($(FUZZ_SECONDS)))" || rc=1; done; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check bpnet components pipelines tests benchmarks tools

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# `make run SPEC=specs/pipeline/hand.yaml` runs another local run spec (default: local.yaml, people).
# A run spec named like a pose config in specs/skeletons/ (hand.yaml: hand_21joints.json) trains on
# figures of that skeleton, drawn into data/demo-<name> (docs/skeletons.md).
RUN_SPEC := $(if $(filter command line,$(origin SPEC)),$(SPEC),specs/pipeline/local.yaml)
RUN_NAME := $(basename $(notdir $(RUN_SPEC)))
SKELETON := $(firstword $(wildcard specs/skeletons/$(RUN_NAME)_*joints.json))
DEMO_DIR := $(if $(SKELETON),$(DEMO)-$(RUN_NAME),$(DEMO))

demo-data: $(STAMP)
	@test -f $(DEMO_DIR)/coco_spec.json || $(BIN)/bpnet synth -o $(DEMO_DIR) $(if $(SKELETON),--skeleton $(SKELETON))

# The whole DAG (dataset_convert -> train -> evaluate + inference) through kfp.local, then a summary.
run: demo-data
	$(BIN)/python -m pipelines local --spec $(RUN_SPEC) $(SET_ARGS)

# Kubeflow: compile to $(BUILD)/, submit a run, or (un)schedule the recurring run of run spec $(SPEC).
pipeline-compile: $(STAMP)
	$(BIN)/python -m pipelines compile --spec $(SPEC) --build_dir $(BUILD) $(SET_ARGS)

pipeline-run: $(STAMP)
	$(BIN)/python -m pipelines run --spec $(SPEC) --build_dir $(BUILD) $(SET_ARGS)

pipeline-schedule: $(STAMP)
	$(BIN)/python -m pipelines schedule --spec $(SPEC) --build_dir $(BUILD) $(SET_ARGS)

pipeline-unschedule: $(STAMP)
	$(BIN)/python -m pipelines unschedule --spec $(SPEC)

# Containers on this machine (docs/pipeline.md): podman from Debian's packages serving the Docker
# API on a socket (a machine with a Docker engine keeps its own), a debootstrapped base image unless
# BASE_IMAGE names one, and a wheelhouse made from the lock: the build itself needs no network.
# WITH_ENGINE prefixes a command with the DOCKER_HOST of the engine the script found or set up.
CONTAINER_SOCKET ?= /run/podman/podman.sock
WITH_ENGINE = engine=$$(BPNET_CONTAINER_SOCKET=$(CONTAINER_SOCKET) bash images/podman-setup.sh) || exit 1; export $$engine;
BASE_IMAGE ?=
container-engine:
	@BPNET_CONTAINER_SOCKET=$(CONTAINER_SOCKET) bash images/podman-setup.sh

image-cpu: $(STAMP)
	$(WITH_ENGINE) $(BIN)/python tools/image_build.py --flavour cpu $(if $(BASE_IMAGE),--base $(BASE_IMAGE),)

image-gpu: $(STAMP)
	$(WITH_ENGINE) $(BIN)/python tools/image_build.py --flavour gpu $(if $(BASE_IMAGE),--base $(BASE_IMAGE),)

# make run with every step in its own bpnet-cpu:local container, the data and the release on a local
# S3 server (moto on 127.0.0.1); the release is copied to runs/releases-containers/ at the end.
run-containers: demo-data image-cpu
	$(WITH_ENGINE) $(BIN)/python -m pipelines local --spec specs/pipeline/local.yaml --image bpnet-cpu:local $(SET_ARGS)

# For a registry: a Docker engine with buildx (and QEMU or an arm64 builder for the Jetson image).
# The wheelhouses come from the host first (tools/image_build.py), as for image-cpu.
images: $(STAMP)
	@command -v docker >/dev/null || { echo "error: make images needs docker with buildx"; exit 1; }
	$(BIN)/python tools/image_build.py --flavour gpu --wheelhouse_only
	docker buildx build --platform linux/amd64 -f images/x86_64/Dockerfile --build-arg FLAVOUR=gpu \
	  -t $(REGISTRY)/bpnet-gpu:$(TAG) --push .
	docker buildx build --platform linux/arm64 -f images/jetson/Dockerfile -t $(REGISTRY)/bpnet-jetson:$(TAG) --push .

clean:
	rm -rf $(RUNS) runs/pipeline $(BUILD) $(DEMO)

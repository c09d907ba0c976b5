# Every target bootstraps .venv from the pinned requirements first (idempotent: the stamp
# file is rebuilt only when requirements.txt or pyproject.toml change).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := data/demo
RUNS   := runs/local
PYTEST_ARGS ?=
# The demo's model key; real runs take theirs from the environment (never from a spec or a file).
export BPNET_MODEL_KEY ?= bpnet-demo-key

.PHONY: venv test test-all lint bench demo-data run clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

# pytest exits 5 when nothing is collected (e.g. a marker selects no test): not a failure.
test: $(STAMP)
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-all: $(STAMP)
	@$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check bpnet components pipelines tests benchmarks

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

demo-data: $(STAMP)
	@test -f $(DEMO)/coco_spec.json || $(BIN)/bpnet synth -o $(DEMO)

run: demo-data
	$(BIN)/bpnet dataset_convert -d $(DEMO)/coco_spec.json -o $(RUNS)/data/train -m train --generate_masks
	$(BIN)/bpnet dataset_convert -d $(DEMO)/coco_spec.json -o $(RUNS)/data/val -m test --generate_masks
	$(BIN)/bpnet train -e specs/demo/bpnet_train_demo.yaml -r $(RUNS)/train
	$(BIN)/bpnet evaluate -i specs/demo/infer_spec_demo.yaml -d $(DEMO)/coco_spec.json -r $(RUNS)/evaluate
	$(BIN)/bpnet inference -i specs/demo/infer_spec_demo.yaml --input_type dir --input $(DEMO)/val2017 \
	  -r $(RUNS)/inference --dump_visualizations
	@echo "demo dataset: $(DEMO); records: $(RUNS)/data; model: $(RUNS)/train/bpnet_model.tlt"
	@echo "metrics: $(RUNS)/evaluate/metrics.json; detections and drawings: $(RUNS)/inference"

clean:
	rm -rf $(RUNS) $(DEMO)

# ImageSearchTR: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Three workers on two cores: many tests wait (pip resolving against PyPI, the Hub client's retry
# back-off, apps starting), and a third worker fills those waits.
TEST_WORKERS ?= 3
# These build machines keep a CPU build of torch 2.13.0 on disk for pip; take it when it is there,
# because an unpinned torch from PyPI is a CUDA build of several GB. Anywhere else TORCH stays
# empty and pip resolves the normal torch for that machine. Override with `make install TORCH=...`.
TORCH ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),torch==2.13.0)

# Pipeline settings (README "The two ways in" explains each).
# Empty: encode's own default (an update's build model, else the default Hub model).
MODEL ?=
DATA ?=
NUM_SAMPLES ?= 1000
SEED ?= 14
BUILD ?= out/build
DEMO_DIR ?= out/demo-repo
SPACE_DIR ?= out/demo-space
HF_REPO ?=
SPACE_REPO ?= $(if $(HF_REPO),$(HF_REPO)-search)
PRIVATE ?=
HARDWARE ?= cpu-basic
DEVICE ?= auto
INDEX_TYPE ?= auto
ENCODE_FLAGS ?=
HOST ?= 127.0.0.1
PORT ?= 7860
# Without DATA, the sample is downloaded from the Hub first, into a folder of its own for each
# NUM_SAMPLES and SEED (a download adds to its folder: two samples in one would mix).
SAMPLE_DIR = out/data-$(NUM_SAMPLES)-$(SEED)
DATA_DIR = $(if $(DATA),$(DATA),$(SAMPLE_DIR))

.PHONY: help install installed test lint format data build demo demo-port publish publish-repo clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  variables: MODEL=<Hub id or folder> DATA=<folder> NUM_SAMPLES=$(NUM_SAMPLES) SEED=$(SEED)"
	@echo "             BUILD=$(BUILD) DEMO_DIR=$(DEMO_DIR) SPACE_DIR=$(SPACE_DIR) PORT=$(PORT)"
	@echo "             HF_REPO=<user/name> SPACE_REPO=<user/name> PRIVATE=1 DEVICE=$(DEVICE)"
	@echo "             HARDWARE=$(HARDWARE) (Space hardware for make publish) HOST=$(HOST)"
	@echo "             INDEX_TYPE=$(INDEX_TYPE) ENCODE_FLAGS=<encode flags> TORCH=$(TORCH)"
	@echo "             PYTHON=$(PYTHON) VENV=$(VENV) TEST_WORKERS=$(TEST_WORKERS)"
	@echo "  (a path with spaces: quote it, DATA=\"my photos\")"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY) ## create .venv and install the project with its test extra
	@if [ -n "$(TORCH)" ]; then $(PY) -m pip install "$(TORCH)"; fi
	$(PY) -m pip install -e ".[test]"

# The targets that run the project's code need `make install` first: say so, not "Error 127".
installed:
	@command -v "$(firstword $(PY))" >/dev/null || { echo "error: $(firstword $(PY)) is missing: run make install first (or VENV=<a virtualenv with the project>)"; exit 2; }

test: installed ## run the test suite on TEST_WORKERS worker processes
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

lint: installed ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: installed ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

data: installed ## download NUM_SAMPLES rows of the default Hub dataset into out/data-N-SEED (not with DATA=)
	@if [ -z "$(DATA)" ]; then \
	  $(PY) -m pipeline download --num-samples $(NUM_SAMPLES) --seed $(SEED) \
	    --output-dir "$(SAMPLE_DIR)"; \
	fi

build: data ## encode DATA with MODEL into BUILD and index it
	$(PY) -m pipeline encode --data "$(DATA_DIR)" $(if $(MODEL),--model "$(MODEL)") --out "$(BUILD)" \
	  --device $(DEVICE) $(ENCODE_FLAGS)
	$(PY) -m pipeline index --build "$(BUILD)" --index-type "$(INDEX_TYPE)"

# A second `make demo` (or any server) on PORT: gradio would quietly serve on the next free port
# instead, not where the demo card's usage example calls it; refuse before building. A HOST this
# check cannot try (an IPv6 address, a name that does not resolve) is left to gradio.
demo-port: installed
	@$(PY) -c 'import socket, sys; s = socket.socket(); s.settimeout(2); \
	  sys.exit(3 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 0)' \
	  "$(if $(filter 0.0.0.0,$(HOST)),127.0.0.1,$(HOST))" "$(PORT)" 2>/dev/null \
	  || { [ $$? != 3 ] || { echo "error: $(HOST):$(PORT) is in use (a make demo still running?): stop it, or serve on another port: make demo PORT=7861"; exit 2; }; }

demo: demo-port build ## publish the build to DEMO_DIR (a local Hub-like repo) and serve it on HOST:PORT
	$(PY) -m pipeline publish --build "$(BUILD)" --to "$(DEMO_DIR)" \
	  --space http://$(if $(filter 0.0.0.0,$(HOST)),127.0.0.1,$(HOST)):$(PORT)/
	$(PY) -m pipeline publish-space --to "$(SPACE_DIR)" --dataset-repo "$(DEMO_DIR)"
	DATASET_REPO="$$(cd "$(DEMO_DIR)" && pwd)" GRADIO_SERVER_NAME=$(HOST) GRADIO_SERVER_PORT=$(PORT) \
	  GRADIO_ANALYTICS_ENABLED=False $(PY) "$(SPACE_DIR)/app.py"

# Without HF_REPO, say so before the download and the encode, not after them.
publish-repo: installed
	@if [ -z "$(HF_REPO)" ]; then echo "usage: make publish HF_REPO=user/name"; exit 2; fi

publish: publish-repo build ## publish the dataset to HF_REPO, then the Space to SPACE_REPO pinned to it
	mkdir -p out
	$(PY) -m pipeline publish --build "$(BUILD)" --repo $(HF_REPO) --space $(SPACE_REPO) \
	  $(if $(PRIVATE),--private) \
	  | tee out/publish.log
	rev=$$(awk '/^revision:/ {print $$2}' out/publish.log); \
	$(PY) -m pipeline publish-space --space $(SPACE_REPO) --dataset-repo $(HF_REPO) \
	  --dataset-revision "$$rev" --hardware $(HARDWARE) $(if $(PRIVATE),--private)

clean: ## remove build outputs (keeps .venv)
	rm -rf out .pytest_cache

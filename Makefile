# ImageSearchTR: `make help` lists the targets.
SHELL := bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# These build machines keep a CPU build of torch 2.13.0 on disk for pip; take it when it is there,
# because an unpinned torch from PyPI is a CUDA build of several GB. Anywhere else TORCH stays
# empty and pip resolves the normal torch for that machine. Override with `make install TORCH=...`.
TORCH ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*.whl),torch==2.13.0)

# Pipeline settings (see README "Commands").
MODEL ?= utkubascakir/MultiEmbedTR
DATA ?=
NUM_SAMPLES ?= 1000
SEED ?= 14
BUILD ?= out/build
DEMO_DIR ?= out/demo-repo
HF_REPO ?=
PRIVATE ?=
DEVICE ?= auto

.PHONY: help install test lint format demo publish bench clean

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  variables: MODEL=$(MODEL) DATA=<folder> NUM_SAMPLES=$(NUM_SAMPLES) BUILD=$(BUILD)"
	@echo "             DEMO_DIR=$(DEMO_DIR) HF_REPO=<user/name> DEVICE=$(DEVICE)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY) ## create .venv and install the project with its test extra
	@if [ -n "$(TORCH)" ]; then $(PY) -m pip install "$(TORCH)"; fi
	$(PY) -m pip install -e ".[test]"

test: ## run the test suite
	$(PY) -m pytest

lint: ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove build outputs (keeps .venv)
	rm -rf out .pytest_cache

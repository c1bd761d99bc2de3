# enat-lightning. `make help` lists the targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
STAMP := .install.stamp

.PHONY: help setup demo test test-all smoke bench clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# torch first: 2.13.0 is the release the fixtures were made with; any torch>=2.4 works.
$(STAMP): pyproject.toml
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "torch==2.13.0" || $(PIP) install torch
	$(PIP) install -e ".[test,t2i]"
	@touch $(STAMP)

setup: $(STAMP)  ## install the package and its dependencies into the current Python

demo: $(STAMP)  ## tiny ENAT on the embedded demo data: build data, train, sample, evaluate (CPU, minutes)
	$(PYTHON) -m enat_lightning.demo

test: $(STAMP)  ## run the test suite (without slow tests)
	$(PYTHON) -m pytest -q

test-all: $(STAMP)  ## run every test, slow ones included
	$(PYTHON) -m pytest -q -m ""

smoke: $(STAMP)  ## one fast_dev_run of the demo config
	enat fit -c experiments/demo.yaml --trainer.fast_dev_run=true

bench: $(STAMP)  ## speed / memory benchmarks (print ratios)
	$(PYTHON) benchmarks/forward.py
	$(PYTHON) benchmarks/sample.py
	$(PYTHON) benchmarks/train_step.py

clean:  ## remove build stamps and demo outputs
	rm -rf $(STAMP) runs/demo

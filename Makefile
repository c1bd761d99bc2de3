# enat-lightning. `make help` lists the targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
STAMP := .install.stamp

.PHONY: help setup demo test test-all smoke bench clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# torch with a matching torchvision: torch-fidelity (the Inception-v3 behind torchmetrics' FID/IS)
# needs torchvision. Any torch>=2.4 with its torchvision works; override with TORCH_SPEC=...
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
$(STAMP): pyproject.toml
	$(PIP) install $(TORCH_SPEC)
	$(PIP) install -e ".[test,t2i,eval,app,tokenizer,diffusers]"
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

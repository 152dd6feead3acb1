# zoobench: `make bench` runs the default profile on the embedded sample set; `make test` runs the tests.
PYTHON  ?= python3
VENV    := .venv
ZB      := $(VENV)/bin/zoobench
PROFILE ?= sample
VARIANT ?= $(if $(GPUS),cuda,cpu)
DATA    ?=
GPUS    ?=

.PHONY: install docker images bench test test-unit benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml runners/contract/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e runners/contract -e '.[test]'
	touch $@

docker:
	bash images/ensure-docker.sh

images: install docker
	$(ZB) images build --variant $(VARIANT)

bench: install docker
	$(ZB) run --profile $(PROFILE) --variant $(VARIANT) $(if $(DATA),--data $(DATA)) $(if $(GPUS),--gpus $(GPUS))

# Docker tests need an engine; under CI=true they fail (never skip) when there is none.
test: install
	bash images/ensure-docker.sh || [ -z "$$CI" ]
	$(VENV)/bin/pytest -q -rs

test-unit: install
	$(VENV)/bin/pytest -q -m "not docker"

benchmark: install docker images
	$(VENV)/bin/python tests/benchmarks/bench_predict.py

clean:
	rm -rf $(VENV) .cache results

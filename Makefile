# zoobench: `make bench` runs the default profile on the embedded sample set; `make test` runs the tests.
PYTHON  ?= python3
VENV    := .venv
ZB      := $(VENV)/bin/zoobench
PROFILE ?= sample
VARIANT ?= $(if $(GPUS),cuda,cpu)  # or per image: VARIANT=cuda,mxnet=cpu (mxnet's models on the CPU)
DATA    ?=
GPUS    ?=

.PHONY: install docker images bench test test-unit benchmark benchmark-suite benchmark-slurm gpu-check lock clean

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
	$(VENV)/bin/python tests/benchmarks/bench_overhead.py

benchmark-suite: install docker images
	$(VENV)/bin/python tests/benchmarks/bench_suite.py

# GPU check (a script, not a test; docs/performance.md "GPU check"): the seed profile's PyTorch and Keras
# models on a synthetic 1,000-image folder at fp32, tf32 and bf16 on one GPU, printed as a Markdown table
# (img/s end to end and compute-only, peak GPU memory, top-1 agreement with fp32). Needs the cuda images
# (`make images GPUS=0`); without a GPU it says so in one line and exits 2. GPU_CHECK_ARGS passes options
# (--gpu 1, --model resnet18, --precision bf16, --no-docker: predict run directly, PyTorch only).
GPU_CHECK_ARGS ?=
gpu-check: install
	$(VENV)/bin/python tests/benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

benchmark-slurm: install docker images
	eval "$$(bash tests/slurm/cluster.sh up | grep '^export SLURM_CONF=')" && $(VENV)/bin/python tests/benchmarks/bench_slurm.py

# Re-resolve the image locks with uv: every package pinned, the sha256 of every file PyPI publishes,
# wheels only, for the CPythons each lock's images use (images/uv/<pythons>/pyproject.toml).
LOCKS := pytorch/requirements:cp311-cp312 keras/requirements-cpu:cp311-cp312 \
         keras/requirements-cuda:cp311-cp312 mxnet/requirements-cpu:cp311 mxnet/requirements-cuda:cp310-cp311 \
         keras-jax/requirements-cpu:cp311 keras-jax/requirements-cuda:cp311 keras-torch/requirements:cp311 \
         onnxruntime/requirements-cpu:cp311 onnxruntime/requirements-cuda:cp311 openvino/requirements:cp311
lock: install
	@set -e; for spec in $(LOCKS); do \
	  lock=$${spec%%:*}; pythons=$${spec##*:}; oldest=$$(echo $$pythons | sed -E 's/^cp3([0-9]+).*/3.\1/'); \
	  $(VENV)/bin/uv --project images/uv/$$pythons pip compile --quiet --universal --python-version $$oldest \
	    --only-binary :all: --generate-hashes images/$$lock.in -o images/$$lock.lock; \
	  echo "lock: images/$$lock.lock ($$pythons)"; \
	done

clean:
	rm -rf $(VENV) .cache results

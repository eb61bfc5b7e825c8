# Set-up and everyday commands. `make demo` and `make test` are the README's two commands; `make test-all` runs every test.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel on these machines; on a GPU host set TORCH_SPEC to the CUDA build you want.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= ray,dev
# TorchRec, for sharded embedding tables (model.embedding.sharding; docs/sharding.md): installed
# with --no-deps, since torchrec declares an unpinned fbgemm-gpu that would pull the CUDA build.
# On a GPU host set FBGEMM_SPEC=fbgemm-gpu==1.8.0 (the CUDA build of the same version).
FBGEMM_SPEC ?= fbgemm-gpu-cpu==1.8.0
SHARDING_SPEC ?= torchrec==1.8.0 tensordict==0.15.3 torchmetrics==1.0.3 lightning-utilities==0.15.3 \
	pyre-extensions==0.0.32 typing-inspect==0.9.0 mypy-extensions==1.2.0 pyvers==0.2.3

.PHONY: install demo test test-all test-rest bench clean

$(VENV)/.installed: pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps "$(FBGEMM_SPEC)" $(SHARDING_SPEC)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/adasparse demo

# the fast tier: every test that needs no Ray cluster, plus the representative Ray tests marked fast
test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not (ray or processes) or fast"

# the whole suite (tests/conftest.py says how tests are marked)
test-all: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# what the fast tier leaves out (make test, then make test-rest: the whole suite, each test once;
# .ci/run does this, with the slowest tests' durations listed)
test-rest: install
	$(PY) -m pytest -m "(ray or processes) and not fast" --durations=25

bench: install
	$(PY) benchmarks/step_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache

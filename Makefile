# Two commands matter: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEPS_STAMP := $(VENV)/.installed-deps
RDMA_STAMP := $(VENV)/.installed-rdma
# Strict editable install: a tree of links under build/ that mypy and pyright follow like any installed
# package. A link exists per file, so adding or removing a module (a folder's mtime) relinks.
SRC_DIRS := dualpath dualpath/serve models solver proofs runtime $(filter-out %__pycache__/,$(wildcard runtime/*/))

.PHONY: demo test test-rdma wheel-check lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77' wheel

# torch is pinned here (not in pyproject) so pip takes the local CPU wheel, not CUDA builds.
$(DEPS_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --config-settings editable_mode=strict -e '.[solver,proofs,runtime,plots,serve,dev]'
	touch $(DEPS_STAMP)

$(STAMP): $(DEPS_STAMP) $(SRC_DIRS)
	$(BIN)/pip install -q --no-deps --config-settings editable_mode=strict -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dualpath demo

test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	$(MAKE) --no-print-directory wheel-check

# Build the wheel, install it with no deps in a scratch venv, import every subpackage.
wheel-check: $(STAMP)
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m build -q --wheel --no-isolation --outdir build/wheel-check . >/dev/null
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/pip install -q --no-deps build/wheel-check/*.whl
	cd build/wheel-check && venv/bin/python -c "import dualpath, dualpath.models, dualpath.solver, dualpath.runtime, dualpath.proofs, dualpath.cli; import dualpath.runtime.sim.simulator, dualpath.runtime.engines, dualpath.runtime.transports, dualpath.runtime.scheduling, dualpath.proofs.example_files as e; assert e.examples_dir().is_dir(), 'proof examples missing'; import importlib.util as u; assert u.find_spec('models') is None, 'top-level models leaked'; print('wheel ok:', dualpath.__version__)"

# pyverbs is a source build of rdma-core: needs libnl and pkg-config from Debian and Cython < 3.2.
$(RDMA_STAMP): $(STAMP)
	@if ! pkg-config --exists libnl-3.0 libnl-route-3.0 2>/dev/null; then \
		if command -v apt-get >/dev/null; then \
			(apt-get update -qq && apt-get install -y -qq libnl-3-dev libnl-route-3-dev pkg-config) >/dev/null; \
		else echo "install libnl-3-dev libnl-route-3-dev pkg-config" && exit 1; fi; fi
	echo 'cython<3.2' > $(VENV)/rdma-constraints.txt
	PIP_CONSTRAINT=$(CURDIR)/$(VENV)/rdma-constraints.txt PIP_BUILD_CONSTRAINT=$(CURDIR)/$(VENV)/rdma-constraints.txt \
		$(BIN)/pip install -q --config-settings editable_mode=strict -e '.[rdma]'
	touch $(RDMA_STAMP)

test-rdma: $(RDMA_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m rdma tests

# ruff on every Python file (settings in pyproject.toml); mypy on the package, which reaches models/,
# solver/, runtime/ and proofs/ through dualpath/'s links; then tests and benchmarks, where most functions are
# unannotated, so mypy checks their imports and annotated helpers but not the bodies of test functions.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info

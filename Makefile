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

.PHONY: demo test test-rdma test-gpu wheel-check lint clean compiled

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77' wheel

# torch is pinned here (not in pyproject) so pip takes the local CPU wheel, not CUDA builds.
$(DEPS_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --config-settings editable_mode=strict -e '.[solver,proofs,runtime,plots,serve,nixl,dev]'
	touch $(DEPS_STAMP)

$(STAMP): $(DEPS_STAMP) $(SRC_DIRS)
	$(BIN)/pip install -q --no-deps --config-settings editable_mode=strict -e .
	touch $(STAMP)

# The simulator, the paper's scheduler and the core's step costs compiled with mypyc (dualpath/compiled.py: about
# twice as fast, the same results); without a C compiler tools/compile.py says so and they run as pure Python.
COMPILED := build/mypyc/.built
$(COMPILED): $(STAMP) $(wildcard runtime/sim/*.py solver/*.py) dualpath/step_costs.py dualpath/compiled.py tools/compile.py
	$(BIN)/python tools/compile.py
	@touch $@

compiled: $(COMPILED)

demo: $(STAMP) $(COMPILED)
	$(BIN)/dualpath demo

test: $(STAMP) $(COMPILED)
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not nixl" tests
	# nixl_cu12 and OR-Tools cannot share a process (tests/conftest.py): the nixl tests run on their own.
	$(BIN)/python -m pytest -q -p no:cacheprovider -m nixl tests
	$(MAKE) --no-print-directory wheel-check

# Build the wheel, install it with no deps in a scratch venv, import every subpackage.
wheel-check: $(STAMP)
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m build -q --wheel --no-isolation --outdir build/wheel-check . >/dev/null
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/pip install -q --no-deps build/wheel-check/*.whl
	cd build/wheel-check && venv/bin/python -c "import dualpath, dualpath.models, dualpath.solver, dualpath.runtime, dualpath.proofs, dualpath.cli; import dualpath.runtime.sim.simulator, dualpath.runtime.engines, dualpath.runtime.transports, dualpath.runtime.scheduling, dualpath.proofs.example_files as e; assert e.examples_dir().is_dir(), 'proof examples missing'; import importlib.util as u; assert u.find_spec('models') is None, 'top-level models leaked'; print('wheel ok:', dualpath.__version__)"

# `make test-rdma` (root, Debian: it apt-installs what is missing): the verbs transport on real soft-RoCE
# devices in a throwaway QEMU guest (tools/rdma_vm/). rdma-core 59 (libibverbs, the rxe provider and
# pyverbs; Debian 12 ships 44) is built from the pyverbs sdist on PyPI, which carries the whole rdma-core
# tree, into $(RDMA_PREFIX); pyverbs lands in the venv and finds that libibverbs through its RUNPATH.
PYVERBS_VERSION := 59.0
RDMA_PREFIX := $(VENV)/rdma-core
RDMA_BUILD := $(VENV)/rdma-core-build
RDMA_DEBS := qemu-system-x86 linux-image-amd64 busybox-static kmod cpio iproute2 cmake ninja-build gcc \
	pkg-config libnl-3-dev libnl-route-3-dev
RDMA_VM_TIMEOUT_S ?= 3000

# Order-only on $(STAMP): editing a module must not rebuild rdma-core.
$(RDMA_STAMP): | $(STAMP)
	@missing=$$(for p in $(RDMA_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		command -v apt-get >/dev/null || { echo "make test-rdma: install the Debian packages" $$missing; exit 1; }; \
		echo "apt-get install" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			-o DPkg::Lock::Timeout=600 $$missing >/dev/null || exit 1; fi
	$(BIN)/pip install -q 'cython>=3.0.12,<3.2'
	rm -rf $(RDMA_BUILD) $(RDMA_PREFIX) && mkdir -p $(RDMA_BUILD)
	$(BIN)/pip download -q --no-deps --no-binary :all: -d $(RDMA_BUILD) pyverbs==$(PYVERBS_VERSION)
	tar xzf $(RDMA_BUILD)/pyverbs-$(PYVERBS_VERSION).tar.gz -C $(RDMA_BUILD) --strip-components=1
	cmake -S $(RDMA_BUILD)/rdma-core -B $(RDMA_BUILD)/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DNO_MAN_PAGES=1 \
		-DNO_PYVERBS=0 -DPYTHON_EXECUTABLE=$(CURDIR)/$(BIN)/python -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(RDMA_PREFIX) \
		-DCMAKE_INSTALL_RPATH=$(CURDIR)/$(RDMA_PREFIX)/lib >/dev/null
	ninja -C $(RDMA_BUILD)/build install >/dev/null
	touch $(RDMA_STAMP)

# First what runs without a device, here; then everything marked rdma in the guest, on rxe0 and rxe1.
test-rdma: $(STAMP) $(RDMA_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m rdma tests
	sh tools/rdma_vm/run.sh tools/rdma_vm/test_job.sh $(RDMA_VM_TIMEOUT_S)

# GPU machines only: its own venv with a CUDA build of torch from PyPI (gigabytes), past any local
# wheel folder or pip config that pins the CPU build; then the `gpu` tests and a short batched run on the device.
GPU_VENV := .venv-gpu
test-gpu:
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/pip install -q --upgrade pip 'setuptools>=77' wheel
	env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(GPU_VENV)/bin/pip install -q --index-url https://pypi.org/simple torch==2.13.0
	$(GPU_VENV)/bin/pip install -q --config-settings editable_mode=strict -e '.[solver,runtime,dev]'
	@$(GPU_VENV)/bin/python -c "import sys, torch; sys.exit(None if torch.version.cuda and torch.cuda.is_available() else \
		f'make test-gpu: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device')"
	$(GPU_VENV)/bin/python -m pytest -q -p no:cacheprovider -m gpu -rs tests
	$(GPU_VENV)/bin/dualpath run --cluster examples/clusters/local-1p1d.toml --agents 8 --device cuda --verify

# ruff on every Python file (settings in pyproject.toml); mypy on the package, which reaches models/,
# solver/, runtime/ and proofs/ through dualpath/'s links; then tests and benchmarks, where most functions are
# unannotated, so mypy checks their imports and annotated helpers but not the bodies of test functions.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy tests benchmarks

clean:
	rm -rf $(VENV) $(GPU_VENV) build dist *.egg-info

#!/bin/sh
# The job `make test-rdma` runs in the guest (tools/rdma_vm/run.sh), from the read-only checkout:
# the RDMA tests (the verbs transport, the transport contract for verbs, the device tests and the
# verbs `dualpath run`) against rxe0/rxe1. The devices exist here, so a skip is a failure.
export PYTHONDONTWRITEBYTECODE=1  # the checkout is read-only in the guest
results=/tmp/results
start=$(date +%s)
# faulthandler_timeout: a test stuck for 15 minutes prints every thread's stack (a hang says where).
.venv/bin/python -m pytest -q -p no:cacheprovider -m rdma -rs --durations=10 --color=no -o faulthandler_timeout=900 \
	--junitxml="$results/junit.xml" tests/runtime/transports
rc=$?
.venv/bin/python tools/rdma_vm/no_skips.py "$results/junit.xml" || rc=1
echo "== RDMA tests in the guest: exit $rc after $(($(date +%s) - start)) s"
exit $rc

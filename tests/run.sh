#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: install what the tests need (apt and pip),
# run everything (the mini-cluster comes up inside pytest and goes down after), report.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    bash tests/cluster/install.sh  # Slurm, munge, sshd, Chromium, the cluster-side Jupyter env
else
    echo "run.sh: not root: the mini-cluster tests will be skipped (CI=true makes them fail)" >&2
fi

# The laptop side lives in its own venv, like a user's pipx install.
venv="${HPCJUP_TEST_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "run.sh: pytest collected no tests; that is a failure" >&2
    status=1
fi
exit "$status"

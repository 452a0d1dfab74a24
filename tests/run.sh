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
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,docs]'

# The habits the tools keep: formatted, linted, typed. A failure here fails the run.
echo "run.sh: ruff format --check, ruff check, mypy" >&2
"$venv/bin/ruff" format --check --quiet .
"$venv/bin/ruff" check --quiet .
"$venv/bin/mypy"

# The documentation site: --strict turns every broken link, anchor or README include into a failure.
echo "run.sh: mkdocs build --strict" >&2
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 "$venv/bin/mkdocs" build --strict --site-dir "$site"
rm -rf "$site"

pytest() {
    local rc=0
    "$venv/bin/python" -m pytest "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "run.sh: pytest collected no tests; that is a failure" >&2
        rc=1
    fi
    return "$rc"
}

status=0
pytest "$@" || status=$?
if [ "$#" -eq 0 ] && [ "$status" -eq 0 ]; then
    # The first pass takes the `auto` SSH backend (OpenSSH here); every CLI test (start, attach,
    # stop, sessions, failures, Dask, socket mode) runs once more on paramiko.
    echo "run.sh: the CLI tests again with HPCJUP_SSH=paramiko" >&2
    HPCJUP_SSH=paramiko pytest tests/cli || status=$?
fi
exit "$status"

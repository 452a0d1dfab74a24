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

# The habits the tools keep: formatted, linted, typed, layered (no import cycle, nothing imports upward:
# the contracts are [tool.importlinter] in pyproject.toml). A failure here fails the run.
echo "run.sh: ruff format --check, ruff check, mypy, lint-imports" >&2
"$venv/bin/ruff" format --check --quiet .
"$venv/bin/ruff" check --quiet .
"$venv/bin/mypy"
"$venv/bin/lint-imports" --no-cache --no-logo

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
if [ "$#" -gt 0 ]; then
    # Arguments given (`bash tests/run.sh -k tunnel -x`): one plain pass with them, as before.
    pytest "$@" || status=$?
    exit "$status"
fi

# Coverage of every tier goes into one data file (artifacts/.coverage); the last tier prints the
# summary. The CLI's subprocesses are measured only with HPCJUP_COVERAGE_SUBPROCESS=1 (see
# [tool.coverage.run] in pyproject.toml). Each tier lists its 25 slowest tests.
mkdir -p artifacts  # ignored by git
export COVERAGE_FILE="$PWD/artifacts/.coverage"
rm -f "$COVERAGE_FILE" "$COVERAGE_FILE".*
if [ "${HPCJUP_COVERAGE_SUBPROCESS:-0}" = 1 ]; then
    export COVERAGE_PROCESS_START="$PWD/pyproject.toml"  # the CLI's subprocesses too (slower; see pyproject)
fi
common=(--durations=25 --cov=hpcjup --cov-append --cov-report=)

# 1. The unit tier: everything that does not reach the mini-cluster, on both cores, at a lower priority and
#    AT THE SAME TIME as the cluster tier (2.), which spends most of its time waiting for Slurm, Jupyter and
#    walltimes. tests/conftest.py marks `cluster` whatever reaches the cluster, and stops a test in this tier
#    that reaches it unmarked, so the two never share a job, a login or a session. Its report follows 2.'s.
echo "run.sh: unit tier (-m 'not cluster', pytest-xdist -n 2, nice) beside the cluster tier; its output after" >&2
unit_log="$PWD/artifacts/unit-tier.log"
unit_coverage="$PWD/artifacts/unit/.coverage"  # its own directory: the cluster tier combines every .coverage.* beside its own
rm -rf "$(dirname "$unit_coverage")" && mkdir -p "$(dirname "$unit_coverage")"
(
    renice -n 10 -p "$BASHPID" >/dev/null  # the cluster tier's waits are timed by their deadlines: it goes first
    HPCJUP_UNIT_TIER=1 COVERAGE_FILE="$unit_coverage" pytest -m "not cluster" -n 2 "${common[@]}"
) >"$unit_log" 2>&1 &
unit_pid=$!

# 2. The cluster tier: the real Slurm, Grid Engine, sshd and browser, one test at a time (the tests
#    share one cluster and count its jobs, logins and sessions). The `auto` SSH backend: OpenSSH here.
echo "run.sh: cluster tier (-m cluster)" >&2
pytest -m cluster "${common[@]}" || status=$?
unit_status=0
wait "$unit_pid" || unit_status=$?
echo "run.sh: the unit tier's report (exit $unit_status):" >&2
cat "$unit_log"
[ "$unit_status" -eq 0 ] || status=$unit_status
"$venv/bin/coverage" combine --append --quiet "$unit_coverage" || true  # coverage is reported, not required

# 3. The CLI tests whose outcome depends on the SSH backend (marked `transport`; the list and the rule
#    are in tests/cli/conftest.py) once more, on paramiko. tests/transport covers both backends itself.
echo "run.sh: the CLI's transport tests again with HPCJUP_SSH=paramiko (-m transport)" >&2
HPCJUP_SSH=paramiko pytest tests/cli -m transport "${common[@]}" --cov-report=term:skip-covered || status=$?
exit "$status"

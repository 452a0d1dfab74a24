"""Fixtures for the CLI's end-to-end tests, and the rule for which of them run on both SSH backends.

tests/run.sh runs every test once on the default backend (OpenSSH where `ssh` exists), then again
with HPCJUP_SSH=paramiko only the tests marked `transport`: those whose outcome depends on the
backend. Every module here says which it is, in its `pytestmark`:

- `transport`: start, attach and stop through a tunnel (test_start_stop, test_sessions), the
  tunnel holder and reconnects (test_holder), socket mode's hop to the node (test_socket_mode), how
  SSH failures are reported (test_start_failures: host keys, refused keys, unreachable hosts), the
  browser through the tunnel (test_browser); and single tests that count logins or remote commands
  (test_isolation's round trips, test_doctor's one authentication).
- `one_backend`: everything else: `--local` sessions (no SSH: test_before_the_url, test_prune),
  usage errors, dry runs, doctor's verdicts, schedulers (Slurm, Grid Engine, PBS and LSF
  stand-ins), Dask, worker jobs, ls and stats, completions; and tests that choose their backends
  themselves (test_reach; the tests parametrized over `backend`).

A new module takes `transport` if anything in it goes through a tunnel, a login or a remote command
whose count or error text could differ between backends, else `one_backend`. A module that says
neither is treated as `transport` (the safe side: it runs on both, as every CLI test once did) and
collection warns about it. The transport layer's own tests (tests/transport) take the backend as
a parameter and need no second pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import Foreground, run

HOST = ["--host", "minicluster"]
HERE = Path(__file__).parent
LEGS = ("transport", "one_backend")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A CLI test that says neither `transport` nor `one_backend` becomes `transport`, with a warning per module."""
    warned: set[Path] = set()
    for item in items:
        if item.path.parent != HERE or any(item.get_closest_marker(leg) for leg in LEGS):
            continue
        item.add_marker(pytest.mark.transport)
        if item.path not in warned and item.parent is not None:
            warned.add(item.path)
            item.parent.warn(
                pytest.PytestWarning(
                    f"{item.path.name} declares neither pytest.mark.transport nor pytest.mark.one_backend in its "
                    "pytestmark; it runs on both SSH backends (see tests/cli/conftest.py)"
                )
            )


@pytest.fixture(scope="module")  # per module: `stop --all` in another module must not end it
def lab(minicluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One running session shared by the read-only checks (and the browser test)."""
    from tests.cluster.fixtures import make_laptop_env

    env = make_laptop_env(minicluster, tmp_path_factory.mktemp("laptop"))
    auths_before = minicluster.auth_count()
    fg = Foreground(["start", *HOST, "--partition", "booster", "--time", "30", "--no-browser", "--json"], env)
    assert "session" in fg.info, f"start failed: {fg.info}"
    try:
        yield {**fg.info, "env": env, "fg": fg, "auths": minicluster.auth_count() - auths_before}
    finally:
        run(["stop", fg.info["session"], *HOST], env)
        fg.kill()

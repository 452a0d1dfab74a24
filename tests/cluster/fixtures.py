"""pytest fixtures for the mini-cluster and a fresh "laptop" per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.minicluster import MiniCluster, missing_requirements


@pytest.fixture(scope="session")
def minicluster() -> Iterator[MiniCluster]:
    """The running mini-cluster; skipped where it cannot run (a failure when CI=true)."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"mini-cluster required in CI: {reason}")
        pytest.skip(f"mini-cluster unavailable: {reason}")
    cluster = MiniCluster()
    started = cluster.up()
    yield cluster
    cluster.cancel_all()
    if started and not os.environ.get("HPCJUP_KEEP_CLUSTER"):
        cluster.down()


@pytest.fixture
def clean_jobs(minicluster: MiniCluster) -> Iterator[None]:
    """Cancel whatever the test left in the queue."""
    yield
    minicluster.cancel_all()


def make_laptop_env(cluster: MiniCluster | None, home: Path) -> dict[str, str]:
    """Environment for running the real CLI as a fresh laptop whose home is `home`."""
    home.mkdir(parents=True, exist_ok=True)
    if cluster is not None:
        cluster.write_laptop_ssh(home)
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "HPCJUP_HOST", "DISPLAY", "WAYLAND_DISPLAY", "BROWSER")}
    xdg = {"XDG_CONFIG_HOME": home / ".config", "XDG_STATE_HOME": home / ".local/state", "XDG_CACHE_HOME": home / ".cache", "XDG_RUNTIME_DIR": home / "run"}
    for path in xdg.values():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    env.update({k: str(v) for k, v in xdg.items()})
    env.update(HOME=str(home), NO_COLOR="1")
    return env


@pytest.fixture
def laptop_home(tmp_path: Path) -> Path:
    return tmp_path / "laptop"


@pytest.fixture
def laptop_env(request: pytest.FixtureRequest, laptop_home: Path) -> dict[str, str]:
    """A fresh laptop: its own HOME, XDG dirs and (when the test uses the cluster) ~/.ssh for it."""
    cluster = request.getfixturevalue("minicluster") if "minicluster" in request.fixturenames else None
    return make_laptop_env(cluster, laptop_home)

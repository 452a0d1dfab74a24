"""pytest plugin: the mini-cluster (session), job cleanup, and a fresh "laptop" per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.bastion import NodeSshd
from tests.cluster.minicluster import MiniCluster, missing_requirements
from tests.cluster.sge import SgeCell, missing_sge

# Variables a developer's shell may hold that would make the CLI under test behave unlike a fresh laptop.
DROPPED_ENV = (
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "SSH_ASKPASS",
    "SSH_ASKPASS_REQUIRE",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "BROWSER",
    "SLURM_CONF",
)
HARNESS_ENV = (
    "HPCJUP_MINICLUSTER_DIR",
    "HPCJUP_MINICLUSTER_SLURM_PORT",
    "HPCJUP_KEEP_CLUSTER",
    "HPCJUP_SSH",
)  # HPCJUP_SSH: the backend leg
XDG_DIRS = {
    "XDG_CONFIG_HOME": ".config",
    "XDG_STATE_HOME": ".local/state",
    "XDG_CACHE_HOME": ".cache",
    "XDG_RUNTIME_DIR": "run",
}


def _truthy(name: str) -> bool:
    """Whether the environment variable is set to a yes-like value."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@pytest.fixture(scope="session")
def minicluster() -> Iterator[MiniCluster]:
    """The running mini-cluster; skipped where it cannot run, a failure there when CI=true."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the mini-cluster is required when CI=true: {reason}", pytrace=False)
        pytest.skip(f"mini-cluster unavailable: {reason}")
    cluster = MiniCluster()
    try:
        started = cluster.up()
    except RuntimeError as exc:
        pytest.fail(f"could not bring the mini-cluster up: {exc}", pytrace=False)
    yield cluster
    # A cluster that was already up stays up, so developers can iterate quickly.
    if started and not _truthy("HPCJUP_KEEP_CLUSTER"):
        cluster.down()


@pytest.fixture(scope="session")
def sge_cell(minicluster: MiniCluster) -> Iterator[SgeCell]:
    """A running single-host Grid Engine cell the mini-cluster's user submits to through its sshd (reused if up)."""
    reason = missing_sge()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Grid Engine cell is required when CI=true: {reason}", pytrace=False)
        pytest.skip(f"Grid Engine unavailable: {reason}")
    cell = SgeCell()
    try:
        started = cell.up()
    except RuntimeError as exc:
        pytest.fail(f"could not bring the Grid Engine cell up: {exc}", pytrace=False)
    yield cell
    cell.cancel_all()
    if started and not _truthy("HPCJUP_KEEP_CLUSTER"):
        cell.down()


@pytest.fixture(scope="session")
def node_sshd(minicluster: MiniCluster) -> Iterator[NodeSshd]:
    """An sshd on the compute nodes' addresses (socket mode); each laptop opts in with node_sshd.add_to_laptop(HOME)."""
    server = NodeSshd(minicluster).start()
    yield server
    server.stop()


#: Cluster users whose login shell is not bash: {shell: user}; each laptop reaches one as Host `minicluster-SHELL`.
SHELL_USERS = {"tcsh": "hpctcsh", "fish": "hpcfish"}


@pytest.fixture(scope="session")
def shell_users(minicluster: MiniCluster) -> Iterator[dict[str, str]]:
    """The users of SHELL_USERS, created once (tcsh/fish login shells, the harness key authorized); their
    jobs are cancelled at the end."""
    from tests.cluster import files

    for shell, user in SHELL_USERS.items():
        files.ensure_shell_user(user, shell, minicluster.conf)
        files.authorize_key(user, (minicluster.root / "client_ed25519.pub").read_text())
    yield dict(SHELL_USERS)
    for user in SHELL_USERS.values():
        minicluster.cancel_all(user)


def add_shell_hosts(home: Path, cluster: MiniCluster) -> None:
    """Give a laptop (made by make_laptop_home with `cluster`) the Host aliases `minicluster-SHELL`."""
    from tests.cluster import files

    for shell, user in SHELL_USERS.items():
        files.add_laptop_host(home, f"minicluster-{shell}", cluster.ssh_port, user)


@pytest.fixture
def clean_jobs(minicluster: MiniCluster) -> Iterator[None]:
    """After the test, scancel the cluster user's jobs and wait until none is active."""
    yield
    minicluster.cancel_all()


def make_laptop_home(home: Path, cluster: MiniCluster | None = None) -> Path:
    """Create a fresh laptop HOME with its XDG dirs and, given a cluster, an ~/.ssh for it."""
    home.mkdir(parents=True, exist_ok=True)
    for sub in XDG_DIRS.values():
        (home / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(home / XDG_DIRS["XDG_RUNTIME_DIR"], 0o700)
    if cluster is not None:
        cluster.write_laptop_ssh(home)
    return home


def laptop_environ(home: Path) -> dict[str, str]:
    """os.environ as a fresh laptop whose HOME is `home` would have it, for running the real CLI."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in DROPPED_ENV and not (key.startswith("HPCJUP_") and key not in HARNESS_ENV)
    }
    env.update({key: str(home / sub) for key, sub in XDG_DIRS.items()})
    env.update(HOME=str(home), NO_COLOR="1")
    return env


def make_laptop_env(cluster: MiniCluster | None, home: Path) -> dict[str, str]:
    """A fresh laptop HOME (with ~/.ssh for `cluster` if given) and its environment."""
    return laptop_environ(make_laptop_home(home, cluster))


@pytest.fixture
def laptop_home(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A fresh laptop HOME; its ~/.ssh points at the mini-cluster when the test uses `minicluster`."""
    cluster = request.getfixturevalue("minicluster") if "minicluster" in request.fixturenames else None
    return make_laptop_home(tmp_path / "laptop", cluster)


@pytest.fixture
def laptop_env(laptop_home: Path) -> dict[str, str]:
    """The environment for running the real `hpcjup` CLI as a subprocess on that laptop."""
    return laptop_environ(laptop_home)

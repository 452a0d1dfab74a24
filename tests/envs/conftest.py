"""Fixtures for building environments on the mini-cluster: a laptop, a connection as hpcuser, fresh specs."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.envs.spec import EnvSpec, read_spec
from hpcjup.transport import Transport, connect
from tests.cluster.fixtures import make_laptop_env

#: One env root for these tests on the cluster (not the default): envs are named by content, so
#: tests that make their specs unique (a random comment) never meet, and uv's cache stays warm.
TEST_ROOT = ".hpcjup/envs-test"


@pytest.fixture(scope="module")
def laptop_environ(minicluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """This process as a fresh laptop for the module (HOME with ~/.ssh for the cluster, XDG dirs)."""
    from tests.cluster.offline import add_to_laptop

    env = make_laptop_env(minicluster, tmp_path_factory.mktemp("laptop"))
    add_to_laptop(Path(env["HOME"]), minicluster.ssh_port)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    yield env
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def offline_user(minicluster: Any) -> str:
    """The cluster user whose login node reaches no index (tests/cluster/offline.py), made once."""
    from tests.cluster.offline import ensure_offline_user

    return ensure_offline_user(minicluster.conf, (minicluster.root / "client_ed25519.pub").read_text())


@pytest.fixture
def host(laptop_environ: dict[str, str]) -> Iterator[Callable[..., Transport]]:
    """Opens connections to the mini-cluster as hpcuser (or another Host alias: `host("minicluster-offline")`;
    $HPCJUP_SSH picks the backend), closed afterwards."""
    from hpcjup.transport.openssh import OpenSSHTransport

    opened: list[Transport] = []

    def _open(alias: str = "minicluster") -> Transport:
        transport = connect(alias, backend=os.environ.get("HPCJUP_SSH", "openssh"))
        opened.append(transport)
        return transport

    yield _open
    for transport in opened:
        if isinstance(transport, OpenSSHTransport):
            transport.terminate()
        transport.close()


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., EnvSpec]:
    """A spec directory of the given files, made unique by a random comment in its requirements."""

    def _make(files: dict[str, str]) -> EnvSpec:
        directory = tmp_path / f"spec-{secrets.token_hex(3)}"
        directory.mkdir()
        for name, text in files.items():
            if name == "requirements.txt":
                text = f"# test {secrets.token_hex(8)}\n{text}"
            (directory / name).write_text(text)
        return read_spec(directory)

    return _make


def leftovers(transport: Transport, name: str) -> list[str]:
    """What a build of `name` left under the test root besides a finished env and its logs (a dropped tree's
    removal runs in the background after the build: given 60 s to end)."""
    script = (
        'cd "$HOME/$1" 2>/dev/null || exit 0; i=0; while ls -A | grep -q -F -e ".rm-$2-" && [ $i -lt 60 ]; do'
        ' sleep 1; i=$((i + 1)); done 2>/dev/null; ls -A | grep -F -- "$2" |'
        ' grep -v -x -e "$2" -e "$2.log" -e "$2.failed.log" -e "$2.sqsh" || true'
    )
    out = transport.run(["sh", "-c", script, "sh", TEST_ROOT, name]).stdout
    return out.split()

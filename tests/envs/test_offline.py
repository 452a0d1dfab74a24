"""Offline login nodes, for real: a cluster user behind a dead proxy (tests/cluster/offline.py) builds with
what the laptop resolved and downloaded from real PyPI; user envs get ipykernel; a full file system says so."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.envs.build import check, ensure, parse_probe, probe_argv
from hpcjup.envs.errors import EnvBuildError
from hpcjup.envs.spec import EnvSpec
from hpcjup.transport import Transport
from tests.cluster.offline import ALIAS
from tests.envs.conftest import TEST_ROOT, leftovers

pytestmark = pytest.mark.cluster

Host = Callable[..., Transport]
MakeSpec = Callable[..., EnvSpec]


class Phases:
    """A Progress that remembers the phases it was shown."""

    def __init__(self) -> None:
        self.phases: list[str] = []

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def line(self, text: str) -> None:
        pass


def _lock(transport: Transport, path: str) -> str:
    return transport.read_file(f"{path}/.hpcjup-lock.txt").decode()


def _packages(lock: str) -> dict[str, str]:
    pins = [line.split(" ")[0] for line in lock.splitlines() if "==" in line and not line.startswith(" ")]
    return dict(pin.split("==", 1) for pin in pins)


def test_the_offline_user_reaches_no_index(host: Host, offline_user: str) -> None:
    """The harness's premise: from this user's login environment neither uv nor Python's urllib reaches PyPI."""
    transport = host(ALIAS)
    assert transport.run(["id", "-un"]).stdout.strip() == offline_user
    # The uv hpcjup brings (uploaded here by hand: the same file the laptop would send).
    from hpcjup.envs import uvbin

    uv = uvbin.binary_for("x86_64")
    target = f"{transport.home()}/.hpcjup/bin/uv-{uv.version}"
    put = 'mkdir -p "${1%/*}" && cat >"$1.part" && chmod 700 "$1.part" && mv -f "$1.part" "$1"'
    transport.run(["sh", "-c", put, "sh", target], input=uv.path.read_bytes())
    compile_ = (
        f'echo six | UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1 UV_CACHE_DIR="$(mktemp -d)" {target} pip compile --no-cache -'
    )
    failed = transport.run(["sh", "-c", compile_], check=False, timeout=300)
    assert failed.returncode != 0
    assert "127.0.0.1:9" in failed.stderr or "onnection refused" in failed.stderr, failed.stderr
    # Without the proxy variables the same command reaches PyPI: the failure above is the dead proxy's.
    unset = "unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY; "
    online = transport.run(["sh", "-c", unset + compile_], check=False, timeout=300)
    assert online.returncode == 0 and "six==" in online.stdout, online.stderr


def test_a_build_probe_says_whether_the_host_reaches_an_index(host: Host, make_spec: MakeSpec) -> None:
    spec = make_spec({"requirements.txt": "six\n"})
    started = time.monotonic()
    online = parse_probe(host().run(probe_argv(spec, TEST_ROOT, stage=True), input=b"").stdout)
    online_seconds = time.monotonic() - started
    assert not online.offline and online.index == "https://pypi.org/simple/"
    assert online_seconds < 5  # one connection, the probe and one HEAD request; far less on a quiet machine
    off = parse_probe(host(ALIAS).run(probe_argv(spec, TEST_ROOT, stage=True), input=b"").stdout)
    assert off.offline and off.index == "https://pypi.org/simple/"
    # A start's check (no stage) asks nothing; a setting says it without asking.
    assert not parse_probe(host(ALIAS).run(probe_argv(spec, TEST_ROOT)).stdout).offline
    said = host().run(probe_argv(spec, TEST_ROOT, stage=True, offline=True), input=b"").stdout
    assert parse_probe(said).offline and "@@hpcjup index offline" in said


def test_offline_builds_the_same_lock_as_online(host: Host, make_spec: MakeSpec, offline_user: str) -> None:
    """The issue's target: the same spec, built by a user who reaches PyPI and by one who does not."""
    spec = make_spec({"requirements.txt": "six\nmsgpack\n"})  # msgpack: a compiled wheel for the platform
    said = Phases()
    online = ensure(host(), spec, TEST_ROOT, progress=said, keep_tree=True)
    assert said.phases and not any("laptop" in p for p in said.phases), said.phases
    phases = Phases()
    transport = host(ALIAS)
    built = ensure(transport, spec, TEST_ROOT, progress=phases, keep_tree=True)  # run in place below
    assert built.built_now and built.name == online.name  # same spec, Python and platform: same name
    assert any(p.startswith("resolving on this laptop") for p in phases.phases), phases.phases
    assert any(p.startswith("uploading") and "wheels" in p for p in phases.phases), phases.phases
    assert _lock(transport, built.path) == _lock(host(), online.path)
    assert {"six", "msgpack", "ipykernel"} <= set(_packages(_lock(transport, built.path)))
    # It runs, on a compute node too, and the spec's copy in the env holds no wheels.
    code = "import six, msgpack, ipykernel, sys; print(sys.prefix)"
    out = transport.run(["srun", "-N1", "-t", "2", built.python, "-c", code], timeout=300).stdout
    assert out.strip() == built.path
    assert transport.run(["test", "-e", f"{built.path}/.hpcjup-spec/.wheels"], check=False).returncode != 0
    assert leftovers(transport, built.name) == []
    assert check(transport, spec, TEST_ROOT).built


def test_a_source_only_package_is_named_for_an_offline_host(host: Host, make_spec: MakeSpec) -> None:
    spec = make_spec({"requirements.txt": "six\ndocopt\n"})  # docopt publishes only an sdist
    transport = host(ALIAS)
    with pytest.raises(EnvBuildError, match=r"docopt publishes no wheel") as caught:
        ensure(transport, spec, TEST_ROOT)
    assert caught.value.exit_code == 11 and "index" in (caught.value.hint or "")
    name = check(transport, spec, TEST_ROOT).name
    assert name and not check(transport, spec, TEST_ROOT).built
    assert leftovers(transport, name) == []


def test_user_envs_get_ipykernel_and_keep_the_specs_own(host: Host, make_spec: MakeSpec) -> None:
    transport = host()
    added = ensure(transport, make_spec({"requirements.txt": "six\n"}), TEST_ROOT, keep_tree=True)
    assert "ipykernel" in _packages(_lock(transport, added.path))
    transport.run([added.python, "-c", "import ipykernel"])
    # A spec that names its own ipykernel keeps that version (the same resolution, nothing changed).
    kept = ensure(transport, make_spec({"requirements.txt": "six\nipykernel==6.29.5\n"}), TEST_ROOT)
    assert _packages(_lock(transport, kept.path))["ipykernel"] == "6.29.5"


@pytest.fixture
def small_root(minicluster: Any) -> Iterator[str]:
    """A 4 MB file system hpcuser owns, as an env root: a build there runs out of space."""
    mount = Path(f"/tmp/hpcjup-full-{secrets.token_hex(3)}")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=400,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        subprocess.run(["chown", "hpcuser", str(mount)], check=True)
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def test_a_build_that_runs_out_of_space_says_where_and_how_much(
    host: Host, make_spec: MakeSpec, small_root: str
) -> None:
    spec = make_spec({"requirements.txt": "six\n"})
    transport = host()
    with pytest.raises(EnvBuildError) as caught:
        ensure(transport, spec, small_root)
    error = caught.value
    assert error.exit_code == 11
    assert f"did not fit under {small_root} on minicluster" in error.message, error.message
    assert "MB in" in error.message and "free there now" in error.message
    assert "env_root" in (error.hint or "")
    # Nothing half-built stays on the small file system (only the failed build's log).
    left = transport.run(["sh", "-c", f'ls -A "{small_root}" | grep -v -e "^\\.uv-cache$" -e "failed.log$" || true'])
    assert left.stdout.split() == []

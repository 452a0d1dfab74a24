"""Conda specs built for real on the mini-cluster's login node as hpcuser, against a channel made in the test.

The host has no micromamba, mamba or conda, so these builds take the route for such hosts: hpcjup's
py-rattler, installed by uv into ~/.hpcjup/tools on first use (real PyPI), solving and installing from a
conda channel this test writes (tests/envs/conda_channel.py: packages in the documented format, its
repodata.json, served over HTTP on 127.0.0.1). Honest about the Python: the channel's `python` package is
a STAND-IN, a venv-shaped prefix around the cluster's real /usr/bin/python3 (no CPython is built), and its
`ipykernel` a .pth into the cluster's Jupyter env; the noarch packages the solver picks are really
installed into the prefix's lib/python3.11/site-packages and imported from there on a compute node.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hpcjup.envs.build import ensure
from hpcjup.envs.errors import EnvBuildError
from hpcjup.envs.spec import read_spec
from hpcjup.errors import ExitCode
from hpcjup.transport import Transport
from tests.envs.conda_channel import Seen, conda_spec, make_channel, module, served, standard_packages
from tests.envs.conftest import TEST_ROOT, leftovers

pytestmark = pytest.mark.cluster

Host = Callable[[], Transport]


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """This test's channel: its directory and its URL."""
    directory = make_channel(tmp_path / "channel", standard_packages())
    with served(directory) as url:
        yield directory, url


def test_the_solver_picks_the_chain_and_honours_the_constraint(
    host: Host, channel: tuple[Path, str], tmp_path: Path
) -> None:
    """tinyapp needs tinylib >=2,<3 (1.0, 2.0, 2.5 and 3.0 exist), which needs tinybase >=1.1: 2.5 and 1.1 are
    installed, ipykernel is added (the file lacks it), the pip section comes from PyPI with uv, and a compute
    node imports all of it from the prefix."""
    _, url = channel
    spec = conda_spec(tmp_path / "analysis", url, ["python=3.11", "tinyapp"], ["six"])
    seen = Seen()
    transport = host()
    built = ensure(transport, spec, TEST_ROOT, progress=seen)
    assert built.built_now
    assert "resolving (rattler)" in seen.phases and "installing the pip section" in seen.phases, seen.phases
    assert any("tinylib 2.5" in line for line in seen.lines), seen.lines  # the resolver's lines reach the laptop
    code = "import sys, tinyapp, tinylib, tinybase, six, ipykernel; print(tinyapp.LIB, tinybase.VERSION, sys.prefix, tinylib.__file__)"
    out = transport.run(["srun", "-N1", "-t", "1", built.python, "-c", code]).stdout.split()
    assert out[:3] == ["2.5", "1.1", built.path], out
    assert out[3] == f"{built.path}/lib/python3.11/site-packages/tinylib/__init__.py"
    lock = transport.read_file(f"{built.path}/.hpcjup-lock.txt").decode()
    assert "@EXPLICIT" in lock and "# platform: linux-64" in lock
    assert f"{url}/noarch/tinylib-2.5-0.tar.bz2#" in lock and "# sha256 tinylib-2.5-0.tar.bz2 " in lock
    assert f"{url}/noarch/ipykernel-6.99.0-0.tar.bz2#" in lock
    assert "# pip six==" in lock
    meta = json.loads(transport.read_file(f"{built.path}/.hpcjup-env.json"))
    assert (meta["kind"], meta["tool"], meta["python"]) == ("conda", "rattler", "3.11.2"), meta  # the env's Python
    assert leftovers(transport, built.name) == []
    again = ensure(host(), spec, TEST_ROOT)
    assert (again.built_now, again.path) == (False, built.path)


def test_an_unsolvable_spec_fails_with_the_solvers_words_and_leaves_nothing(
    host: Host, channel: tuple[Path, str], tmp_path: Path
) -> None:
    _, url = channel
    spec = conda_spec(tmp_path / "bad", url, ["python=3.11", "tinyapp", "tinylib >=3"])
    transport = host()
    with pytest.raises(EnvBuildError) as caught:
        ensure(transport, spec, TEST_ROOT)
    error = caught.value
    assert error.exit_code == ExitCode.ENV_BUILD
    assert "did not resolve" in error.message
    assert "tinylib >=2,<3" in (error.details or ""), error.details  # rattler's own words
    assert "failed.log" in (error.hint or "")
    name = error.hint.split("/")[-1].removesuffix(".failed.log") if error.hint else ""
    assert name.startswith("env-") and leftovers(transport, name) == []
    gone = transport.run(["sh", "-c", 'test ! -e "$HOME/$1/$2"', "sh", TEST_ROOT, name], check=False)
    assert gone.returncode == 0


def test_a_lock_builds_exactly_what_it_records(host: Host, channel: tuple[Path, str], tmp_path: Path) -> None:
    """The lock of one build, beside the same environment.yml, builds the same packages even after the channel
    gained a newer tinylib that a fresh solve takes."""
    directory, url = channel
    spec = conda_spec(tmp_path / "first", url, ["python=3.11", "tinyapp"])
    transport = host()
    first = ensure(transport, spec, TEST_ROOT)
    lock = transport.read_file(f"{first.path}/.hpcjup-lock.txt")
    make_channel(directory, [*standard_packages(), module("tinylib", "2.9", ("python", "tinybase >=1.1"))])
    locked_dir = tmp_path / "locked"
    locked_dir.mkdir()
    (locked_dir / "environment.yml").write_bytes(spec.files["environment.yml"])
    (locked_dir / "conda-linux-64.lock").write_bytes(lock)
    seen = Seen()
    second = ensure(transport, read_spec(locked_dir), TEST_ROOT, progress=seen)
    assert second.built_now and second.path != first.path
    assert any("conda-linux-64.lock" in line for line in seen.lines), seen.lines
    version = "import tinylib; print(tinylib.VERSION)"
    assert transport.run([second.python, "-c", version]).stdout.strip() == "2.5"
    relocked = transport.read_file(f"{second.path}/.hpcjup-lock.txt")
    assert relocked == lock  # the same packages, URLs, hashes
    fresh = ensure(transport, conda_spec(tmp_path / "fresh", url, ["python=3.11", "tinyapp"]), TEST_ROOT)
    assert transport.run([fresh.python, "-c", version]).stdout.strip() == "2.9"  # the lock, not the channel, decided

"""`hpcjup env build|lock` and `start --env` with an environment.yml, end to end on the mini-cluster.

The real CLI, real SSH as hpcuser, real Slurm and JupyterLab; the conda packages come from a channel made
in the test (tests/envs/conda_channel.py, served over HTTP on 127.0.0.1), solved and installed by the
py-rattler hpcjup brings (the cluster has no conda tool). Its `python` package is a STAND-IN (a venv-shaped
prefix around the cluster's /usr/bin/python3) and its `ipykernel` a .pth into the cluster's Jupyter env:
what the kernel imports from the channel (tinyapp -> tinylib 2.5) is really installed in the conda prefix.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run
from tests.cli.kernel import run_in_kernel
from tests.envs.conda_channel import make_channel, served, standard_packages

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]

HOST = ["--host", "minicluster"]
ROOT = ".hpcjup/envs-test"
QUICK = ["--no-dask", "--idle-timeout", "0", "--time", "10", "--no-browser"]


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[Path]:
    """A Binder-style directory whose binder/environment.yml names this test's channel (unique: a fresh env)."""
    with served(make_channel(tmp_path / "channel", standard_packages())) as url:
        directory = tmp_path / "analysis"
        (directory / "binder").mkdir(parents=True)
        text = f"# {secrets.token_hex(8)}\nchannels:\n  - {url}\ndependencies:\n  - python=3.11\n  - tinyapp\n"
        (directory / "binder" / "environment.yml").write_text(text)
        yield directory


def test_env_build_then_lock_writes_the_conda_lock_beside_the_spec(
    minicluster: Any, laptop_env: dict[str, str], spec: Path
) -> None:
    env = {**laptop_env, "HPCJUP_ENV_ROOT": ROOT}
    built = run(["env", "build", str(spec), *HOST, "--json"], env, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    data = json.loads(built.stdout)
    assert data["built"] and data["name"].startswith("env-"), data
    locked = run(["env", "lock", str(spec), *HOST, "--json"], env, timeout=600)
    assert locked.returncode == 0, locked.stderr[-3000:]
    info = json.loads(locked.stdout)
    target = spec / "binder" / "conda-linux-64.lock"
    assert info["lock"] == str(target) and info["packages"] == 5, info
    assert "@EXPLICIT" in target.read_text() and "/noarch/tinylib-2.5-0.tar.bz2#" in target.read_text()
    assert not (spec / "binder" / "hpcjup.lock").exists()


def test_start_env_runs_the_conda_env_as_the_default_kernel(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, spec: Path
) -> None:
    env = {**laptop_env, "HPCJUP_ENV_ROOT": ROOT}
    result = run(["start", *HOST, "-d", "--json", *QUICK, "--env", str(spec), "-n", "conda-kernel"], env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout)
    try:
        code = "import sys, tinyapp; print(tinyapp.LIB, sys.prefix)"
        printed = run_in_kernel(f"http://127.0.0.1:{info['local_port']}", info["token"], code, timeout=120).split()
        assert printed[0] == "2.5" and printed[1].startswith(f"/home/hpcuser/{ROOT}/env-"), printed
    finally:
        assert run(["stop", "conda-kernel", *HOST], env, timeout=120).returncode == 0

"""A session whose kernel is a user environment, through Slurm: the kernel and the Dask workers on both nodes run
that environment's Python, `Client()` in the notebook connects with no arguments.

The laptop's `--kernel` is another part of issue 20 (phase 2); until it is merged, the launcher gets its
`--kernel`/`--dask-python` from a `--python` wrapper that inserts them: the job, the launcher, Jupyter, the
kernel, Dask and the tunnel are the real ones.

The module-set kernel (`--kernel NAME=module:A,B`) and the user's own kernels go through the real `start`: Lmod
loads a modulefile the test writes in the cluster user's home, and the upload's command refuses a set whose
python3 has no ipykernel before any job is submitted.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import CLUSTER_PYTHON, http_get, run, session_jobs
from tests.cli.kernel import run_in_kernel

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]

WRAPPER = """#!/bin/sh
# The launcher's own options for this session, before the batch script's (and its `-- Jupyter options`).
case $1 in
*/launcher.py) script=$1; shift; exec {server} "$script" --kernel analysis={kernel} --dask-python {kernel} "$@" ;;
esac
exec {server} "$@"
"""
CODE = """
import sys
from distributed import Client
client = Client()
client.wait_for_workers(2, timeout=60)
print(sys.executable)
print(sorted(set(client.run(lambda: sys.executable).values())))
print(sorted(set(client.run(lambda: __import__("os").environ["SLURMD_NODENAME"]).values())))
"""


@pytest.fixture
def user_env() -> Iterator[Path]:
    """A user environment with ipykernel and distributed (uv), readable by the cluster user, and a `--python`
    wrapper that gives the launcher `--kernel analysis=ITS_PYTHON --dask-python ITS_PYTHON`."""
    uv = Path(sys.executable).with_name("uv")
    root = Path(tempfile.mkdtemp(prefix="hpcjup-kernels-"))
    os.chmod(root, 0o755)
    try:
        subprocess.run([str(uv), "venv", "-q", "--python", "/usr/bin/python3", str(root / "env")], check=True)
        python = root / "env" / "bin" / "python"
        subprocess.run(
            [str(uv), "pip", "install", "-q", "--python", str(python), "ipykernel", "distributed"], check=True
        )
        wrapper = root / "python"
        wrapper.write_text(WRAPPER.format(server=CLUSTER_PYTHON, kernel=python))
        wrapper.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_default_kernel_and_dask_run_the_users_environment(
    minicluster: Any, laptop_env: dict[str, str], user_env: Path
) -> None:
    name = f"kern-{uuid.uuid4().hex[:6]}"
    kernel = str(user_env / "env" / "bin" / "python")
    args = ["start", *HOST, "--name", name, "--python", str(user_env / "python"), "--nodes", "2", "--cpus", "1"]
    started = run([*args, "-d", "--json"], laptop_env, timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        info = json.loads(started.stdout)
        base = f"http://127.0.0.1:{info['local_port']}"
        status, body = http_get(f"{base}/api/kernelspecs", info["token"])
        specs = json.loads(body)
        assert status == 200 and specs["default"] == "analysis" and set(specs["kernelspecs"]) == {"analysis"}
        lines = run_in_kernel(base, info["token"], CODE, timeout=180).splitlines()  # the default kernel
        assert lines == [kernel, str([kernel]), "['node1', 'node2']"]
    finally:
        stopped = run(["stop", name, *HOST], laptop_env)
    assert stopped.returncode == 0, stopped.stderr


MODULE_CODE = """
import os, shutil, sys
print(shutil.which("python3"))
print(os.environ.get("HPCJUP_KERNEL_MODULE"), "LMOD_CMD" in os.environ)
"""
LMOD_HOME = "/opt/hpcjup-lmod/usr/share/lmod/lmod"  # tests/cluster/install.sh unpacks Lmod there


@pytest.fixture
def module_and_own_kernel(minicluster: Any) -> Iterator[Path]:
    """In the cluster user's home: an Lmod modulefile `kernelset/1.0` (Lua, so only Lmod reads it) that puts a
    python3 (the cluster env's) on PATH and sets HPCJUP_KERNEL_MODULE, `bareset/1.0` whose python3 has no
    ipykernel, and a kernel of the user's own in
    ~/.local/share/jupyter/kernels (removed after: other tests count the kernels a session offers)."""
    entry = pwd.getpwnam(minicluster.user)
    root = Path(entry.pw_dir) / ".hpcjup-modkernel-test"
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {CLUSTER_PYTHON} "$@"\n')  # a Python with ipykernel
    (bin_dir / "python3").chmod(0o755)
    (root / "mods" / "kernelset").mkdir(parents=True, exist_ok=True)
    (root / "mods" / "kernelset" / "1.0.lua").write_text(
        f'prepend_path("PATH", "{bin_dir}")\nsetenv("HPCJUP_KERNEL_MODULE", "kernelset-1.0")\n'
    )
    (root / "bare" / "bin").mkdir(parents=True, exist_ok=True)  # a module set whose python3 has no ipykernel
    (root / "bare" / "bin" / "python3").unlink(missing_ok=True)
    (root / "bare" / "bin" / "python3").symlink_to("/usr/bin/python3")
    (root / "mods" / "bareset").mkdir(parents=True, exist_ok=True)
    # Tcl: the login node's module command is Environment Modules (the upload's check runs there), the job's Lmod.
    (root / "mods" / "bareset" / "1.0").write_text(f"#%Module1.0\nprepend-path PATH {root / 'bare' / 'bin'}\n")
    own = Path(entry.pw_dir) / ".local/share/jupyter/kernels/mine"
    own.mkdir(parents=True, exist_ok=True)
    argv = [CLUSTER_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (own / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Mine", "language": "python"}))
    made = [root, *root.rglob("*"), *own.parents[:3], own, own / "kernel.json"]
    for path in made:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(own, ignore_errors=True)


def module_profile(laptop_env: dict[str, str]) -> dict[str, str]:
    """The test's env root (the start tests' builds) and a profile with the test's modulefiles, Lmod's home set as
    a site whose login shells initialise Lmod would have it."""
    from tests.cli.test_start_env import env_of

    env = env_of(laptop_env)
    config = Path(env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        '[profiles.modkernel]\nhost = "minicluster"\nmodule_use = ["~/.hpcjup-modkernel-test/mods"]\n'
        f'setup = ["export MODULESHOME={LMOD_HOME}"]\n'
    )
    return env


def test_a_module_set_kernel_and_the_users_own_kernel(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, module_and_own_kernel: Path, tmp_path: Path
) -> None:
    """`--kernel lmod=module:kernelset/1.0` as the second kernel: its code runs in the Python the module set puts
    on PATH, with the module loaded by Lmod (as a site whose login shells initialise Lmod: $MODULESHOME). The
    user's own kernel in ~/.local/share/jupyter/kernels is offered beside the session's, the first the default."""
    from tests.cli.test_start_env import start

    env = module_profile(laptop_env)
    name = f"modk-{uuid.uuid4().hex[:6]}"
    kernels = ["--kernel", f"base=cluster:{Path(CLUSTER_PYTHON).parents[1]}", "--kernel", "lmod=module:kernelset/1.0"]
    started = start(env, "--profile", "modkernel", "-n", name, *kernels)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        info = json.loads(started.stdout)
        base = info["url"].split("/lab")[0].rstrip("/")
        status, body = http_get(f"{base}/api/kernelspecs", info["token"])
        specs = json.loads(body)
        assert status == 200 and specs["default"] == "base", body[:500]
        assert set(specs["kernelspecs"]) == {"base", "lmod", "mine"}, body[:500]
        assert specs["kernelspecs"]["mine"]["spec"]["display_name"] == "Mine"
        lines = run_in_kernel(base, info["token"], MODULE_CODE, timeout=120, name="lmod").splitlines()
        assert lines == [str(module_and_own_kernel / "bin" / "python3"), "kernelset-1.0 True"]
    finally:
        stopped = run(["stop", name, *HOST], env)
    assert stopped.returncode == 0, stopped.stderr


def test_a_module_set_without_ipykernel_is_refused_before_the_job(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, module_and_own_kernel: Path
) -> None:
    """The upload's command runs the kernel's wrapper on the login node: no job waits in the queue to find it."""
    from tests.cli.test_start_env import start

    name = f"modk-{uuid.uuid4().hex[:6]}"
    kernels = ["--kernel", f"base=cluster:{Path(CLUSTER_PYTHON).parents[1]}", "--kernel", "module:bareset/1.0"]
    refused = start(module_profile(laptop_env), "--profile", "modkernel", "-n", name, *kernels)
    assert refused.returncode == ExitCode.USAGE, refused.stderr[-3000:]
    assert "--kernel bareset-1.0=module:bareset/1.0: that module set's python3 on minicluster has no ipykernel" in (
        refused.stderr
    )
    assert "Nothing was submitted" in refused.stderr and not session_jobs(minicluster, (name,))
    assert not Path(f"/home/hpcuser/.hpcjup/sessions/{name}").exists()

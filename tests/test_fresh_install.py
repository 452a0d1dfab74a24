"""A fresh laptop: install hpcjup into a new venv, then `hpcjup start --local` works with nothing else installed.

Slow (about a minute: two venvs, pip from the machine's configured index). Real here: venv, pip,
JupyterLab, Dask and the dashboard proxy from the `local` extra; the laptop's PATH holds no Jupyter.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from hpcjup.config.environment import has_jupyterlab
from tests.cli.helpers import http_get
from tests.cluster.fixtures import make_laptop_env

pytestmark = pytest.mark.slow
CHECKOUT = Path(__file__).resolve().parents[1]
INSTALL_BUDGET = 180  # seconds; slower than this is worth saying (a user waits for it too)
# Build artefacts and caches of the checkout that a user's copy would not have.
NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "artifacts", ".*cache", ".hypothesis"
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout, so that pip's build leaves nothing in the shared tree."""
    copy = tmp_path_factory.mktemp("src") / "hpcjup"
    shutil.copytree(CHECKOUT, copy, ignore=NOT_SHIPPED)
    return copy


def pip_env() -> dict[str, str]:
    """This machine's environment for pip (its configured index and cache), with no venv of ours leaking in."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}


def fresh_venv(where: Path, requirement: str) -> Path:
    """A new venv at `where` with `requirement` installed by its own pip; returns the venv."""
    started = time.monotonic()
    created = subprocess.run([sys.executable, "-m", "venv", str(where)], capture_output=True, text=True)
    if created.returncode != 0:
        message = f"cannot create a venv: {created.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", requirement]
    installed = subprocess.run(pip, env=pip_env(), capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, f"{shlex.join(pip)} failed:\n{installed.stderr[-3000:]}"
    took = time.monotonic() - started
    if took > INSTALL_BUDGET:
        warnings.warn(f"installing {requirement} into a fresh venv took {took:.0f} s", stacklevel=2)
    return where


def laptop(home: Path) -> dict[str, str]:
    """A fresh laptop HOME, and a PATH on which no Jupyter can be found."""
    env = make_laptop_env(None, home)
    env.pop("VIRTUAL_ENV", None)
    dirs = [d for d in env.get("PATH", "").split(os.pathsep) if d and not _has_jupyter(Path(d))]
    env["PATH"] = os.pathsep.join(dirs)
    python3 = shutil.which("python3", path=env["PATH"])
    assert not (python3 and has_jupyterlab(python3)), f"{python3} on the laptop's PATH has JupyterLab"
    return env


def _has_jupyter(directory: Path) -> bool:
    return any((directory / name).exists() for name in ("jupyter", "jupyter-lab", "jupyter-server"))


def hpcjup(venv: Path, args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the venv's own `hpcjup` console script, as the user would after installing."""
    return subprocess.run(
        [str(venv / "bin" / "hpcjup"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


START = ["start", "--local", "--no-browser", "--json", "--idle-timeout", "0", "-d"]


def test_without_jupyterlab_anywhere_start_local_names_the_command_to_run(source: Path, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path / "venv", str(source))  # `pip install .`: no extra
    env = laptop(tmp_path / "laptop")
    result = hpcjup(venv, [*START, "-n", "nojupyter"], env)
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    # The hint names the local extra's requirements one by one (never `hpcjup[local]`: a PyPI name that is not
    # this project's), for the Python hpcjup runs in.
    command = error["hint"].split("Install them next to hpcjup: ", 1)[1].split("   (or", 1)[0]
    words = shlex.split(command)
    assert words[:4] == [str(venv / "bin" / "python"), "-m", "pip", "install"], command
    assert "hpcjup" not in " ".join(words[4:]) and any(w.startswith("jupyterlab") for w in words[4:])
    assert command in result.stderr
    assert not (tmp_path / "laptop" / ".hpcjup").exists(), "a session directory was made: something started"
    # The named command works: pip resolves those requirements (dry run).
    dry = subprocess.run([*words, "--dry-run"], env=pip_env(), capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "jupyterlab-" in dry.stdout and "hpcjup-" not in dry.stdout


def test_install_with_the_local_extra_then_start_local(source: Path, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path / "venv", f"{source}[local]")
    home = tmp_path / "laptop"
    env = laptop(home)
    result = hpcjup(venv, [*START, "-n", "fresh"], env)
    assert result.returncode == 0, result.stderr
    try:
        info = json.loads(result.stdout)
        base = f"http://127.0.0.1:{info['local_port']}"
        assert http_get(f"{base}/api/status", info["token"])[0] == 200
        assert http_get(info["dashboard_url"])[0] == 200  # the Dask dashboard, through jupyter-server-proxy
        record = json.loads((home / ".hpcjup/sessions/fresh/session.json").read_text())
        assert record["python"] == str(venv / "bin" / "python")  # hpcjup's own interpreter, not python3
    finally:
        stopped = hpcjup(venv, ["stop", "fresh", "--local"], env)
    assert stopped.returncode == 0, stopped.stderr

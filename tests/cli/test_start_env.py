"""`start` with environments on the mini-cluster: a bare Python builds hpcjup's server env first (with
--yes, or refused without a terminal), `--env`/`--kernel` reach the launcher as its interface says,
and a start whose environments are built costs no remote command more than one without them.

Real uv and PyPI build the envs, under a test env root (envs are named by content, so these tests
share their builds with each other and with later runs).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import hpcjup_argv, http_get, run, session_jobs
from tests.cli.test_isolation import remote_commands

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
QUICK = ["--no-dask", "--idle-timeout", "0", "--time", "10", "--no-browser"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
ROOT = ".hpcjup/envs-start-test"
BARE = "/usr/bin/python3"  # the system Python: no JupyterLab in it (hpcuser's login PATH has the cluster env's)
LAUNCHER = Path(__file__).parents[2] / "hpcjup" / "job" / "launcher.py"


def env_of(laptop_env: dict[str, str]) -> dict[str, str]:
    return {**laptop_env, "HPCJUP_ENV_ROOT": ROOT}


def start(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`hpcjup -v start -d --json ...` with no terminal on stdin (as a script runs it)."""
    argv = [*hpcjup_argv(), "-v", "start", *HOST, "-d", "--json", *QUICK, *args]
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def test_a_python_without_jupyterlab_and_no_terminal_is_refused_before_any_job(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """Before: the job was queued and failed on the node ("No JupyterLab in /usr/bin/python3"). Now the upload's
    own command finds it (exit 79), and without a terminal or --yes nothing is built or queued: exit 2."""
    result = start(env_of(laptop_env), "--python", BARE, "-n", "bare-no")
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "--yes" in result.stderr and "env build --server" in result.stderr, result.stderr
    assert "-> 79" in remote_commands(result.stderr)[-1] or any("-> 79" in c for c in remote_commands(result.stderr))
    assert not session_jobs(minicluster, ("bare-no",))
    assert not (SESSIONS / "bare-no").exists()


def test_a_python_without_jupyterlab_builds_the_server_env_with_yes(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """With --yes the server env is built from that Python, then the job runs JupyterLab from it; a second
    start remembers it (the upload checks it is built: no remote command before the upload)."""
    env = env_of(laptop_env)
    first = start(env, "--python", BARE, "--yes", "-n", "bare-yes")
    assert first.returncode == 0, first.stderr[-3000:]
    info = json.loads(first.stdout)
    record = json.loads((SESSIONS / "bare-yes" / "session.json").read_text())
    server = f"/home/hpcuser/{ROOT}/server-"
    assert record["python"].startswith(server) and record["python"].endswith("/bin/python"), record
    assert record["envs"] and record["envs"][0].startswith(server), record
    script = (SESSIONS / "bare-yes" / "job.sh").read_text()
    assert f"{record['envs'][0]}/bin/python" in script
    status, _ = http_get(info["url"])
    assert status == 200
    second = start(env, "--python", BARE, "--yes", "-n", "bare-yes2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "submit=$5" in remote_commands(second.stderr)[0], "\n".join(remote_commands(second.stderr)[:3])
    for name in ("bare-yes", "bare-yes2"):
        assert run(["stop", name, *HOST], env, timeout=120).returncode == 0


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "analysis"
    spec.mkdir()
    # A unique comment: this run's own env (built once here, then reused by the second start).
    (spec / "requirements.txt").write_text(f"# {uuid.uuid4().hex}\nsix\nipykernel\n")
    return spec


def test_dry_run_shows_the_envs_and_the_launcher_arguments(
    minicluster: Any, laptop_env: dict[str, str], tmp_path: Path
) -> None:
    """--dry-run builds nothing; it says which envs would be built or reused and shows the launcher's
    --kernel NAME=PYTHON (first: the default) and --dask-python (the default kernel's Python)."""
    spec = _spec(tmp_path)
    argv = [
        "start",
        *HOST,
        "--dry-run",
        "--json",
        "--env",
        str(spec),
        "--kernel",
        "base=cluster:/opt/hpcjup-cluster-env",
    ]
    result = run(argv, env_of(laptop_env), timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    states = {row["source"]: row["state"] for row in data["envs"]}
    assert states[str(spec)] == "missing" and states["cluster:/opt/hpcjup-cluster-env"] == "existing", data["envs"]
    env_row = next(row for row in data["envs"] if row["source"] == str(spec))
    python = f"/home/hpcuser/{ROOT}/{env_row['env']}/bin/python"
    script = data["script"]
    assert f"--kernel analysis={python}" in script and "--kernel base=/opt/hpcjup-cluster-env/bin/python" in script
    assert script.index("--kernel analysis=") < script.index("--kernel base=")
    assert f"--dask-python {python}" in script
    assert not Path(f"/home/hpcuser/{ROOT}/{env_row['env']}").exists()  # nothing built


def test_start_env_builds_once_and_the_warm_start_checks_it_in_the_upload(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, tmp_path: Path
) -> None:
    """`start --env DIR` builds the env (and the server env) before the job, JupyterLab runs from the server env
    and lists the kernel by the name given; the second start reuses both with no extra remote command."""
    env = env_of(laptop_env)
    spec = _spec(tmp_path)
    first = start(env, "--env", str(spec), "-n", "env-a")
    assert first.returncode == 0, first.stderr[-3000:]
    info = json.loads(first.stdout)
    record = json.loads((SESSIONS / "env-a" / "session.json").read_text())
    assert any(p.startswith(f"/home/hpcuser/{ROOT}/env-") for p in record["envs"]), record
    status, body = http_get(info["url"].split("/lab")[0].rstrip("/") + "/api/kernelspecs", info.get("token"))
    assert status == 200 and "analysis" in json.loads(body)["kernelspecs"], body[:500]
    second = start(env, "--env", str(spec), "-n", "env-b")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "submit=$5" in remote_commands(second.stderr)[0], "\n".join(remote_commands(second.stderr)[:3])
    for name in ("env-a", "env-b"):
        assert run(["stop", name, *HOST], env, timeout=120).returncode == 0

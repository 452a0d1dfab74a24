"""The session's own kernels (`--kernel NAME=PYTHON`, kernels.py) and Dask in the default kernel's Python
(`--dask-python`): the real launcher under the cluster environment's Python (the server), with real venvs
built by uv for the kernels, checked through Jupyter's REST API and a kernel's websocket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.job import LAUNCHER_PATH
from tests.job.test_launcher import Kernel, api, dask_processes, kill_launcher_outright, leftovers

sys.path.insert(0, str(LAUNCHER_PATH.parent))  # the job files import each other from beside themselves
import kernels


def uv() -> str:
    found = Path(sys.executable).with_name("uv")
    return str(found) if found.exists() else shutil.which("uv") or pytest.skip("uv is not installed")


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Kernel Pythons: `full` (ipykernel and distributed), `plain` (ipykernel only), `bare` (nothing)."""
    root = tmp_path_factory.mktemp("kernel-envs")
    wanted = {"full": ["ipykernel", "distributed"], "plain": ["ipykernel"], "bare": []}
    pythons = {}
    for name, packages in wanted.items():
        subprocess.run([uv(), "venv", "-q", "--python", "/usr/bin/python3", str(root / name)], check=True)
        python = root / name / "bin" / "python"
        if packages:
            subprocess.run([uv(), "pip", "install", "-q", "--python", str(python), *packages], check=True)
        pythons[name] = python
    return pythons


def process_python(pid: int) -> str:
    """The program a process runs (its argv[0])."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def test_the_sessions_kernels_are_its_own_and_the_first_is_the_default(
    run: Any, venvs: dict[str, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    full, plain = venvs["full"], venvs["plain"]
    r = run("--kernel", f"a={full}", "--kernel", f"b={plain}", env={"HOME": str(home)})
    conn = r.wait_file("connection.json")
    status, specs = api(conn, "/api/kernelspecs")
    assert status == 200 and specs["default"] == "a"
    assert set(specs["kernelspecs"]) == {"a", "b"}, "the server environment's own python3 kernel is not offered"
    assert specs["kernelspecs"]["b"]["spec"]["display_name"] == "b (hpcjup)"
    assert [k["name"] for k in conn["kernels"]] == ["a", "b"]
    assert (conn["kernels"][0]["distributed"] is not None, conn["kernels"][1]["distributed"]) == (True, None)
    assert "kernel b: " + str(plain) in r.output()

    a, b = Kernel(conn, "a"), Kernel(conn, "b")
    assert a.execute("import sys; print(sys.executable)").strip() == str(full)
    assert b.execute("import sys; print(sys.executable)").strip() == str(plain)
    # `!pip` and shell commands find the kernel's environment first.
    assert b.execute("import shutil; print(shutil.which('python'))").strip() == str(plain)
    assert b.execute("import os; print(os.environ['VIRTUAL_ENV'])").strip() == str(plain.parent.parent)
    # Its channels are IPC sockets in the session's private directory, as the server's own kernels' are.
    private = a.execute("import os; print(os.environ['JUPYTER_RUNTIME_DIR'])").strip()
    args = Path(f"/proc/{a.pid}/cmdline").read_bytes().split(b"\0")
    connection = json.loads(Path(args[args.index(b"-f") + 1].decode()).read_text())
    assert connection["transport"] == "ipc" and connection["ip"].startswith(private + "/")
    assert (os.stat(private).st_mode & 0o777) == 0o700
    assert Path(private, kernels.DATA_DIR, "kernels", "a", "kernel.json").exists()

    assert r.stop() == 0
    assert r.ended()["reason"] == "stopped"
    assert not Path(private).exists(), "the kernel specs go with the private directory"
    assert not (home / ".local/share/jupyter/kernels").exists(), "nothing is registered for the user"
    assert not leftovers(r.dir)


@pytest.mark.parametrize("which", ["bare", "missing"])
def test_a_kernel_python_without_ipykernel_ends_the_session_no_ipykernel(
    run: Any, venvs: dict[str, Path], tmp_path: Path, which: str
) -> None:
    python = venvs["bare"] if which == "bare" else tmp_path / "nowhere" / "bin" / "python"
    r = run("--kernel", f"a={venvs['full']}", "--kernel", f"c={python}")
    assert r.wait(60) == 2
    state = r.ended()
    assert state["reason"] == "no-ipykernel" and str(python) in state["message"]
    assert ("pip install ipykernel" if which == "bare" else "does not exist") in state["message"]
    assert state["message"] in r.output()
    assert "starting JupyterLab" not in r.output(), "checked before Jupyter starts"


def dask_files() -> dict[str, bytes]:
    from hpcjup.session.dasktls import make_credentials

    cert, key = make_credentials("127.0.0.1")
    return {"dask/cert.pem": cert, "dask/key.pem": key}


def test_dask_runs_in_the_default_kernels_python(run: Any, venvs: dict[str, Path]) -> None:
    full = str(venvs["full"])
    r = run("--dask", "--workers", "1", "--kernel", f"a={full}", "--dask-python", full, files=dask_files())
    conn = r.wait_file("connection.json")
    assert conn["dask"]["scheduler"].startswith("tls://127.0.0.1:") and "dask_missing" not in conn
    processes = [
        pid for pid in dask_processes(r.dir) if b"distributed.cli.dask_" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(processes) == 2 and {process_python(pid) for pid in processes} == {full}, "the scheduler and a worker"
    # The notebook's Client() connects with no arguments; the work runs in the kernel's Python on the workers.
    kernel = Kernel(conn, "a")
    ran = kernel.execute(
        "from distributed import Client; import sys; c = Client(timeout=60); "
        "print(c.submit(lambda: sys.executable).result(timeout=60)); c.close()"
    )
    assert ran.strip() == full
    jobqueue = json.loads((r.dir / "dask/config/jobqueue.yaml").read_text())
    assert all(section["python"] == full for section in jobqueue.get("jobqueue", {}).values())
    assert r.stop() == 0
    assert not dask_processes(r.dir) and not leftovers(r.dir)


def test_a_launcher_killed_outright_takes_the_users_kernel_and_dask_with_it(run: Any, venvs: dict[str, Path]) -> None:
    """As for the server's own kernel (test_launcher): kill -9 leaves no cleanup to the launcher, and nothing of
    the session outlives it, whichever Python runs the kernel and Dask."""
    full = str(venvs["full"])
    r = run("--dask", "--workers", "1", "--kernel", f"a={full}", "--dask-python", full, files=dask_files())
    conn = r.wait_file("connection.json", timeout=120)
    kernel = Kernel(conn, None)  # the default kernel: a
    assert kernel.execute("import sys; print(sys.executable)").strip() == full
    before = {*leftovers(r.dir), *dask_processes(r.dir), kernel.pid}
    assert len(before) >= 4, "Jupyter, its kernel, the scheduler and a worker run"
    kill_launcher_outright(r, before)


def test_a_dask_python_without_distributed_runs_the_session_without_dask(run: Any, venvs: dict[str, Path]) -> None:
    plain = str(venvs["plain"])
    r = run("--dask", "--kernel", f"b={plain}", "--dask-python", plain, files=dask_files())
    conn = r.wait_file("connection.json")
    assert conn["dask"] is None
    assert plain in conn["dask_missing"] and "distributed" in conn["dask_missing"]
    assert "no Dask: " + conn["dask_missing"] in r.output()
    assert not dask_processes(r.dir)
    assert r.stop() == 0


def test_the_jobqueue_python_is_the_dask_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import dasklaunch

    monkeypatch.setenv("HPCJUP_JOBQUEUE", "slurm")
    args = argparse.Namespace(
        workers=1, worker_cores=1, worker_memory="auto", lifetime=0, python_command="", dask_python="/e n/bin/python"
    )
    cluster = dasklaunch.DaskCluster.from_args(str(tmp_path / "lab"), "127.0.0.1", args, str(tmp_path))
    options = cluster.jobqueue_config()["jobqueue"]["slurm"]
    assert options["python"] == "'/e n/bin/python'"
    assert "export PATH='/e n/bin':$PATH" in options["job-script-prologue"]
    assert cluster.watched("distributed.cli.dask_scheduler")[0] == "/e n/bin/python"


NAMES = st.from_regex(kernels.NAME, fullmatch=True)
PATHS = st.lists(st.text(st.characters(blacklist_characters="/\0", codec="utf-8"), min_size=1), min_size=1).map(
    lambda parts: "/" + "/".join(parts)
)


@given(NAMES, PATHS)
def test_a_kernel_option_names_a_kernel_and_its_python(name: str, python: str) -> None:
    assert kernels.parse_kernel(f"{name}={python}") == (name, python)


@given(st.text(max_size=80))
def test_a_bad_kernel_option_is_refused_by_a_value_error(text: str) -> None:
    try:
        kernel = kernels.parse_kernel(text)
    except ValueError:
        return
    assert kernels.NAME.fullmatch(kernel.name) and kernel.python.startswith("/") and text == "=".join(kernel)


def test_kernel_names_differ() -> None:
    with pytest.raises(ValueError, match="a given twice"):
        kernels.parse_kernels(["a=/x/python", "b=/y/python", "a=/z/python"])


def test_kernel_env_values_are_taken_literally() -> None:
    env = kernels.kernel_env(
        kernels.Kernel("a", "/e/bin/python"), {"PATH": "/w/dask/bin:/$HOME/bin:/e/bin"}, "/w/dask/bin"
    )
    assert env["PATH"] == "/w/dask/bin:/e/bin:/$$HOME/bin", "the wrapper first, then the kernel's bin, $ escaped"


def test_the_laptop_says_what_to_do_about_a_kernel_without_ipykernel() -> None:
    """The reason the launcher records (hpcjup.job.REASON_NO_IPYKERNEL) has its own hint where a failed start is
    explained (hpcjup.session.wait.failure_hint), and its exit code is 2 (a setup to fix, as no-jupyter's)."""
    import endings

    from hpcjup.job import REASON_NO_IPYKERNEL
    from hpcjup.session.layout import SessionPaths
    from hpcjup.session.record import JobReport
    from hpcjup.session.wait import failure_hint

    assert REASON_NO_IPYKERNEL == kernels.REASON and endings.exit_code(REASON_NO_IPYKERNEL, None) == 2
    hint = failure_hint(JobReport("ended", REASON_NO_IPYKERNEL), SessionPaths("/home/u", "lab"))
    assert "ipykernel" in hint and "--kernel" in hint


def user_kernel(home: Path, name: str, argv0: str, display: str) -> Path:
    """A kernel spec of the user's own, where `python -m ipykernel install --user` puts one."""
    where = home / ".local/share/jupyter/kernels" / name
    where.mkdir(parents=True)
    argv = [argv0, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (where / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": display, "language": "python"}))
    (where / "logo-64x64.png").write_bytes(b"\x89PNG not really")
    return where


def test_the_users_own_kernels_are_offered_beside_the_sessions(
    run: Any, venvs: dict[str, Path], tmp_path: Path
) -> None:
    """Kernels in ~/.local/share/jupyter/kernels are the user's: offered beside the session's, the session's first
    kernel the default. One named as a session kernel does not replace it (a note says so); `python3`, which the
    server env has too (and a venv's Jupyter prefers its env's), is the user's; one running a bare `python` (which
    Jupyter would run with the server's Python) is left out with a note. Nothing is written there."""
    home = tmp_path / "home"
    full, plain = venvs["full"], venvs["plain"]
    user_kernel(home, "mine", str(plain), "Mine")
    user_kernel(home, "python3", str(plain), "My python3")
    clash = user_kernel(home, "a", str(plain), "My a")
    loose = user_kernel(home, "loose", "python3", "Loose")
    before = sorted((p, p.stat().st_mtime) for p in (home / ".local").rglob("*"))
    r = run("--kernel", f"a={full}", env={"HOME": str(home), "XDG_DATA_HOME": "", "JUPYTER_DATA_DIR": ""})
    conn = r.wait_file("connection.json")
    status, specs = api(conn, "/api/kernelspecs")
    assert status == 200 and specs["default"] == "a"
    assert set(specs["kernelspecs"]) == {"a", "mine", "python3"}
    shown = {name: spec["spec"]["display_name"] for name, spec in specs["kernelspecs"].items()}
    assert shown == {"a": "a (hpcjup)", "mine": "Mine", "python3": "My python3"}
    assert "logo-64x64" in specs["kernelspecs"]["mine"]["resources"]
    assert Kernel(conn, "python3").execute("import sys; print(sys.executable)").strip() == str(plain)
    assert Kernel(conn, "a").execute("import sys; print(sys.executable)").strip() == str(full)
    output = r.output()
    assert f"your kernel a ({clash}) is not offered: this session's kernel has its name" in output
    assert f"kernel loose ({loose}) is not offered: it runs `python3`" in output
    assert r.stop() == 0
    assert sorted((p, p.stat().st_mtime) for p in (home / ".local").rglob("*")) == before, "nothing written there"


def test_a_wrapper_kernel_names_the_python_it_runs(run: Any, venvs: dict[str, Path], tmp_path: Path) -> None:
    """A kernel's Python may be a wrapper that prepares an environment (a module set's): the failure names the
    Python it ran, and keeps what the wrapper said before it gave up (Lmod's error is several lines long)."""
    bare = tmp_path / "bare" / "bin" / "python"
    bare.parent.mkdir(parents=True)
    bare.write_text(f'#!/bin/sh\n# a module set whose python3 has no ipykernel\nexec {venvs["bare"]} "$@"\n')
    bare.chmod(0o700)
    failing = tmp_path / "failing" / "bin" / "python"
    failing.parent.mkdir(parents=True)
    lines = ["Lmod has detected the following error: The following module(s) are unknown: nosuch", "", "   hints"]
    lines += ["   more hints"] * 3 + ["hpcjup: module load failed (see above)"]
    failing.write_text("#!/bin/sh\n" + "".join(f"echo '{line}' >&2\n" for line in lines) + "exit 1\n")
    failing.chmod(0o700)
    r = run("--kernel", f"m={bare}")
    assert r.wait(60) == 2
    message = r.ended()["message"]
    assert f"kernel m: {bare} runs {venvs['bare']}, which has no ipykernel" in message
    assert f"({venvs['bare']} -m pip install ipykernel" in message
    r = run("--kernel", f"m={failing}")
    assert r.wait(60) == 2
    message = r.ended()["message"]
    assert "exited with code 1" in message and "module(s) are unknown: nosuch" in message
    assert message.endswith("hpcjup: module load failed (see above). Name an existing environment's bin/python.")


def test_dask_runs_through_a_wrapper_default_kernel(run: Any, venvs: dict[str, Path], tmp_path: Path) -> None:
    """A module set as the default kernel: its wrapper is the Dask Python too (scheduler, worker, through the
    lifeline), so Dask runs the Python the wrapper prepares, and the notebook's Client() reaches it."""
    full = str(venvs["full"])
    wrapper = tmp_path / "kernels" / "set" / "bin" / "python"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexport HPCJUP_WRAPPED=yes\nexec {full} "$@"\n')
    wrapper.chmod(0o700)
    r = run("--dask", "--workers", "1", "--kernel", f"set={wrapper}", "--dask-python", str(wrapper), files=dask_files())
    conn = r.wait_file("connection.json")
    assert conn["dask"]["scheduler"].startswith("tls://127.0.0.1:") and "dask_missing" not in conn
    ran = Kernel(conn, None).execute(
        "from distributed import Client; import os, sys; c = Client(timeout=60); "
        "print(c.submit(lambda: (sys.executable, os.environ.get('HPCJUP_WRAPPED'))).result(timeout=60)); c.close()"
    )
    assert ran.strip() == str((full, "yes"))
    assert r.stop() == 0
    assert not dask_processes(r.dir) and not leftovers(r.dir)

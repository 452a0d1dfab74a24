"""The launcher, run for real on this machine with the cluster-side JupyterLab (no scheduler, no mocks).

The laptop's Python runs pytest; the launcher runs under the cluster environment's Python, as in
a job. Kernels are driven over Jupyter's REST API and the kernel websocket, as a browser tab would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hpcjup.job import LAUNCHER_PATH
from tests.job.conftest import CLUSTER_PYTHON

CONNECTION_KEYS = {
    "schema",
    "job_id",
    "node",
    "address",
    "port",
    "socket",
    "token",
    "base_url",
    "url",
    "pid",
    "launcher_pid",
    "python",
    "jupyter_server_version",
    "jupyterlab_version",
    "root_dir",
    "started_at",
    "ready_at",
    "dask",
    "preemptible",
    "restarts",
}
STATE_KEYS = {
    "schema",
    "state",
    "job_id",
    "node",
    "reason",
    "message",
    "exit_code",
    "pid",
    "updated_at",
    "preemptible",
    "restarts",
}


class Run:
    """One launcher process with its session directory and job log."""

    def __init__(
        self,
        python: str,
        directory: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> None:
        directory.mkdir(mode=0o700)
        for name, data in (files or {}).items():  # what the laptop uploads before submitting
            (directory / name).parent.mkdir(mode=0o700, exist_ok=True)
            (directory / name).write_bytes(data)
            (directory / name).chmod(0o600)
        self.dir = directory
        self.log_path = (
            directory.parent / f"{directory.name}.out"
        )  # beside it: the launcher's cleanup must not touch it
        self.log = open(self.log_path, "wb")
        argv = [
            python,
            str(LAUNCHER_PATH),
            "--session-dir",
            str(directory),
            "--bind",
            "127.0.0.1",
            "--workdir",
            str(directory.parent),
            *extra,
        ]
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "HPCJUP_JOB_ID": "4242", **(env or {})}
        )

    def json(self, name: str) -> dict[str, Any]:
        return json.loads((self.dir / name).read_text())

    def wait_file(self, name: str, timeout: float = 60) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while not (self.dir / name).exists():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < end, f"{name} did not appear within {timeout} s"
            time.sleep(0.05)
        return self.json(name) if name.endswith(".json") else {}

    def wait_state(self, state: str, timeout: float = 30) -> dict[str, Any]:
        """state.json once it says `state` (the launcher writes it just after connection.json, not with it)."""
        end = time.monotonic() + timeout
        while (doc := self.json("state.json"))["state"] != state:
            assert time.monotonic() < end, f"state.json still says {doc['state']!r} after {timeout} s"
            time.sleep(0.05)
        return doc

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.log.close()
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text()

    def ended(self) -> dict[str, Any]:
        """The final state.json, checked for the things every ending shares."""
        state = self.json("state.json")
        assert set(state) == STATE_KEYS and state["state"] == "ended" and state["pid"] == self.proc.pid
        assert state["exit_code"] == self.proc.returncode
        assert sorted(p.name for p in self.dir.iterdir()) == ["state.json", "usage.json"], (
            "connection.json, token and runtime/ are removed"
        )
        usage = self.json("usage.json")
        assert (usage["end_reason"], usage["job_id"]) == (state["reason"], state["job_id"])
        assert stat.S_IMODE((self.dir / "usage.json").stat().st_mode) == 0o600
        assert not leftovers(self.dir), "no Jupyter or kernel process outlives the launcher"
        return state


def launcher_runs(python: str, tmp_path: Path) -> Iterator[Any]:
    """The `run` fixture (conftest.py): start launchers in tmp_path; any still running at the end are killed with
    their Jupyter."""
    runs: list[Run] = []

    def start(
        *extra: str, env: dict[str, str] | None = None, python: str = python, files: dict[str, bytes] | None = None
    ) -> Run:
        runs.append(Run(python, tmp_path / f"session{len(runs)}", *extra, env=env, files=files))
        return runs[-1]

    yield start
    for r in runs:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()
        for pid in leftovers(r.dir):
            os.kill(pid, signal.SIGKILL)


def leftovers(session_dir: Path) -> list[int]:
    """Live processes started for this session (Jupyter and kernels inherit JUPYTER_TOKEN_FILE)."""
    marker = f"JUPYTER_TOKEN_FILE={session_dir}/token".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0") and alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def jupyter_environ(pid: int) -> dict[str, str]:
    """A process's environment."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode().split("=", 1) for pair in pairs if b"=" in pair)


def kill_launcher_outright(r: Any, children: set[int], within: float = 30) -> None:
    """SIGKILL the launcher (no handler runs, as with the OOM killer) and assert `children` all end within `within` s."""
    r.proc.kill()
    r.proc.wait()
    deadline = time.monotonic() + within
    while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)], "the launcher's children outlived it"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def api(
    conn: dict[str, Any], path: str, token: str | None = "", method: str = "GET", body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """(status, JSON) of a request to the session's Jupyter; token "" means the session's own."""
    token = conn["token"] if token == "" else token
    headers = {"Authorization": f"token {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{conn['port']}{path}", headers=headers, method=method, data=data
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


class Kernel:
    """A kernel started over REST with one websocket connection: what an open notebook tab holds."""

    def __init__(self, conn: dict[str, Any], name: str | None = "python3") -> None:
        websocket = pytest.importorskip("websocket")
        status, model = api(conn, "/api/kernels", method="POST", body={"name": name} if name else {})
        assert status == 201, status
        self.id = model["id"]
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{conn['port']}/api/kernels/{self.id}/channels?session_id={uuid.uuid4().hex}",
            header=[f"Authorization: token {conn['token']}"],
            timeout=30,
        )
        self.send("kernel_info_request", {})  # what JupyterLab sends when a tab connects; not activity
        self.pid = int(self.execute("import os; print(os.getpid())"))

    def send(self, msg_type: str, content: dict[str, Any]) -> str:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "test",
            "session": "test",
            "date": "",
            "version": "5.3",
        }
        self.ws.send(
            json.dumps(
                {
                    "header": header,
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        return msg_id

    def execute(self, code: str) -> str:
        """Run code in the kernel; what it printed."""
        msg_id = self.send(
            "execute_request",
            {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False},
        )
        out = []
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)


def secret_places(pid: int) -> bytes:
    """A process's command line and environment: the token must be in neither."""
    return Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()


def test_rendezvous_files_token_auth_and_shutdown_from_the_menu(run: Any, tmp_path: Path) -> None:
    r = run()
    conn = r.wait_file("connection.json")
    assert set(conn) == CONNECTION_KEYS
    assert (conn["schema"], conn["job_id"], conn["address"], conn["base_url"]) == (1, "4242", "127.0.0.1", "/")
    assert conn["url"] == f"http://127.0.0.1:{conn['port']}/lab" and conn["socket"] is None
    assert (conn["launcher_pid"], conn["python"], conn["root_dir"]) == (r.proc.pid, str(CLUSTER_PYTHON), str(tmp_path))
    assert tuple(map(int, conn["jupyter_server_version"].split(".")[:2])) >= (2, 20) and conn[
        "jupyterlab_version"
    ].startswith("4.")
    token = (r.dir / "token").read_bytes()
    assert token == conn["token"].encode() and len(token) == 64 and int(token, 16) >= 0 and not token.endswith(b"\n")
    for name in ("connection.json", "token", "state.json"):
        assert stat.S_IMODE((r.dir / name).stat().st_mode) == 0o600, name
    # Jupyter's runtime files (and the kernels' IPC sockets) are in a private node-local directory, not the session's.
    runtime = jupyter_environ(conn["pid"])["JUPYTER_RUNTIME_DIR"]
    assert not runtime.startswith(str(r.dir)) and Path(runtime, f"jpserver-{conn['pid']}.json").exists()
    assert (stat.S_IMODE(os.stat(runtime).st_mode), os.stat(runtime).st_uid) == (0o700, os.getuid())
    state = r.wait_state("running")
    assert (state["state"], state["reason"], state["exit_code"], state["pid"]) == ("running", None, None, r.proc.pid)
    assert api(conn, "/api/status")[0] == 200
    assert api(conn, "/api/status", token=None)[0] == 403
    assert api(conn, "/api/status", token="0" * 64)[0] == 403
    # The token reaches Jupyter through the file only: not in argv or environment of either process.
    assert token not in secret_places(r.proc.pid) and token not in secret_places(conn["pid"])
    assert os.getsid(conn["pid"]) == conn["pid"], "Jupyter leads its own session"
    # File > Shut Down in JupyterLab: Jupyter exits 0 by itself, a normal end.
    assert api(conn, "/api/shutdown", method="POST")[0] == 200
    assert r.wait() == 0
    state = r.ended()
    assert (state["reason"], state["exit_code"]) == ("shutdown", 0)
    assert token.decode() not in r.output()


def unix_get(path: str, target: str, token: str | None) -> int:
    """The HTTP status of GET target on the Unix socket `path`."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        auth = f"Authorization: token {token}\r\n" if token else ""
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n".encode())
        return int(sock.makefile("rb").readline().split()[1])


def tcp_listeners(pid: int) -> list[str]:
    """The TCP ports process `pid` listens on (ss -ltnp)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def test_socket_mode_listens_on_a_private_unix_socket_only(run: Any) -> None:
    r = run("--socket")
    conn = r.wait_file("connection.json")
    sock = Path(conn["socket"])
    assert conn["port"] == 0 and conn["url"] == f"http+unix://{sock}/lab"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700 and sock.parent.parent == Path("/tmp")
    assert unix_get(str(sock), "/api/status", conn["token"]) == 200
    assert unix_get(str(sock), "/api/status", None) == 403
    assert tcp_listeners(conn["pid"]) == [], "nothing on TCP"
    assert r.stop(signal.SIGTERM) == 0
    assert r.ended()["reason"] == "stopped"
    assert not sock.parent.exists(), "the socket's directory is removed at the end"


def test_sigterm_shuts_kernels_down_cleanly_and_removes_secrets(run: Any, tmp_path: Path) -> None:
    r = run()
    conn = r.wait_file("connection.json")
    kernel = Kernel(conn)
    kept, at_exit = tmp_path / "kept.txt", tmp_path / "atexit.txt"
    # atexit handlers run only if the kernel exits by itself (a shutdown_request), not when it is killed.
    kernel.execute(
        f"import atexit, pathlib; pathlib.Path({str(kept)!r}).write_text('data'); atexit.register(pathlib.Path({str(at_exit)!r}).write_text, 'clean')"
    )
    started = time.monotonic()
    assert r.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    state = r.ended()
    assert (state["reason"], state["exit_code"]) == ("stopped", 0) and "SIGTERM" in state["message"]
    assert not alive(conn["pid"]) and not alive(kernel.pid)
    assert kept.read_text() == "data" and at_exit.read_text() == "clean"
    log = r.output()
    assert "received signal 15, stopping" in log  # Jupyter's own clean-shutdown path ran
    assert conn["token"] not in log and "token=..." in log  # Jupyter masks a token that comes from a file


def test_stop_while_jupyter_starts(run: Any) -> None:
    r = run()
    r.wait_file("token")  # written just before Jupyter is started
    assert r.stop(signal.SIGTERM) == 0
    assert r.ended()["reason"] == "stopped"
    assert "JupyterLab answers" not in r.output()


def test_walltime_signal_is_a_normal_end(run: Any) -> None:
    r = run()
    r.wait_file("connection.json")
    assert r.stop(signal.SIGUSR1) == 0
    state = r.ended()
    assert (state["reason"], state["exit_code"]) == ("walltime", 0) and "time limit" in state["message"]


def test_stop_grace_over_kills_jupyter_and_its_kernels(run: Any) -> None:
    r = run("--stop-grace", "0")
    conn = r.wait_file("connection.json")
    kernel = Kernel(conn)
    assert r.stop(signal.SIGTERM) == 0
    assert (r.ended()["reason"], alive(conn["pid"]), alive(kernel.pid)) == ("stopped", False, False)
    assert "did not stop within 0 s" in r.output()


def test_jupyter_dying_after_ready_is_reported(run: Any) -> None:
    r = run()
    conn = r.wait_file("connection.json")
    os.kill(conn["pid"], signal.SIGKILL)  # as the kernel's OOM killer might
    assert r.wait(10) == 128 + signal.SIGKILL
    state = r.ended()
    assert state["reason"] == "jupyter-exited" and "killed by SIGKILL" in state["message"]


def test_idle_session_ends_itself_even_with_an_open_tab(run: Any) -> None:
    r = run("--idle-timeout", "3")
    conn = r.wait_file("connection.json")
    kernel = Kernel(conn)  # connected and never used again, like a forgotten notebook tab
    ready = time.monotonic()
    assert r.wait(30) == 0
    # Kernel culled after 3 s idle (checked every 1 s), then the server after 3 s without kernels or requests.
    assert time.monotonic() - ready < 12
    state = r.ended()
    assert (state["reason"], state["exit_code"]) == ("idle", 0) and "--idle-timeout" in state["message"]
    log = r.output()
    assert f"({kernel.id}) with 1 connections due to" in log  # culled although a tab is connected
    assert not alive(kernel.pid)


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_usage_records_the_sessions_moments_nodes_and_busy_kernel_time(run: Any) -> None:
    before = time.time()
    env = {"HPCJUP_NODELIST": "n1 n2 n1", "HPCJUP_TIME_LIMIT": "900", "HPCJUP_JOB_PARTITION": "batch"}
    r = run("--idle-timeout", "20", env=env, files={"launcher.py": b"# what the laptop uploaded"})
    conn = r.wait_file("connection.json")
    early = r.json("usage.json")
    assert early["started_at"] and (early["ended_at"], early["end_reason"]) == (None, None)
    kernel = Kernel(conn)
    kernel.execute("import time; time.sleep(6)")  # busy for 6 s, sampled every 2 s (a tenth of --idle-timeout)
    time.sleep(2.5)  # a sample after the cell ended
    assert r.stop() == 0
    state, usage = r.json("state.json"), r.json("usage.json")
    assert sorted(p.name for p in r.dir.iterdir()) == ["launcher.py", "state.json", "usage.json"]
    submitted, started = seconds(usage["submitted_at"]), seconds(usage["started_at"])
    ready, ended = seconds(usage["ready_at"]), seconds(usage["ended_at"])
    # /proc counts a process's start in 10 ms ticks: the start may read a few ms before the files' ctime.
    assert before - 1 <= submitted <= started + 0.05, "the files arrived before the job started"
    assert before - 0.1 <= started <= ready <= ended <= time.time() + 0.01
    assert seconds(state["updated_at"]) - ended < 1
    assert (usage["nodes"], usage["time_limit"], usage["partition"], usage["sample_seconds"]) == (2, 900, "batch", 2)
    assert usage["end_reason"] == "stopped" and usage["schema"] == 1
    assert 3.0 <= usage["busy_seconds"] <= 10.0, usage
    assert len((r.dir / "usage.json").read_bytes()) < 1024


def test_jupyter_failing_to_start_is_reported_with_its_exit_code(run: Any) -> None:
    r = run("--", "--ServerApp.port_retries=not-a-number")
    code = r.wait(60)
    state = r.ended()
    assert (state["reason"], code) == ("jupyter-exited", state["exit_code"]) and code != 0
    assert "before it answered" in state["message"]


def test_ready_timeout_stops_jupyter(run: Any) -> None:
    r = run("--ready-timeout", "1")  # JupyterLab needs about 2 s here
    assert r.wait(60) == 3
    state = r.ended()
    assert state["reason"] == "ready-timeout" and "--ready-timeout" in state["message"]


def test_config_that_disables_authentication_is_refused(run: Any, tmp_path: Path) -> None:
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.py").write_text(
        'c.IdentityProvider.token = ""\n'
    )  # a common "convenience" snippet
    r = run(env={"JUPYTER_CONFIG_DIR": str(config)})
    assert r.wait(60) == 2
    state = r.ended()
    assert state["reason"] == "auth-config" and "c.IdentityProvider.token" in state["message"]


def bare_python(tmp_path: Path) -> Path:
    """A Python without Jupyter: a venv with nothing installed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    return tmp_path / "bare" / "bin" / "python"


def test_no_jupyter_is_a_clear_failure(run: Any, tmp_path: Path) -> None:
    python = bare_python(tmp_path)
    r = run(python=str(python))
    assert r.wait(30) == 2
    state = r.ended()
    assert state["reason"] == "no-jupyter"
    assert str(python) in state["message"] and "pip install jupyterlab" in state["message"]
    assert state["message"] in r.output()  # the job log says it too


def test_old_jupyter_server_is_a_clear_failure(run: Any, tmp_path: Path) -> None:
    python = bare_python(tmp_path)
    old = tmp_path / "old" / "jupyter_server"  # stands in for an installed jupyter_server 2.19
    old.mkdir(parents=True)
    (old / "__init__.py").write_text('__version__ = "2.19.1"\n')
    r = run(python=str(python), env={"PYTHONPATH": str(old.parent)})
    assert r.wait(30) == 2
    state = r.ended()
    assert state["reason"] == "jupyter-too-old"
    assert "2.19.1" in state["message"] and "pip install -U 'jupyter_server>=2.20' jupyterlab" in state["message"]


def dask_processes(session_dir: Path) -> list[int]:
    """Live processes of this session's Dask (the scheduler and workers get DASK_CONFIG=<dir>/dask/config)."""
    marker = f"DASK_CONFIG={session_dir}/dask/config".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0") and alive(int(proc.name)):
                if int(proc.name) != os.getpid():
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_the_dask_private_key_goes_with_the_session(run: Any) -> None:
    from hpcjup.session.dasktls import make_credentials

    cert, key = make_credentials("lab")
    r = run("--dask", "--workers", "1", files={"dask/cert.pem": cert, "dask/key.pem": key})
    conn = r.wait_file("connection.json", timeout=120)
    assert conn["dask"]["scheduler"].startswith("tls://127.0.0.1:")
    assert dask_processes(r.dir), "the scheduler and a worker run"
    assert (r.dir / "dask/key.pem").exists()
    assert r.stop(signal.SIGTERM, timeout=90) == 0
    state = r.json("state.json")
    assert (state["state"], state["reason"]) == ("ended", "stopped")
    assert not (r.dir / "dask/key.pem").exists(), "the session's Dask key is removed at the end"
    assert (r.dir / "dask/cert.pem").read_bytes() == cert, "the certificate is no secret: it stays"
    assert not dask_processes(r.dir) and not leftovers(r.dir)


def test_own_timer_ends_the_session_before_the_time_limit(run: Any) -> None:
    # A scheduler without a warning signal: the launcher ends the session WARN_SECONDS before the limit itself.
    started = time.monotonic()
    r = run(env={"HPCJUP_TIME_LIMIT": "12", "HPCJUP_WARN_SECONDS": "4", "HPCJUP_WARN_SIGNAL": "0"})
    assert r.wait(timeout=60) == 0
    elapsed = time.monotonic() - started
    state = r.ended()
    assert (state["reason"], state["exit_code"]) == ("walltime", 0) and "time limit" in state["message"]
    assert 8 <= elapsed < 40, f"ended after {elapsed:.1f} s; the timer was due after 8 s"
    assert "JupyterLab answers" in r.output(), "the session ran until the timer"


def test_no_own_timer_where_the_scheduler_signals(run: Any) -> None:
    r = run(env={"HPCJUP_TIME_LIMIT": "2", "HPCJUP_WARN_SECONDS": "1", "HPCJUP_WARN_SIGNAL": "1"})
    r.wait_file("connection.json")
    with pytest.raises(subprocess.TimeoutExpired):
        r.proc.wait(timeout=3)  # well past the limit: only the scheduler's SIGUSR1 (or a stop) ends it
    assert r.json("state.json")["state"] == "running"
    assert r.stop(signal.SIGUSR1) == 0 and r.ended()["reason"] == "walltime"


def test_dask_workers_run_through_the_per_host_launch(run: Any) -> None:
    from hpcjup.session.dasktls import make_credentials

    cert, key = make_credentials("lab")
    # A launch command that runs here but marks each worker with the host it was meant for.
    env = {"HPCJUP_NODELIST": "nodea nodeb", "HPCJUP_CPUS": "2", "HPCJUP_LAUNCH": "env HPCJUP_TEST_HOST={host}:{cpus}"}
    r = run(
        "--dask", "--workers", "3", "--worker-cores", "1", env=env, files={"dask/cert.pem": cert, "dask/key.pem": key}
    )
    conn = r.wait_file("connection.json", timeout=120)
    assert conn["dask"]["workers"] == 3

    def hosts() -> list[str]:
        found = []
        for pid in dask_processes(r.dir):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            mark = next((e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"HPCJUP_TEST_HOST=")), None)
            if mark and b"distributed.cli.dask_worker" in args:
                found.append(f"{mark} {args[args.index(b'--nworkers') + 1].decode()}")
        return sorted(found)

    end = time.monotonic() + 30
    while hosts() != ["nodea:2 2", "nodeb:1 1"]:
        assert time.monotonic() < end, hosts()
        time.sleep(0.2)
    assert r.stop(signal.SIGTERM, timeout=90) == 0
    assert not dask_processes(r.dir)


def test_a_launcher_killed_outright_takes_jupyter_kernels_and_dask_with_it(run: Any) -> None:
    """kill -9 (or the OOM killer) leaves no cleanup to the launcher: its children end by themselves (issue 23)."""
    from hpcjup.session.dasktls import make_credentials

    cert, key = make_credentials("lab")
    r = run("--dask", "--workers", "1", files={"dask/cert.pem": cert, "dask/key.pem": key})
    conn = r.wait_file("connection.json", timeout=120)
    assert api(conn, "/api/kernels", method="POST", body={})[0] == 201
    deadline = time.monotonic() + 60
    while (len(leftovers(r.dir)) < 2 or len(dask_processes(r.dir)) < 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    before = set(leftovers(r.dir)) | set(dask_processes(r.dir))
    assert len(leftovers(r.dir)) >= 2 and len(dask_processes(r.dir)) >= 2, "Jupyter, its kernel and Dask run"
    kill_launcher_outright(r, before)


def test_the_lifeline_ends_a_child_without_a_parent_death_signal(tmp_path: Path) -> None:
    """The portable half (macOS has no PR_SET_PDEATHSIG): the child ends once the pipe's write end is gone."""
    read, write = os.pipe()
    code = (
        f"import sys, time; sys.path.insert(0, {str(LAUNCHER_PATH.parent)!r}); import lifeline; "
        "lifeline.arm(grace=5); print('armed', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "HPCJUP_LAUNCHER_FD": str(read)},
        pass_fds=(read,),
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(read)
    assert child.stdout is not None and child.stdout.readline() == "armed\n"
    assert child.poll() is None
    os.close(write)  # what the launcher's death does
    assert child.wait(10) == -signal.SIGTERM

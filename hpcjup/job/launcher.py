"""hpcjup's job-side launcher: start JupyterLab on this node and tell the laptop where it is.

Standard library only, Python >= 3.9, copied into the session directory with every job (nothing
is installed on the cluster). The batch script `exec`s it, so it gets the scheduler's signals:
    python3 DIR/launcher.py --session-dir DIR [--workdir W] [--bind ADDR | --socket] [--ready-timeout 300]
                            [--stop-grace 20] [--idle-timeout SECONDS] [-- extra Jupyter arguments]

Files in DIR (0700, made by the laptop); each 0600, written atomically (temp file, fsync, rename):
- state.json, at every transition: {schema, state: starting|running|stopping|ended, reason,
  message, exit_code, job_id, node, pid (this launcher), updated_at (ISO 8601, UTC)}.
  reason: null while all is well, then stopped | walltime | idle | shutdown | jupyter-exited |
  no-jupyter | jupyter-too-old | auth-config | ready-timeout.
- token: 64 hex digits, no newline. Jupyter gets it only as JUPYTER_TOKEN_FILE in its own
  environment: never in argv, never in this process's environment, never in the job log.
- connection.json, once GET /api/status answers 200 with the token and 403 without: {schema,
  job_id, node, address, port, socket, token, base_url, url (no token), pid (Jupyter), launcher_pid,
  python, jupyter_server_version, jupyterlab_version, root_dir, started_at, ready_at}. With
  --socket, Jupyter listens only on `socket` (0600, in a 0700 directory on node-local /tmp) and port is 0.
- runtime/ (0700): Jupyter's JUPYTER_RUNTIME_DIR; it reports its port=0 choice in jpserver-PID.json.
At the end connection.json, token and runtime/ are removed and state.json says why it ended.

Signals: SIGTERM, SIGINT, SIGHUP -> "stopped"; SIGUSR1 (sent by the scheduler before the limit) -> "walltime".
Where the scheduler sends none (HPCJUP_WARN_SIGNAL is not "1") and grants HPCJUP_TIME_LIMIT seconds,
the launcher's own timer ends the session "walltime" HPCJUP_WARN_SECONDS before that limit.
Either way: state "stopping", SIGTERM to Jupyter's process group (it shuts its kernels down),
SIGKILL to it and its kernels after --stop-grace seconds.
Idle (--idle-timeout N): Jupyter culls kernels (even those with an open tab) and terminals idle
for N s; this launcher ends the session once there are no kernels, no terminals and no API
activity for N s. (jupyter_server's own shutdown_no_activity_timeout checks only once a minute.)
With --dask, dasklaunch.py (shipped beside this file) runs a TLS Dask scheduler and workers;
connection.json then has "dask": {scheduler, dashboard_port, workers, worker_cores, config}.
Exit codes: 0 stopped, walltime, idle, shutdown (File > Shut Down); 2 no-jupyter, jupyter-too-old,
auth-config, no-dask; 3 ready-timeout; 4 dask-failed; jupyter-exited: Jupyter's exit code
(128 + signal if it was killed, 1 if it exited 0 before it was ready).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

sys.path.insert(
    0, os.path.dirname(os.path.abspath(__file__))
)  # jupyterapi.py and dasklaunch.py travel beside this file
from jupyterapi import ENV_NODE, Endpoint, node_address

SCHEMA = 1
# The job's environment, as the rendered job script exports it (hpcjup.job.ENV_*; a test checks the names).
ENV_JOB_ID = "HPCJUP_JOB_ID"
ENV_TIME_LIMIT = "HPCJUP_TIME_LIMIT"
ENV_WARN_SIGNAL = "HPCJUP_WARN_SIGNAL"
ENV_WARN_SECONDS = "HPCJUP_WARN_SECONDS"
MIN_SERVER = (2, 20)
UPGRADE = "pip install -U 'jupyter_server>=2.20' jupyterlab"
STOP_SIGNALS = {
    signal.SIGTERM: "stopped",
    signal.SIGINT: "stopped",
    signal.SIGHUP: "stopped",
    signal.SIGUSR1: "walltime",
}
EXIT_CODES = {
    "stopped": 0,
    "walltime": 0,
    "idle": 0,
    "shutdown": 0,
    "no-jupyter": 2,
    "jupyter-too-old": 2,
    "auth-config": 2,
    "no-dask": 2,
    "ready-timeout": 3,
    "dask-failed": 4,
}


class Ended(Exception):
    """The session ends, for `reason` (a state.json reason) explained by `message`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def log(message: str) -> None:
    sys.stderr.write(f"[hpcjup launcher] {message}\n")
    sys.stderr.flush()


def write_atomic(path: str, data: bytes) -> None:
    """Write 0600 under a temporary name, fsync, rename: readers never see half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def check_environment() -> tuple[str, str]:
    """(jupyter_server version, jupyterlab version) of this Python, or Ended if it cannot serve."""
    python = sys.executable
    fix = f"Install it there ({python} -m pip install jupyterlab 'jupyter_server>=2.20') or choose a Python that has it (hpcjup start --python)."
    try:
        import jupyter_server
    except ImportError as exc:
        raise Ended("no-jupyter", f"No JupyterLab in {python} ({exc}). {fix}") from None
    version = jupyter_server.__version__
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found.group(1)), int(found.group(2))) < MIN_SERVER:
        old_python = (
            f" Recent jupyter_server releases need Python >= 3.10; this is {sys.version.split()[0]}."
            if sys.version_info < (3, 10)
            else ""
        )
        raise Ended(
            "jupyter-too-old",
            f"jupyter_server {version} in {python} is too old: hpcjup needs >= 2.20 "
            f"(which fixed a token-stealing XSS). Upgrade: {python} -m {UPGRADE}.{old_python}",
        )
    # find_spec, not import: importing jupyterlab costs ~1.5 s and 65 MB that this process never needs.
    if importlib.util.find_spec("jupyterlab") is None:
        raise Ended("no-jupyter", f"{python} has jupyter_server {version} but no JupyterLab. {fix}")
    try:
        return version, importlib.metadata.version("jupyterlab")
    except importlib.metadata.PackageNotFoundError:  # an unusual install without metadata still runs
        return version, "unknown"


def descendants(pid: int) -> list[int]:
    """Processes below `pid` (Linux /proc; empty elsewhere). Kernels lead their own sessions."""
    children: dict[int, list[int]] = {}
    for entry in [e for e in os.listdir("/proc") if e.isdigit()] if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def env_seconds(name: str) -> int:
    """A whole number of seconds from the job's environment; 0 when unset or not a number."""
    try:
        return max(0, int(os.environ.get(name, "")))
    except ValueError:
        return 0


def walltime_deadline(started: float) -> float | None:
    """When the launcher's own timer ends the session (monotonic clock): WARN_SECONDS before TIME_LIMIT,
    counted from `started`; None when the scheduler warns with SIGUSR1 itself, or no limit is known."""
    limit = env_seconds(ENV_TIME_LIMIT)
    if os.environ.get(ENV_WARN_SIGNAL) == "1" or limit <= 0:
        return None
    return started + max(0, limit - env_seconds(ENV_WARN_SECONDS))


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = os.path.abspath(args.session_dir)
        self.runtime = self.path("runtime")
        self.job_id = os.environ.get(ENV_JOB_ID) or str(os.getpid())
        self.node = os.environ.get(ENV_NODE) or socket.gethostname().split(".")[0]
        self.limit_at = walltime_deadline(time.monotonic())  # the own timer's moment, or None
        self.token = ""
        self.endpoint: Endpoint | None = None  # where Jupyter listens (made in serve)
        self.proc: subprocess.Popen | None = None
        self.wakeup = -1
        self.dask: Any = None  # a dasklaunch.DaskCluster with --dask

    @property
    def jupyter(self) -> subprocess.Popen:
        """Jupyter's process (started by start_jupyter)."""
        if self.proc is None:
            raise RuntimeError("Jupyter has not been started")
        return self.proc

    @property
    def where(self) -> Endpoint:
        """Jupyter's endpoint (chosen in serve)."""
        if self.endpoint is None:
            raise RuntimeError("no endpoint yet")
        return self.endpoint

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write_state(
        self, state: str, reason: str | None = None, message: str | None = None, exit_code: int | None = None
    ) -> None:
        doc = {
            "schema": SCHEMA,
            "state": state,
            "job_id": self.job_id,
            "node": self.node,
            "reason": reason,
            "message": message,
            "exit_code": exit_code,
            "pid": os.getpid(),
            "updated_at": now(),
        }
        write_atomic(self.path("state.json"), json.dumps(doc, indent=2).encode())

    # -- signals: handlers only wake the main loop (a self-pipe), all decisions happen there ----
    def install_signals(self) -> None:
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)
        self.wakeup = read
        for sig in [*list(STOP_SIGNALS), signal.SIGCHLD]:  # SIGCHLD: Jupyter exited
            signal.signal(sig, lambda signum, frame: None)

    def sleep(self, seconds: float) -> None:
        """Wait up to `seconds` or until a signal arrives; a stop signal, or the own timer's moment, raises Ended."""
        if self.limit_at is not None:
            seconds = min(seconds, self.limit_at - time.monotonic())
        if select.select([self.wakeup], [], [], max(0.0, seconds))[0]:
            for signum in os.read(self.wakeup, 512):
                if signum in STOP_SIGNALS:
                    what = "the job's time limit is near" if signum == signal.SIGUSR1 else "stopped on request"
                    raise Ended(STOP_SIGNALS[signal.Signals(signum)], f"{what} ({signal.Signals(signum).name})")
        if self.limit_at is not None and time.monotonic() >= self.limit_at:
            limit, warn = env_seconds(ENV_TIME_LIMIT), env_seconds(ENV_WARN_SECONDS)
            raise Ended("walltime", f"the job's time limit is near ({limit} s granted; stopping {warn} s before it)")

    # -- Jupyter -------------------------------------------------------------------------------
    def start_jupyter(self, root: str) -> None:
        os.makedirs(self.runtime, mode=0o700, exist_ok=True)
        os.chmod(self.runtime, 0o700)
        self.token = secrets.token_hex(32)
        write_atomic(self.path("token"), self.token.encode())  # no newline: Jupyter would make it part of the token
        base = self.dask.env if self.dask else os.environ  # kernels find the session's Dask through DASK_CONFIG
        env = dict(base, JUPYTER_RUNTIME_DIR=self.runtime, JUPYTER_TOKEN_FILE=self.path("token"))
        env.pop("JUPYTER_TOKEN", None)  # it would win over the file
        argv = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            *self.where.jupyter_args(),
            "--ServerApp.root_dir=" + root,
        ]
        idle = self.args.idle_timeout
        if idle > 0:
            every = self.idle_interval()
            argv += [
                f"--MappingKernelManager.cull_idle_timeout={idle}",
                f"--MappingKernelManager.cull_interval={every}",
                # An open notebook tab holds a websocket to its kernel; without this it is never culled.
                "--MappingKernelManager.cull_connected=True",
                f"--TerminalManager.cull_inactive_timeout={idle}",
                f"--TerminalManager.cull_interval={every}",
            ]
        if os.geteuid() == 0:  # containers and test machines; Jupyter refuses root otherwise
            argv.append("--allow-root")
        argv += self.args.jupyter_args
        # Own session: the terminal's Ctrl-C or a signal for the launcher reaches Jupyter only through us.
        # Output goes straight to the job log: jupyter_server prints a token from a file as "token=...".
        self.proc = subprocess.Popen(
            argv, env=env, cwd=root, stdin=subprocess.DEVNULL, start_new_session=True
        )  # cwd: kernels start here

    def idle_interval(self) -> int:
        return max(1, min(60, self.args.idle_timeout // 10))

    def api(self, path: str, token: bool = True) -> tuple[int | None, Any]:
        """(HTTP status, decoded JSON or None) of GET base_url+path on Jupyter; (None, None) if nothing answers."""
        return self.where.get(path, self.token if token else None)

    def wait_ready(self) -> None:
        """Return once Jupyter's /api/status answers 200 with the token (and 403 without it)."""
        assert self.proc is not None
        info_file = os.path.join(self.runtime, f"jpserver-{self.proc.pid}.json")
        deadline = time.monotonic() + self.args.ready_timeout
        rejected = 0
        while True:
            if self.proc.poll() is not None:
                raise self.exited(ready=False)
            if time.monotonic() > deadline:
                raise Ended(
                    "ready-timeout",
                    f"Jupyter did not answer within {self.args.ready_timeout} s (--ready-timeout); see the job log",
                )
            try:
                with open(info_file) as fh:  # jupyter_server >= 2.20 writes the port it got for port=0
                    listening = self.where.learn(json.load(fh))
            except (OSError, ValueError, TypeError, AttributeError):
                listening = False
            status = self.api("api/status")[0] if listening else None
            if status == 200:
                if self.api("api/status", token=False)[0] == 200:
                    raise Ended(
                        "auth-config",
                        "Jupyter answers without the token: a Jupyter config file disables authentication "
                        "(c.IdentityProvider.token = '' or c.ServerApp.token = ''); remove that setting",
                    )
                return
            rejected = rejected + 1 if status in (401, 403) else 0
            if rejected >= 20:  # persistently, not a moment during startup (seen once under heavy load)
                raise Ended(
                    "auth-config",
                    f"Jupyter rejects hpcjup's token (HTTP {status}): a Jupyter config file sets its own "
                    "(c.IdentityProvider.token or c.ServerApp.token); remove that setting",
                )
            self.sleep(0.1)

    def exited(self, ready: bool) -> Ended:
        """Why Jupyter ended by itself."""
        code = self.jupyter.returncode
        if ready and code == 0:
            return Ended("shutdown", "Jupyter shut itself down (File > Shut Down, or its own configuration)")
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return Ended("jupyter-exited", f"Jupyter {how}{'' if ready else ' before it answered'}; see the job log")

    def is_idle(self) -> bool:
        """No kernels, no terminals, and nothing for --idle-timeout s (these requests count as no activity)."""
        status, doc = self.api("api/status")
        terminals_status, terminals = self.api("api/terminals?no_track_activity=1")
        if status != 200 or doc.get("kernels") or terminals_status not in (200, 404) or terminals:
            return False
        last = datetime.datetime.fromisoformat(doc["last_activity"].replace("Z", "+00:00"))
        return (datetime.datetime.now(datetime.timezone.utc) - last).total_seconds() >= self.args.idle_timeout

    def stop_jupyter(self) -> None:
        """SIGTERM Jupyter's process group (it shuts its kernels down), SIGKILL after --stop-grace; sweep the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(self.args.stop_grace)
            except subprocess.TimeoutExpired:
                log(f"Jupyter did not stop within {self.args.stop_grace} s (--stop-grace); killing it and its kernels")
                for pid in descendants(self.proc.pid):  # kernels lead their own sessions, outside Jupyter's group
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.signal_group(signal.SIGKILL)
                self.proc.wait()
        self.signal_group(signal.SIGKILL)  # whatever is left in its group, e.g. jupyter-lsp's short-lived `npm prefix`

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(OSError):  # nobody left
            os.killpg(self.jupyter.pid, sig)

    # -- the session -----------------------------------------------------------------------------
    def serve(self) -> None:
        """Start Jupyter, publish connection.json, and watch until something ends the session (Ended)."""
        server_version, lab_version = check_environment()
        self.write_state("starting", message="starting JupyterLab")
        address = self.args.bind or node_address()
        self.endpoint = Endpoint(address, use_socket=self.args.socket)
        root = os.path.abspath(os.path.expanduser(self.args.workdir or "~"))
        self.sleep(0)  # a stop that came before Jupyter started
        started, clock = now(), time.monotonic()
        log(
            f"starting JupyterLab {lab_version} (jupyter_server {server_version}, {sys.executable}) on {address} in {root}"
        )
        if self.args.dask:
            self.start_dask(address)
        self.start_jupyter(root)
        self.wait_ready()
        if self.dask is not None:
            self.wait_dask()
        conn = {
            "schema": SCHEMA,
            "job_id": self.job_id,
            "node": self.node,
            **self.where.fields(),
            "token": self.token,
            "pid": self.jupyter.pid,
            "launcher_pid": os.getpid(),
            "python": sys.executable,
            "jupyter_server_version": server_version,
            "jupyterlab_version": lab_version,
            "root_dir": root,
            "started_at": started,
            "ready_at": now(),
            "dask": self.dask.info() if self.dask else None,
        }
        write_atomic(self.path("connection.json"), json.dumps(conn, indent=2).encode())
        self.write_state("running", message=f"JupyterLab on {self.endpoint.describe()}")
        log(
            f"JupyterLab answers on {self.endpoint.describe()} (node {self.node}) after {time.monotonic() - clock:.1f} s"
        )
        every = self.idle_interval() if self.args.idle_timeout > 0 else 3600
        while True:  # SIGCHLD or a stop signal wakes the sleep early
            self.sleep(every)
            if self.jupyter.poll() is not None:
                raise self.exited(ready=True)
            if self.args.idle_timeout > 0 and self.is_idle():
                raise Ended(
                    "idle", f"no kernels, terminals or activity for {self.args.idle_timeout} s (--idle-timeout)"
                )

    # -- Dask (dasklaunch.py) ---------------------------------------------------------------------
    def start_dask(self, address: str) -> None:
        from dasklaunch import DaskCluster, missing

        if missing():
            raise Ended("no-dask", missing())
        self.dask = DaskCluster.from_args(self.dir, address, self.args)
        self.dask.start_scheduler()

    def wait_dask(self) -> None:
        failure = self.dask.wait(self.args.ready_timeout, self.sleep)
        if failure:
            raise Ended("dask-failed", failure + "; see the job log, or start with --no-dask")

    def run(self) -> int:
        os.umask(0o077)
        self.install_signals()
        try:
            self.serve()  # ends only by raising Ended
        except Ended as end:
            return self.end(end.reason, end.message)
        finally:  # also after an unexpected error (a full disk): never leave Jupyter or a secret behind
            self.stop_jupyter()
            self.stop_dask()
            self.remove_secrets()
        raise AssertionError("unreachable")

    def end(self, reason: str, message: str) -> int:
        """Stop Jupyter if it still runs, clean up, record why the session ended; the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.write_state("stopping", reason, message)
            log(f"stopping Jupyter: {message}")
            self.stop_jupyter()
        self.stop_dask()  # before the secrets go: its processes hold the key until they end
        self.remove_secrets()
        code = EXIT_CODES.get(reason)
        if code is None:  # jupyter-exited: its own code
            returncode = self.proc.returncode if self.proc else 1
            code = 128 - returncode if returncode < 0 else returncode or 1
        self.write_state("ended", reason, message, code)
        log(f"ended ({reason}): {message}")
        return code

    def stop_dask(self) -> None:
        """Dask's workers and scheduler, after Jupyter (its kernels may have been using them); once."""
        if self.dask is not None:
            self.dask.stop(self.args.stop_grace)
            self.dask = None

    def remove_secrets(self) -> None:
        """No stale rendezvous, no secret left: connection.json, token, runtime/ (jpserver-*.json has the token),
        and the Dask private key (dask/key.pem, made by the laptop for this session only)."""
        for name in ("connection.json", "token", os.path.join("dask", "key.pem")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name))
        shutil.rmtree(self.runtime, ignore_errors=True)
        if self.endpoint is not None:
            self.endpoint.remove()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Start JupyterLab for an hpcjup session (see the module docstring).")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--workdir", help="Jupyter's root directory (default: $HOME)")
    parser.add_argument("--bind", help="address to listen on (default: this node's address)")
    parser.add_argument(
        "--socket", action="store_true", help="listen on a Unix socket in node-local /tmp instead of TCP"
    )
    parser.add_argument("--ready-timeout", type=int, default=300)
    parser.add_argument("--stop-grace", type=int, default=20)
    parser.add_argument("--idle-timeout", type=int, default=0)
    parser.add_argument("--dask", action="store_true", help="also run a TLS Dask scheduler and workers (dasklaunch.py)")
    parser.add_argument("--workers", type=int, default=-1, help="Dask worker processes (default: one per node)")
    parser.add_argument("--worker-cores", type=int, default=0, help="threads per worker (default: the task's CPUs)")
    parser.add_argument("--worker-memory", default="auto")
    parser.add_argument("--lifetime", type=int, default=0, help="workers retire after this many seconds")
    parser.add_argument("jupyter_args", nargs="*", help="after --: passed to Jupyter")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(Launcher(parse_args(sys.argv[1:])).run())

"""hpcjup's job-side launcher: start JupyterLab on this node and tell the laptop where it is.

Standard library only, Python >= 3.9, copied into the session directory with every job (nothing
is installed on the cluster). The batch script `exec`s it, so it gets the scheduler's signals:
    python3 DIR/launcher.py --session-dir DIR [--workdir W] [--bind ADDR | --socket] [--ready-timeout 300]
                            [--stop-grace 20] [--idle-timeout SECONDS] [--kernel NAME=PYTHON ...]
                            [--dask [--dask-python PYTHON]] [-- extra Jupyter arguments]

Files in DIR (0700, made by the laptop); each 0600, written atomically (temp file, fsync, rename):
- state.json, at every transition: {schema, state: starting|running|stopping|ended, reason,
  message, exit_code, job_id, node, pid (this launcher), updated_at (ISO 8601, UTC)}.
  reason: null while all is well, then stopped | walltime | idle | shutdown | jupyter-exited |
  no-jupyter | jupyter-too-old | no-ipykernel | auth-config | ready-timeout.
- token: 64 hex digits, no newline. Jupyter gets it only as JUPYTER_TOKEN_FILE in its own
  environment: never in argv, never in this process's environment, never in the job log.
- connection.json, once GET /api/status answers 200 with the token and 403 without: {schema,
  job_id, node, address, port, socket, token, base_url, url (no token), pid (Jupyter), launcher_pid,
  python, jupyter_server_version, jupyterlab_version, root_dir, started_at, ready_at, dask}. With
  --socket, Jupyter listens only on `socket` (0600, in a 0700 directory on node-local /tmp) and port is 0.
  With --kernel also "kernels": [{name, python, python_version, ipykernel, distributed}]; where --dask-python has
  no `distributed`, "dask" is null and "dask_missing" says why.
Node-local, private (private.py: a fresh 0700 directory under $TMPDIR or /tmp, unguessable, checked): Jupyter's
JUPYTER_RUNTIME_DIR (it reports its port=0 choice in jpserver-PID.json), the kernels' connection files and their
ZeroMQ channels (IPC sockets, never TCP: any user of the node could read a TCP loopback port), the Dask
dashboard's socket and Dask's scratch space.
- usage.json (usage.py): when the job was submitted, started, answered and ended, why, its nodes and the
  time a kernel was busy (sampled with the idle check), for `hpcjup stats`.
At the end connection.json, token and the private directory are removed; state.json and usage.json say why it ended.
The job files beside this one: atomic.py (private whole writes), endings.py (reasons, signals, exit codes,
the own walltime timer), jupyterenv.py (can this Python serve), jupyterapi.py (where Jupyter listens),
jupyterboot.py (how Jupyter is started: `python -m jupyterlab` with some imports deferred), usage.py, dasklaunch.py.

Signals: SIGTERM, SIGINT, SIGHUP -> "stopped"; SIGUSR1 (sent by the scheduler before the limit) -> "walltime".
Where the scheduler sends none (HPCJUP_WARN_SIGNAL is not "1") and grants HPCJUP_TIME_LIMIT seconds,
the launcher's own timer ends the session "walltime" HPCJUP_WARN_SECONDS before that limit.
Either way: state "stopping", SIGTERM to Jupyter's process group (it shuts its kernels down),
SIGKILL to it and its kernels after --stop-grace seconds.
Idle (--idle-timeout N): Jupyter culls kernels (even those with an open tab) and terminals idle
for N s; this launcher ends the session once there are no kernels, no terminals and no API
activity for N s. (jupyter_server's own shutdown_no_activity_timeout checks only once a minute.)
Kernels (--kernel NAME=PYTHON, kernels.py): this Python runs Jupyter's server; each --kernel is a kernel of
the session run by its own PYTHON (a user environment), registered in the private directory for this server
only, the first the default, the server's own python3 kernel hidden. Each PYTHON is checked before Jupyter
starts (one subprocess each, all at once); one without ipykernel ends the session "no-ipykernel".
With --dask, dasklaunch.py (shipped beside this file) runs a TLS Dask scheduler and workers, with
--dask-python (the default kernel's Python) or else this one; connection.json then has
"dask": {scheduler, dashboard_port, workers, worker_cores, config}.
Exit codes: 0 stopped, walltime, idle, shutdown (File > Shut Down); 2 no-jupyter, jupyter-too-old,
no-ipykernel, auth-config, no-dask; 3 ready-timeout; 4 dask-failed; jupyter-exited: Jupyter's exit code
(128 + signal if it was killed, 1 if it exited 0 before it was ready).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

# The job files travel beside this one and import each other from there.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from atomic import now, write_private
from contract import SCHEMA
from endings import WAKE_SIGNALS, Ended, exit_code, signalled, walltime_deadline, walltime_end
from jupyterapi import ENV_NODE, Endpoint, node_address
from jupyterenv import check_environment, culling_args, stop_group
from kernels import REASON as NO_IPYKERNEL
from kernels import (
    Kernel,
    Probe,
    check_kernels,
    dask_missing,
    describe,
    parse_kernels,
    probe,
    server_args,
    server_env,
    write_specs,
)
from lazy import OPT_OUT as LAZY_OPT_OUT
from lifeline import ENV_FD as WATCHDOG_FD
from lifeline import preexec
from private import make_private_dir
from usage import Usage

# The job's environment, as the rendered job script exports it (hpcjup.job.ENV_*; a test checks the names).
ENV_JOB_ID = "HPCJUP_JOB_ID"
WATCH_EVERY = 60  # seconds between samples of Jupyter's kernels without --idle-timeout (usage.json's busy time)


def jupyter_start() -> list[str]:
    """How Python starts JupyterLab: jupyterboot.py (`-m jupyterlab` without the import-time work nobody waits
    for), or `-m jupyterlab` itself where the job's environment opts out (HPCJUP_LAZY_IMPORTS=0), through
    lifeline.py. Either way Jupyter watches the launcher and ends with it (lifeline.py)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.environ.get(LAZY_OPT_OUT) == "0":
        return [os.path.join(here, "lifeline.py"), "-m", "jupyterlab"]
    return [os.path.join(here, "jupyterboot.py")]


def log(message: str) -> None:
    sys.stderr.write(f"[hpcjup launcher] {message}\n")
    sys.stderr.flush()


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = os.path.abspath(args.session_dir)
        self.private = ""  # the private node-local directory (made in serve): Jupyter's runtime dir, sockets
        self.job_id = os.environ.get(ENV_JOB_ID) or str(os.getpid())
        self.node = os.environ.get(ENV_NODE) or socket.gethostname().split(".")[0]
        self.limit_at = walltime_deadline(time.monotonic())  # the own timer's moment, or None
        self.token = ""
        self.endpoint: Endpoint | None = None  # where Jupyter listens (made in serve)
        self.proc: subprocess.Popen | None = None
        self.wakeup = -1
        # The pipe the children watch (lifeline.py): this process holds the only write end, so its death, however
        # it comes, is the end of file they wait for.
        self.lifeline, self.lifeline_write = os.pipe()
        self.dask: Any = None  # a dasklaunch.DaskCluster with --dask
        self.dask_missing: str | None = None  # why a session asked for Dask has none (--dask-python lacks it)
        self.kernels: list[Kernel] = []  # --kernel, in order (kernels.py)
        self.probed: dict[str, Probe] = {}  # what each --kernel and --dask-python Python said about itself
        self.usage = Usage(self.dir, self.job_id, self.path("launcher.py"))

    @property
    def runtime(self) -> str:
        """JUPYTER_RUNTIME_DIR: the private node-local directory (kernels' IPC sockets go beside their connection files)."""
        if not self.private:
            raise RuntimeError("no private directory yet")
        return self.private

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
        write_private(self.path("state.json"), json.dumps(doc, indent=2).encode())

    # -- signals: handlers only wake the main loop (a self-pipe), all decisions happen there ----
    def install_signals(self) -> None:
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)
        self.wakeup = read
        for sig in WAKE_SIGNALS:
            signal.signal(sig, lambda signum, frame: None)

    def sleep(self, seconds: float) -> None:
        """Wait up to `seconds` or until a signal arrives; a stop signal, or the own timer's moment, raises Ended."""
        if self.limit_at is not None:
            seconds = min(seconds, self.limit_at - time.monotonic())
        if select.select([self.wakeup], [], [], max(0.0, seconds))[0]:
            for signum in os.read(self.wakeup, 512):
                end = signalled(signum)
                if end is not None:
                    raise end
        if self.limit_at is not None and time.monotonic() >= self.limit_at:
            raise walltime_end()

    # -- Jupyter -------------------------------------------------------------------------------
    def start_jupyter(self, root: str) -> None:
        self.token = secrets.token_hex(32)
        write_private(self.path("token"), self.token.encode())  # no newline: Jupyter would make it part of the token
        base = self.dask.env if self.dask else os.environ  # kernels find the session's Dask through DASK_CONFIG
        env = dict(base, JUPYTER_RUNTIME_DIR=self.runtime, JUPYTER_TOKEN_FILE=self.path("token"))
        env.pop("JUPYTER_TOKEN", None)  # it would win over the file
        env[WATCHDOG_FD] = str(self.lifeline)
        if self.kernels:  # the session's own kernel specs, seen by this server only (kernels.py)
            first = os.path.join(self.dask.dir, "bin") if self.dask else ""
            env = server_env(env, write_specs(self.runtime, self.kernels, self.probed, env, first))
        argv = [
            sys.executable,
            *jupyter_start(),
            "--no-browser",
            *self.where.jupyter_args(),
            # The kernels' ZeroMQ channels as Unix sockets in the private directory: on TCP loopback any user of
            # the node can subscribe to a kernel's output (message signing stops injection, not reading).
            "--KernelManager.transport=ipc",
            *(self.dask.proxy_args() if self.dask else []),
            *(server_args(self.kernels) if self.kernels else []),
            "--ServerApp.root_dir=" + root,
        ]
        idle = self.args.idle_timeout
        if idle > 0:
            argv += culling_args(idle, self.watch_interval())
        if os.geteuid() == 0:  # containers and test machines; Jupyter refuses root otherwise
            argv.append("--allow-root")
        argv += self.args.jupyter_args
        # Own session: the terminal's Ctrl-C or a signal for the launcher reaches Jupyter only through us.
        # Output goes straight to the job log: jupyter_server prints a token from a file as "token=...".
        self.proc = subprocess.Popen(
            argv, env=env, cwd=root, stdin=subprocess.DEVNULL, start_new_session=True, **self.guard()
        )  # cwd: kernels start here

    def guard(self) -> dict:
        """Popen options that make a child end with this launcher (lifeline.py): the pipe, and on Linux PDEATHSIG."""
        return {"pass_fds": (self.lifeline,), "preexec_fn": preexec(os.getpid())}

    def watch_interval(self) -> int:
        """Seconds between samples of Jupyter's activity: a tenth of --idle-timeout (1 to 60), else WATCH_EVERY."""
        idle = self.args.idle_timeout
        return max(1, min(60, idle // 10)) if idle > 0 else WATCH_EVERY

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

    def watch(self) -> None:
        """One sample of Jupyter's kernels: busy time for usage.json and, with --idle-timeout, the idle check."""
        kernels_status, kernels = self.api("api/kernels?no_track_activity=1")  # listing them is not activity
        answered = kernels_status == 200 and isinstance(kernels, list)
        self.usage.sample(kernels if answered else None)
        if self.args.idle_timeout > 0 and answered and not kernels and self.is_idle():
            raise Ended("idle", f"no kernels, terminals or activity for {self.args.idle_timeout} s (--idle-timeout)")

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
        if self.proc is not None:
            stop_group(self.proc, self.args.stop_grace, log)

    # -- the session -----------------------------------------------------------------------------
    def serve(self) -> None:
        """Start Jupyter, publish connection.json, and watch until something ends the session (Ended)."""
        server_version, lab_version = check_environment()
        self.write_state("starting", message="starting JupyterLab")
        self.usage.write()
        address = self.args.bind or node_address()
        self.private = make_private_dir()
        self.endpoint = Endpoint(address, use_socket=self.args.socket)
        root = os.path.abspath(os.path.expanduser(os.path.expandvars(self.args.workdir or "~")))  # $VAR: the job's
        self.sleep(0)  # a stop that came before Jupyter started
        self.check_pythons()
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
        if self.dask_missing:
            conn["dask_missing"] = self.dask_missing
        if self.kernels:
            conn["kernels"] = describe(self.kernels, self.probed)
        write_private(self.path("connection.json"), json.dumps(conn, indent=2).encode())
        self.write_state("running", message=f"JupyterLab on {self.endpoint.describe()}")
        every = self.watch_interval()
        self.usage.ready(every)
        log(
            f"JupyterLab answers on {self.endpoint.describe()} (node {self.node}) after {time.monotonic() - clock:.1f} s"
        )
        while True:  # SIGCHLD or a stop signal wakes the sleep early
            self.sleep(every)
            if self.jupyter.poll() is not None:
                raise self.exited(ready=True)
            self.watch()

    # -- kernels (kernels.py) ---------------------------------------------------------------------
    def check_pythons(self) -> None:
        """Ask every --kernel Python (and --dask-python) about itself, all at once; Ended(no-ipykernel) for a
        kernel Python that cannot run a kernel."""
        try:
            self.kernels = parse_kernels(self.args.kernel)
        except ValueError as exc:
            raise Ended(NO_IPYKERNEL, str(exc)) from None
        pythons = [k.python for k in self.kernels]
        if self.args.dask and self.args.dask_python:
            pythons.append(self.args.dask_python)
        if not pythons:
            return
        options = {"pass_fds": (self.lifeline,), "preexec_fn": preexec(os.getpid())}
        self.probed = probe(pythons, self.args.ready_timeout, self.sleep, options)
        for kernel in self.kernels:
            seen = self.probed[kernel.python]
            if not seen.error:
                log(
                    f"kernel {kernel.name}: {kernel.python} (Python {seen.version}, ipykernel {seen.ipykernel}, "
                    + (f"distributed {seen.distributed})" if seen.distributed else "no distributed)")
                )
        check_kernels(self.kernels, self.probed)

    # -- Dask (dasklaunch.py) ---------------------------------------------------------------------
    def start_dask(self, address: str) -> None:
        from dasklaunch import DaskCluster, missing

        if self.args.dask_python:  # the default kernel's Python: without `distributed` the session runs, no Dask
            seen = self.probed[self.args.dask_python]
            self.dask_missing = dask_missing(self.args.dask_python, seen)
            if self.dask_missing:
                log(f"no Dask: {self.dask_missing}")
                return
            for kernel in self.kernels:  # a Client in that kernel would meet workers of another version
                other = self.probed[kernel.python].distributed
                if kernel.python != self.args.dask_python and other and other != seen.distributed:
                    log(
                        f"kernel {kernel.name} has distributed {other}, the session's Dask runs {seen.distributed} "
                        f"({self.args.dask_python}): a Client there may fail to talk to the workers"
                    )
        elif missing():
            raise Ended("no-dask", missing())
        self.dask = DaskCluster.from_args(self.dir, address, self.args, self.private)
        self.dask.guard = self.guard()
        self.dask.lifeline = self.lifeline
        if not self.dask.dashboard:
            log(
                "no Dask dashboard: it is served only through Jupyter's proxy, and jupyter-server-proxy is not installed"
            )
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
        code = exit_code(reason, self.proc.returncode if self.proc else None)
        self.write_state("ended", reason, message, code)
        self.usage.ended(reason)
        log(f"ended ({reason}): {message}")
        return code

    def stop_dask(self) -> None:
        """Dask's workers and scheduler, after Jupyter (its kernels may have been using them); once."""
        if self.dask is not None:
            self.dask.stop(self.args.stop_grace)
            self.dask = None

    def remove_secrets(self) -> None:
        """No stale rendezvous, no secret left: connection.json, token, the private directory (jpserver-*.json has
        the token), and the Dask private key (dask/key.pem, made by the laptop for this session only)."""
        for name in ("connection.json", "token", os.path.join("dask", "key.pem")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(name))
        if self.private:
            shutil.rmtree(self.private, ignore_errors=True)
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
    parser.add_argument(
        "--python-command",
        default="",
        help="the shell-quoted command that runs this Python when it is more than its path (a container runtime's "
        "prefix): the notebook's scale-out jobs run their workers with it",
    )
    parser.add_argument(
        "--kernel",
        action="append",
        default=[],
        metavar="NAME=PYTHON",
        help="a kernel of this session, run by PYTHON (repeatable; the first is the default); the server's own "
        "python3 kernel is then not offered",
    )
    parser.add_argument(
        "--dask-python",
        default="",
        help="the Python of the Dask scheduler and workers (the default kernel's); without `distributed` there "
        "the session runs without Dask",
    )
    parser.add_argument("jupyter_args", nargs="*", help="after --: passed to Jupyter")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(Launcher(parse_args(sys.argv[1:])).run())

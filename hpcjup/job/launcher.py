"""hpcjup's job-side launcher: start JupyterLab on this node and tell the laptop where it is.

Standard library only, Python >= 3.9, copied into the session directory with every job (nothing
is installed on the cluster). The batch script `exec`s it, so it gets the scheduler's signals:
    python3 DIR/launcher.py --session-dir DIR [--workdir W] [--bind ADDR | --socket] [--ready-timeout 300]
                            [--stop-grace 20] [--idle-timeout SECONDS] [--kernel NAME=PYTHON ...] [--preemptible]
                            [--dask [--dask-python PYTHON]] [-- extra Jupyter arguments]

Files in DIR (0700, made by the laptop); each 0600, written atomically (temp file, fsync, rename):
- state.json, at every transition: {schema, state: starting|running|stopping|ended, reason,
  message, exit_code, job_id, node, pid (this launcher), updated_at (ISO 8601, UTC), preemptible, restarts}.
  reason: null while all is well, then stopped | walltime | idle | shutdown | jupyter-exited |
  no-jupyter | jupyter-too-old | no-ipykernel | auth-config | ready-timeout.
- token: 64 hex digits, no newline. Jupyter gets it only as JUPYTER_TOKEN_FILE in its own
  environment: never in argv, never in this process's environment, never in the job log.
- connection.json, once GET /api/status answers 200 with the token and 403 without: {schema,
  job_id, node, address, port, socket, token, base_url, url (no token), pid (Jupyter), launcher_pid,
  python, jupyter_server_version, jupyterlab_version, root_dir, started_at, ready_at, dask, preemptible, restarts}.
  restarts: how often the job ran before (requeued after a preemption, --preemptible: rerun.py); the laptop takes
  a newer one of the same job id as the session's new place. With
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
jupyterboot.py (how Jupyter is started: `python -m jupyterlab` with some imports deferred), jupyterproc.py
(Jupyter's process: started, waited for, watched, stopped), usage.py, dasklaunch.py, daskscale.py.

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
"dask": {scheduler, dashboard_port, workers, worker_cores, config}. A launcher inside a container image with
Dask on several nodes is exec'd by relay.sh, which leaves a server on the host that runs the per-host launches of
the workers for it (through $HPCJUP_RELAY): the scheduler's launch is not inside the image.
Exit codes: 0 stopped, walltime, idle, shutdown (File > Shut Down); 2 no-jupyter, jupyter-too-old,
no-ipykernel, auth-config, no-dask; 3 ready-timeout; 4 dask-failed; jupyter-exited: Jupyter's exit code
(128 + signal if it was killed, 1 if it exited 0 before it was ready).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
from contract import (
    CONNECTION_FILE,
    DASK_DIR,
    ENV_JOB_ID,
    ENV_NODE,
    REASON_DASK_FAILED,
    REASON_NO_DASK,
    REASON_NO_IPYKERNEL,
    SCHEMA,
    STATE_FILE,
    TOKEN_FILE,
)
from endings import WAKE_SIGNALS, Ended, exit_code, signalled, walltime_deadline, walltime_end
from jupyterapi import Endpoint, node_address
from jupyterenv import check_environment
from jupyterproc import JupyterProcess, log
from kernels import (
    Kernel,
    Probe,
    check_kernels,
    dask_missing,
    describe,
    parse_kernels,
    probe,
)
from lifeline import preexec
from private import make_private_dir
from rerun import Rerun
from usage import Usage


class Launcher(JupyterProcess):
    """One session on this node: its state, signals, kernels' Pythons, Dask and end; Jupyter's process in
    jupyterproc.py."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = os.path.abspath(args.session_dir)
        self.private = ""  # the private node-local directory (made in serve): Jupyter's runtime dir, sockets
        self.job_id = os.environ.get(ENV_JOB_ID) or str(os.getpid())
        self.node = os.environ.get(ENV_NODE) or socket.gethostname().split(".")[0]
        self.limit_at = walltime_deadline(time.monotonic())  # the own timer's moment, or None
        # --preemptible: the job may run again after a preemption (rerun.py); a run after the first keeps the token
        self.rerun = Rerun(self.dir, self.job_id, args.preemptible, STATE_FILE)
        self.token = self.rerun.kept_token()
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
            **self.rerun.fields(),
        }
        write_private(self.path(STATE_FILE), json.dumps(doc, indent=2).encode())

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
            **self.rerun.fields(),
        }
        if self.dask_missing:
            conn["dask_missing"] = self.dask_missing
        if self.kernels:
            conn["kernels"] = describe(self.kernels, self.probed)
        write_private(self.path(CONNECTION_FILE), json.dumps(conn, indent=2).encode())
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
            raise Ended(REASON_NO_IPYKERNEL, str(exc)) from None
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
            raise Ended(REASON_NO_DASK, missing())
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
            raise Ended(REASON_DASK_FAILED, failure + "; see the job log, or start with --no-dask")

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
        self.rerun.ended(reason)
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
        the token), and the Dask private key (dask/key.pem, made by the laptop for this session only); the token and
        the key stay for the job's next run where a preemptible job was stopped by a signal (rerun.py)."""
        kept = self.rerun.keep
        for name in (CONNECTION_FILE,) if kept else (CONNECTION_FILE, TOKEN_FILE, os.path.join(DASK_DIR, "key.pem")):
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
    parser.add_argument(
        "--preemptible", action="store_true", help="the job is requeueable: it may run again (rerun.py)"
    )
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

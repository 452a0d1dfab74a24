"""Jupyter's server process for the launcher: start it, wait until it answers, watch it, stop it.

Standard library only, Python >= 3.9, shipped beside launcher.py, whose Launcher takes these methods from
JupyterProcess (the session's state, signals, Dask and end stay in launcher.py). Jupyter gets the token only as
JUPYTER_TOKEN_FILE in its own environment, runs in its own session (a signal for the launcher reaches it only
through the launcher), listens where the Endpoint says (jupyterapi.py) and ends with the launcher (lifeline.py).
Readiness: GET /api/status answers 200 with the token and 403 without. Each sample of its kernels feeds
usage.json's busy time and, with --idle-timeout, the idle check.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from atomic import write_private
from contract import (
    REASON_AUTH_CONFIG,
    REASON_IDLE,
    REASON_JUPYTER_EXITED,
    REASON_READY_TIMEOUT,
    REASON_SHUTDOWN,
    TOKEN_FILE,
)
from endings import Ended
from jupyterapi import Endpoint
from jupyterenv import culling_args, stop_group
from kernels import Kernel, Probe, own_kernels, server_args, server_env, write_specs
from lazy import OPT_OUT as LAZY_OPT_OUT
from lifeline import ENV_FD as WATCHDOG_FD
from lifeline import preexec
from usage import Usage

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
    """A line of the launcher's in the job log (stderr)."""
    sys.stderr.write(f"[hpcjup launcher] {message}\n")
    sys.stderr.flush()


class JupyterProcess:
    """Jupyter's process, for the Launcher (launcher.py) that owns the attributes below and the session."""

    args: argparse.Namespace
    private: str  # the private node-local directory
    token: str
    endpoint: Endpoint | None
    proc: subprocess.Popen | None
    lifeline: int  # the read end of the pipe the children watch (lifeline.py)
    dask: Any  # a dasklaunch.DaskCluster with --dask
    kernels: list[Kernel]
    probed: dict[str, Probe]
    usage: Usage

    def path(self, name: str) -> str:
        raise NotImplementedError  # the Launcher's: a file in the session directory

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError  # the Launcher's: wait, or raise Ended on a stop signal

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

    def start_jupyter(self, root: str) -> None:
        self.token = self.token or secrets.token_hex(32)  # a requeued run's is the run before's (rerun.py)
        write_private(self.path(TOKEN_FILE), self.token.encode())  # no newline: Jupyter would make it part of the token
        base = self.dask.env if self.dask else os.environ  # kernels find the session's Dask through DASK_CONFIG
        env = dict(base, JUPYTER_RUNTIME_DIR=self.runtime, JUPYTER_TOKEN_FILE=self.path(TOKEN_FILE))
        env.pop("JUPYTER_TOKEN", None)  # it would win over the file
        env[WATCHDOG_FD] = str(self.lifeline)
        own: dict[str, str] = {}
        if self.kernels:  # the session's own kernel specs, seen by this server only (kernels.py)
            first = os.path.join(self.dask.dir, "bin") if self.dask else ""
            # The user's own kernels, looked for once (before the session's data directory joins JUPYTER_PATH).
            own, left_out = own_kernels([kernel.name for kernel in self.kernels], env)
            for note in left_out:
                log(note)
            env = server_env(env, write_specs(self.runtime, self.kernels, self.probed, env, own, first))
        argv = [
            sys.executable,
            *jupyter_start(),
            "--no-browser",
            *self.where.jupyter_args(),
            # The kernels' ZeroMQ channels as Unix sockets in the private directory: on TCP loopback any user of
            # the node can subscribe to a kernel's output (message signing stops injection, not reading).
            "--KernelManager.transport=ipc",
            *(self.dask.proxy_args() if self.dask else []),
            *(server_args(self.kernels, own) if self.kernels else []),
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
                    REASON_READY_TIMEOUT,
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
                        REASON_AUTH_CONFIG,
                        "Jupyter answers without the token: a Jupyter config file disables authentication "
                        "(c.IdentityProvider.token = '' or c.ServerApp.token = ''); remove that setting",
                    )
                return
            rejected = rejected + 1 if status in (401, 403) else 0
            if rejected >= 20:  # persistently, not a moment during startup (seen once under heavy load)
                raise Ended(
                    REASON_AUTH_CONFIG,
                    f"Jupyter rejects hpcjup's token (HTTP {status}): a Jupyter config file sets its own "
                    "(c.IdentityProvider.token or c.ServerApp.token); remove that setting",
                )
            self.sleep(0.1)

    def exited(self, ready: bool) -> Ended:
        """Why Jupyter ended by itself."""
        code = self.jupyter.returncode
        if ready and code == 0:
            return Ended(REASON_SHUTDOWN, "Jupyter shut itself down (File > Shut Down, or its own configuration)")
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        return Ended(REASON_JUPYTER_EXITED, f"Jupyter {how}{'' if ready else ' before it answered'}; see the job log")

    def watch(self) -> None:
        """One sample of Jupyter's kernels: busy time for usage.json and, with --idle-timeout, the idle check."""
        kernels_status, kernels = self.api("api/kernels?no_track_activity=1")  # listing them is not activity
        answered = kernels_status == 200 and isinstance(kernels, list)
        self.usage.sample(kernels if answered else None)
        if self.args.idle_timeout > 0 and answered and not kernels and self.is_idle():
            raise Ended(
                REASON_IDLE, f"no kernels, terminals or activity for {self.args.idle_timeout} s (--idle-timeout)"
            )

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

"""hpcjup's job-side launcher: start JupyterLab on this node and tell the laptop where it is.

Standard library only, Python >= 3.9. hpcjup copies this file into the session directory
with every job; nothing is installed on the cluster. Usage:

    python3 launcher.py --session-dir DIR [--workdir W] [--bind ADDR] [--ready-timeout 300]
                        [--stop-grace 20] [--idle-timeout SECONDS] [-- extra Jupyter arguments]

Contract with the laptop (all files 0600 in the 0700 session directory, written atomically):
- state.json: {schema, state: starting|running|stopping|ended, reason, message, exit_code,
  job_id, node, pid, updated_at}; reason is one of stopped, walltime, idle, shutdown (Jupyter's
  own menu), jupyter-exited, no-jupyter, jupyter-too-old, ready-timeout.
- token: 64 hex characters, no newline; Jupyter reads it through JUPYTER_TOKEN_FILE only.
- connection.json: {schema, job_id, node, address, port, token, base_url, url, pid,
  launcher_pid, python, jupyter_server_version, jupyterlab_version, root_dir, started_at,
  ready_at}, written once GET /api/status answers 200 with the token.
Signals: SIGTERM, SIGINT, SIGHUP stop (reason "stopped"); SIGUSR1 is the scheduler's walltime
warning (reason "walltime"). Either shuts Jupyter down cleanly (SIGTERM, then SIGKILL after
--stop-grace). At the end connection.json and token are removed.
Exit codes: 0 stopped/walltime/idle/shutdown, 2 environment unusable, 3 ready timeout, else Jupyter's.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

SCHEMA = 1
MIN_SERVER = (2, 20)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: str, data: bytes) -> None:
    """Write 0600 under a temporary name, fsync, rename: readers never see half a file."""
    tmp = "%s.tmp%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def log(message: str) -> None:
    sys.stderr.write("[hpcjup launcher] %s\n" % message)
    sys.stderr.flush()


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = os.path.abspath(args.session_dir)
        self.job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("HPCJUP_JOB_ID") or str(os.getpid())
        self.node = os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
        self.token = ""
        self.proc = None  # type: subprocess.Popen | None
        self.stop_reason = None  # type: str | None
        self.saw_idle_shutdown = False
        self.wake = threading.Event()

    # -- files -------------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def state(self, state: str, reason=None, message=None, exit_code=None) -> None:
        doc = {"schema": SCHEMA, "state": state, "reason": reason, "message": message, "exit_code": exit_code,
               "job_id": self.job_id, "node": self.node, "pid": os.getpid(), "updated_at": now()}
        write_atomic(self.path("state.json"), json.dumps(doc, indent=2).encode())

    def remove_secrets(self) -> None:
        for name in ("connection.json", "token"):
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                pass

    # -- steps -------------------------------------------------------------------------
    def check_environment(self):
        """(jupyter_server version, jupyterlab version), or end with a reason and exit code 2."""
        try:
            import jupyter_server
            import jupyterlab
        except ImportError as exc:
            self.fail("no-jupyter", "%s has no JupyterLab (%s). Install it in the cluster environment "
                      "(pip install jupyterlab 'jupyter_server>=2.20') or point --python at a Python that has it."
                      % (sys.executable, exc), 2)
        version = tuple(int(p) for p in jupyter_server.__version__.split(".")[:2] if p.isdigit())
        if version < MIN_SERVER:
            self.fail("jupyter-too-old", "jupyter_server %s at %s is older than 2.20 (which fixed a token-stealing XSS). "
                      "Upgrade: pip install -U 'jupyter_server>=2.20' jupyterlab" % (jupyter_server.__version__, sys.executable), 2)
        return jupyter_server.__version__, jupyterlab.__version__

    def bind_address(self) -> str:
        if self.args.bind:
            return self.args.bind
        for name in (os.environ.get("SLURMD_NODENAME"), socket.gethostname()):
            if name:
                try:
                    return socket.gethostbyname(name)
                except OSError:
                    continue
        return "127.0.0.1"

    def start_jupyter(self, address: str, root: str) -> None:
        runtime = self.path("runtime")
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        os.chmod(runtime, 0o700)
        self.token = secrets.token_hex(32)
        write_atomic(self.path("token"), self.token.encode())  # no newline: it would become part of the token
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=runtime, JUPYTER_TOKEN_FILE=self.path("token"))
        env.pop("JUPYTER_TOKEN", None)
        argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=" + address,
                "--ServerApp.port=0", "--ServerApp.port_retries=0", "--ServerApp.root_dir=" + root]
        idle = self.args.idle_timeout
        if idle:
            argv += ["--ServerApp.shutdown_no_activity_timeout=%d" % idle,
                     "--MappingKernelManager.cull_idle_timeout=%d" % idle,
                     "--MappingKernelManager.cull_interval=%d" % max(10, min(60, idle // 2)),
                     "--MappingKernelManager.cull_connected=True",
                     "--TerminalManager.cull_inactive_timeout=%d" % idle,
                     "--TerminalManager.cull_interval=%d" % max(10, min(60, idle // 2))]
        if os.geteuid() == 0:  # containers and test machines run as root; Jupyter refuses that otherwise
            argv.append("--allow-root")
        argv += self.args.jupyter_args
        # Own session: a signal for the launcher is not also delivered to Jupyter by the terminal or srun.
        self.proc = subprocess.Popen(argv, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self.relay_output, daemon=True).start()

    def relay_output(self) -> None:
        """Copy Jupyter's output to the job log, with the token masked and idle shutdowns noticed."""
        assert self.proc is not None and self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            if self.token:
                line = line.replace(self.token, "<token>")
            lowered = line.lower()  # jupyter_server: "No kernels for N seconds; shutting down." (or "... no activity; ...")
            if "shutting down" in lowered and ("no kernels" in lowered or "no activity" in lowered):
                self.saw_idle_shutdown = True
            sys.stdout.write(line)
            sys.stdout.flush()

    def wait_ready(self, address: str):
        """The port Jupyter listens on, once /api/status answers 200 with the token; None if it exited."""
        assert self.proc is not None
        deadline = time.monotonic() + self.args.ready_timeout
        info_file = os.path.join(self.path("runtime"), "jpserver-%d.json" % self.proc.pid)
        while time.monotonic() < deadline and self.stop_reason is None:
            if self.proc.poll() is not None:
                return None
            port = self._port_from(info_file) or self._port_from_any()
            if port and self._answers(address, port):
                return port
            self.wake.wait(0.1)
        return 0 if self.stop_reason is None else None

    def _port_from(self, path: str):
        try:
            with open(path) as fh:
                return int(json.load(fh).get("port") or 0) or None
        except (OSError, ValueError):
            return None

    def _port_from_any(self):
        for path in glob.glob(os.path.join(self.path("runtime"), "jpserver-*.json")):
            port = self._port_from(path)
            if port:
                return port
        return None

    def _answers(self, address: str, port: int) -> bool:
        request = urllib.request.Request("http://%s:%d/api/status" % (address, port), headers={"Authorization": "token " + self.token})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop_jupyter(self) -> int:
        """SIGTERM Jupyter's process group (it shuts its kernels down), SIGKILL after the grace period."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(self.args.stop_grace)
            except subprocess.TimeoutExpired:
                log("Jupyter did not stop within %d s; killing it" % self.args.stop_grace)
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def fail(self, reason: str, message: str, code: int) -> None:
        log(message)
        self.remove_secrets()
        self.state("ended", reason, message, code)
        sys.exit(code)

    # -- main --------------------------------------------------------------------------
    def on_signal(self, signum, frame) -> None:
        if self.stop_reason is None:
            self.stop_reason = "walltime" if signum == signal.SIGUSR1 else "stopped"
        self.wake.set()

    def run(self) -> int:
        os.umask(0o077)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, self.on_signal)
        self.state("starting")
        server_version, lab_version = self.check_environment()
        address = self.bind_address()
        root = os.path.abspath(os.path.expanduser(self.args.workdir or "~"))
        started = now()
        self.start_jupyter(address, root)
        port = self.wait_ready(address)
        if port:
            conn = {"schema": SCHEMA, "job_id": self.job_id, "node": self.node, "address": address, "port": port,
                    "token": self.token, "base_url": "/", "url": "http://%s:%d/lab" % (address, port), "pid": self.proc.pid,
                    "launcher_pid": os.getpid(), "python": sys.executable, "jupyter_server_version": server_version,
                    "jupyterlab_version": lab_version, "root_dir": root, "started_at": started, "ready_at": now()}
            write_atomic(self.path("connection.json"), json.dumps(conn, indent=2).encode())
            self.state("running")
            log("JupyterLab answers on %s:%d (node %s)" % (address, port, self.node))
            while self.stop_reason is None and self.proc.poll() is None:
                self.wake.wait(1.0)
        elif port == 0:
            self.stop_reason = "ready-timeout"
        if self.stop_reason is not None:
            self.state("stopping", self.stop_reason)
            log("stopping Jupyter (%s)" % self.stop_reason)
        code = self.stop_jupyter()
        return self.finish(code)

    def finish(self, code: int) -> int:
        self.remove_secrets()
        reason = self.stop_reason
        if reason is None and code == 0:
            reason = "idle" if self.saw_idle_shutdown else "shutdown"  # idle culling, or File > Shut Down
        reason = reason or "jupyter-exited"
        messages = {
            "stopped": "stopped on request", "walltime": "stopped before the time limit", "idle": "nobody used it for the idle timeout",
            "shutdown": "Jupyter was shut down from its own menu",
            "ready-timeout": "Jupyter did not answer within %d s" % self.args.ready_timeout,
            "jupyter-exited": "Jupyter exited with code %s" % code,
        }  # fmt: skip
        exit_code = {"stopped": 0, "walltime": 0, "idle": 0, "shutdown": 0, "ready-timeout": 3}.get(reason, code or 1)
        self.state("ended", reason, messages[reason], exit_code)
        log("ended: %s" % messages[reason])
        return exit_code


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Start JupyterLab for an hpcjup session.")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--workdir")
    parser.add_argument("--bind")
    parser.add_argument("--ready-timeout", type=int, default=300)
    parser.add_argument("--stop-grace", type=int, default=20)
    parser.add_argument("--idle-timeout", type=int, default=0)
    parser.add_argument("jupyter_args", nargs="*")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(Launcher(parse_args(sys.argv[1:])).run())

"""The Dask half of a session, run by the launcher: a TLS scheduler beside Jupyter, workers on every node.

Standard library only (it starts `distributed` in subprocesses, from the job's Python).
The session's TLS credentials (dask/cert.pem, dask/key.pem, made by the laptop, 0600) are
used by scheduler, workers and clients; plain connections are refused. The dashboard
listens on the node's loopback only: it is reached through Jupyter's authenticated
proxy (jupyter-server-proxy), never open on the cluster network. A dask config file
(dask/config/distributed.yaml, JSON is valid YAML) makes `Client()` in a notebook
connect with no arguments: DASK_CONFIG points at it for Jupyter, its kernels and workers.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

JOBS_FILE = "jobs"  # in dask/: the ids of the jobs the notebook submitted, one a line
SETUP_FILE = "setup.sh"  # in the session directory: the profile's environment (hpcjup.job.SETUP_FILE)


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# The sbatch wrapper put first on PATH for Jupyter's kernels (@REAL@, @JOBS@: quoted paths).
_SBATCH_WRAPPER = r"""#!/bin/sh
# hpcjup: scrub the surrounding job's SLURM_* variables before submitting, and record the job's id.
for v in $(env | sed -n 's/^\(SLURM_[A-Za-z0-9_]*\)=.*/\1/p'); do
    [ "$v" = SLURM_CONF ] || unset "$v"
done
# The trailing x keeps the output's own trailing newlines; the subshell's exit code is sbatch's.
out=$(@REAL@ "$@"; code=$?; printf x; exit $code)
code=$?
out=${out%x}
printf '%s' "$out"
if [ "$code" -eq 0 ]; then
    # --parsable prints ID[;CLUSTER], otherwise "Submitted batch job ID[ on cluster C]"; --test-only nothing.
    id=$(printf '%s\n' "$out" | sed -n -e 's/^Submitted batch job \([0-9][0-9]*\).*/\1/p' \
        -e 's/^\([0-9][0-9]*\)\(;.*\)\{0,1\}$/\1/p' | head -n 1)
    [ -z "$id" ] || (umask 077 && printf '%s\n' "$id" >>@JOBS@)
fi
exit $code
"""


def sbatch_wrapper(real: str, jobs_file: str) -> str:
    """The wrapper script: scrub SLURM_*, run the real sbatch, record the id it printed, pass everything on."""
    return _SBATCH_WRAPPER.replace("@REAL@", shlex.quote(real)).replace("@JOBS@", shlex.quote(jobs_file))


def missing() -> str | None:
    """Why this Python cannot run Dask, or None."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        return f"{sys.executable} has no Dask (`distributed`). Install it there ({sys.executable} -m pip install distributed) or start with --no-dask."
    return None


class DaskCluster:
    """Scheduler and workers of one session."""

    def __init__(
        self, session_dir: str, address: str, workers: int, worker_cores: int, worker_memory: str, lifetime: int
    ) -> None:
        self.dir = os.path.join(session_dir, "dask")
        self.config_dir = os.path.join(self.dir, "config")
        self.address = address
        self.workers, self.worker_cores, self.worker_memory, self.lifetime = (
            workers,
            worker_cores,
            worker_memory,
            lifetime,
        )
        self.scheduler = None  # type: subprocess.Popen | None
        self.worker_proc = None  # type: subprocess.Popen | None
        self.scheduler_address = ""
        self.dashboard_port = 0

    @classmethod
    def from_args(cls, session_dir: str, address: str, args) -> DaskCluster:
        """From the launcher's options; defaults fill the allocation: one worker per node, the task's CPUs each."""
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        workers = args.workers if args.workers >= 0 else nodes
        # What the allocation gives per node (SLURM_CPUS_ON_NODE), not what the machine has: asking srun for
        # more fails with "More processors requested than permitted".
        per_node = int(
            os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or os.cpu_count() or 1
        )
        cores = args.worker_cores or max(1, per_node * nodes // max(1, workers))
        return cls(session_dir, address, workers, cores, args.worker_memory, args.lifetime)

    @property
    def env(self) -> dict:
        """The environment for every Dask process and for Jupyter's kernels (the sbatch wrapper first on PATH)."""
        bindir = os.path.join(self.dir, "bin")
        return dict(os.environ, DASK_CONFIG=self.config_dir, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))

    def write_sbatch_wrapper(self) -> None:
        """`sbatch` for kernels: jobs submitted from inside a job inherit SLURM_* variables that break
        sbatch (the allocation's node list, CPU counts, ...); the wrapper drops them, keeping SLURM_CONF.
        It appends each accepted job's id to dask/jobs (0600): `hpcjup stop` cancels those and only
        those. sbatch's output and exit code pass through unchanged."""
        real = shutil.which("sbatch")
        if real is None:
            return
        bindir = os.path.join(self.dir, "bin")
        os.makedirs(bindir, mode=0o700, exist_ok=True)
        path = os.path.join(bindir, "sbatch")
        _write(path, sbatch_wrapper(real, os.path.join(self.dir, JOBS_FILE)).encode())
        os.chmod(path, 0o700)

    def jobqueue_config(self) -> dict:
        """Defaults for dask_jobqueue.SLURMCluster() in a notebook: this session's partition, account,
        environment and TLS, so `SLURMCluster().scale(n)` needs no arguments."""
        setup = shlex.quote(os.path.join(os.path.dirname(self.dir), SETUP_FILE))
        prologue = [
            f"if [ -r {setup} ]; then . {setup}; fi",  # the profile's environment; older sessions have none
            f"export DASK_CONFIG={shlex.quote(self.config_dir)}",
            f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH",
        ]
        slurm = {
            "cores": self.worker_cores,
            "processes": 1,
            "memory": f"{max(1, self.worker_cores)}GB",
            "python": sys.executable,
            "queue": os.environ.get("SLURM_JOB_PARTITION"),
            "account": os.environ.get("SLURM_JOB_ACCOUNT"),
            "walltime": "01:00:00",
            "name": f"hpcjup+{os.path.basename(os.path.dirname(self.dir))}+scale",  # '+' is in no session name
            "job-script-prologue": prologue,
            "worker-extra-args": ["--death-timeout", "60"],
            "log-directory": os.path.join(self.dir, "logs"),
            "scheduler-options": {"protocol": "tls", "host": self.address},
        }
        return {"jobqueue": {"slurm": slurm}}

    def write_config(self) -> None:
        cert, key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        pair = {"cert": cert, "key": key}
        config: dict[str, Any] = {
            "distributed": {
                "comm": {
                    "require-encryption": True,
                    "tls": {"ca-file": cert, "scheduler": pair, "worker": pair, "client": pair},
                },
                "dashboard": {"link": "{JUPYTER_SERVER_ROOT}proxy/{port}/status"},
            }
        }
        if self.scheduler_address:
            config["scheduler-address"] = self.scheduler_address
        os.makedirs(self.config_dir, mode=0o700, exist_ok=True)
        _write(os.path.join(self.config_dir, "distributed.yaml"), json.dumps(config, indent=2).encode())
        _write(os.path.join(self.config_dir, "jobqueue.yaml"), json.dumps(self.jobqueue_config(), indent=2).encode())

    def start_scheduler(self) -> None:
        self.write_config()
        self.write_sbatch_wrapper()
        argv = [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--protocol",
            "tls",
            "--host",
            self.address,
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--scheduler-file",
            os.path.join(self.dir, "scheduler.json"),
        ]
        self.scheduler = subprocess.Popen(argv, env=self.env, start_new_session=True)

    def poll_scheduler(self) -> bool:
        """True once the scheduler file names the address (then the config gets it, and workers start)."""
        try:
            with open(os.path.join(self.dir, "scheduler.json")) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            return False
        self.scheduler_address = info["address"]
        self.dashboard_port = int((info.get("services") or {}).get("dashboard") or 0)
        self.write_config()
        self.start_workers()
        return True

    def wait(self, timeout: float, sleep) -> str | None:
        """None once the scheduler's address is known (it starts beside Jupyter, so this is short); else why not."""
        deadline = time.monotonic() + timeout
        while not self.poll_scheduler():
            if self.failed() or time.monotonic() > deadline:
                return self.failed() or f"the Dask scheduler did not start within {timeout:.0f} s"
            sleep(0.1)
        return None

    def start_workers(self) -> None:
        if self.workers <= 0:
            return
        worker = [
            sys.executable,
            "-m",
            "distributed.cli.dask_worker",
            "--scheduler-file",
            os.path.join(self.dir, "scheduler.json"),
            "--nthreads",
            str(self.worker_cores),
            "--memory-limit",
            self.worker_memory,
            "--no-dashboard",
        ]
        if self.lifetime:
            worker += ["--lifetime", f"{self.lifetime}s", "--lifetime-stagger", "30s"]
        if os.environ.get("SLURM_JOB_ID"):
            # One step over the allocation, explicit CPUs per task; --overlap: the batch step holds the first node too.
            nodes = os.environ.get("SLURM_JOB_NUM_NODES", "1")
            argv = [
                "srun",
                "--overlap",
                "--nodes",
                nodes,
                "--ntasks",
                str(self.workers),
                "--cpus-per-task",
                str(self.worker_cores),
                "--kill-on-bad-exit=0",
                "--job-name",
                "dask-workers",
                *worker,
            ]
        else:
            argv = [*worker, "--nworkers", str(self.workers)]
        self.worker_proc = subprocess.Popen(argv, env=self.env, start_new_session=True)

    def failed(self) -> str | None:
        """Why the scheduler is gone, if it is."""
        if self.scheduler is not None and self.scheduler.poll() is not None:
            return f"the Dask scheduler exited with code {self.scheduler.returncode}"
        return None

    def info(self) -> dict:
        return {
            "scheduler": self.scheduler_address,
            "dashboard_port": self.dashboard_port,
            "workers": self.workers,
            "worker_cores": self.worker_cores,
            "config": self.config_dir,
        }

    def stop(self, grace: float) -> None:
        """Workers first (they retire their tasks), then the scheduler."""
        for proc in (self.worker_proc, self.scheduler):
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.monotonic() + grace
            while proc.poll() is None and time.monotonic() < end:
                time.sleep(0.1)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

"""The Dask half of a session, run by the launcher: a TLS scheduler beside Jupyter, workers on every node.

Standard library only (it starts `distributed` in subprocesses, from the job's Python).
The session's TLS credentials (dask/cert.pem, dask/key.pem, made by the laptop, 0600) are
used by scheduler, workers and clients; plain connections are refused. No Dask process of
the session listens on a TCP port for HTTP (daskhttp.py, loaded into each as a preload): the
scheduler serves its dashboard on a Unix socket in the session's private node-local directory,
which Jupyter's authenticated proxy reaches (jupyter-server-proxy, `{base_url}dask-dashboard/`);
without jupyter-server-proxy there is no dashboard. A dask config file
(dask/config/distributed.yaml, JSON is valid YAML) makes `Client()` in a notebook
connect with no arguments: DASK_CONFIG points at it for Jupyter, its kernels and workers. The notebook's own
scale-out jobs (dask-jobqueue's defaults, the submit wrapper that records them) are daskscale.py's.
A launcher inside a container image has no per-host launch of its own: the host-side relay (relay.sh, the job's
main process) runs it, asked through $HPCJUP_RELAY (`Relayed`), and the workers run in the same image there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from atomic import write_private  # beside this file (the launcher puts its directory on sys.path)
from contract import (
    DASK_DIR,
    ENV_CPUS,
    ENV_JOBQUEUE,
    ENV_LAUNCH,
    ENV_NODELIST,
    ENV_TIME_LIMIT,
    ENV_WARN_SECONDS,
    RELAY_VARIABLE,
    WRAP_VARIABLE,
)
from daskscale import ScaleOut
from relayed import Relayed, signal_launch

ADAPTIVE_MODULE = "adaptive"  # adaptive.py beside this file: the adaptive worker-group loop
PRELOAD_FILE = "daskhttp.py"  # beside this file: Dask's HTTP server on a Unix socket or nowhere
RETIRE_FILE = "daskretire.py"  # beside this file: a nanny-less worker (a worker-group job's) retires on SIGTERM
DASHBOARD_SOCKET = "dask-dashboard.sock"  # in the private directory
DASHBOARD_NAME = "dask-dashboard"  # jupyter-server-proxy's name for it: {base_url}dask-dashboard/status
DASHBOARD_PATH = DASHBOARD_NAME + "/status"  # (hpcjup.job.DASHBOARD_PATH: the laptop builds the URL from it)


def hosts() -> list[str]:
    """The allocation's hosts, this one first (HPCJUP_NODELIST); empty when the script named none."""
    found: list[str] = []
    for host in os.environ.get(ENV_NODELIST, "").split():
        if host not in found:
            found.append(host)
    return found


def cpus_per_node() -> int:
    """What the allocation gives each node (HPCJUP_CPUS), not what the machine has: asking the per-node
    launch for more fails (Slurm: "More processors requested than permitted")."""
    try:
        return max(1, int(os.environ.get(ENV_CPUS, "")))
    except ValueError:
        return os.cpu_count() or 1


def spread(workers: int, nodes: int) -> list[int]:
    """Workers per node: as even as can be, the first nodes taking the rest."""
    return [workers // nodes + (1 if i < workers % nodes else 0) for i in range(nodes)]


def missing() -> str | None:
    """Why this Python cannot run Dask, or None."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        return f"{sys.executable} has no Dask (`distributed`). Install it there ({sys.executable} -m pip install distributed) or start with --no-dask."
    return None


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "0"))
    except ValueError:
        return 0


class DaskCluster(ScaleOut):
    """Scheduler and workers of one session (the notebook's scale-out jobs: ScaleOut, daskscale.py)."""

    def __init__(
        self,
        session_dir: str,
        address: str,
        workers: int,
        worker_cores: int,
        worker_memory: str,
        lifetime: int,
        private: str,
    ) -> None:
        self.dir = os.path.join(session_dir, DASK_DIR)
        self.private = private  # the session's private node-local directory (private.py)
        self.config_dir = os.path.join(self.dir, "config")
        self.address = address
        self.workers, self.worker_cores, self.worker_memory, self.lifetime = (
            workers,
            worker_cores,
            worker_memory,
            lifetime,
        )
        self.scheduler = None  # type: subprocess.Popen | None
        # Set by the launcher: Popen options and the pipe's read end that make local Dask processes end with it
        # (lifeline.py); processes on other hosts end through their launch command (the per-host launch ends with the launcher).
        self.guard = {}  # type: dict
        self.lifeline = -1
        # The Python of every Dask process: the launcher's own, or --dask-python (the default kernel's, so that the
        # notebook's Client and the workers share one `distributed`). How scale-out jobs run it: its path, or the
        # launcher's --python-command (a container runtime's prefix, so the notebook's workers run in the session's
        # container, as its worker groups do).
        self.python = sys.executable
        self.python_command = shlex.quote(self.python)
        self.worker_procs = []  # type: list[Any]  # subprocess.Popen, or Relayed for a launcher in an image
        self.launch_error = ""  # why the workers of other hosts could not be launched (the relay is gone)
        self.adapt_proc = None  # type: subprocess.Popen | None  # the adaptive worker-group loop (adaptive.py)
        self.scheduler_address = ""
        self.dashboard_port = 0  # Dask reports its HTTP port here: 0, or its HTTP server is open on TCP
        # The dashboard only where Jupyter can proxy it (a Unix socket needs a named jupyter-server-proxy entry).
        self.dashboard = importlib.util.find_spec("jupyter_server_proxy") is not None

    @classmethod
    def from_args(cls, session_dir: str, address: str, args, private: str) -> DaskCluster:
        """From the launcher's options; defaults fill the allocation: one worker per node, the task's CPUs each."""
        nodes = max(1, len(hosts()))
        workers = args.workers if args.workers >= 0 else nodes
        cores = args.worker_cores or max(1, cpus_per_node() * nodes // max(1, workers))
        # The limit granted may be shorter than asked (Slurm --time-min): workers retire before it, too.
        granted, warn = _int_env(ENV_TIME_LIMIT), _int_env(ENV_WARN_SECONDS)
        lifetime = args.lifetime
        if granted > 0 and lifetime > 0:
            lifetime = max(60, min(lifetime, granted - warn - 60))
        cluster = cls(session_dir, address, workers, cores, args.worker_memory, lifetime, private)
        cluster.python = getattr(args, "dask_python", "") or cluster.python
        cluster.python_command = getattr(args, "python_command", "") or shlex.quote(cluster.python)
        return cluster

    @property
    def scratch(self) -> str:
        """Node-local scratch for the workers (spilled data, lock files), in the session's private directory. Dask's
        default, /tmp/dask-scratch-space, belongs to whoever made it first; a predictable name of our own
        (/tmp/hpcjup-UID-SESSION) could be made first by another user. The private directory's name is
        unguessable: on other nodes the workers create the same path (umask 077), and nobody can have made it."""
        return os.path.join(self.private, "dask-scratch")

    @property
    def dashboard_socket(self) -> str:
        return os.path.join(self.private, DASHBOARD_SOCKET)

    def proxy_args(self) -> list[str]:
        """Jupyter's options that serve the dashboard at {base_url}dask-dashboard/ (jupyter-server-proxy, behind
        Jupyter's token), from the scheduler's Unix socket; none without jupyter-server-proxy."""
        if not self.dashboard:
            return []
        spec = {"unix_socket": self.dashboard_socket, "launcher_entry": {"enabled": False}}
        return [f"--ServerProxy.servers={DASHBOARD_NAME}={spec!r}"]  # a Python literal: traitlets reads it so

    @property
    def env(self) -> dict:
        """The environment for every Dask process and for Jupyter's kernels (the submit wrapper first on PATH)."""
        bindir = os.path.join(self.dir, "bin")
        return dict(os.environ, DASK_CONFIG=self.config_dir, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))

    def write_config(self) -> None:
        cert, key = os.path.join(self.dir, "cert.pem"), os.path.join(self.dir, "key.pem")
        pair = {"cert": cert, "key": key}
        preload = os.path.join(os.path.dirname(os.path.abspath(__file__)), PRELOAD_FILE)  # shipped beside this file
        config: dict[str, Any] = {
            "distributed": {
                "comm": {
                    "require-encryption": True,
                    "tls": {"ca-file": cert, "scheduler": pair, "worker": pair, "client": pair},
                },
                "dashboard": {"link": "{JUPYTER_SERVER_ROOT}" + DASHBOARD_PATH},
                # Every Dask process of the session (also a notebook's worker jobs) loads daskhttp.py first.
                "scheduler": {"preload": [preload]},
                "worker": {"preload": [preload, os.path.join(os.path.dirname(preload), RETIRE_FILE)]},
            },
            "temporary-directory": self.scratch,
        }
        if self.scheduler_address:
            config["scheduler-address"] = self.scheduler_address
        os.makedirs(self.config_dir, mode=0o700, exist_ok=True)
        write_private(os.path.join(self.config_dir, "distributed.yaml"), json.dumps(config, indent=2).encode())
        write_private(
            os.path.join(self.config_dir, "jobqueue.yaml"), json.dumps(self.jobqueue_config(), indent=2).encode()
        )

    def start_scheduler(self) -> None:
        self.write_config()
        self.write_submit_wrapper()
        argv = [
            *self.watched("distributed.cli.dask_scheduler"),
            "--protocol",
            "tls",
            "--host",
            self.address,
            "--port",
            "0",
            "--scheduler-file",
            os.path.join(self.dir, "scheduler.json"),
        ]
        env = dict(self.env, HPCJUP_DASK_HTTP_SOCKET=self.dashboard_socket) if self.dashboard else dict(self.env)
        self.scheduler = subprocess.Popen(argv, env=self.watched_env(env), start_new_session=True, **self.guard)

    def poll_scheduler(self) -> bool:
        """True once the scheduler file names the address (then the config gets it, and workers start)."""
        try:
            with open(os.path.join(self.dir, "scheduler.json")) as fh:
                info = json.load(fh)
        except (OSError, ValueError):
            return False
        self.scheduler_address = info["address"]
        self.dashboard_port = int((info.get("services") or {}).get("dashboard") or 0)
        if self.dashboard_port:  # daskhttp.py did not take effect: never run a session whose dashboard is open
            return True
        self.write_config()
        self.start_workers()
        self.start_adaptive()
        return True

    def start_adaptive(self) -> None:
        """The adaptive worker-group loop (adaptive.py) beside the scheduler, where worker jobs can be submitted
        (a batch system: HPCJUP_JOBQUEUE); it waits quietly until groups.json has an adaptive group."""
        if not os.environ.get(ENV_JOBQUEUE):
            return
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(self.env, PYTHONPATH=here)  # `-m adaptive` and its imports (contract, atomic) beside this file
        # Its lines go to the job's log, as the scheduler's do: `hpcjup logs` shows what it did and was refused.
        self.adapt_proc = subprocess.Popen(
            [*self.watched(ADAPTIVE_MODULE), os.path.dirname(self.dir)],
            env=self.watched_env(env),
            start_new_session=True,
            **self.guard,
        )

    def wait(self, timeout: float, sleep) -> str | None:
        """None once the scheduler's address is known (it starts beside Jupyter, so this is short); else why not."""
        deadline = time.monotonic() + timeout
        while not self.poll_scheduler():
            if self.failed() or time.monotonic() > deadline:
                return self.failed() or f"the Dask scheduler did not start within {timeout:.0f} s"
            sleep(0.1)
        if self.launch_error:
            return self.launch_error
        if self.dashboard_port:
            return (
                f"the Dask scheduler's HTTP server listens on TCP port {self.dashboard_port}, open to every user "
                f"of the node ({PRELOAD_FILE} did not replace it: an unsupported version of distributed?)"
            )
        return None

    def watched(self, module: str) -> list[str]:
        """argv of `python -m module` for a process of this host, through lifeline.py when the launcher gave a pipe."""
        if self.lifeline < 0:
            return [self.python, "-m", module]
        return [self.python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lifeline.py"), "-m", module]

    def watched_env(self, env: dict) -> dict:
        return dict(env, HPCJUP_LAUNCHER_FD=str(self.lifeline)) if self.lifeline >= 0 else env

    def start_workers(self) -> None:
        if self.workers <= 0:
            return
        options = [
            "--scheduler-file",
            os.path.join(self.dir, "scheduler.json"),
            "--nthreads",
            str(self.worker_cores),
            "--memory-limit",
            self.worker_memory,
            "--no-dashboard",
        ]
        if self.lifetime:
            options += ["--lifetime", f"{self.lifetime}s", "--lifetime-stagger", "30s"]
        launch, nodes = shlex.split(os.environ.get(ENV_LAUNCH, "")), hosts()
        if not launch or not nodes:  # the allocation is this host: all workers here, one process each
            argv = [*self.watched("distributed.cli.dask_worker"), *options, "--nworkers", str(self.workers)]
            env = self.watched_env(self.env)
            self.worker_procs.append(subprocess.Popen(argv, env=env, start_new_session=True, **self.guard))
            return
        # On other hosts the pipe does not exist: the per-host launch command (HPCJUP_LAUNCH) ends with the launcher instead.
        worker = [self.python, "-m", "distributed.cli.dask_worker", *options]
        relay = os.environ.get(RELAY_VARIABLE, "")
        if relay:  # this launcher runs in an image: the host runs the launch, into the same image (the runtime's
            # prefix, --python-command), with the session's Dask config (the relay's environment is the job's)
            worker = ["env", "DASK_CONFIG=" + self.config_dir, *shlex.split(self.python_command), *worker[1:]]
        preexec = {"preexec_fn": self.guard["preexec_fn"]} if "preexec_fn" in self.guard else {}
        # One launch per host of the allocation (HPCJUP_LAUNCH: the scheduler's own way to run on a host), each
        # with that host's share of the workers and the CPUs they use.
        for host, count in zip(nodes, spread(self.workers, len(nodes))):
            if count:
                cpus = str(count * self.worker_cores)
                words = [word.replace("{host}", host).replace("{cpus}", cpus) for word in launch]
                # Through envlocal.sh when the job runs its environments from node-local copies: that host's copy.
                wrap = shlex.split(os.environ.get(WRAP_VARIABLE, ""))
                argv = [*words, *wrap, *worker, "--nworkers", str(count)]
                try:
                    if relay:
                        self.worker_procs.append(Relayed(relay, argv))
                    else:  # OSError: the launch command is not here (inside an image the relay did not reach)
                        self.worker_procs.append(
                            subprocess.Popen(argv, env=self.env, start_new_session=True, **preexec)
                        )
                except OSError as exc:
                    via = f"the host-side relay ({relay})" if relay else f"`{words[0]}`"
                    self.launch_error = f"{via} could not launch Dask workers on {host}: {exc}"
                    return

    def failed(self) -> str | None:
        """Why the scheduler is gone, or the workers of other hosts could not be launched, if so."""
        if self.launch_error:
            return self.launch_error
        if self.scheduler is not None and self.scheduler.poll() is not None:
            return f"the Dask scheduler exited with code {self.scheduler.returncode}"
        return None

    def info(self) -> dict:
        return {
            "scheduler": self.scheduler_address,
            "dashboard_port": 0,  # older hpcjup versions read this; the dashboard is on no port now
            "dashboard": DASHBOARD_PATH if self.dashboard else None,  # below Jupyter's base_url
            "workers": self.workers,
            "worker_cores": self.worker_cores,
            "config": self.config_dir,
        }

    def stop(self, grace: float) -> None:
        """Workers first (they retire their tasks), then the scheduler: SIGTERM to each process group,
        SIGKILL to what is left after `grace` seconds."""
        for group in ([self.adapt_proc], self.worker_procs, [self.scheduler]):
            running = [proc for proc in group if proc is not None and proc.poll() is None]
            for proc in running:
                signal_launch(proc, signal.SIGTERM)
            end = time.monotonic() + grace
            while any(proc.poll() is None for proc in running) and time.monotonic() < end:
                time.sleep(0.1)
            for proc in running:
                if proc.poll() is None:
                    signal_launch(proc, signal.SIGKILL)
                    proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)  # this node's; other nodes' go with the job's /tmp
        relayed = [proc for proc in self.worker_procs if isinstance(proc, Relayed)]
        if relayed and all(proc.poll() is not None for proc in relayed):  # else the relay stops the rest (its pids)
            shutil.rmtree(relayed[0].dir, ignore_errors=True)  # the relay's channel: the job ends with this launcher

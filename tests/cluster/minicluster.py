"""A real Slurm mini-cluster on loopback: munged, slurmctld, two slurmd nodes, an sshd, a user.

Everything lives under one root directory (default /tmp/hpcjup-minicluster, or
$HPCJUP_MINICLUSTER_DIR), munge included, so clusters in different roots (with different
$HPCJUP_MINICLUSTER_SLURM_PORT) do not disturb each other. `up()` is idempotent and reuses a
healthy cluster; `down()` stops everything it started. Needs root on Debian 12 with the
packages of install.sh; /work/shared/TESTING.md has the background.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.cluster import files, procs
from tests.cluster.procs import wait_until

__all__ = ["CLUSTER_ENV", "USER", "MiniCluster", "default_root", "missing_requirements", "wait_until"]

USER = "hpcuser"
CLUSTER_ENV = files.CLUSTER_ENV
NODES = {"node1": "127.0.0.2", "node2": "127.0.0.3"}
BINARIES = (
    "sbatch",
    "squeue",
    "scancel",
    "sinfo",
    "slurmctld",
    "slurmd",
    "munged",
    "munge",
    "unmunge",
    "ssh-keygen",
    "runuser",
    "useradd",
)
DAEMON_EXES = ("slurmctld", "slurmd", "slurmstepd", "munged", "sshd")
ACTIVE_STATES = (
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
)
STATE_VERSION = 2


def default_root() -> Path:
    """The cluster's directory: $HPCJUP_MINICLUSTER_DIR or /tmp/hpcjup-minicluster."""
    return Path(os.environ.get("HPCJUP_MINICLUSTER_DIR") or "/tmp/hpcjup-minicluster")


def missing_requirements() -> str | None:
    """Why the mini-cluster cannot run on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "the mini-cluster needs root"
    if not Path("/etc/debian_version").exists():
        return "the mini-cluster needs Debian (12)"
    absent = [
        b for b in BINARIES if not shutil.which(b, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    ]
    if not Path("/usr/sbin/sshd").exists():
        absent.append("/usr/sbin/sshd")
    if absent:
        return f"missing {', '.join(absent)} (run tests/cluster/install.sh as root)"
    if not (CLUSTER_ENV / "bin" / "jupyter-lab").exists():
        return f"missing {CLUSTER_ENV}/bin/jupyter-lab (run tests/cluster/install.sh as root)"
    return None


class MiniCluster:
    """One mini-cluster's files, daemons and test helpers."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.conf = self.root / "slurm.conf"
        self.user = USER
        self.key_path = self.root / "client_ed25519"
        self.state_path = self.root / "state.json"
        state = self.state()
        self.ssh_port: int = int(state.get("ssh_port") or 0)
        port = os.environ.get("HPCJUP_MINICLUSTER_SLURM_PORT") or state.get("slurm_port") or 6817
        self.slurm_port: int = int(port)

    # -- the pieces ---------------------------------------------------------------------------
    @property
    def nodes(self) -> dict[str, tuple[str, int]]:
        """{node name: (address, slurmd port)}; slurmctld's port plus 4 and 5 (6821, 6822)."""
        return {name: (addr, self.slurm_port + 4 + i) for i, (name, addr) in enumerate(NODES.items())}

    def _pid_files(self) -> dict[str, tuple[Path, str]]:
        """{daemon: (pid file, a string its command line must contain)}."""
        daemons = {"munged": (self.root / "munge/munged.pid", "munged")}
        daemons["slurmctld"] = (self.root / "slurmctld.pid", "slurmctld")
        for node in NODES:
            daemons[f"slurmd-{node}"] = (self.root / f"slurmd-{node}.pid", "slurmd")
        daemons["sshd"] = (self.root / "sshd.pid", "sshd")
        return daemons

    def pids(self) -> dict[str, int | None]:
        """{daemon: live pid or None}."""
        return {name: procs.pid_from_file(path, expect) for name, (path, expect) in self._pid_files().items()}

    def state(self) -> dict[str, Any]:
        """The state JSON of the last `up` ({} if none)."""
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return {}

    # -- helpers for tests ----------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """This process's environment plus SLURM_CONF, for running Slurm commands."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def slurm(self, *argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (e.g. `slurm("squeue", "-h")`) as root against this cluster."""
        result = subprocess.run(
            list(argv), check=False, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def run_as_user(self, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `cmd` as the cluster user in its home, with the cluster env's PATH and SLURM_CONF."""
        home = pwd.getpwnam(USER).pw_dir
        env = {
            "HOME": home,
            "USER": USER,
            "LOGNAME": USER,
            "LANG": "C.UTF-8",
            "SLURM_CONF": str(self.conf),
            "PATH": f"{CLUSTER_ENV}/bin:/usr/local/bin:/usr/bin:/bin",
        }
        argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", USER, "--", *cmd]
        return subprocess.run(argv, check=False, env=env, cwd=home, capture_output=True, text=True, timeout=timeout)

    def jobs(self, user: str = USER) -> list[dict[str, str]]:
        """The user's jobs as squeue shows them, ended ones included (MinJobAge=300 s): id, name, state, partition, nodes."""
        out = self.slurm("squeue", "-h", "-t", "all", "-u", user, "-o", "%i|%j|%T|%P|%N").stdout
        keys = ("id", "name", "state", "partition", "nodes")
        return [dict(zip(keys, line.split("|"), strict=False)) for line in out.splitlines() if line.strip()]

    def active_jobs(self, user: str = USER) -> list[dict[str, str]]:
        """The user's jobs that have not ended yet."""
        return [job for job in self.jobs(user) if job["state"] in ACTIVE_STATES]

    def cancel_all(self, user: str = USER, timeout: float = 60) -> None:
        """scancel the user's jobs and wait until none is active."""
        if self.active_jobs(user):
            self.slurm("scancel", "-u", user)
            wait_until(lambda: not self.active_jobs(user), timeout, f"{user}'s jobs to end", interval=0.3)

    def sshd_log(self) -> str:
        """Everything sshd logged (LogLevel VERBOSE), across restarts."""
        path = self.root / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def auth_count(self) -> int:
        """How many SSH logins sshd accepted so far (one per authenticated connection)."""
        return self.sshd_log().count("Accepted publickey")

    def host_key_line(self) -> str:
        """The known_hosts line for the cluster's sshd: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`."""
        kind, key = (self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.ssh_port} {kind} {key}"

    def write_laptop_ssh(self, home: Path, alias: str = "minicluster") -> None:
        """Give a laptop HOME an ~/.ssh with Host `alias`, a copy of the key and the host key."""
        files.write_laptop_ssh(Path(home), alias, self.ssh_port, USER, self.key_path, self.host_key_line())

    # -- lifecycle ----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What is wrong with the running cluster ([] when it is up and healthy)."""
        state = self.state()
        if state.get("version") != STATE_VERSION or not state.get("up"):
            return [f"no running cluster recorded in {self.state_path}"]
        found = [f"{name} is not running" for name, pid in self.pids().items() if pid is None]
        if found:
            return found
        if not procs.ssh_banner(self.ssh_port):
            found.append(f"sshd does not answer on 127.0.0.1:{self.ssh_port}")
        states = self._node_states()
        found += [f"{node} is {states.get(node, 'missing')}" for node in NODES if not _usable(states.get(node, ""))]
        return found

    def healthy(self) -> bool:
        """Whether every daemon runs, both nodes are usable and sshd answers."""
        return not self.problems()

    def up(self, timeout: float = 120) -> bool:
        """Bring the cluster up, or reuse it if healthy; True if this call started it."""
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        with self._lock():
            if self.healthy():
                return False
            started = time.monotonic()
            self._down()
            self._prepare()
            deadline = started + timeout
            self._start_munge(deadline)
            self._start_slurm(deadline)
            self.start_sshd(timeout=max(5.0, deadline - time.monotonic()))
            self._write_state(up=True, seconds=round(time.monotonic() - started, 1))
            return True

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize up/down between processes (several pytest runs may share a cluster)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.root}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _prepare(self) -> None:
        """Directories, keys, user, /etc/hosts, ports and config files for a cold start."""
        files.make_dirs(self.root)
        files.ensure_keys(self.root)
        files.ensure_hosts(self.nodes)
        files.ensure_user(USER, self.conf)
        files.authorize_key(USER, (self.root / "client_ed25519.pub").read_text())
        busy = [str(p) for p in (self.slurm_port, *(port for _, port in self.nodes.values())) if procs.port_in_use(p)]
        if busy:
            raise RuntimeError(
                f"Slurm port(s) {', '.join(busy)} in use; another cluster? (set HPCJUP_MINICLUSTER_SLURM_PORT)"
            )
        if not self.ssh_port or procs.port_in_use(self.ssh_port):
            self.ssh_port = procs.free_port()  # keeps the previous port across down/up when it is free
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(files.slurm_conf(self.root, host, self.slurm_port, self.nodes))
        (self.root / "sshd_config").write_text(files.sshd_config(self.root, self.ssh_port))
        self._write_state(up=False)

    def _start_munge(self, deadline: float) -> None:
        """Start this cluster's own munged and wait until a credential round-trips."""
        munge = files.prepare_munge(self.root)
        self._daemon(
            "munged",
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                f"--socket={munge}/munge.socket",
                f"--key-file={munge}/munge.key",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/munged.seed",
            ],
        )
        wait_until(self._munge_works, _left(deadline), "munged to answer", interval=0.1)

    def _munge_works(self) -> bool:
        """Whether `munge -n | unmunge` succeeds on this cluster's socket."""
        socket_arg = f"--socket={self.root}/munge/munge.socket"
        cred = subprocess.run(["munge", "-n", socket_arg], check=False, capture_output=True)
        return (
            cred.returncode == 0
            and subprocess.run(["unmunge", socket_arg], check=False, input=cred.stdout, capture_output=True).returncode
            == 0
        )

    def _start_slurm(self, deadline: float) -> None:
        """Start slurmctld and both slurmd, and wait until both nodes are idle."""
        clean = self.root / "state" / "clean-stop"
        # A stop without cancelling everything leaves jobs in the saved state; start afresh then.
        self._daemon("slurmctld", ["slurmctld", "-f", str(self.conf), *([] if clean.exists() else ["-c"])])
        clean.unlink(missing_ok=True)
        wait_until(lambda: "is UP" in self.slurm("scontrol", "ping").stdout, _left(deadline), "slurmctld to answer")
        for node in NODES:
            self._daemon(f"slurmd-{node}", ["slurmd", "-f", str(self.conf), "-N", node])
        try:
            wait_until(
                lambda: (
                    all(s.startswith("idle") and "*" not in s for s in self._node_states().values())
                    and len(self._node_states()) == len(NODES)
                ),
                _left(deadline),
                "both nodes to be idle",
                interval=0.3,
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; sinfo says {self._node_states()}; see {self.root}/log/") from None

    def _node_states(self) -> dict[str, str]:
        """{node: sinfo's short state}, e.g. {'node1': 'idle'}."""
        out = self.slurm("sinfo", "-h", "-N", "-o", "%N %t").stdout
        return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)

    def start_sshd(self, timeout: float = 20) -> None:
        """Start the cluster's sshd on its port (which must be free)."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = self.root / "sshd.log"
        log.touch(mode=0o600)
        self._daemon("sshd", ["/usr/sbin/sshd", "-f", str(self.root / "sshd_config"), "-E", str(log)])
        wait_until(lambda: procs.ssh_banner(self.ssh_port), timeout, f"sshd on 127.0.0.1:{self.ssh_port}")

    def stop_sshd(self) -> None:
        """Stop the listening sshd and every connection it serves, as a crash or reboot would."""
        pid = self.pids()["sshd"]
        if pid is not None:
            sessions = [p for p in procs.descendants(pid) if "sshd" in procs.cmdline(p)]
            procs.stop([pid, *sessions])

    def restart_sshd(self) -> None:
        """Kill sshd and all its connections, then listen again on the same port."""
        self.stop_sshd()
        self.start_sshd()

    @contextlib.contextmanager
    def controller_stopped(self, most: float = 60) -> Iterator[float]:
        """slurmctld stopped for the block, as a crash or an admin would leave it; running jobs run on.

        Other test runs share this cluster: the harness lock is held throughout (so no `up` of theirs takes
        the stopped controller for a broken cluster and restarts everything), and the controller is started
        again in a `finally`, whatever the block did. Yields the moment (time.monotonic()) it stopped; the
        outage must stay under `most` seconds (the others' commands wait for it), which is asserted after.
        """
        with self._lock():
            self.stop_controller()
            stopped = time.monotonic()
            try:
                yield stopped
            finally:
                self.start_controller()
            outage = time.monotonic() - stopped
            assert outage < most, f"the controller was down for {outage:.0f} s (at most {most:.0f} s)"

    def stop_controller(self) -> None:
        """Stop slurmctld (SIGTERM: it saves its state, jobs and all). Call `start_controller` after."""
        pid = self.pids()["slurmctld"]
        if pid is not None:
            procs.stop([pid])

    def start_controller(self, timeout: float = 30) -> None:
        """Start slurmctld again from its saved state (no -c: jobs that ran on stay known) and wait until it
        answers and both nodes are usable."""
        if self.pids()["slurmctld"] is None:
            self._daemon("slurmctld", ["slurmctld", "-f", str(self.conf)])
        deadline = time.monotonic() + timeout
        wait_until(lambda: "is UP" in self.slurm("scontrol", "ping").stdout, _left(deadline), "slurmctld to answer")
        wait_until(
            lambda: len(states := self._node_states()) == len(NODES) and all(map(_usable, states.values())),
            _left(deadline),
            "both nodes to be usable again",
            interval=0.3,
        )

    def ensure_preemption(self, timeout: float = 30) -> None:
        """The preemption partitions (files.preemption_partitions) on the running cluster: a cluster brought up by an
        older harness lacks them, so its slurm.conf is written again and `scontrol reconfigure` reads it (under the
        harness lock; running jobs run on)."""
        with self._lock():
            if files.PREEMPTIBLE in self.slurm("sinfo", "-h", "-o", "%R").stdout.split():
                return
            host = socket.gethostname().split(".")[0]
            self.conf.write_text(files.slurm_conf(self.root, host, self.slurm_port, self.nodes))
            self.slurm("scontrol", "reconfigure", check=True)
            wait_until(
                lambda: files.PREEMPTIBLE in self.slurm("sinfo", "-h", "-o", "%R").stdout.split(),
                timeout,
                "the preemptible partition to appear",
                interval=0.3,
            )

    def down(self, purge: bool = False) -> None:
        """Cancel every job, stop every daemon and leftover process; remove the root if `purge`."""
        with self._lock():
            self._down(purge)

    def _down(self, purge: bool = False) -> None:
        """down() without the lock."""
        daemons = self.pids()
        clean: bool | None = None  # unknown when slurmctld is not running: keep the marker as it is
        if daemons["slurmctld"] is not None:
            clean = self._cancel_everything()
        self.stop_sshd()
        for name in [f"slurmd-{node}" for node in NODES] + ["slurmctld", "munged"]:
            if daemons[name] is not None:
                procs.stop([daemons[name]])  # type: ignore[list-item]
        # Job steps, job processes and ssh sessions carry the cluster's SLURM_CONF in their environment.
        uid = pwd.getpwnam(USER).pw_uid if _user_exists(USER) else -1
        procs.stop(procs.leftovers(f"SLURM_CONF={self.conf}", self.root, DAEMON_EXES, uid))
        marker = self.root / "state" / "clean-stop"
        if clean is not None and marker.parent.is_dir():
            if clean:
                marker.touch()
            else:
                marker.unlink(missing_ok=True)
        if self.state():
            self._write_state(up=False)
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)

    def _cancel_everything(self) -> bool:
        """scancel all jobs of all users; whether they all ended in time."""
        ids = self.slurm("squeue", "-h", "-o", "%i").stdout.split()
        if ids:
            self.slurm("scancel", *ids)
        try:
            wait_until(
                lambda: not self.slurm("squeue", "-h", "-o", "%i").stdout.split(), 45, "all jobs to end", interval=0.3
            )
        except RuntimeError:
            return False
        return True

    def _daemon(self, name: str, argv: list[str]) -> None:
        """Run a self-daemonizing program; RuntimeError with its output if it fails."""
        out = self.root / "log" / f"{name}.start.log"
        with out.open("w") as fh:
            result = subprocess.run(
                argv, check=False, env=self.env(), stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, timeout=60
            )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {out.read_text().strip()[-2000:]}")

    def _write_state(self, up: bool, seconds: float | None = None) -> None:
        """Record ports, paths and pids in state.json (atomically)."""
        old = self.state()
        state = {
            "version": STATE_VERSION,
            "up": up,
            "root": str(self.root),
            "slurm_conf": str(self.conf),
            "ssh_port": self.ssh_port,
            "slurm_port": self.slurm_port,
            "user": USER,
            "key": str(self.key_path),
            "nodes": {name: list(addr_port) for name, addr_port in self.nodes.items()},
            "pids": self.pids() if up else {},
            "started_at": time.time() if up else old.get("started_at"),
            "up_seconds": seconds if up else old.get("up_seconds"),
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)


def _usable(node_state: str) -> bool:
    """Whether sinfo's short node state (idle, mix, alloc, comp...) means the node can run jobs."""
    return (
        bool(node_state)
        and "*" not in node_state
        and not node_state.startswith(("down", "drain", "fail", "unk", "inval"))
    )


def _left(deadline: float) -> float:
    """Seconds until `deadline` (at least one, so late steps still get a chance)."""
    return max(1.0, deadline - time.monotonic())


def _user_exists(user: str) -> bool:
    """Whether the account exists."""
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False

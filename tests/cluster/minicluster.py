"""A real Slurm mini-cluster on loopback: munge, slurmctld, two slurmd nodes, an sshd, a user.

Everything lives under one root directory (default /tmp/hpcjup-minicluster). `up()` is
idempotent and reuses a healthy cluster; `down()` stops every daemon it started. Needs
root on Debian 12 with the packages of install.sh; see ../shared/TESTING.md for the facts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(os.environ.get("HPCJUP_MINICLUSTER_DIR", "/tmp/hpcjup-minicluster"))
USER = "hpcuser"
CLUSTER_ENV = "/opt/hpcjup-cluster-env"
NODES = {"node1": ("127.0.0.2", 6821), "node2": ("127.0.0.3", 6822)}
MUNGE_PID = Path("/run/munge/munged.pid")
BINARIES = ("sbatch", "slurmctld", "slurmd", "munged", "/usr/sbin/sshd", "chromium", "chromedriver")


def missing_requirements() -> str | None:
    """Why the cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "the mini-cluster needs root"
    absent = [b for b in BINARIES if not shutil.which(b)]
    if absent:
        return "missing " + ", ".join(absent) + " (run tests/cluster/install.sh)"
    if not Path(CLUSTER_ENV, "bin", "jupyter-lab").exists():
        return f"missing {CLUSTER_ENV} (run tests/cluster/install.sh)"
    return None


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):  # noqa: ANN001, ANN201
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"mini-cluster: timed out after {timeout:.0f} s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


class MiniCluster:
    """The cluster's files, daemons and helpers."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.user = USER
        self.key_path = root / "client_ed25519"
        self.state_file = root / "state.json"
        self.ssh_port = json.loads(self.state_file.read_text())["ssh_port"] if self.state_file.exists() else 0

    # -- helpers for tests ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def slurm(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=self.env(), capture_output=True, text=True, check=check, timeout=60)

    def run_as_user(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", USER, "--", "env", f"SLURM_CONF={self.conf}", f"PATH={CLUSTER_ENV}/bin:/usr/bin:/bin", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/tmp")

    def jobs(self, user: str = USER) -> list[dict[str, str]]:
        """The user's jobs squeue still shows (including ended ones, for MinJobAge)."""
        out = self.slurm("squeue", "-h", "-t", "all", "-u", user, "-o", "%i|%j|%T").stdout
        return [dict(zip(("id", "name", "state"), line.split("|"))) for line in out.splitlines() if line.strip()]

    def active_jobs(self, user: str = USER) -> list[dict[str, str]]:
        return [j for j in self.jobs(user) if j["state"] in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")]

    def sshd_log(self) -> str:
        path = self.root / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def auth_count(self) -> int:
        return self.sshd_log().count("Accepted publickey")

    def host_key_line(self) -> str:
        key = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        return f"[127.0.0.1]:{self.ssh_port} {key[0]} {key[1]}"

    def write_laptop_ssh(self, home: Path, alias: str = "minicluster") -> None:
        """A laptop's ~/.ssh: config with `alias`, the user's key, known_hosts with the cluster's key."""
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy(self.key_path, ssh / "id_minicluster")
        os.chmod(ssh / "id_minicluster", 0o600)
        (ssh / "config").write_text(
            f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.ssh_port}\n  User {USER}\n"
            f"  IdentityFile {ssh / 'id_minicluster'}\n  IdentitiesOnly yes\n"
        )
        (ssh / "known_hosts").write_text(self.host_key_line() + "\n")

    def cancel_all(self) -> None:
        self.slurm("scancel", "-u", USER)
        wait_until(lambda: not self.active_jobs(), 60, "the user's jobs to end")

    # -- lifecycle ------------------------------------------------------------------------
    def healthy(self) -> bool:
        if not self.state_file.exists():
            return False
        pids = [self.root / n for n in ("slurmctld.pid", "slurmd-node1.pid", "slurmd-node2.pid", "sshd.pid")] + [MUNGE_PID]
        if not all(_alive(p) for p in pids):
            return False
        out = self.slurm("sinfo", "-h", "-N", "-o", "%N %t").stdout
        return "node1" in out and "node2" in out and "down" not in out and "drain" not in out

    def up(self) -> bool:
        """Bring the cluster up (or reuse it); True if this call started it."""
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        if self.healthy():
            return False
        self.down()
        from tests.cluster import setup

        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # the user's jobs read slurm.conf; secrets inside are 0600
        setup.user_account()
        setup.hosts_file()
        self.ssh_port = _free_port()
        setup.write_configs(self.root, self.ssh_port)
        self.state_file.write_text(json.dumps({"ssh_port": self.ssh_port}))
        setup.start_munge(self.root)
        subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=self.env())
        wait_until(lambda: self.slurm("scontrol", "ping").stdout.count("UP") > 0, 30, "slurmctld")
        for node in NODES:
            subprocess.run(["slurmd", "-f", str(self.conf), "-N", node], check=True, env=self.env())
        wait_until(self._nodes_idle, 60, "both nodes to be idle")
        self.start_sshd()
        return True

    def _nodes_idle(self) -> bool:
        out = self.slurm("sinfo", "-h", "-N", "-o", "%N %t").stdout.split("\n")
        states = dict(line.split()[:2] for line in out if line.strip())
        return all(states.get(n, "").startswith("idle") for n in NODES)

    def start_sshd(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)
        subprocess.run(["/usr/sbin/sshd", "-f", str(self.root / "sshd_config"), "-E", str(self.root / "sshd.log")], check=True)
        wait_until(lambda: _port_open(self.ssh_port), 15, "sshd")

    def restart_sshd(self) -> None:
        """Stop the listening sshd (and every connection's server side) and start it on the same port."""
        self._kill(self.root / "sshd.pid")
        subprocess.run(["pkill", "-f", f"sshd: {USER}"], check=False)
        self.start_sshd()

    def down(self, purge: bool = False) -> None:
        if (self.root / "slurmctld.pid").exists() and _alive(self.root / "slurmctld.pid"):
            self.slurm("scancel", "-u", USER)
        for name in ("sshd.pid", "slurmd-node1.pid", "slurmd-node2.pid", "slurmctld.pid"):
            self._kill(self.root / name)
        self._kill(MUNGE_PID)
        subprocess.run(["pkill", "-f", f"sshd: {USER}"], check=False)
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill(pid_file: Path) -> None:
        if not _alive(pid_file):
            return
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 15)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True

        wait_until(gone, 30, f"pid {pid} ({pid_file.name}) to exit", interval=0.1)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False

"""PBS Pro and LSF on the mini-cluster's login node, through stand-ins that speak their recorded formats.

Neither system can be installed here (issue 14), so `tests/cluster/standins/standin.py` plays their
commands and really runs the jobs on this machine. Each system gets its own sshd on another port
whose sessions find the stand-ins first on PATH (sshd's SetEnv, so both SSH backends see the same
thing, with no ForceCommand); the real Grid Engine `qsub` other tests use stays what the ordinary
login finds. A laptop reaches them as `pbs-cluster` and `lsf-cluster` in its ~/.ssh/config.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.bastion import ExtraSshd
from tests.cluster.minicluster import MiniCluster

SOURCE = Path(__file__).with_name("standins") / "standin.py"
COMMANDS = {
    "pbs": ("qsub", "qstat", "qdel", "qsig", "qselect", "pbsdsh"),
    "lsf": ("bsub", "bjobs", "bkill", "bqueues", "blaunch"),
}
#: The queues the stand-ins know; anything else is refused in the real systems' words. `resv`'s nodes are
#: free for 8 minutes only, before a reservation: longer jobs wait, shrink-to-fit jobs start shortened.
#: `workq` has 16 CPUs in all (PBS): a job asking more can never run.
QUEUES = {
    "workq": {"max_walltime": 4 * 3600, "default_walltime": 3600, "ncpus": 16},
    "debug": {"max_walltime": 1800},
    "resv": {"max_walltime": 4 * 3600, "default_walltime": 3600, "free_for": 8 * 60},
}


def install(cluster: MiniCluster, system: str, pend_seconds: float = 1.0, kill_delay: float = 10) -> Path:
    """Copy the stand-in under the cluster's root (readable by the cluster user); its bin directory."""
    root = cluster.root / "standins" / system
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for d in (cluster.root / "standins", root, bindir):
        d.chmod(0o755)
    engine = root / "standin.py"
    shutil.copyfile(SOURCE, engine)
    engine.chmod(0o644)
    config = {
        "server": "pbs-standin",
        "queues": QUEUES,
        "default_queue": "workq",
        "pend_seconds": pend_seconds,
        "kill_delay": kill_delay,
    }
    (root / "standin.json").write_text(json.dumps(config))
    (root / "standin.json").chmod(0o644)
    for command in COMMANDS[system]:
        wrapper = bindir / command
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/python3 {engine} {system} {command} "$@"\n')
        wrapper.chmod(0o755)
    return bindir


class StandinSshd(ExtraSshd):
    """The login node as a PBS or LSF site's: the same machine and user, the stand-ins first on PATH."""

    def __init__(self, cluster: MiniCluster, system: str, bindir: Path) -> None:
        super().__init__(cluster)
        self.name = f"standin-{system}"
        self.root = cluster.root / self.name
        self.bindir = bindir

    def sshd_config(self) -> str:
        # One SetEnv line: sshd keeps the first of each keyword. SetEnv is applied after sshd's default PATH.
        path = f"PATH={self.bindir}:/usr/local/bin:/usr/bin:/bin"
        return (
            super()
            .sshd_config()
            .replace(f"SetEnv SLURM_CONF={self.cluster.conf}", f"SetEnv SLURM_CONF={self.cluster.conf} {path}")
        )


class Standin:
    """One stand-in system: its sshd, and the laptop alias that reaches it."""

    def __init__(self, cluster: MiniCluster, system: str) -> None:
        self.cluster = cluster
        self.system = system
        self.alias = f"{system}-cluster"
        self.bindir = install(cluster, system)
        self.sshd = StandinSshd(cluster, system, self.bindir)

    def add_to_laptop(self, home: Path) -> None:
        """`Host pbs-cluster` (or lsf-cluster) in the laptop's ~/.ssh/config, with the host key."""
        self.sshd.add_to_laptop(home, self.alias)

    def jobs(self) -> dict[str, dict]:
        """The stand-in's record of the cluster user's jobs."""
        state = Path(f"/home/{self.cluster.user}/.hpcjup-standin/{self.system}/jobs.json")
        return json.loads(state.read_text())["jobs"] if state.exists() else {}

    def launches(self, job_id: str) -> list[str]:
        """The hosts pbsdsh/blaunch were asked to run on, for job `job_id`, in order."""
        log = Path(f"/home/{self.cluster.user}/.hpcjup-standin/{self.system}/launches")
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split(" ", 1)[0] for line in lines if line.split(" ", 1)[1:] == [job_id]]

    def cancel_all(self) -> None:
        """End every job the stand-in still runs for the cluster user (a test's leftovers)."""
        command = "qdel" if self.system == "pbs" else "bkill"
        active = [job_id for job_id, job in self.jobs().items() if job["state"] != "finished"]
        if active:
            self.cluster.run_as_user([str(self.bindir / command), *active])


@pytest.fixture(scope="session")
def pbs_standin(minicluster: MiniCluster) -> Iterator[Standin]:
    """PBS Pro's commands on the login node, reached as `pbs-cluster`."""
    standin = Standin(minicluster, "pbs")
    standin.sshd.start()
    yield standin
    standin.cancel_all()
    standin.sshd.stop()


@pytest.fixture(scope="session")
def lsf_standin(minicluster: MiniCluster) -> Iterator[Standin]:
    """LSF's commands on the login node, reached as `lsf-cluster`."""
    standin = Standin(minicluster, "lsf")
    standin.sshd.start()
    yield standin
    standin.cancel_all()
    standin.sshd.stop()

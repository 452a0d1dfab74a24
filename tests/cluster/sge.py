"""A real single-host Son of Grid Engine cell (Debian 12's gridengine-* 8.1.9) beside the Slurm mini-cluster.

One sge_qmaster and one sge_execd on this machine, the queue `all.q` (2 slots, PEs `smp` and
`mpi`), submit host = this host, so the mini-cluster's user submits through the mini-cluster's
sshd (Debian puts qsub & co. in /usr/bin; SGE_ROOT=/var/lib/gridengine, SGE_CELL=default are the
binaries' defaults). `up()` is idempotent and reuses a healthy cell; `down()` stops the daemons it
finds by their pid files. /work/shared/TESTING.md ("Grid Engine for real") has the background.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.cluster import procs
from tests.cluster.procs import wait_until

__all__ = ["QUEUE", "SgeCell", "missing_sge"]

SGE_ROOT = Path("/var/lib/gridengine")
COMMON = SGE_ROOT / "default" / "common"
SPOOL = Path("/var/spool/gridengine")
QMASTER_PID = SPOOL / "qmaster" / "qmaster.pid"
WORK = Path("/tmp/hpcjup-sge")
QUEUE = "all.q"
SLOTS = 4  # slots are a count, not cores: two sessions of 2 CPUs each fit on this 2-core machine
NOTIFY = "00:00:10"  # the queue's notify time: SIGTERM (NOTIFY_KILL=TERM), then SIGKILL this much later
PACKAGES = ("/usr/sbin/sge_qmaster", "/usr/sbin/sge_execd", "/usr/bin/qsub", "/usr/bin/qconf", "/usr/bin/qacct")
# Only what the daemons and qconf need: nothing of the test run's environment (SLURM_CONF, HPCJUP_*) leaks into them.
BASE_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "SGE_ROOT": str(SGE_ROOT),
    "SGE_CELL": "default",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
PE_TEMPLATE = """pe_name            {name}
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    {rule}
control_slaves     TRUE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
"""


def missing_sge() -> str | None:
    """Why the cell cannot run here (not root, packages missing), or None."""
    if os.geteuid() != 0:
        return "the Grid Engine cell needs root"
    absent = [path for path in PACKAGES if not Path(path).exists()]
    if absent:
        return f"missing {', '.join(absent)} (run tests/cluster/install.sh as root)"
    return None


class SgeCell:
    """The cell's daemons, configuration and test helpers."""

    def __init__(self) -> None:
        self.host = socket.gethostname().split(".")[0]
        self.queue = QUEUE

    # -- helpers ---------------------------------------------------------------------------------
    def run(self, *argv: str, check: bool = False, timeout: float = 60, **kw: str) -> subprocess.CompletedProcess[str]:
        """Run a Grid Engine command as root (the cell's manager), e.g. `run("qstat", "-u", "*")`."""
        env = {**BASE_ENV, **kw}
        result = subprocess.run(list(argv), check=False, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}"
            )
        return result

    def pids(self) -> dict[str, int | None]:
        """{daemon: live pid or None}; execd's pid file sits under its spool directory's host name."""
        execd = [procs.pid_from_file(p, "sge_execd") for p in sorted(SPOOL.glob("execd/*/execd.pid"))]
        return {
            "sge_qmaster": procs.pid_from_file(QMASTER_PID, "sge_qmaster"),
            "sge_execd": next((pid for pid in execd if pid is not None), None),
        }

    def job_ids(self, user: str = "*") -> list[str]:
        """Ids of the jobs qstat lists (pending, running, deleting) for `user` (all users by default)."""
        out = self.run("qstat", "-u", user).stdout.splitlines()[2:]  # two header lines
        return [line.split()[0] for line in out if line.split()]

    def cancel_all(self, user: str = "*", timeout: float = 60) -> None:
        """qdel every job of `user` and wait until qstat lists none."""
        if self.job_ids(user):
            self.run("qdel", "-f", "-u", user)
            wait_until(lambda: not self.job_ids(user), timeout, f"{user}'s Grid Engine jobs to end", interval=0.3)

    # -- lifecycle -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What is wrong with the running cell ([] when it is up and takes jobs)."""
        found = [f"{name} is not running" for name, pid in self.pids().items() if pid is None]
        if found:
            return found
        if QUEUE not in self.run("qconf", "-sql").stdout.split():
            return [f"queue {QUEUE} is missing"]
        shown = dict(ln.split(None, 1) for ln in self.run("qconf", "-sq", QUEUE).stdout.splitlines() if " " in ln)
        changed = [key for key, value in self.queue_settings().items() if shown.get(key, "").strip() != value]
        if changed:  # an older harness configured it otherwise: up() edits it
            return [f"queue {QUEUE} differs in {', '.join(changed)}"]
        if self.host not in self.run("qconf", "-ss").stdout.split():
            return [f"{self.host} is no submit host"]
        line = next((ln for ln in self.run("qstat", "-f", "-q", QUEUE).stdout.splitlines() if "@" in ln), "")
        if not line or len(line.split()) > 5:  # a sixth column holds the queue's states: a, u, E, d ...
            found.append(f"queue instance is not usable: {line.strip() or 'no instance'}")
        return found

    def healthy(self) -> bool:
        """Whether both daemons run and the queue takes jobs."""
        return not self.problems()

    def up(self, timeout: float = 60) -> bool:
        """Bring the cell up, or reuse it if healthy; True if this call started something."""
        reason = missing_sge()
        if reason:
            raise RuntimeError(reason)
        with _lock():
            if self.healthy():
                return False
            deadline = time.monotonic() + timeout
            WORK.mkdir(mode=0o700, exist_ok=True)
            self._start_qmaster(deadline)
            self._configure()
            self._start_execd(deadline)
            self._queues()
            wait_until(self.healthy, _left(deadline), f"the Grid Engine queue to take jobs ({self.problems()})")
            return True

    def down(self) -> None:
        """Delete every job, then stop execd and qmaster by their pid files (running jobs outlive execd)."""
        with _lock():
            pids = self.pids()
            if pids["sge_qmaster"] is not None:
                with contextlib.suppress(RuntimeError):
                    self.cancel_all(timeout=30)
            for name in ("sge_execd", "sge_qmaster"):
                pid = pids[name]
                if pid is not None:
                    procs.stop([pid])

    def _start_qmaster(self, deadline: float) -> None:
        """Start sge_qmaster (after fixing how it sees this host) and wait until qstat answers."""
        if self.pids()["sge_qmaster"] is not None:
            return
        # The host name resolves to 127.0.0.1, which reverse-resolves to "localhost": commlib would refuse
        # every client as "localhost" unless that name is an alias of this host.
        for name, text in (("host_aliases", f"{self.host} localhost\n"), ("act_qmaster", f"{self.host}\n")):
            path = COMMON / name
            path.write_text(text)
            shutil.chown(path, "sgeadmin", "sgeadmin")
        self._daemon("/usr/sbin/sge_qmaster")  # forks; Debian's policy-rc.d kept the package from starting it
        wait_until(lambda: self.run("qstat").returncode == 0, _left(deadline), "sge_qmaster to answer", interval=0.25)

    def _configure(self) -> None:
        """Submit host, NOTIFY_KILL=TERM (read by execd at its start), a 2-second scheduler, the PEs."""
        if self.host not in self.run("qconf", "-ss").stdout.split():
            self.run("qconf", "-as", self.host, check=True)
        conf = self.run("qconf", "-sconf", "global", check=True).stdout
        if "NOTIFY_KILL=TERM" not in conf:
            lines = [ln for ln in conf.splitlines() if not ln.startswith("execd_params")]
            (WORK / "global").write_text("\n".join([*lines, "execd_params                 NOTIFY_KILL=TERM", ""]))
            self.run("qconf", "-Mconf", str(WORK / "global"), check=True)  # the file must be named "global"
        sched = self.run("qconf", "-ssconf", check=True).stdout
        wanted = {"schedule_interval": "0:0:2", "flush_submit_sec": "1", "flush_finish_sec": "1"}
        lines = [
            f"{ln.split()[0]} {wanted[ln.split()[0]]}" if ln.split()[:1] and ln.split()[0] in wanted else ln
            for ln in sched.splitlines()
        ]
        if lines != sched.splitlines():
            (WORK / "sched.conf").write_text("\n".join(lines) + "\n")
            self.run("qconf", "-Msconf", str(WORK / "sched.conf"), check=True)
        known = self.run("qconf", "-spl").stdout.split()
        for name, rule in (("smp", "$pe_slots"), ("mpi", "$round_robin")):
            if name not in known:
                path = WORK / f"{name}.pe"
                path.write_text(PE_TEMPLATE.format(name=name, rule=rule))
                self.run("qconf", "-Ap", str(path), check=True)

    def _start_execd(self, deadline: float) -> None:
        """Start sge_execd and wait until qhost shows this host's load."""
        if self.pids()["sge_execd"] is None:
            self._daemon("/usr/sbin/sge_execd")

        def reporting() -> bool:
            lines = self.run("qhost", "-h", self.host).stdout.splitlines()
            return any(ln.split()[:1] == [self.host] and ln.split()[2:3] != ["-"] for ln in lines)

        wait_until(reporting, _left(deadline), f"sge_execd on {self.host} to report", interval=0.25)

    def _queues(self) -> None:
        """all.q on this host with the settings jobs need; `qconf -aq/-mq` edit through $EDITOR, a sed script here."""
        edit = WORK / "qedit.sh"
        settings = self.queue_settings()
        script = " ".join(f"-e 's/^{key} .*/{key} {value}/'" for key, value in settings.items())
        edit.write_text(f'#!/bin/sh\nexec sed -i {script} "$1"\n')  # EDITOR=cat would add the unedited template
        edit.chmod(0o700)
        exists = QUEUE in self.run("qconf", "-sql").stdout.split()
        self.run("qconf", "-mq" if exists else "-aq", QUEUE, check=True, EDITOR=str(edit))
        # A queue instance left in error state (E) by an earlier failure never takes jobs again unless cleared.
        self.run("qmod", "-c", f"{QUEUE}@{self.host}")
        self.run("qmod", "-e", f"{QUEUE}@{self.host}")

    def queue_settings(self) -> dict[str, str]:
        """The queue's attributes that jobs here depend on, as `qconf -sq` shows them."""
        return {
            "hostlist": self.host,
            "slots": str(SLOTS),
            "pe_list": "smp mpi",
            "load_thresholds": "NONE",  # a busy 2-core machine would otherwise put the queue in alarm state
            "shell_start_mode": "unix_behavior",  # the default ignores #! and runs /bin/sh
            "notify": NOTIFY,
        }

    def _daemon(self, path: str) -> None:
        """Run a self-daemonizing Grid Engine daemon; RuntimeError with its output if it fails."""
        log = WORK / f"{Path(path).name}.start.log"
        with log.open("w") as fh:
            result = subprocess.run(
                [path], check=False, env=BASE_ENV, cwd="/", stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, timeout=60
            )
        if result.returncode != 0:
            raise RuntimeError(f"{path} exited {result.returncode}: {log.read_text().strip()[-2000:]}")


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialize up/down between processes."""
    WORK.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{WORK}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _left(deadline: float) -> float:
    """Seconds until `deadline` (at least one)."""
    return max(1.0, deadline - time.monotonic())

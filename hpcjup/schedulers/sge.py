"""Grid Engine (Son of Grid Engine, Univa/Altair): `qsub -terse`, `qstat -xml` (then `qacct`), `qdel`, `qrsh -inherit`.

What differs from Slurm: no expected start time; no signal before the limit that hpcjup can use
(`-l s_rt` gives SIGUSR1, but execd then waits 90 s before the kill), so the launcher runs its own
timer from the granted `h_rt`; a graceful stop is `qdel` of a job submitted with `-notify`: with the
cell's `NOTIFY_KILL=TERM` the launcher gets SIGTERM, then SIGKILL after the queue's notify time. The
environment is not exported wholesale (no `-V`): only PATH, as the login shell that submits has it.
The sh it sends is sge_sh.py's, what it reads sge_parse.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from hpcjup import job
from hpcjup.job import JOB_LOG, JOB_SCRIPT
from hpcjup.schedulers import sge_parse, sge_sh
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, PartitionPreview, Scheduler
from hpcjup.schedulers.queues import Queue, Queues
from hpcjup.schedulers.sge_doctor import check_request
from hpcjup.schedulers.shell import FRAME, unanswered
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check

# One process on another host of the PE allocation (needs the PE's control_slaves TRUE).
_LAUNCH = "qrsh -inherit -nostdin {host}"
_PE_ONE_HOST = "smp"  # the customary names: $pe_slots (one host) and $round_robin/$fill_up (several)
_PE_HOSTS = "mpi"
# pe_hostfile lines: host slots queue processors; a host appears once per queue it got slots in. Only PE jobs have one.
_HOSTFILE = '[ -r "${PE_HOSTFILE:-}" ] && awk -v h="$HPCJUP_NODE" \'{ sub(/\\..*/, "", $1) } '
_ACCOUNTING_DAYS = 30  # how far back one `qacct -o USER` scan looks for several finished jobs


FORCE_AFTER = 10  # seconds a killed job may stay listed before `qdel -f` (kill_snippet)


class GridEngine(Scheduler):
    """The Grid Engine adapter."""

    name = "sge"
    title = "Grid Engine"
    no_requeue = "a preempted Grid Engine job is suspended (subordinate queues), never requeued to run again"
    commands = ("qsub", "qstat", "qdel")
    jobqueue = ("sge", "SGEJob")
    signals_before_limit = False
    estimates_start = False
    previews_start = True  # no estimate, but `qsub -w v` says whether a queue could ever run the job
    directive = "#$"
    shebang = "#!/bin/bash -l"
    # The session's job has -notify: qdel of a running one is SIGTERM to the launcher, SIGKILL later.
    signal_command = cancel_command = ("qdel",)
    quiet = " >/dev/null 2>&1"
    worker_submit = 'qsub -terse "$1"'
    queue_check = "queue"
    lists_queues = "qconf -sql"

    # -- the job script ------------------------------------------------------------------------------
    def directives(self, spec: JobSpec) -> list[str]:
        """The qsub options of the job, one directive each (values are validated by Resources)."""
        res = spec.resources
        options = [
            f"-N hpcjup-{spec.name}",
            f"-o {JOB_LOG}",  # relative to -cwd: the session directory
            "-j y",
            "-cwd",
            "-S /bin/bash",  # queues in posix_compliant mode ignore the #! line
            "-v PATH",  # only PATH of the submitting shell: never the whole login environment (-V)
            "-notify",  # qdel sends the notify signal (SIGTERM with NOTIFY_KILL=TERM) before SIGKILL
            "-r n",  # not rerunnable (Scheduler.directives); Grid Engine suspends rather than requeues: `requeues` is False
        ]
        options += [f"-q {res.partition}"] if res.partition else []
        options += [f"-P {res.account}"] if res.account else []
        seconds = sge_parse.time_seconds(spec)
        options += [f"-l h_rt={seconds}"] if seconds else []
        slots = sge_parse.slots_of(res.nodes, res.cpus)
        if res.nodes > 1:
            options.append(f"-pe {_PE_HOSTS} {slots}")
        elif slots > 1:
            options.append(f"-pe {_PE_ONE_HOST} {slots}")
        if res.mem:
            options.append(
                f"-l h_vmem={sge_parse.per_slot_mib(res.mem, slots)}M"
            )  # Grid Engine's memory limits are per slot
        if res.gpus:
            options.append(f"-l gpu={sge_parse.gpu_count(res.gpus)}")
        return options

    def environment(self, spec: JobSpec) -> Mapping[str, str]:
        res = spec.resources
        others = _HOSTFILE + '$1 != h && !seen[$1]++ { printf " %s", $1 }\' "$PE_HOSTFILE"'
        cpus = _HOSTFILE + '$1 == h { n += $2 } END { print n ? n : 1 }\' "$PE_HOSTFILE"'
        return {
            job.ENV_SCHEDULER: self.name,
            job.ENV_JOB_ID: '"$JOB_ID"',
            job.ENV_NODE: '"${HOSTNAME%%.*}"',
            job.ENV_NODELIST: f'"${job.ENV_NODE}$({others})"',  # this host, then the PE's others
            job.ENV_CPUS: f'"$({cpus} || echo "${{NSLOTS:-1}}")"',
            job.ENV_MEMORY_KB: '""',  # not said: its cgroup's limit bounds it, where it has one
            # Several hosts: qrsh reaches the others; one host: the command runs here.
            job.ENV_LAUNCH: f"\"$(case ${job.ENV_NODELIST} in (*' '*) echo {shlex.quote(_LAUNCH)} ;; esac)\"",
            job.ENV_TIME_LIMIT: str(sge_parse.time_seconds(spec) or 0),
            job.ENV_WARN_SIGNAL: "",  # no usable signal before h_rt: the launcher's own timer
            job.ENV_WARN_SECONDS: str(spec.warn_seconds or 0),
            job.ENV_RESTARTS: "''",  # not given: the launcher counts runs from the state.json before
            job.ENV_PARTITION: shlex.quote(res.partition) if res.partition else '"${QUEUE:-}"',
            job.ENV_ACCOUNT: shlex.quote(res.account) if res.account else "",
            job.ENV_JOBQUEUE: "sge",
            job.ENV_SUBMIT: "qsub",
            # qsub inside a job exports nothing of it (no -V): there is nothing to scrub.
            job.ENV_SCRUB: "",
            job.ENV_SCRUB_KEEP: "",
        }

    # -- submission ------------------------------------------------------------------------------------
    # Run in the session directory: -cwd and the relative -o. The log is created first, 0600: Grid
    # Engine would create it 0644 whatever the umask.
    submit_command = f": >>{JOB_LOG} && qsub -terse {JOB_SCRIPT}"
    refusal = staticmethod(sge_parse.submit_error)

    def parse_submission(self, stdout: str, stderr: str) -> str:
        return sge_parse.parse_qsub(stdout, stderr)

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        """SGEJob's names: the queue, the project (Grid Engine's account), h_rt as H:MM:SS; PATH as the session's job has it."""
        # SGEJob's script runs `python3 -m distributed...` under `#!/usr/bin/env bash`, not a login shell.
        h_rt = sge_parse.h_rt(walltime)
        return {"queue": partition, "project": account, "walltime": h_rt, "job_extra_directives": ["-v PATH"]}

    # -- state -----------------------------------------------------------------------------------------
    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One remote command for all jobs: `qstat -xml` of the user's jobs, and `qacct` for those it no longer lists."""
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids if not self.is_job_id(job_id)}
        wanted = [job_id for job_id in job_ids if job_id not in found]
        if not wanted:
            return found
        argv = ["sh", "-c", sge_sh.QSTAT, "sh", str(_ACCOUNTING_DAYS), *wanted]
        result = transport.run(argv, check=False, timeout=60)
        if result.returncode != 0:  # the qmaster did not answer: UNKNOWN in its words, never GONE on a guess
            unknown = JobStatus("", JobState.UNKNOWN, reason=unanswered(result.stderr, result.returncode, "qstat"))
            return {**found, **{job_id: dataclasses.replace(unknown, job_id=job_id) for job_id in wanted}}
        live, framed, accounting = result.stdout.partition(f"\n{FRAME} qacct\n")
        listed, finished = sge_parse.parse_statuses(live + "\n" if framed else live), sge_parse.parse_qacct(accounting)
        for job_id in wanted:
            found[job_id] = listed.get(job_id) or finished.get(job_id) or JobStatus(job_id, JobState.GONE)
        return found

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        """A job in error state (Eqw) stays in the queue and never starts: qstat -j's error reason, and what to do."""
        if not (status.reason or "").startswith(sge_parse.ERROR_STATE):
            return None
        return (
            "Grid Engine put it in error state, where it stays until it is deleted",
            f"Fix what the error names (often a --directive's -o/-e path or a missing directory); "
            f"`qstat -j {status.job_id}` shows the whole reason.",
        )

    # -- ending jobs -----------------------------------------------------------------------------------
    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        # Plain qdel first: the job is gone within a second or two (measured: 1 s for a running -notify job).
        # `qdel -f` (a job whose host is unreachable stays "in deletion" without it) only for what is still
        # listed after FORCE_AFTER seconds: for a user who is no manager, -f waits 60 s for qmaster and exits 1
        # (measured twice, also for a job already in deletion), which every kill paid before.
        ids = self.ids(job_ids)
        if not ids:
            return ""
        listed = f"qstat -j {shlex.quote(','.join(ids))} >/dev/null 2>&1"  # 0 while any of them is listed
        return (
            f"{self._quietly(('qdel',), ids)}; hpcjup_n=0; "
            f"while [ $hpcjup_n -lt {FORCE_AFTER} ] && {listed}; do sleep 1; hpcjup_n=$((hpcjup_n + 1)); done; "
            f"! {listed} || {self._quietly(('qdel', '-f'), ids)}"
        )

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        # No state to ask first: qdel of a -notify job is graceful while it runs, and cancels it while it pends.
        job_id = self.check_job_id(job_id)
        snippet = self.stop_snippet([job_id], []) if graceful else self.kill_snippet([job_id])
        transport.run(["sh", "-c", snippet], check=False)

    def own_jobs(self, job_ids: Sequence[str]) -> str:
        # qstat -xml -u: only this user's jobs, the names whole (the plain listing cuts them to 10 characters).
        return f'bounded qstat -xml -u "$(id -un)" 2>/dev/null | awk {shlex.quote(sge_sh.OWN_JOBS)}'

    # -- start --dry-run, doctor -----------------------------------------------------------------------
    def preview_snippet(self, script: str, partitions: Sequence[str | None]) -> str:
        """`qsub -w v` of the script on stdin for each queue (verification only), `qstat -g c`, each queue's h_rt."""
        return "set -- " + shlex.join([script, *(p or "" for p in partitions)]) + sge_sh.PREVIEW

    def parse_preview(self, stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
        return sge_parse.parse_preview(stdout, partitions)

    def queues(self, transport: Transport, wanted: str | None) -> Queues:
        """The cell's queues (`qconf -sql`), by name only."""
        from hpcjup.schedulers.checks import first_line

        result = transport.run(["qconf", "-sql"], check=False)
        if result.returncode != 0:
            return Queues(error=f"qconf -sql failed: {first_line(result.stderr or result.stdout)}")
        return Queues([Queue(name, state=None) for name in result.stdout.split()])

    def request_checks(self) -> dict[str, Callable[[Transport, Resolved], Check]]:
        return {"request": functools.partial(check_request, self.directives)}

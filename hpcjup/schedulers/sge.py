"""Grid Engine (Son of Grid Engine, Univa/Altair): `qsub -terse`, `qstat -xml` (then `qacct`), `qdel`, `qrsh -inherit`.

What differs from Slurm: no expected start time; no signal before the limit that hpcjup can use
(`-l s_rt` gives SIGUSR1, but execd then waits 90 s before the kill), so the launcher runs its own
timer from the granted `h_rt`; a graceful stop is `qdel` of a job submitted with `-notify`: with the
cell's `NOTIFY_KILL=TERM` the launcher gets SIGTERM, then SIGKILL after the queue's notify time. The
environment is not exported wholesale (no `-V`): only PATH, as the login shell that submits has it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hpcjup import job
from hpcjup.config.resources import time_to_seconds
from hpcjup.errors import RemoteCommandError, SubmitError, UsageError
from hpcjup.job import JOB_LOG, JOB_SCRIPT
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, PartitionPreview, Scheduler
from hpcjup.schedulers.sge_parse import ERROR_STATE, _hint, _message, parse_preview, parse_qacct, parse_statuses
from hpcjup.schedulers.sge_parse import parse_qstat_xml as parse_qstat_xml
from hpcjup.schedulers.sge_parse import state_of as state_of
from hpcjup.schedulers.sge_parse import submit_error as submit_error
from hpcjup.schedulers.shell import BOUNDED, FRAME, cancel_named, unanswered
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check

# One process on another host of the PE allocation (needs the PE's control_slaves TRUE).
_LAUNCH = "qrsh -inherit -nostdin {host}"
_PE_ONE_HOST = "smp"  # the customary names: $pe_slots (one host) and $round_robin/$fill_up (several)
_PE_HOSTS = "mpi"
# All of the user's jobs; then, framed, the error reasons of those in error state (Eqw), which only
# `qstat -j` shows: one remote command, and a second qstat only while some job is in error state.
# Then, framed, accounting for those of the wanted jobs ($2...) that qstat no longer lists: `qacct -j ID`
# for one, one scan of the user's last $1 days for several (each qacct reads the whole accounting file).
# Each query bounded (shell.BOUNDED): a qmaster that takes the connection and never answers costs one wait.
_QSTAT = f"""{BOUNDED}
days=$1; shift
xml=$(bounded qstat -xml -r -u "$(id -un)") || exit $?
printf '%s\\n{FRAME} errors\\n' "$xml"
ids=$(printf '%s\\n' "$xml" | awk -F'[<>]' '$2 == "JB_job_number" {{ j = $3 }} $2 == "state" && $3 ~ /E/ {{ print j }}')
[ -z "$ids" ] || bounded qstat -j "$(printf '%s' "$ids" | tr '\\n' ',')" 2>&1 | grep -E '^(job_number|error reason)'
missing=
for id in "$@"; do
    case "$xml" in *"<JB_job_number>$id</JB_job_number>"*) ;; *) missing="$missing $id" ;; esac
done
set -- $missing
if [ $# -gt 0 ] && command -v qacct >/dev/null 2>&1; then
    printf '{FRAME} qacct\\n'
    if [ $# -eq 1 ]; then bounded qacct -j "$1"; else bounded qacct -o "$(id -un)" -d "$days" -j; fi 2>/dev/null
fi
exit 0"""
# awk: `ID NAME` for each job in `qstat -xml` (one element a line; an array job's tasks repeat the id).
_OWN_JOBS = r"""
/<JB_job_number>/ { id = $0; sub(/.*<JB_job_number>/, "", id); sub(/<.*/, "", id) }
/<JB_name>/ { name = $0; sub(/.*<JB_name>/, "", name); sub(/<\/JB_name>.*/, "", name) }
/<\/job_list>/ { if (id != "") print id, name; id = name = "" }
"""
_UNIT_MIB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}  # Slurm's --mem units; no unit = MiB
_ACCOUNTING_DAYS = 30  # how far back one `qacct -o USER` scan looks for several finished jobs


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

    # -- the job script ------------------------------------------------------------------------------
    def render(self, spec: JobSpec) -> str:
        lines = ["#!/bin/bash -l", f"# hpcjup session {spec.name}: JupyterLab on a compute node."]
        lines += [f"{self.directive} {option}" for option in self.options(spec)]
        lines += [f"{self.directive} {directive}" for directive in spec.resources.directives]  # after hpcjup's own
        lines += ["", *self.job_environment(spec), "umask 077", *spec.setup, self.exec_line(spec.command), ""]
        return "\n".join(lines)

    def options(self, spec: JobSpec) -> list[str]:
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
            "-r n",  # not rerunnable: a rerun would write into a session directory pruned or reused since (and
            # Grid Engine suspends rather than requeues on preemption: `requeues` is False)
        ]
        options += [f"-q {res.partition}"] if res.partition else []
        options += [f"-P {res.account}"] if res.account else []
        seconds = _time_seconds(spec)
        options += [f"-l h_rt={seconds}"] if seconds else []
        slots = _slots(res.nodes, res.cpus)
        if res.nodes > 1:
            options.append(f"-pe {_PE_HOSTS} {slots}")
        elif slots > 1:
            options.append(f"-pe {_PE_ONE_HOST} {slots}")
        if res.mem:
            options.append(f"-l h_vmem={_per_slot_mib(res.mem, slots)}M")  # Grid Engine's memory limits are per slot
        if res.gpus:
            options.append(f"-l gpu={_gpu_count(res.gpus)}")
        return options

    def job_environment(self, spec: JobSpec) -> list[str]:
        res = spec.resources
        # pe_hostfile lines: host slots queue processors; a host appears once per queue it got slots in.
        hosts = 'awk -v h="$HPCJUP_NODE" \'{ sub(/\\..*/, "", $1) } $1 != h && !seen[$1]++ { printf " %s", $1 }\''
        cpus = 'awk -v h="$HPCJUP_NODE" \'{ sub(/\\..*/, "", $1) } $1 == h { n += $2 } END { print n ? n : 1 }\''
        partition = shlex.quote(res.partition) if res.partition else '"${QUEUE:-}"'
        return [
            f"export {job.ENV_SCHEDULER}={self.name}",
            f'export {job.ENV_JOB_ID}="$JOB_ID"',
            f'export {job.ENV_NODE}="${{HOSTNAME%%.*}}"',
            f'export {job.ENV_NODELIST}="${job.ENV_NODE}" {job.ENV_CPUS}="${{NSLOTS:-1}}" {job.ENV_LAUNCH}=',
            'if [ -n "${PE_HOSTFILE:-}" ] && [ -r "$PE_HOSTFILE" ]; then',
            f'    {job.ENV_NODELIST}="${job.ENV_NODE}$({hosts} "$PE_HOSTFILE")"',
            f'    {job.ENV_CPUS}="$({cpus} "$PE_HOSTFILE")"',
            f"    case ${job.ENV_NODELIST} in *' '*) {job.ENV_LAUNCH}={shlex.quote(_LAUNCH)} ;; esac",
            "fi",
            f"export {job.ENV_TIME_LIMIT}={_time_seconds(spec) or 0}",
            f"export {job.ENV_WARN_SIGNAL}=",  # no usable signal before h_rt: the launcher's own timer
            f"export {job.ENV_WARN_SECONDS}={spec.warn_seconds or 0}",
            f"export {job.ENV_PARTITION}={partition}",
            f"export {job.ENV_ACCOUNT}={shlex.quote(res.account) if res.account else ''}",
            f"export {job.ENV_JOBQUEUE}={self.jobqueue[0] if self.jobqueue else ''}",
            f"export {job.ENV_SUBMIT}=qsub",
            # qsub inside a job exports nothing of it (no -V): there is nothing to scrub.
            f"export {job.ENV_SCRUB}= {job.ENV_SCRUB_KEEP}=",
        ]

    # -- submission ------------------------------------------------------------------------------------
    # Run in the session directory: -cwd and the relative -o. The log is created first, 0600: Grid
    # Engine would create it 0644 whatever the umask.
    submit_command = f": >>{JOB_LOG} && qsub -terse {JOB_SCRIPT}"

    def parse_submission(self, stdout: str, stderr: str) -> str:
        return self._job_id(stdout, stderr)

    def refusal(self, exc: RemoteCommandError) -> SubmitError:
        return submit_error(exc)

    def submit_worker(self, transport: Transport, script: str) -> str:
        try:
            result = transport.run(["sh", "-c", 'umask 077 && exec qsub -terse "$1"', "sh", script], timeout=60)
        except RemoteCommandError as exc:
            raise submit_error(exc) from exc
        return self._job_id(result.stdout, result.stderr)

    def _job_id(self, stdout: str, stderr: str) -> str:
        """The id `qsub -terse` printed (first line; an array job's "123.1-4:1" is job 123)."""
        first = next((line.strip() for line in stdout.splitlines() if line.strip()), "")
        job_id = first.split(".", 1)[0]
        if not self.is_job_id(job_id):
            raise SubmitError(
                f"qsub printed no job id: {stdout.strip()[:200]!r} {stderr.strip()[:200]!r}",
                hint="Check `qsub -terse` on the login node.",
            )
        return job_id

    def worker_placement(
        self, partition: str, account: str | None, walltime: str, *, cores: int | None, memory: str | None
    ) -> dict[str, object]:
        """SGEJob's names: the queue, the project (Grid Engine's account), h_rt as H:MM:SS; PATH as the session's job has it."""
        try:
            seconds = time_to_seconds(walltime)  # hpcjup's format: a bare number is minutes, for h_rt it is seconds
        except ValueError:
            h_rt = walltime
        else:
            h_rt = f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        # SGEJob's script runs `python3 -m distributed...` under `#!/usr/bin/env bash`, not a login shell.
        return {
            "queue": partition,
            "project": account,
            "walltime": h_rt,
            "job_extra_directives": ["-v PATH"],
        }

    # -- state -----------------------------------------------------------------------------------------
    def status(self, transport: Transport, job_id: str) -> JobStatus:
        job_id = self.check_job_id(job_id)
        return self.statuses(transport, [job_id])[job_id]

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One remote command for all jobs: `qstat -xml` of the user's jobs, and `qacct` for those it no longer lists.

        An id that is not a Grid Engine job id (a damaged session.json) is GONE and never reaches a command line.
        """
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids if not self.is_job_id(job_id)}
        wanted = [job_id for job_id in job_ids if job_id not in found]
        if not wanted:
            return found
        result = transport.run(["sh", "-c", _QSTAT, "sh", str(_ACCOUNTING_DAYS), *wanted], check=False, timeout=60)
        if result.returncode != 0:  # the qmaster did not answer: UNKNOWN in its words, never GONE on a guess
            unknown = JobStatus("", JobState.UNKNOWN, reason=unanswered(result.stderr, result.returncode, "qstat"))
            return {**found, **{job_id: dataclasses.replace(unknown, job_id=job_id) for job_id in wanted}}
        live, framed, accounting = result.stdout.partition(f"\n{FRAME} qacct\n")
        listed, finished = parse_statuses(live + "\n" if framed else live), parse_qacct(accounting)
        for job_id in wanted:
            found[job_id] = listed.get(job_id) or finished.get(job_id) or JobStatus(job_id, JobState.GONE)
        return found

    # -- ending jobs -----------------------------------------------------------------------------------
    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        # The session's job has -notify: qdel of a running one is SIGTERM to the launcher, SIGKILL later.
        ids = self.ids([*running, *pending])
        return shlex.join(["qdel", *ids]) + " >/dev/null 2>&1" if ids else ""

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        # -f: also a job whose host is unreachable; a user may force-delete their own jobs where the
        # cell allows it, else qdel falls back to the plain deletion.
        ids = self.ids(job_ids)
        if not ids:
            return ""
        quoted = shlex.join(ids)
        return f"qdel -f {quoted} >/dev/null 2>&1 || qdel {quoted} >/dev/null 2>&1"

    def cancel_own_snippet(self, jobs: Mapping[str, str]) -> str:
        ids = self.ids(list(jobs))
        if not ids:
            return ""
        # qstat -xml -u: only this user's jobs, the names whole (the plain listing cuts them to 10 characters).
        listing = f'bounded qstat -xml -u "$(id -un)" 2>/dev/null | awk {shlex.quote(_OWN_JOBS)}'
        return cancel_named({job_id: jobs[job_id] for job_id in ids}, listing, "qdel")

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        """A job in error state (Eqw) stays in the queue and never starts: qstat -j's error reason, and what to do."""
        if not (status.reason or "").startswith(ERROR_STATE):
            return None
        return (
            "Grid Engine put it in error state, where it stays until it is deleted",
            f"Fix what the error names (often a --directive's -o/-e path or a missing directory); "
            f"`qstat -j {status.job_id}` shows the whole reason.",
        )

    def preview_snippet(self, script: str, partitions: Sequence[str | None]) -> str:
        """`qsub -w v` of the script on stdin for each queue (verification only), `qstat -g c`, each queue's h_rt."""
        return "set -- " + shlex.join([script, *(p or "" for p in partitions)]) + _PREVIEW

    def parse_preview(self, stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
        return parse_preview(stdout, partitions)

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        job_id = self.check_job_id(job_id)
        snippet = self.stop_snippet([job_id], []) if graceful else self.kill_snippet([job_id])
        transport.run(["sh", "-c", snippet], check=False)

    # -- doctor ----------------------------------------------------------------------------------------
    def doctor_checks(self, transport: Transport, settings: object) -> list[Check]:
        """Grid Engine's commands, the queue (`qconf -sql`), and the whole request (`qsub -w v`)."""
        from hpcjup.schedulers.checks import Check, Status, check_commands

        resolved: Resolved = settings  # type: ignore[assignment]
        checks = [check_commands(transport, self)]
        if checks[0].status is not Status.PASS:
            skip = "not checked: no Grid Engine commands"
            return [*checks, Check("queue", Status.SKIP, skip), Check("request", Status.SKIP, skip)]
        return [*checks, self._check_queue(transport, resolved), self._check_request(transport, resolved)]

    def _check_queue(self, transport: Transport, resolved: Resolved) -> Check:
        """The queue (--partition) is one of the cell's."""
        from hpcjup.schedulers.checks import Check, Status, first_line

        result = transport.run(["qconf", "-sql"], check=False)
        if result.returncode != 0:
            text = first_line(result.stderr or result.stdout)
            return Check("queue", Status.FAIL, f"qconf -sql failed: {text}", fix="Check that `qstat` answers.")
        queues = result.stdout.split()
        wanted = resolved.value("partition")
        if wanted is None:
            return Check("queue", Status.PASS, f"none set: Grid Engine picks among {', '.join(queues) or 'none'}")
        if wanted not in queues:
            return Check(
                "queue",
                Status.FAIL,
                f"no queue {wanted!r} (from {resolved.source('partition')})",
                fix=f"Choose one of: {', '.join(queues) or 'none listed'} (`qconf -sql` lists them).",
            )
        return Check("queue", Status.PASS, f"{wanted} is one of the cell's queues")

    def _check_request(self, transport: Transport, resolved: Resolved) -> Check:
        """Grid Engine could run the job as configured (`qsub -w v`: verified, nothing submitted)."""
        from hpcjup.schedulers.checks import Check, Status

        spec = JobSpec(name="doctor", session_dir="/", command=["true"], resources=resolved.resources())
        keep = [o for o in self.options(spec) if not o.startswith(("-N ", "-o ", "-cwd", "-v ", "-notify"))]
        argv = ["qsub", "-w", "v", "-N", "hpcjup-doctor", "-o", "/dev/null", *(w for o in keep for w in o.split(" "))]
        argv += ["-b", "y", "true"]
        result = transport.run(argv, check=False, timeout=60)
        text = _message(result.stderr + "\n" + result.stdout)
        if result.returncode != 0:
            return Check(
                "request",
                Status.FAIL,
                f"Grid Engine would refuse the job: {text}",
                fix=_hint(text, result.returncode),
                details=shlex.join(argv),
            )
        return Check("request", Status.PASS, f"Grid Engine would accept the job: {text or 'ok'}")


# One remote command for `start --dry-run` (after `set -- SCRIPT QUEUE...`, "" for any queue); framed (shell.FRAME).
_PREVIEW = f"""
script=$1; shift
printf '{FRAME} slots\\n'; qstat -g c 2>&1; printf '\\n{FRAME} end %s\\n' "$?"
for q in "$@"; do
    printf '{FRAME} verify %s\\n' "$q"
    printf '%s' "$script" | qsub -w v ${{q:+-q "$q"}} 2>&1
    printf '\\n{FRAME} end %s\\n' "$?"
    [ -z "$q" ] && continue
    printf '{FRAME} limit %s\\n' "$q"; qconf -sq "$q" 2>&1 | grep -E '^h_rt '; printf '\\n{FRAME} end %s\\n' "$?"
done
"""


# -- formats ---------------------------------------------------------------------------------------------
def _time_seconds(spec: JobSpec) -> int | None:
    return None if spec.resources.time is None else time_to_seconds(spec.resources.time)


def _slots(nodes: int, cpus: int | None) -> int:
    return nodes * (cpus or 1)


def _per_slot_mib(mem: str, slots: int) -> int:
    """--mem (per job, Slurm's units; no unit = MiB) as MiB per slot, rounded up."""
    match = re.fullmatch(r"([0-9]+)([KMGT]?)B?", mem.upper())
    if not match:
        raise UsageError(f"--mem {mem!r} is not valid: expected a size such as 16G or 4000M.")
    mib = int(match.group(1)) * _UNIT_MIB[match.group(2)]
    return max(1, math.ceil(mib / slots))


def _gpu_count(gpus: str) -> str:
    """The count of --gpus; a GPU type has no common Grid Engine spelling."""
    if ":" in gpus:
        raise UsageError(
            f"--gpus {gpus!r}: Grid Engine sites name GPU types their own way.",
            hint="Ask for a count (--gpus 2); `qconf -sc` shows the cell's GPU resources.",
        )
    return gpus

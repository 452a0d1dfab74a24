"""Slurm: `sbatch --parsable`, `squeue` (then `sacct`) for state, `scancel` to stop, `srun` on each node."""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hpcjup import job
from hpcjup.errors import RemoteCommandError, SubmitError
from hpcjup.job import JOB_LOG, JOB_SCRIPT
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus, PartitionPreview, Scheduler
from hpcjup.schedulers.shell import BOUNDED, FRAME, cancel_named, sections, unanswered
from hpcjup.schedulers.slurm_doctor import check_account as check_account
from hpcjup.schedulers.slurm_doctor import check_partition as check_partition
from hpcjup.schedulers.slurm_doctor import check_request as check_request
from hpcjup.schedulers.slurm_parse import _parse_squeue, _seconds, never_starts, parse_preview
from hpcjup.schedulers.slurm_parse import submit_error as submit_error
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check

# squeue fields: state, reason, expected start, node list, time left, time limit.
_SQUEUE_FORMAT = "%T|%r|%S|%N|%L|%l|%i"
_SACCT_FIELDS = "State,ExitCode,NodeList,Timelimit"
# One remote command for the state of many jobs ($1: ids joined by commas): squeue for all of them, then,
# for those it no longer shows, accounting (finished jobs leave squeue after MinJobAge; sacct remembers
# them where accounting is enabled). Older Slurm refuses a whole list for one id it has forgotten
# ("Invalid job id specified"): then one id at a time. Any other failure (no controller to ask) is the
# answer for all of them: no second query, no accounting (bounded: shell.BOUNDED), so a stopped controller
# costs one bounded wait, not one per job. Framed sections (shell.FRAME) that `statuses` reads; the squeue
# section holds Slurm's own words when it ends with a non-zero code.
_STATUSES = (
    BOUNDED
    + r"""
ids=$1 fmt=$2 acct=$3 frame=$4
printf '%s squeue\n' "$frame"
out=$(bounded squeue -h -t all -j "$ids" -o "$fmt" 2>&1); rc=$?
case $rc:$out in
0:*) ;;
*"Invalid job id"*)
    out= rc=0 some=
    old_ifs=$IFS IFS=,
    for id in $ids; do
        if line=$(bounded squeue -h -t all -j "$id" -o "$fmt" 2>&1); then
            some=1
            [ -n "$line" ] && out="$out
$line"
            continue
        fi
        case $line in *"Invalid job id"*) ;; *) out=$line rc=1; break ;; esac
    done
    IFS=$old_ifs
    # Every id refused as forgotten: a query of one's own jobs tells that from a controller that cannot answer.
    if [ "$rc" = 0 ] && [ -z "$some" ]; then
        line=$(bounded squeue -h -u "$(id -un)" -o %i 2>&1) || { out=$line rc=1; }
    fi ;;
esac
printf '%s\n%s end %s\n' "$out" "$frame" "$rc"
[ "$rc" = 0 ] || exit 0
missing=
old_ifs=$IFS IFS=,
for id in $ids; do
    case "$out
" in *"|$id
"*) ;; *) missing=${missing:+$missing,}$id ;; esac
done
IFS=$old_ifs
if [ -n "$missing" ] && command -v sacct >/dev/null 2>&1; then
    printf '%s sacct\n' "$frame"
    bounded sacct -n -P -X -j "$missing" -o "$acct" 2>/dev/null
    printf '%s end %s\n' "$frame" "$?"
fi
exit 0
"""
)
# One worker process on one host of the allocation; --overlap: the batch step holds the first node's CPUs too.
_LAUNCH = (
    "srun --overlap --nodes=1 --ntasks=1 -w {host} --cpus-per-task={cpus} --kill-on-bad-exit=0 --job-name=dask-worker"
)


class Slurm(Scheduler):
    """The Slurm adapter."""

    name = "slurm"
    title = "Slurm"
    requeues = True  # --requeue; PreemptMode=REQUEUE sends SIGTERM, then requeues the job under its id
    commands = ("sbatch", "squeue", "scancel")
    jobqueue = ("slurm", "SLURMJob")
    signals_before_limit = True  # --signal=B:USR1@N
    estimates_start = True  # squeue's %S for pending jobs
    shrinks_time = True  # --time-min: backfill may start the job with a shorter limit
    picks_partition = True  # -p a,b: the job runs in the first that can start it
    previews_start = True  # sbatch --test-only: Slurm's own start estimate, nothing submitted
    directive = "#SBATCH"
    #: 123, an array task 123_4, a heterogeneous job's component 123+1.
    job_id_pattern = re.compile(r"[0-9]{1,20}(?:_[0-9]{1,10}|\+[0-9]{1,10})?")

    def render(self, spec: JobSpec) -> str:
        res = spec.resources
        options = [
            ("job-name", f"hpcjup-{spec.name}"),
            ("output", JOB_LOG),  # relative to the submit directory: the session directory
            ("partition", res.partition),
            ("account", res.account),
            ("time", res.time),
            ("time-min", res.time_min),
            ("nodes", str(res.nodes)),
            ("ntasks-per-node", "1"),
            ("cpus-per-task", str(res.cpus) if res.cpus else None),
            ("mem", res.mem),
            ("gpus", res.gpus),
            # B: signal only the batch shell, which is the launcher (the script execs it).
            ("signal", f"B:USR1@{spec.warn_seconds}" if spec.warn_seconds else None),
        ]
        lines = ["#!/bin/bash -l", f"# hpcjup session {spec.name}: JupyterLab on a compute node."]
        lines += [f"{self.directive} --{key}={value}" for key, value in options if value is not None]
        # Requeued only when asked (start --preemptible: the launcher then starts again in the same directory); else
        # never (a preempted or failed node's job would start again, later, writing into a session directory that
        # `prune` may have removed or a new session may hold). A --directive after it wins.
        lines += [f"{self.directive} {'--requeue' if spec.requeue else '--no-requeue'}"]
        lines += [f"{self.directive} {directive}" for directive in res.directives]  # --directive: after hpcjup's own
        lines += ["", *self.job_environment(spec), "umask 077", *spec.setup, self.exec_line(spec.command), ""]
        return "\n".join(lines)

    def job_environment(self, spec: JobSpec) -> list[str]:
        res = spec.resources

        def given(value: str | None, variable: str) -> str:  # the request, else what Slurm chose
            return shlex.quote(value) if value and "," not in value else f'"${{{variable}:-}}"'

        return [
            f"export {job.ENV_SCHEDULER}={self.name}",
            f'export {job.ENV_JOB_ID}="$SLURM_JOB_ID"',
            f'export {job.ENV_NODE}="${{SLURMD_NODENAME:-$(hostname -s)}}"',
            # Each host once, this one first (the batch step runs on the allocation's first node).
            f'export {job.ENV_NODELIST}="${job.ENV_NODE} $(scontrol show hostnames "$SLURM_JOB_NODELIST" '
            f"2>/dev/null | grep -vxF -e \"${job.ENV_NODE}\" | tr '\\n' ' ')\"",
            f'export {job.ENV_CPUS}="${{SLURM_CPUS_PER_TASK:-${{SLURM_CPUS_ON_NODE:-$(nproc)}}}}"',
            f"export {job.ENV_LAUNCH}={shlex.quote(_LAUNCH)}",
            f"export {job.ENV_TIME_LIMIT}={_granted_limit() if res.time_min else res.time_seconds or 0}",
            f"export {job.ENV_WARN_SIGNAL}=1",  # --signal above; without it Slurm ends the job at the limit itself
            f"export {job.ENV_WARN_SECONDS}={spec.warn_seconds or 0}",
            f'export {job.ENV_RESTARTS}="${{SLURM_RESTART_COUNT:-0}}"',  # a requeued job's runs before this one
            f"export {job.ENV_PARTITION}={given(res.partition, 'SLURM_JOB_PARTITION')}",
            f"export {job.ENV_ACCOUNT}={given(res.account, 'SLURM_JOB_ACCOUNT')}",
            f"export {job.ENV_JOBQUEUE}={self.jobqueue[0] if self.jobqueue else ''}",
            f"export {job.ENV_SUBMIT}=sbatch",
            # A job submitted from inside this one would inherit its SLURM_* (node list, CPU counts) and
            # fail or land in the wrong shape; SLURM_CONF says which cluster, and stays.
            f"export {job.ENV_SCRUB}=SLURM_",
            f"export {job.ENV_SCRUB_KEEP}=SLURM_CONF",
        ]

    # Run in the session directory: the job's working directory and its relative --output. The umask
    # (077): Slurm creates the job's log with the submitter's umask; the log is private.
    submit_command = f"sbatch --parsable {JOB_SCRIPT}"

    def parse_submission(self, stdout: str, stderr: str) -> str:
        # --parsable prints "id" or "id;cluster"; the id goes on later command lines, so it must be one.
        last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        job_id = last.split(";", 1)[0]
        if not self.is_job_id(job_id):
            raise SubmitError(
                f"sbatch printed no job id: {stdout.strip()[:200]!r} {stderr.strip()[:200]!r}",
                hint="Check `sbatch --parsable` on the login node.",
            )
        return job_id

    def refusal(self, exc: RemoteCommandError) -> SubmitError:
        return submit_error(exc)

    def submit_worker(self, transport: Transport, script: str) -> str:
        try:
            result = transport.run(["sh", "-c", 'umask 077 && exec sbatch --parsable "$1"', "sh", script])
        except RemoteCommandError as exc:
            raise submit_error(exc) from exc
        return self.parse_submission(result.stdout, result.stderr)

    def doctor_checks(self, transport: Transport, settings: object) -> list[Check]:
        """Slurm's commands, the partition, the account, and the whole request (`sbatch --test-only`)."""
        from hpcjup.schedulers.checks import Check, Status, check_commands

        resolved: Resolved = settings  # type: ignore[assignment]
        checks = [check_commands(transport, self)]
        for name, check in (("partition", check_partition), ("account", check_account), ("request", check_request)):
            ok = checks[0].status is Status.PASS
            checks.append(
                check(transport, resolved) if ok else Check(name, Status.SKIP, "not checked: no Slurm commands")
            )
        return checks

    def status(self, transport: Transport, job_id: str) -> JobStatus:
        job_id = self.check_job_id(job_id)  # squeue's -j takes the next word whatever it is: validation protects it
        return self.statuses(transport, [job_id])[job_id]

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One remote command for all jobs: squeue, and sacct for those squeue no longer shows.

        An id that is not a Slurm job id (a damaged session.json) is GONE and never reaches a command line.
        """
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids if not self.is_job_id(job_id)}
        wanted = [job_id for job_id in job_ids if job_id not in found]
        if not wanted:
            return found
        argv = ["sh", "-c", _STATUSES, "sh", ",".join(wanted), _SQUEUE_FORMAT, f"JobIDRaw,{_SACCT_FIELDS}", FRAME]
        result = transport.run(argv, check=False)
        if result.returncode != 0:
            raise RemoteCommandError(["squeue", "-j", ",".join(wanted)], result.returncode, "", result.stderr)
        for section, _, code, text in sections(result.stdout):
            if section == "squeue" and code != 0:  # no answer from the controller: UNKNOWN, in Slurm's words
                unknown = JobStatus("", JobState.UNKNOWN, reason=unanswered(text, code, "squeue"))
                return {**found, **{job_id: dataclasses.replace(unknown, job_id=job_id) for job_id in wanted}}
            for line in text.splitlines():
                fields = line.split("|")
                if section == "squeue" and fields[-1].strip() in wanted:
                    found[fields[-1].strip()] = _parse_squeue(fields[-1].strip(), line)
                elif section == "sacct" and fields[0] in wanted and fields[0] not in found and len(fields) > 1:
                    state, exit_code, nodes, limit = ([*fields[1:], "", "", "", ""])[:4]
                    found[fields[0]] = JobStatus(
                        fields[0],
                        JobState.parse(state) if state else JobState.GONE,
                        nodes=nodes or None,
                        exit_code=exit_code or None,
                        time_limit=_seconds(limit),
                    )
        return {**{job_id: JobStatus(job_id, JobState.GONE) for job_id in wanted}, **found}

    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        # --batch --signal=TERM: only the batch shell (the launcher) is told, and it shuts Jupyter down.
        parts = []
        if self.ids(running):
            parts.append(shlex.join(["scancel", "--batch", "--signal=TERM", "--", *self.ids(running)]) + " 2>/dev/null")
        if self.ids(pending):
            parts.append(shlex.join(["scancel", "--", *self.ids(pending)]) + " 2>/dev/null")
        return "; ".join(parts)

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        return shlex.join(["scancel", "--", *self.ids(job_ids)]) + " 2>/dev/null" if self.ids(job_ids) else ""

    def cancel_own_snippet(self, jobs: Mapping[str, str]) -> str:
        ids = self.ids(list(jobs))
        if not ids:
            return ""
        # --jobs=: the option's argument is optional, so `-j ID` would not be read as one. --me: never
        # another user's job. %j is the whole name (no width given). Older Slurm refuses the whole list for
        # one id it has forgotten: then the user's own jobs, all of them. An array job shows as its tasks;
        # scancel takes the array's id.
        listed = shlex.quote(",".join(ids))
        listing = (
            f"hpcjup_q=$(bounded squeue -h --me --jobs={listed} -o '%i %j' 2>&1) || "
            "case $hpcjup_q in (*'Invalid job id'*) hpcjup_q=$(bounded squeue -h --me -o '%i %j' 2>&1) ;; esac; "
            "printf '%s\\n' \"$hpcjup_q\" | sed 's/^\\([0-9][0-9]*\\)_[^ ]*/\\1/'"
        )
        return cancel_named({job_id: jobs[job_id] for job_id in ids}, listing, "scancel --")

    def never_starts(self, status: JobStatus) -> tuple[str, str] | None:
        return never_starts(status)

    def preview_snippet(self, script: str, partitions: Sequence[str | None]) -> str:
        """sinfo once, then `sbatch --test-only` with the script on stdin for each partition (nothing is submitted)."""
        return "set -- " + shlex.join([script, *(p or "" for p in partitions)]) + _PREVIEW

    def parse_preview(self, stdout: str, partitions: Sequence[str | None]) -> list[PartitionPreview]:
        return parse_preview(stdout, partitions)

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        job_id = self.check_job_id(job_id)
        if graceful:
            # Only the batch shell (the launcher) gets SIGTERM; it shuts Jupyter down and exits,
            # which ends the job. A pending job has no shell: cancel it outright.
            status = self.status(transport, job_id)
            if status.state is JobState.RUNNING:
                transport.run(["scancel", "--batch", "--signal=TERM", "--", job_id], check=False)
                return
        transport.run(["scancel", "--", job_id], check=False)


def _granted_limit() -> str:
    """sh: the limit Slurm granted this job in seconds (with --time-min it may be shorter than asked)."""
    return (
        '"$(squeue -h -j "$SLURM_JOB_ID" -o %l 2>/dev/null | awk -F\'[-:]\' '
        "'{ n = NF; s = $n + 60 * $(n-1) + (n > 2 ? 3600 * $(n-2) : 0) + (n > 3 ? 86400 * $(n-3) : 0); print s + 0 }')\""
    )


# One remote command for `start --dry-run` (after `set -- SCRIPT PARTITION...`, "" for the default partition).
# Each answer is framed (shell.FRAME), so the parser knows what printed it and how it exited.
_PREVIEW = f"""
script=$1; shift
printf '{FRAME} sinfo\\n'; sinfo -h -o '%P|%a|%l|%F' 2>&1; printf '\\n{FRAME} end %s\\n' "$?"
for p in "$@"; do
    printf '{FRAME} test %s\\n' "$p"
    printf '%s' "$script" | sbatch --test-only ${{p:+"--partition=$p"}} 2>&1
    printf '\\n{FRAME} end %s\\n' "$?"
done
"""

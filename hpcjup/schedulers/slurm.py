"""Slurm: `sbatch --parsable`, `squeue` (then `sacct`) for state, `scancel` to stop."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from hpcjup.config.resources import time_to_seconds
from hpcjup.errors import RemoteCommandError, SubmitError
from hpcjup.schedulers.base import (
    JOB_LOG,
    JOB_SCRIPT,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
)
from hpcjup.transport.base import Transport

# squeue fields: state, reason, expected start, node list, time left, time limit.
_SQUEUE_FORMAT = "%T|%r|%S|%N|%L|%l|%i"
_SACCT_FIELDS = "State,ExitCode,NodeList,Timelimit"


class Slurm(Scheduler):
    """The Slurm adapter."""

    name = "slurm"
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
        lines += ["", "umask 077", *spec.setup, self.exec_line(spec.command), ""]
        return "\n".join(lines)

    def submit(self, transport: Transport, session_dir: str) -> str:
        # cd first: the job's working directory and its relative --output are the session directory.
        # umask: Slurm creates the job's log with the submitter's umask; the log is private.
        script = 'cd "$1" && umask 077 && exec sbatch --parsable "$2"'
        try:
            result = transport.run(["sh", "-c", script, "sh", session_dir, JOB_SCRIPT], timeout=60)
        except RemoteCommandError as exc:
            raise submit_error(exc) from exc
        # --parsable prints "id" or "id;cluster"; the id goes on later command lines, so it must be one.
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        job_id = last.split(";", 1)[0]
        if not self.job_id_pattern.fullmatch(job_id):
            raise SubmitError(f"sbatch printed no job id: {result.stdout.strip()!r} {result.stderr.strip()!r}")
        return job_id

    def status(self, transport: Transport, job_id: str) -> JobStatus:
        job_id = self.check_job_id(job_id)  # squeue's -j takes the next word whatever it is: validation protects it
        result = transport.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", _SQUEUE_FORMAT], check=False)
        line = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        if result.returncode == 0 and line:
            return _parse_squeue(job_id, line)
        return self._from_sacct(transport, job_id)

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One squeue call for all jobs; sacct only for those squeue no longer shows.

        An id that is not a Slurm job id (a damaged session.json) is GONE and never reaches a command line.
        """
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids if not self.is_job_id(job_id)}
        job_ids = [job_id for job_id in job_ids if job_id not in found]
        if not job_ids:
            return found
        result = transport.run(
            ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", _SQUEUE_FORMAT], check=False
        )
        if result.returncode != 0 and len(job_ids) > 1:  # an id Slurm has forgotten fails the whole list
            return {**found, **super().statuses(transport, job_ids)}
        for line in result.stdout.splitlines() if result.returncode == 0 else []:
            job_id = line.rsplit("|", 1)[-1].strip()
            if job_id in job_ids:
                found[job_id] = _parse_squeue(job_id, line)
        missing = [job_id for job_id in job_ids if job_id not in found]
        if len(missing) == 1:
            found[missing[0]] = self._from_sacct(transport, missing[0])
        elif missing:  # one sacct for all of them, whatever their number
            found.update(self._many_from_sacct(transport, missing))
        return found

    def _many_from_sacct(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Several finished jobs from accounting in one call (GONE where it does not know them)."""
        argv = ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", f"JobIDRaw,{_SACCT_FIELDS}"]
        result = transport.run(argv, check=False)
        found = {job_id: JobStatus(job_id, JobState.GONE) for job_id in job_ids}
        for line in result.stdout.splitlines() if result.returncode == 0 else []:
            job_id, state, exit_code, nodes, limit = ([*line.split("|"), "", "", "", "", ""])[:5]
            if job_id in found and state:
                found[job_id] = JobStatus(
                    job_id,
                    JobState.parse(state),
                    nodes=nodes or None,
                    exit_code=exit_code or None,
                    time_limit=_seconds(limit),
                )
        return found

    def _from_sacct(self, transport: Transport, job_id: str) -> JobStatus:
        """Finished jobs leave squeue after MinJobAge; accounting remembers them (where it is enabled)."""
        job_id = self.check_job_id(job_id)
        result = transport.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", _SACCT_FIELDS], check=False)
        line = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
        if not line:
            return JobStatus(job_id, JobState.GONE)
        state, exit_code, nodes, limit = ([*line.split("|"), "", "", "", ""])[:4]
        return JobStatus(
            job_id, JobState.parse(state), nodes=nodes or None, exit_code=exit_code or None, time_limit=_seconds(limit)
        )

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

    def cancel_own_snippet(self, job_ids: Sequence[str]) -> str:
        ids = self.ids(job_ids)
        if not ids:
            return ""
        # --jobs=: the option's argument is optional, so `-j ID` would not be read as one. --me: never
        # another user's job. An array job shows as its tasks; scancel takes the array's id.
        listed = shlex.quote(",".join(ids))
        return (
            f"active=$(squeue -h --me --jobs={listed} -o %i 2>/dev/null | sed 's/_.*//' | sort -u); "
            'if [ -n "$active" ]; then scancel -- $active 2>/dev/null; for j in $active; do echo "hpcjup-cancelled $j"; done; fi'
        )

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


def _parse_squeue(job_id: str, line: str) -> JobStatus:
    state, reason, start, nodes, left, limit = (line.split("|") + [""] * 6)[:6]
    return JobStatus(
        job_id,
        JobState.parse(state),
        reason=None if reason in ("", "None", "(null)") else reason,
        expected_start=None if start in ("", "N/A", "Unknown") else start,
        nodes=nodes or None,
        time_left=_seconds(left),
        time_limit=_seconds(limit),
    )


def _seconds(text: str) -> int | None:
    """Seconds in a Slurm duration as squeue/sacct print it; None for UNLIMITED, NOT_SET, ..."""
    try:
        return time_to_seconds(text.strip())
    except ValueError:  # time_to_seconds accepts exactly the formats Slurm prints, nothing else
        return None


def submit_error(exc: RemoteCommandError) -> SubmitError:
    """The scheduler's own words, plus what to run to find valid values."""
    lines = [ln.removeprefix("sbatch: error: ").strip() for ln in (exc.stderr or exc.stdout).splitlines() if ln.strip()]
    message = "; ".join(dict.fromkeys(lines)) or f"sbatch exited with {exc.returncode}"
    text = message.lower()
    if "account" in text or "association" in text:
        hint = "Run `sacctmgr show associations user=$USER format=account,partition` to list your accounts, then pass --account."
    elif "partition" in text:
        hint = "Run `sinfo -s` on the login node to list the partitions you may use, then pass --partition."
    elif "time limit" in text:
        hint = "Ask for less --time; `sinfo -o '%P %l'` shows each partition's limit."
    elif "command not found" in text or exc.returncode == 127:
        hint = "This host has no Slurm commands on PATH: is it the cluster's login node?"
    else:
        hint = "Check the resource flags (--partition, --account, --time, --nodes, --cpus, --mem, --gpus)."
    return SubmitError(f"The scheduler refused the job: {message}", hint=hint)

"""End sessions: Jupyter shuts down cleanly, the jobs end, the secrets go; one remote command for all.

A session whose scheduler did not answer (UNKNOWN: a stopped controller) is left exactly as it is: its
job may run on, so its secrets stay, nothing is cancelled, and the outcome says it was not stopped.

After one read of the records and one scheduler query (the caller's overview), a single long-lived
remote command does the rest: it asks the running jobs to end (SIGTERM to each launcher) and cancels
the pending ones, watches every launcher's state.json until it records its end, and when the laptop
closes it (all ended, or the grace period is over) it cancels outright what has not ended, removes
the secrets a killed job leaves behind, and cancels the sessions' recorded worker jobs: only those that still
carry the name hpcjup gave them for that session (`hpcjup+SESSION+...`, checked in the same command), since a
recorded id is only a claim (a job the user submitted by hand from a notebook may have been recorded). So `stop
NAME` and `stop --all` cost three remote commands whatever the number of sessions.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from hpcjup.errors import HpcjupError
from hpcjup.job import CONNECTION_FILE, DASK_DIR, STATE_FILE, TOKEN_FILE
from hpcjup.schedulers.base import JobState, JobStatus, Scheduler
from hpcjup.session.groups import job_name
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import JobReport, SessionRecord
from hpcjup.session.views import SessionView
from hpcjup.session.wait import report_of
from hpcjup.transport.base import Transport
from hpcjup.transport.watch import Watch

_QUERY_EVERY = 5.0  # wait_until_gone: seconds between scheduler queries while the launcher has not recorded its end
_CONFIRM_EVERY = 1.0  # ... once it has: the job leaves the queue within moments
#: What the launcher removes itself at the end, and a killed job cannot.
SECRETS = (CONNECTION_FILE, TOKEN_FILE, f"{DASK_DIR}/key.pem")
_KILLED = "hpcjup-killed"


@dataclass(frozen=True)
class StopOutcome:
    """How the stop went."""

    name: str
    job_id: str
    was_active: bool
    graceful: bool  # Jupyter shut down by itself before the deadline
    state: str  # ENDED (the launcher recorded its end), CANCELLED, or the state it had already ended in
    reason: str | None  # the launcher's reason (stopped, walltime, ...); the scheduler's words when not stopped
    workers_cancelled: tuple[str, ...] = ()
    workers_spared: tuple[str, ...] = ()  # recorded worker ids whose job now has another name: left running
    stopped: bool = True  # False: the scheduler did not answer, so nothing was done (the job may run on)


def stop_sessions(transport: Transport, views: Sequence[SessionView], grace: float = 60.0) -> list[StopOutcome]:
    """Stop these sessions together (each through its own scheduler's snippets); returns how each went.
    Those whose scheduler did not answer are not touched (`unanswered`)."""
    unknown = unanswered(views)
    outcomes = {v.paths.name: _not_stopped(v) for v in unknown}
    views = [v for v in views if v not in unknown]
    if not views:
        return list(outcomes.values())
    active = [v for v in views if v.active]
    running = [v for v in active if v.status.state is JobState.RUNNING]
    root = views[0].paths.root if views else ""
    before, after = [], []
    for scheduler in {v.scheduler.name: v.scheduler for v in views}.values():
        mine = [v for v in views if v.scheduler is scheduler]
        run_ids = [v.record.job_id for v in mine if v in running]
        pending_ids = [v.record.job_id for v in mine if v in active and v not in running]  # no launcher yet
        before.append(scheduler.stop_snippet(run_ids, pending_ids))
        after += [_killed_unless_ended(scheduler, v) for v in mine if v in running]
        after += [scheduler.leftovers_snippet(v.paths.dir) for v in mine if v in running or not v.active]
        # Each recorded id must still name a job of this session's (job_name's prefix) to be cancelled.
        after.append(
            scheduler.cancel_own_snippet({job: job_name(v.paths.name, "") for v in mine for job in v.worker_ids})
        )
    after.append(shlex.join(["rm", "-f", "--", *(v.paths.file(name) for v in views for name in SECRETS)]))
    reports: dict[str, JobReport] = {}
    watched = [f"{v.paths.name}/{STATE_FILE}" for v in running]
    script_before, script_after = surviving(
        "; ".join(p for p in before if p), "\n".join(p for p in after if p), [v.paths.state for v in running], grace
    )
    with Watch(transport, root, watched, before=script_before, after=script_after) as watch:
        end = time.monotonic() + grace
        try:
            while time.monotonic() < end and len(reports) < len(running):
                for key, state in watch.changes(min(1.0, max(0.0, end - time.monotonic()))).items():
                    report = report_of(state)
                    if report is not None and report.ended:
                        reports[key.split("/", 1)[0]] = report
        except (EOFError, HpcjupError):
            pass  # the connection went: what follows reports what is known
        output = watch.finish().decode(errors="replace").split()
    killed = {output[i + 1] for i, word in enumerate(output[:-1]) if word == _KILLED}
    cancelled = {output[i + 1] for i, word in enumerate(output[:-1]) if word == "hpcjup-cancelled"}
    spared = {output[i + 1] for i, word in enumerate(output[:-1]) if word == "hpcjup-spared"}
    outcomes.update({v.paths.name: _outcome(v, reports.get(v.paths.name), killed, cancelled, spared) for v in views})
    return list(outcomes.values())


def surviving(before: str, after: str, states: Sequence[str], grace: float) -> tuple[str, str]:
    """`before` and `after` for the remote watcher, made to survive the loss of the connection: SIGHUP and
    SIGPIPE ignored (the cleanup died of SIGPIPE at its first line once the laptop had gone), and `after`, which
    runs as soon as the watcher's stdin closes (a dropped connection too), first waits out the grace period by
    the cluster's clock until every launcher in `states` has recorded its end."""
    start = f"trap '' HUP PIPE; hpcjup_until=$(( $(date +%s) + {int(grace)} ))"
    files = " ".join(shlex.quote(state) for state in states)
    wait = (
        f'while [ "$(date +%s)" -lt "$hpcjup_until" ]; do hpcjup_left=; for f in {files}; do '
        'grep -q \'"state": "ended"\' "$f" 2>/dev/null || hpcjup_left=1; done; '
        '[ -n "$hpcjup_left" ] || break; sleep 1; done'
        if states
        else ":"
    )
    return f"{start}; {before}" if before else start, f"trap '' HUP PIPE\n{wait}\n{after}"


def unanswered(views: Sequence[SessionView]) -> list[SessionView]:
    """The sessions whose scheduler gave no answer (UNKNOWN): whether their job runs cannot be confirmed."""
    return [v for v in views if v.status.state is JobState.UNKNOWN]


def _not_stopped(view: SessionView) -> StopOutcome:
    why = view.status.reason or "no answer"
    return StopOutcome(view.record.name, view.record.job_id, True, False, "UNKNOWN", why, stopped=False)


def _killed_unless_ended(scheduler: Scheduler, view: SessionView) -> str:
    """sh: cancel the job outright unless its launcher has recorded its end by now."""
    state = shlex.quote(view.paths.file(STATE_FILE))
    kill = scheduler.kill_snippet([view.record.job_id])
    job = shlex.quote(view.record.job_id)
    return f'grep -q \'"state": "ended"\' {state} 2>/dev/null || {{ {kill}; echo {_KILLED} {job}; }}'


def _outcome(
    view: SessionView, report: JobReport | None, killed: set[str], cancelled: set[str], spared: set[str]
) -> StopOutcome:
    record = view.record
    workers = tuple(job for job in view.worker_ids if job in cancelled)
    kept = tuple(job for job in view.worker_ids if job in spared)
    if not view.active:
        reason = view.report.reason if view.report else None
        return StopOutcome(record.name, record.job_id, False, True, view.status.state.value, reason, workers, kept)
    graceful = record.job_id not in killed and (report is not None or view.status.state is not JobState.RUNNING)
    state = "ENDED" if report is not None else "CANCELLED"
    reason = report.reason if report else None
    return StopOutcome(record.name, record.job_id, True, graceful, state, reason, workers, kept)


def wait_until_gone(
    transport: Transport, scheduler: Scheduler, paths: SessionPaths, record: SessionRecord, deadline: float
) -> tuple[bool, JobStatus, JobReport | None]:
    """Watch state.json (one remote watcher) and ask the scheduler now and then, until the job is no
    longer active: (whether it left in time, its last status, the launcher's last report)."""
    end = time.monotonic() + deadline
    report: JobReport | None = None
    status = JobStatus(record.job_id, JobState.RUNNING)
    next_query = time.monotonic() + _CONFIRM_EVERY
    try:
        with Watch(transport, paths.dir, [STATE_FILE]) as watch:
            while time.monotonic() < end:
                changes = watch.changes(max(0.0, min(end, next_query) - time.monotonic()))
                if STATE_FILE in changes:
                    report = report_of(changes[STATE_FILE])
                    if report is not None and report.ended:
                        next_query = time.monotonic()
                if time.monotonic() >= next_query:
                    status = scheduler.status(transport, record.job_id)
                    if not status.state.active:
                        return True, status, report
                    ended = report is not None and report.ended
                    next_query = time.monotonic() + (_CONFIRM_EVERY if ended else _QUERY_EVERY)
    except (EOFError, HpcjupError):
        pass  # the watcher is gone: one last question to the scheduler decides
    status = scheduler.status(transport, record.job_id)
    return not status.state.active, status, report

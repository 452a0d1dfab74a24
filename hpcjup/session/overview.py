"""Every session on a host as `ls`, `attach` and `logs` show it (session/views.py): one read of all records, one
query per scheduler; finding one session by name; what `prune` may remove."""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from hpcjup.errors import HpcjupError, JobFailedError, SessionNotFound, UsageError
from hpcjup.schedulers import REGISTRY, get_scheduler
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.session import finished
from hpcjup.session.catalog import SessionDir, find_session, scan_sessions
from hpcjup.session.groupstatus import WAITING, with_reasons
from hpcjup.session.record import JobReport
from hpcjup.session.store import LocalStore
from hpcjup.session.views import DamagedView, SessionView, View
from hpcjup.session.wait import log_tail
from hpcjup.transport.base import Transport

log = logging.getLogger("hpcjup.session")


def _view(
    found: SessionDir,
    status: JobStatus | None,
    store: LocalStore,
    host: str,
    waiting: dict[str, JobStatus] | None = None,
) -> View:
    if found.record is None or status is None:
        return DamagedView(found, store.load(host, found.paths.name))
    cached = store.load(host, found.record.name)
    groups = with_reasons(found.worker_groups, waiting or {}, get_scheduler(found.record.scheduler))
    return SessionView(found.record, found.paths, status, found.report, cached, found.worker_ids, found.usage, groups)


def overview(transport: Transport, store: LocalStore, *, recheck: bool = False) -> list[View]:
    """Every session on the host, damaged ones included: one read for all records, one query per scheduler.
    `recheck`: ask about every job, the finished ones this laptop remembers and those whose launcher recorded
    their end too (prune removes what it is told is over: a requeued job's state.json says "ended" while the
    job waits to run again)."""
    found = [
        _unknown_scheduler(f) if f.record is not None and f.record.scheduler not in REGISTRY else f
        for f in scan_sessions(transport)
    ]
    host = transport.host
    before = finished.load(store, host)
    statuses, waiting = _statuses(transport, found, None if recheck else before or {})
    after = finished.bounded(_final_answers(found, statuses))
    if after != before:  # a listing that learned nothing writes nothing
        try:
            finished.save(store, host, after)
        except OSError as exc:  # only a saving lost: the next `ls` asks again
            log.debug("could not remember finished jobs: %s", exc)
    return [_view(f, statuses.get(f.paths.name), store, host, waiting.get(f.paths.name)) for f in found]


def job_statuses(
    transport: Transport, found: list[SessionDir], remembered: dict[finished.Key, JobStatus] | None = None
) -> dict[str, JobStatus]:
    """Session name -> its job's state, asking each session's own scheduler (as session.json records
    it) once for all of its jobs, but for those `_answered` already settles (`remembered` None: none, every
    job is asked about). A record naming a scheduler this hpcjup does not know gets no status (the session
    is shown as damaged, with the reason)."""
    return _statuses(transport, found, remembered)[0]


def _statuses(
    transport: Transport, found: list[SessionDir], remembered: dict[finished.Key, JobStatus] | None = None
) -> tuple[dict[str, JobStatus], dict[str, dict[str, JobStatus]]]:
    """`job_statuses`, and session name -> {id: status} for the jobs its adaptive groups have waiting in the
    queue (asked in the same query: why they pend, groupstatus.with_reasons)."""
    by_scheduler: dict[str, list[SessionDir]] = {}
    statuses: dict[str, JobStatus] = {}
    for f in found:
        if f.record is None or f.record.scheduler not in REGISTRY:
            continue
        if remembered is not None and (known := _answered(f, remembered)) is not None:
            statuses[f.paths.name] = known
        else:
            by_scheduler.setdefault(f.record.scheduler, []).append(f)
    asks = [
        (name, [job for f in group if f.record is not None for job in (f.record.job_id, *_waiting(f))])
        for name, group in by_scheduler.items()
    ]
    if len(asks) > 1:  # several schedulers in use: their queries travel side by side on the one connection
        with ThreadPoolExecutor(max_workers=len(asks)) as pool:
            answered = list(pool.map(lambda ask: _ask(transport, *ask), asks))
    else:
        answered = [_ask(transport, *ask) for ask in asks]
    waiting: dict[str, dict[str, JobStatus]] = {}
    for group, answers in zip(by_scheduler.values(), answered, strict=True):
        for f in group:
            assert f.record is not None
            statuses[f.paths.name] = answers.get(f.record.job_id, JobStatus(f.record.job_id, JobState.GONE))
            waiting[f.paths.name] = {job: answers[job] for job in _waiting(f) if job in answers}
    return statuses, waiting


def _waiting(f: SessionDir) -> list[str]:
    """The ids of the jobs the session's adaptive groups have waiting in the queue (dask/adaptive.json)."""
    return [job for _, figures in f.worker_groups for job in _ids(figures.get(WAITING))]


def _ids(value: object) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else ()


def _ask(transport: Transport, name: str, ids: list[str]) -> dict[str, JobStatus]:
    """One scheduler's answer for its jobs; UNKNOWN for all of them if it cannot answer (one scheduler that
    cannot answer must not hide the other sessions)."""
    try:
        return get_scheduler(name).statuses(transport, ids)
    except HpcjupError as exc:
        unknown = JobStatus("", JobState.UNKNOWN, reason=f"{get_scheduler(name).title or name}: {exc.message}")
        return {job_id: dataclasses.replace(unknown, job_id=job_id) for job_id in ids}


#: A session whose launcher recorded its end longer ago than this is not asked about: schedulers forget
#: finished jobs after minutes (Slurm's MinJobAge is 5 minutes), and dozens of ended sessions would
#: otherwise cost `ls` a query (and an accounting lookup) per scheduler for nothing.
ENDED_LONG_AGO = 600.0


def _answered(f: SessionDir, remembered: dict[finished.Key, JobStatus]) -> JobStatus | None:
    """The session's status when no query is needed, else None (ask): GONE for a job whose launcher recorded
    its end long ago; what the scheduler last said of a finished job (remembered on this laptop), unless the
    launcher now reports the job as not ended (a job that was only slow to show up: never hidden)."""
    assert f.record is not None
    if _long_ended(f.report):  # the scheduler has forgotten it too: asking would cost a query for nothing
        return JobStatus(f.record.job_id, JobState.GONE)
    return remembered.get((f.paths.name, f.record.job_id)) if _may_remember(f.report) else None


def _may_remember(report: JobReport | None) -> bool:
    """Whether a final answer of the scheduler may stand for the job: no state.json, or one that says the job
    ended, but not long ago (then `_long_ended` settles it without any answer)."""
    return (report is None or report.ended) and not _long_ended(report)


def _final_answers(found: list[SessionDir], statuses: dict[str, JobStatus]) -> dict[finished.Key, JobStatus]:
    """What to remember after a listing: the finished jobs `_answered` would take a remembered answer for, of
    the sessions listed now (so a pruned session's answer goes with it). UNKNOWN is active: never remembered."""
    answers: dict[finished.Key, JobStatus] = {}
    for f in found:
        status = statuses.get(f.paths.name)
        if f.record is not None and status is not None and not status.state.active and _may_remember(f.report):
            answers[(f.paths.name, f.record.job_id)] = status
    return answers


def _long_ended(report: JobReport | None) -> bool:
    if report is None or not report.ended or not report.updated_at:
        return False
    try:
        ended = datetime.fromisoformat(report.updated_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    if ended.tzinfo is None:
        ended = ended.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - ended).total_seconds() > ENDED_LONG_AGO


def named_session(transport: Transport, store: LocalStore, name: str) -> SessionView:
    """One session by name (`pick_session` without the choosing); a damaged one is an error that says what is
    wrong."""
    found = find_session(transport, name)
    if found.record is not None and found.record.scheduler not in REGISTRY:
        found = _unknown_scheduler(found)
    statuses, waiting = _statuses(transport, [found], {})
    view = _view(found, statuses.get(found.paths.name), store, transport.host, waiting.get(found.paths.name))
    if isinstance(view, DamagedView):
        raise view.error()
    return view


def _unknown_scheduler(found: SessionDir) -> SessionDir:
    assert found.record is not None
    problem = f"session.json names the scheduler {found.record.scheduler!r}, which this hpcjup does not know"
    return dataclasses.replace(found, record=None, problem=problem)


def pick_session(transport: Transport, store: LocalStore, name: str | None) -> SessionView:
    """The named session, or the only running one; a clear choice when there are several."""
    if name:
        return named_session(transport, store, name)
    running = [view for view in overview(transport, store) if isinstance(view, SessionView) and view.active]
    if not running:
        raise SessionNotFound(
            f"No running session on {transport.host}.",
            hint="Start one with `hpcjup start`; `hpcjup ls` lists ended ones.",
        )
    if len(running) > 1:
        names = ", ".join(view.record.name for view in running)
        raise UsageError(f"Several sessions run on {transport.host}: {names}.", hint="Name the one you mean.")
    return running[0]


def prunable(views: list[View]) -> list[View]:
    """What `prune` removes: sessions whose job has ended, jobs that pend for what will never come (a limit
    of the partition, an unknown account, a Grid Engine job in error state: `prune` cancels them), and
    damaged ones that no job can still be using (not one being created now, nor one whose launcher says
    it still runs)."""
    out: list[View] = []
    for view in views:
        if isinstance(view, DamagedView):
            if not view.found.maybe_starting and not view.may_run:
                out.append(view)
        elif not view.active or view.hopeless:
            out.append(view)
    return out


def ended_error(view: SessionView, transport: Transport) -> HpcjupError:
    """The error for attaching to a session that is over: how it ended, with its log's tail."""
    what = f"Session {view.record.name} (job {view.record.job_id}) has ended: {view.why}"
    if view.exit_code not in (None, "0:0", 0):
        what += f", exit code {view.exit_code}"
    if view.report and view.report.message:
        what += f" ({view.report.message})"
    return JobFailedError(
        what + ".",
        hint="Start a new one with `hpcjup start`.",
        details=None if view.ended_normally else log_tail(transport, view.paths),
    )

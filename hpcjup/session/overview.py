"""What `ls`, `attach` and `logs` show about a session: scheduler state, launcher state, local tunnel."""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hpcjup.errors import DamagedDocument, HpcjupError, JobFailedError, SessionNotFound, UsageError
from hpcjup.job import NORMAL_ENDS
from hpcjup.schedulers import REGISTRY, get_scheduler
from hpcjup.schedulers.base import JobState, JobStatus, Scheduler
from hpcjup.session import finished
from hpcjup.session.catalog import SessionDir, find_session, scan_sessions
from hpcjup.session.groupstatus import WAITING, with_reasons
from hpcjup.session.layout import SessionPaths
from hpcjup.session.liveholders import holder_pid
from hpcjup.session.record import JobReport, SessionRecord
from hpcjup.session.store import CacheEntry, LocalStore
from hpcjup.session.wait import log_tail
from hpcjup.transport.base import Transport

log = logging.getLogger("hpcjup.session")


@dataclass(frozen=True)
class SessionView:
    """One session as the scheduler, the launcher and the laptop's cache see it."""

    record: SessionRecord
    paths: SessionPaths
    status: JobStatus
    report: JobReport | None
    cached: CacheEntry | None
    found_workers: tuple[str, ...] = ()
    usage: bytes | None = None  # usage.json as read with the record
    worker_groups: tuple[tuple[str, dict[str, Any]], ...] = ()  # adaptive groups' figures (groupstatus.py)

    @property
    def hopeless(self) -> str | None:
        """What is wrong, when the job pends for something that will not come (the scheduler's never_starts)."""
        if self.status.state is not JobState.PENDING:
            return None
        verdict = self.scheduler.never_starts(self.status)
        return verdict[0] if verdict else None

    @property
    def active(self) -> bool:
        return self.status.state.active

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def scheduler(self) -> Scheduler:
        """The session's own scheduler adapter, as its session.json records it."""
        return get_scheduler(self.record.scheduler)

    @property
    def worker_ids(self) -> tuple[str, ...]:
        """The worker jobs the session recorded (read with its record)."""
        return self.found_workers

    @property
    def preempted(self) -> bool:
        """A preemptible session whose run was stopped while the scheduler holds its job again (requeued, waiting
        to run again): the launcher recorded the run's end, the job did not end."""
        return self.report is not None and self.report.may_return and self.status.state is JobState.PENDING

    @property
    def preemptions(self) -> int:
        """How often the session's job was preempted and requeued (runs before this one, and this one's end if it
        waits to run again)."""
        if self.report is None:
            return 0
        return self.report.restarts + (1 if self.preempted else 0)

    @property
    def state(self) -> str:
        """The scheduler's word while it knows the job (PREEMPTED: pending again after a requeue); ENDED once it
        forgot it."""
        if self.status.state is JobState.GONE:
            return "ENDED" if self.report is None or self.report.ended else "GONE"
        return "PREEMPTED" if self.preempted else self.status.state.value

    @property
    def ended_normally(self) -> bool:
        return (
            self.report is not None and self.report.reason in NORMAL_ENDS
        ) or self.status.state is JobState.COMPLETED

    @property
    def why(self) -> str | None:
        """Why it ended (the launcher's reason, else the scheduler's state), or None while active."""
        if self.active:
            return None
        if self.status.state is JobState.PREEMPTED:  # the launcher saw only a stop signal; the scheduler knows why
            return "preempted"
        return (self.report.reason if self.report and self.report.reason else None) or self.state.lower()

    @property
    def local_url(self) -> str | None:
        """The URL of a tunnel held by a live process on this laptop."""
        if self.cached is None or self.cached.tunnel is None or holder_pid(self.cached) is None:
            return None
        return self.cached.tunnel.url

    @property
    def exit_code(self) -> str | int | None:
        """The scheduler's exit code where it has one, else the launcher's."""
        if self.status.exit_code is not None:
            return self.status.exit_code
        return self.report.exit_code if self.report else None

    def to_dict(self) -> dict[str, Any]:
        res = self.record.resources
        return {
            "session": self.record.name,
            "job_id": self.record.job_id,
            "host": self.record.host,
            "state": self.state,
            "pending_reason": self.status.reason if self.status.state is JobState.PENDING else None,
            "expected_start": self.status.expected_start if self.status.state is JobState.PENDING else None,
            "ended_because": self.why,
            # The scheduler gave no answer (controller down, query cut off): its words, so the user sees why.
            "unknown_because": self.status.reason if self.status.state is JobState.UNKNOWN else None,
            "message": self.report.message if self.report and (not self.active or self.preempted) else None,
            "exit_code": self.exit_code,
            "partition": res.get("partition"),
            "nodes": res.get("nodes", 1),
            "node_list": self.status.nodes or (self.report.node if self.report else None),
            "time_left": self.status.time_left if self.active else None,
            "time_limit": self.status.time_limit,
            "created_at": self.record.created_at,
            "local_url": self.local_url,
            # Why this laptop's tunnel holder gave up (e.g. the host key changed), until a new one runs.
            "tunnel_error": self.cached.tunnel_error.to_dict() if self.cached and self.cached.tunnel_error else None,
            "preemptible": bool(self.report and self.report.preemptible),
            "preemptions": self.preemptions,
            "worker_groups": dict(self.worker_groups) if self.active else {},
        }


@dataclass(frozen=True)
class DamagedView:
    """A session directory whose files cannot be used: shown with the reason, skipped by bulk commands."""

    found: SessionDir
    cached: CacheEntry | None = None

    active = False
    job_id = None  # unknown: the record is what is damaged

    @property
    def paths(self) -> SessionPaths:
        return self.found.paths

    @property
    def why(self) -> str:
        return f"damaged: {self.found.problem}"

    @property
    def may_run(self) -> bool:
        """The launcher's state.json says the job has not ended: its job may still hold nodes."""
        report = self.found.report
        return report is not None and not report.ended

    def error(self) -> HpcjupError:
        """What a command that needs this session says."""
        name = self.paths.name
        hint = "`hpcjup prune` removes it" + (
            " once its job has ended (state.json says it may still run: check the scheduler's queue)."
            if self.may_run
            else "."
        )
        error = DamagedDocument(f"Session {name}:", f"{self.found.problem}")
        error.hint = hint
        return error

    def to_dict(self) -> dict[str, Any]:
        report = self.found.report
        return {
            "session": self.paths.name,
            "job_id": None,
            "host": None,
            "state": "DAMAGED",
            "pending_reason": None,
            "expected_start": None,
            "ended_because": self.why,
            "unknown_because": None,
            "message": self.found.problem,
            "exit_code": None,
            "partition": None,
            "nodes": None,
            "node_list": report.node if report else None,
            "time_left": None,
            "time_limit": None,
            "created_at": None,
            "local_url": None,
            "tunnel_error": None,
            "preemptible": False,
            "preemptions": 0,
            "worker_groups": {},
        }


View = SessionView | DamagedView


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

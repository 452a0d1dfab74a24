"""Wait for a submitted job's Jupyter: one remote watcher for the files, scheduler queries rarely.

One long-lived watcher on the login node reports the session directory's changes as they
happen (transport/watch.py: no new process per poll); the scheduler is asked with backoff
(1, 2, 4, 8, then every 10 s while pending: at most 6 queries a minute), and at once when the
job's log appears, which says the job has started. Jupyter gets `ready_timeout` from the moment
the job runs: nodes resuming from power saving may be CONFIGURING for minutes before that.

A preemptible session's job that was preempted waits again under its id and runs again (`after`: the
connection of the run before; or found out from state.json, whose run ended by a stop signal in a
requeueable job): then only the files of a later run count (connection.json and state.json with more
`restarts`); the run before's end is not the session's, and the scheduler says whether the job is over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from hpcjup.errors import DamagedDocument, HpcjupError, JobCannotStart, JobFailedError, WaitTimeout
from hpcjup.job import (
    CONNECTION_FILE,
    ENVLOCAL_WARNINGS,
    JOB_LOG,
    REASON_JUPYTER_TOO_OLD,
    REASON_NO_IPYKERNEL,
    REASON_NO_JUPYTER,
    STATE_FILE,
)
from hpcjup.schedulers.base import JobState, JobStatus, Scheduler
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import (
    Connection,
    JobReport,
    SessionRecord,
)
from hpcjup.text import visible
from hpcjup.transport.base import Transport
from hpcjup.transport.watch import FileState, Watch


def report_of(state: FileState | None) -> JobReport | None:
    """state.json as the watcher saw it; None while absent or unreadable (it is rewritten atomically)."""
    if state is None or not state.data:
        return None
    try:
        return JobReport.from_json(state.data.encode())
    except HpcjupError:
        return None


_PROGRESS_EVERY = 1.0  # seconds between status-line refreshes while nothing changes
_PENDING_BACKOFF = (1, 2, 4, 8, 10)
_STARTING_INTERVAL = 3  # while the job runs but Jupyter does not answer yet
LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class Progress:
    """What the status line shows while waiting."""

    state: str  # a JobState value, or "STARTING" once the launcher runs
    elapsed: float
    reason: str | None = None
    expected_start: str | None = None
    node: str | None = None


class ReadyWaiter:
    """Waits for one session's connection.json, watching its directory with one remote process."""

    def __init__(
        self,
        transport: Transport,
        scheduler: Scheduler,
        record: SessionRecord,
        paths: SessionPaths,
        on_progress: Callable[[Progress], None] = lambda p: None,
        pending_timeout: float | None = None,
        ready_timeout: float = 360.0,
        known: JobStatus | None = None,
        after: Connection | None = None,
        on_warning: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.t, self.scheduler, self.record, self.paths = transport, scheduler, record, paths
        self.on_progress = on_progress
        self.pending_timeout = pending_timeout
        self.ready_timeout = ready_timeout
        self.status = known or JobStatus(record.job_id, JobState.PENDING)
        self.known = known is not None  # the caller just asked the scheduler: do not ask again at once
        self.report: JobReport | None = None
        # A requeued job: the files of runs up to this many restarts are the runs before's (None: all count).
        self.stale: int | None = after.restarts if after is not None else None
        self.queries = 0  # scheduler queries made (the benchmark reports them)
        self.on_warning, self.warned = on_warning, 0  # envlocal.sh's warnings: lines shown so far
        self.watch = Watch(transport, paths.dir, [CONNECTION_FILE, STATE_FILE, ENVLOCAL_WARNINGS], [JOB_LOG])

    def wait(self) -> Connection:
        """The session's connection, once Jupyter answers on the node. Raises on failure or deadline."""
        with self.watch:
            return self._wait()

    def _wait(self) -> Connection:
        started = time.monotonic()
        next_query, backoff, seen_log = started + (_PENDING_BACKOFF[0] if self.known else 0), 0, False
        running_since: float | None = None  # the ready clock starts when the job runs, not while nodes boot
        while True:
            changes = self.watch.changes(max(0.0, min(_PROGRESS_EVERY, next_query - time.monotonic())))
            now = time.monotonic()
            self._warn(changes.get(ENVLOCAL_WARNINGS))
            conn = self._connection(changes.get(CONNECTION_FILE))
            if conn is not None:
                return conn
            if STATE_FILE in changes:
                self.report = self._newer(report_of(changes[STATE_FILE]))
                if self.report is not None and self.report.may_return:  # preempted: the scheduler says if it is over
                    self.stale, self.report, next_query = self.report.restarts, None, now
                elif self.report is not None and self.report.ended:
                    raise self._failure(self.report)
                if self.report is not None and running_since is None:
                    running_since = now  # the launcher runs: the job does
            if changes.get(JOB_LOG) is not None and not seen_log:
                seen_log, next_query = True, now  # the job started: ask now, not after the backoff
            if now >= next_query:
                self.status = self._query()
                if not self.status.state.active:
                    raise self._failure(self.report)
                self._check_can_start()
                if self.status.state is JobState.RUNNING:
                    running_since = running_since or now
                    next_query = now + _STARTING_INTERVAL
                else:  # PENDING, or CONFIGURING while nodes boot (power saving: minutes)
                    if self.status.state is JobState.PENDING:  # again, after a requeue: not running yet
                        running_since = None if self.report is None else running_since
                    next_query = now + _PENDING_BACKOFF[min(backoff, len(_PENDING_BACKOFF) - 1)]
                    backoff += 1
            self._check_deadlines(now - started, None if running_since is None else now - running_since)
            report = self.report
            state = "STARTING" if report is not None and report.state == "starting" else self.status.state.value
            node = (report.node if report else None) or self.status.nodes
            pending = self.status.state is JobState.PENDING  # a scheduler's start time is no estimate once the job runs
            expected = self.status.expected_start if pending else None
            self.on_progress(Progress(state, now - started, self.status.reason if pending else None, expected, node))

    def _check_can_start(self) -> None:
        """A pending reason that waiting will not clear ends the wait now, in words, with the flag to change."""
        if self.status.state is not JobState.PENDING:
            return
        hopeless = self.scheduler.never_starts(self.status)
        if hopeless is not None:
            what, hint = hopeless
            raise JobCannotStart(
                f"Job {self.record.job_id} cannot start: {what} (the scheduler says {self.status.reason}).", hint=hint
            )

    def _query(self) -> JobStatus:
        self.queries += 1
        return self.scheduler.status(self.t, self.record.job_id)

    def _warn(self, state: FileState | None) -> None:
        """Each new line of the job's environment warnings (an image not used, and why), once."""
        if state is None or state.data is None:
            return
        lines = [line for line in state.data.splitlines() if line.strip()]
        for line in lines[self.warned :]:
            self.on_warning(f"On the node: {visible(line)}")
        self.warned = max(self.warned, len(lines))

    def _connection(self, state: FileState | None) -> Connection | None:
        if state is None or not state.data:
            return None
        try:
            conn = Connection.from_json(state.data.encode())
        except DamagedDocument:
            if state.size > len(state.data.encode()):
                return None  # caught mid-write by a non-atomic writer: the next change brings it whole
            raise
        if conn.job_id != self.record.job_id:  # another job wrote it (a requeued one that held this directory)
            raise DamagedDocument(
                CONNECTION_FILE, f"was written by job {conn.job_id}, not by this session's job {self.record.job_id}"
            )
        if self.stale is not None and conn.restarts <= self.stale:
            return None  # the run before's (a launcher killed outright leaves it behind)
        return conn

    def _newer(self, report: JobReport | None) -> JobReport | None:
        """state.json, unless it is a run before's (a requeued job)."""
        if report is not None and self.stale is not None and report.restarts <= self.stale:
            return None
        return report

    def _check_deadlines(self, waited: float, running_for: float | None) -> None:
        job = self.record.job_id
        if running_for is None and self.pending_timeout and waited > self.pending_timeout:
            raise WaitTimeout(
                f"Job {job} was still pending after {waited:.0f} s ({self.status.reason or 'no reason given'}).",
                hint="Try a less busy partition or fewer resources, or wait longer with --timeout.",
            )
        if running_for is not None and running_for > self.ready_timeout:
            raise WaitTimeout(
                f"Job {job} runs, but Jupyter did not answer within {self.ready_timeout:.0f} s.",
                hint=f"Look at the job's log: {self.paths.log}",
            )

    def _failure(self, report: JobReport | None) -> JobFailedError:
        """Why the job ended before Jupyter answered, with the tail of its log."""
        status = self.status if not self.status.state.active else JobStatus(self.record.job_id, JobState.GONE)
        what = f"Job {self.record.job_id} ended"
        if status.state is not JobState.GONE:
            what += f" ({status.state.value}" + (f", exit code {status.exit_code}" if status.exit_code else "") + ")"
        message = f"{what} before Jupyter answered" + (f": {report.message}" if report and report.message else ".")
        return JobFailedError(message, hint=failure_hint(report, self.paths), details=log_tail(self.t, self.paths))


def failure_hint(report: JobReport | None, paths: SessionPaths) -> str:
    """What to do about a job that ended early, by the launcher's reason."""
    reason = report.reason if report else None
    if reason in (REASON_NO_JUPYTER, REASON_JUPYTER_TOO_OLD):
        return "Install JupyterLab and jupyter_server>=2.20 in the cluster environment, or point --python at a Python that has them."
    if reason == REASON_NO_IPYKERNEL:
        return "Install ipykernel in that kernel's environment (the message names the Python and the command), or choose another --kernel."
    if reason is None and report is None:
        return f"The launcher never ran: is `python3` (>= 3.9) on the cluster's PATH in a login shell? The job's log: {paths.log}"
    return f"The job's full log is {paths.log} on the cluster."


def log_tail(transport: Transport, paths: SessionPaths, lines: int = LOG_TAIL_LINES) -> str | None:
    """The last lines of the job's log (read with a bounded remote `tail`, tokens masked), or None if there is none."""
    text = read_log(transport, paths, lines)
    return text.rstrip() or None if text is not None else None


#: At most this much of a log is read at once: a job's log can grow to gigabytes.
LOG_LIMIT = 1024 * 1024
_TOKEN_IN_LOG = re.compile(r"(token=|token: |Authorization: token )[A-Za-z0-9_-]{8,}")


def read_log(transport: Transport, paths: SessionPaths, lines: int | None = None, limit: int = LOG_LIMIT) -> str | None:
    """The job's log: its last `lines` lines (all if None) of at most `limit` bytes, tokens masked; None if absent."""
    script = '[ -f "$1" ] || exit 66; tail -c "$2" -- "$1" | { if [ "$3" = all ]; then cat; else tail -n "$3"; fi; }'
    rc, out, _ = transport.run_raw(
        ["sh", "-c", script, "sh", paths.log, str(limit), "all" if lines is None else str(lines)]
    )
    if rc == 66:
        return None
    return mask_tokens(out.decode(errors="replace"))


def mask_tokens(text: str) -> str:
    """Jupyter prints its URL with the token; hpcjup never shows it from a log."""
    return _TOKEN_IN_LOG.sub(lambda m: m.group(1) + "…", text)

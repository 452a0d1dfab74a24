"""A new session's first minutes, decided here: submit, wait for Jupyter, reach its node, start its worker groups.

Which job is cancelled, and when: interrupted or failed before Jupyter answers, the job is cancelled and its
directory removed (nothing can be lost yet); a job that failed by itself keeps its log for `hpcjup logs`; once
Jupyter answered but before its URL reached the user (a failed tunnel, an unreachable socket, Ctrl-C), too. A
worker group the scheduler refuses is reported and the session goes on. What the user sees comes in as a
`Screen` (the CLI's UI: notes and a status line) and `describe` (how progress is worded); nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from hpcjup.errors import HpcjupError, Interrupted, JobCannotStart, JobFailedError, SubmitError
from hpcjup.session.holding import Notes, terminate_as_interrupt
from hpcjup.session.store import CacheEntry

if TYPE_CHECKING:
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.session.groups import WorkerGroup
    from hpcjup.session.layout import SessionPaths
    from hpcjup.session.record import Connection, SessionRecord
    from hpcjup.session.request import StartRequest
    from hpcjup.session.route import Route
    from hpcjup.session.store import LocalStore
    from hpcjup.session.wait import Progress
    from hpcjup.transport.base import Transport


class Line(Protocol):
    """A status line that updates in place (ui.console.StatusLine)."""

    def update(self, text: str, key: str | None = None) -> None: ...


class Screen(Notes, Protocol):
    """Notes and a status line (the CLI's UI)."""

    def status(self) -> AbstractContextManager[Line]: ...


def submit_and_wait(
    screen: Screen,
    store: LocalStore,
    transport: Transport,
    scheduler: Scheduler,
    request: StartRequest,
    pending: int | None,
    relearn: Callable[[], Scheduler],
    describe: Callable[[Progress], tuple[str, str]],
    retry: Callable[[StartRequest, Exception], StartRequest] | None = None,
) -> tuple[Scheduler, SessionRecord, SessionPaths, Connection, int | None, int | None]:
    """Submit and wait for Jupyter; interrupted before it answers, the job is cancelled (nothing to lose yet).
    The scheduler returned is the one the session was submitted with (the host may have changed since the
    last start remembered it: `relearn`). `describe` words the progress for the status line; `retry` builds what
    the upload found missing (the CLI's environments of this start) and returns the request to upload again."""
    from hpcjup.schedulers import get_scheduler
    from hpcjup.session.claim import EnvMissing, NoJupyter
    from hpcjup.session.submit import submit
    from hpcjup.session.wait import ReadyWaiter

    for attempt in range(3):
        try:
            with screen.status() as line, terminate_as_interrupt():
                line.update("Submitting…")
                record, paths = submit(transport, scheduler, request, relearn=relearn)
            break
        except (EnvMissing, NoJupyter) as exc:  # nothing was claimed or submitted: build, then upload again
            if retry is None or attempt == 2:
                raise SubmitError(
                    "An environment the session needs is still not there after it was built.",
                    hint="Another start or `hpcjup env rm` may be removing it; run the command again.",
                ) from None
            with terminate_as_interrupt():
                request = retry(request, exc)
    with screen.status() as line, terminate_as_interrupt():
        scheduler = get_scheduler(record.scheduler)
        # Cached at once: `hpcjup stop NAME` then finds the host without --host, whatever happens next.
        store.save(record.host, record.name, CacheEntry(host=record.host, record=record))
        screen.info(f"Submitted job {record.job_id} as session {record.name} on {record.host}.")
        waiter = ReadyWaiter(
            transport,
            scheduler,
            record,
            paths,
            lambda p: line.update(*describe(p)),
            pending_timeout=pending,
            on_warning=screen.warn,
        )
        try:
            conn = waiter.wait()
            return scheduler, record, paths, conn, waiter.status.time_left, waiter.status.time_limit
        except JobFailedError:
            raise  # the job ended by itself; its log stays in the session directory for `hpcjup logs`
        except BaseException as exc:
            abandon(transport, scheduler, record, paths)
            store.forget(record.host, record.name)
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"Cancelled job {record.job_id} before Jupyter started; nothing was lost.") from None
            if isinstance(exc, JobCannotStart):
                raise JobCannotStart(f"{exc.message} Cancelled it; nothing was lost.", hint=exc.hint) from None
            raise


def give_up(
    notes: Notes,
    store: LocalStore,
    transport: Transport,
    scheduler: Scheduler,
    record: SessionRecord,
    paths: SessionPaths,
    exc: BaseException,
) -> None:
    """Jupyter answered, but the URL never reached the user (Ctrl-C, a failed tunnel): nobody can have
    used the session, so cancel its job rather than leave it holding nodes unseen."""
    try:
        abandon(transport, scheduler, record, paths, running=True)
    except HpcjupError as cleanup:  # the login connection may be gone too: say so, but report the cause
        notes.warn(f"Could not cancel job {record.job_id} ({cleanup.message}); run `hpcjup stop {record.name}`.")
        return
    store.forget(record.host, record.name)
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted(f"Cancelled job {record.job_id} before its URL was shown; nothing was lost.") from None
    notes.info(f"Cancelled job {record.job_id}: its URL could not be shown; nothing was lost.")


def reach_node(
    notes: Notes,
    transport: Transport,
    scheduler: Scheduler,
    record: SessionRecord,
    paths: SessionPaths,
    route: Route,
    conn: Connection,
) -> None:
    """Socket mode: SSH to the node now. If that fails (or is interrupted), the job is of no use: cancel it."""
    if not conn.socket:
        return
    try:
        with terminate_as_interrupt():
            route.connect()
    except BaseException as exc:
        route.close()
        try:
            abandon(transport, scheduler, record, paths, running=True)
        except HpcjupError as cleanup:  # the login connection may be gone too: say so, but report the cause
            notes.warn(f"Could not cancel job {record.job_id} ({cleanup.message}); run `hpcjup stop {record.name}`.")
        else:
            if not isinstance(exc, KeyboardInterrupt):
                notes.info(
                    f"Cancelled job {record.job_id}: Jupyter's socket on {conn.node} was not reached; nothing was lost."
                )
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"Cancelled job {record.job_id} before Jupyter was reached; nothing was lost.") from None
        raise


def abandon(
    transport: Transport, scheduler: Scheduler, record: SessionRecord, paths: SessionPaths, running: bool = False
) -> None:
    """Cancel a job that never served anyone and remove its session directory (no notebook can be lost yet)."""
    scheduler.cancel(transport, record.job_id, graceful=False)
    if running:  # its launcher writes state.json as it goes: remove the directory after, not during
        from hpcjup.session.stop import wait_until_gone

        wait_until_gone(transport, scheduler, paths, record, 30.0)
    transport.rmtree(paths.dir)


def start_groups(
    notes: Notes,
    transport: Transport,
    record: SessionRecord,
    paths: SessionPaths,
    conn: Connection,
    groups: list[WorkerGroup],
) -> None:
    """Submit the worker groups; one that the scheduler refuses is reported and the session goes on."""
    from hpcjup.session.groupjobs import scale_group

    for group in groups:
        try:
            ids = scale_group(transport, paths, record, (conn.dask or {})["scheduler"], group, group.jobs)
            notes.info(f"Worker group {group.name}: job(s) {' '.join(ids)} on partition {group.partition}.")
        except SubmitError as exc:
            notes.warn(
                f"Worker group {group.name} was not submitted: {exc.message} ({exc.hint}) The session keeps running."
            )

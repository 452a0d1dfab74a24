"""Hold a session's tunnel, in the foreground or in a detached process, until told to let go.

The holder forwards a local port, checks that Jupyter answers through it, records itself in the
laptop's cache (under its lock, see session/liveholders.py) and then keeps watch: a dropped SSH
connection is re-opened with backoff on the same local port; the launcher's state.json and, less
often, the scheduler are asked whether the job still runs (a job killed outright never writes its
end); a warning comes 10 minutes before the time limit. A preemptible session's job that the scheduler
preempted and holds again (requeued) is followed (`_follow`): the holder waits for its next run's
connection.json and forwards the same local port to the new node and port, so the same URL (same
token) works again without any command. An authentication failure ends the watch
at once: retrying a changed host key or an unanswerable 2FA prompt would lock accounts at some
centres. SIGINT, SIGTERM or SIGHUP detach: the tunnel closes, the job keeps running.

What the holder needs from the application comes in as parameters: where notes go, how to
connect, the cache and the scheduler adapter. Nothing here prints or exits.

Three modules share the word; each name says which part it is. This one is the holding itself (the
loop, `SessionHolder`); session/liveholders.py finds and ends the holders that run, from the cache;
cli/holder.py is the CLI's side (`Holder`: what `start` and `attach` print). The holder's lock file
is session/locks.py's `HolderLock`.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from hpcjup.errors import AuthError, ConnectError, HpcjupError, JobFailedError, WaitTimeout
from hpcjup.schedulers.base import JobState, Scheduler
from hpcjup.session.jupyter import api_status, lab_url
from hpcjup.session.layout import SessionPaths
from hpcjup.session.locks import HolderLock
from hpcjup.session.record import Connection, JobReport, SessionRecord, read_report
from hpcjup.session.route import Route
from hpcjup.session.store import CacheEntry, LocalStore, Preemption, TunnelError, TunnelInfo
from hpcjup.session.wait import Progress, ReadyWaiter
from hpcjup.transport.base import Transport
from hpcjup.tunnel import Tunnel


class Notes(Protocol):
    """Where the holder's messages go (the CLI's UI; a detached holder's log)."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


@dataclass(frozen=True)
class Timings:
    """How often the holder looks at what (seconds)."""

    alive_every: float = 1.0  # local and free: is the SSH connection up?
    state_every: float = 15.0  # one small file read on the login node
    scheduler_every: float = 60.0  # a scheduler query: polite, a few per hour are plenty
    backoff: tuple[float, ...] = (1, 2, 4, 8, 15, 30)  # between reconnect attempts
    warn_before_end: float = 600


@dataclass(frozen=True)
class HoldEnd:
    """Why holding stopped: detached (nothing set), the job ended (`ended`), a reconnect was refused (`auth`),
    or the local tunnel stopped accepting connections (`tunnel`)."""

    ended: str | None = None  # the launcher's reason, or what the scheduler says
    auth: AuthError | None = None
    tunnel: ConnectError | None = None

    @property
    def detached(self) -> bool:
        return self.ended is None and self.auth is None and self.tunnel is None

    @property
    def error(self) -> HpcjupError | None:
        """Why the tunnel closed while the job runs on (recorded in the laptop's cache for `ls`)."""
        return self.auth or self.tunnel


class SessionHolder:
    """Keeps one session's tunnel up for as long as the process runs."""

    def __init__(
        self,
        transport: Transport,
        record: SessionRecord,
        paths: SessionPaths,
        conn: Connection,
        *,
        store: LocalStore,
        scheduler: Scheduler,
        connect: Callable[[str], Transport],
        notes: Notes,
        timings: Timings = Timings(),
    ) -> None:
        self.transport, self.record, self.paths, self.conn = transport, record, paths, conn
        self.store, self.scheduler, self.connect, self.notes, self.timings = store, scheduler, connect, notes, timings
        # The destination exactly as the user gave it (never transport.name): reconnects and hints use it.
        self.host = record.host
        self.route = Route(transport, conn)
        self.tunnel: Tunnel | None = None
        self._given = transport
        self._gone_once = False
        self._report: JobReport | None = None  # state.json as last read
        self.requeues = 0  # runs of the job this holder followed (a preemptible session's)

    def serve(
        self, *, local_port: int | None, on_ready: Callable[[int, str], None], time_left: int | None = None
    ) -> HoldEnd:
        """Forward, verify, cache, call on_ready(local_port, url), then hold until detached or the job ends."""
        lock = HolderLock(self.store.lock_path(self.host, self.record.name))
        with contextlib.closing(self.route), lock, self._tunnel(local_port) as tunnel:
            self.tunnel = tunnel
            api_status(tunnel.local_port, self.conn)
            url = lab_url(tunnel.local_port, self.conn)
            self._cache(url, lock.path)
            # Signals detach from here on: one arriving while the result is printed must not kill us.
            with detach_signals() as detached:
                end = HoldEnd()
                try:
                    on_ready(tunnel.local_port, url)
                    end = self._hold(time_left, detached)
                finally:
                    self._uncache(end, tunnel.local_port)
        if self.transport is not self._given:  # a reconnect's connection is ours to close; the caller closes its own
            with contextlib.suppress(Exception):
                self.transport.close()
        return end

    def _tunnel(self, local_port: int | None) -> Tunnel:
        """The local end (started by `with`), after the hop to the node in socket mode."""
        self.route.connect()
        return Tunnel(self.route.open, local_port, handoff=self.route.handoff)

    def _cache(self, url: str, lock: Path) -> None:
        import os

        assert self.tunnel is not None
        tunnel = TunnelInfo(pid=os.getpid(), lock=str(lock), local_port=self.tunnel.local_port, url=url)
        entry = CacheEntry(host=self.host, record=self.record, connection=self.conn, tunnel=tunnel)
        self.store.save(self.host, self.record.name, entry)

    def _uncache(self, end: HoldEnd, local_port: int) -> None:
        """The tunnel is gone from the cache; a refused reconnect is recorded there for `ls`."""
        error = None
        if end.error is not None:
            at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            error = TunnelError(message=end.error.message, hint=end.error.hint, at=at)
        self.store.update(self.host, self.record.name, tunnel=None, tunnel_error=error, last_local_port=local_port)

    def _hold(self, time_left: int | None, detached: threading.Event) -> HoldEnd:
        """Until a signal, the job's end, or a refused reconnect."""
        t = self.timings
        ends_at = time.monotonic() + time_left if time_left else None
        next_state = time.monotonic() + t.state_every
        next_scheduler = time.monotonic() + t.scheduler_every
        while not detached.wait(t.alive_every):
            if self.tunnel is not None and self.tunnel.error is not None:
                return HoldEnd(tunnel=self._tunnel_failed(self.tunnel))
            if not self.transport.alive:
                end = self._reconnect(detached)
                if end is not None:
                    return end
            if ends_at is not None and ends_at - time.monotonic() < t.warn_before_end:
                self.notes.warn(
                    f"Session {self.record.name} reaches its time limit in about 10 minutes: save your work."
                )
                ends_at = None
            if time.monotonic() >= next_state:
                next_state = time.monotonic() + t.state_every
                reason = self._launcher_end()
                if reason and self._requeued():
                    end = self._follow(detached)
                    if end is not None:
                        return end
                    ends_at = None  # the run after the requeue has a time limit of its own
                    next_state = time.monotonic() + t.state_every
                elif reason:
                    return HoldEnd(ended=reason)
            if time.monotonic() >= next_scheduler:
                next_scheduler = time.monotonic() + t.scheduler_every
                reason = self._scheduler_end()
                if reason:
                    return HoldEnd(ended=reason)
        return HoldEnd()

    def _tunnel_failed(self, tunnel: Tunnel) -> ConnectError:
        """The error for a tunnel whose accept thread died: holding on would leave browsers hanging."""
        exc = tunnel.take_error()  # reported here, not re-raised when the tunnel closes
        self.notes.warn(f"The tunnel on port {tunnel.local_port} stopped accepting connections ({exc}).")
        return ConnectError(
            f"The tunnel to session {self.record.name} on port {tunnel.local_port} stopped accepting connections "
            f"({exc}). Job {self.record.job_id} keeps running.",
            hint=f"`hpcjup attach {shlex.quote(self.record.name)}` opens a new tunnel.",
        )

    def _launcher_end(self) -> str | None:
        """The launcher's reason if state.json says the session ended."""
        try:
            report = self._report = read_report(self.transport, self.paths.state)
        except (OSError, EOFError, HpcjupError):  # the connection died under us: the next round reconnects
            return None
        return (report.reason or "ended") if report is not None and report.ended else None

    def _requeued(self) -> bool:
        """Whether the run that ended may come back: a preemptible job stopped by a signal that the scheduler
        still holds (pending again after a requeue; or still ending, which `_follow` then sees end)."""
        if self._report is None or not self._report.may_return:
            return False
        try:
            return self.scheduler.status(self.transport, self.record.job_id).state.active
        except (OSError, EOFError, HpcjupError):
            return True  # not known yet: following asks the scheduler again, and ends if the job is over

    def _follow(self, detached: threading.Event) -> HoldEnd | None:
        """Wait for the requeued job's next run, then forward the same local port there: None once the URL
        answers again; why holding stops otherwise (the job ended instead, or a reconnect was refused)."""
        name, before = self.record.name, self.conn
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.notes.warn(
            f"Session {name}: job {self.record.job_id} was stopped and the scheduler holds it again (preempted and "
            "requeued: the kernels' memory is lost, saved files stay). Waiting for it to run again; the same URL "
            "works then."
        )
        self.store.update(self.host, name, preempted=Preemption(at=at, restarts=before.restarts))

        def check(progress: Progress) -> None:  # called about once a second while waiting
            if detached.is_set():
                raise _Detached

        while True:
            waiter = ReadyWaiter(self.transport, self.scheduler, self.record, self.paths, check, after=before)
            try:
                conn = waiter.wait()
                break
            except _Detached:
                return HoldEnd()
            except (JobFailedError, WaitTimeout) as exc:
                ended = self._report.reason if self._report and not waiter.status.state.active else None
                self.store.update(self.host, name, preempted=None)
                return HoldEnd(ended=ended or exc.message)
            except (OSError, EOFError, HpcjupError) as exc:
                if self.transport.alive:  # e.g. the job pends for what never comes (JobCannotStart)
                    self.store.update(self.host, name, preempted=None)
                    return HoldEnd(ended=getattr(exc, "message", None) or str(exc))
                end = self._reconnect(detached)
                if end is not None:
                    return end
        self.conn = self.route.conn = conn
        self.route.use(self.transport)  # socket mode: the hop goes to the new node
        assert self.tunnel is not None
        api_status(self.tunnel.local_port, conn)
        self.requeues += 1
        self.store.update(self.host, name, connection=conn, preempted=None, restarts=conn.restarts)
        self.notes.info(
            f"Session {name} runs again (run {conn.restarts + 1} of job {conn.job_id}, on {conn.node}): "
            f"http://127.0.0.1:{self.tunnel.local_port}/ works again."
        )
        return None

    def _scheduler_end(self) -> str | None:
        """Why the job is over if the scheduler says so: a job killed outright (kill -9, node failure) writes no end."""
        job_id = self.record.job_id
        try:
            state = self.scheduler.status(self.transport, job_id).state
        except (OSError, EOFError, HpcjupError):
            return None
        if state.active:
            self._gone_once = False
            return None
        if state is JobState.GONE and not self._gone_once:  # a scheduler command can fail for a moment: ask again
            self._gone_once = True
            return None
        what = "no longer knows it" if state is JobState.GONE else f"says it is {state.value}"
        return self._launcher_end() or (
            f"job {job_id} is over (the scheduler {what}) and its launcher recorded no end: "
            "killed outright (cancelled, node failure, out of memory?)"
        )

    def _reconnect(self, detached: threading.Event) -> HoldEnd | None:
        """Open a new connection with backoff (same local port): None once reconnected, else why it stopped."""
        self.notes.warn(f"The connection to {self.host} dropped; reconnecting (the job keeps running)…")
        backoff = self.timings.backoff
        attempt = 0
        while not detached.is_set():
            try:
                transport = self.connect(self.host)
            except AuthError as exc:  # retrying would ask again and again: some centres lock the account
                self.notes.warn(
                    f"Reconnecting to {self.host} was refused ({type(exc).__name__}). Not retrying: repeated failed "
                    "logins can lock your account. The tunnel closes; the job keeps running."
                )
                return HoldEnd(auth=exc)
            except HpcjupError as exc:
                delay = backoff[min(attempt, len(backoff) - 1)]
                self.notes.info(f"  reconnect failed ({exc.message}); next try in {delay:g} s")
                attempt += 1
                if detached.wait(delay):
                    return HoldEnd()
                continue
            old, self.transport = self.transport, transport
            self.route.use(transport)
            with contextlib.suppress(Exception):
                old.close()
            port = self.tunnel.local_port if self.tunnel else "?"
            self.notes.info(f"Reconnected to {self.host}; the tunnel on port {port} works again.")
            return None
        return HoldEnd()


class _Detached(Exception):
    """A signal asked the holder to let go while it waited for a requeued job."""


@contextlib.contextmanager
def detach_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT, SIGTERM or SIGHUP, instead of their default actions."""
    event = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: event.set()) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM and SIGHUP like Ctrl-C, so cleanup code runs instead of the process vanishing."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Hold a session's tunnel (shared by `start` and `attach`, in the foreground or detached).

SIGINT, SIGTERM or SIGHUP detaches: the tunnel closes, the job keeps running, and the
message says how to come back and how to stop. While holding, a dropped SSH connection
is re-opened with backoff on the same local port, the launcher's state.json is checked
now and then (a job that ends is reported, not hidden), and a warning comes 10 minutes
before the time limit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from hpcjup.cli.app import LOCAL, App
from hpcjup.errors import HpcjupError, JobFailedError
from hpcjup.job import NORMAL_ENDS
from hpcjup.session.jupyter import api_status, lab_url
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import Connection, SessionRecord, read_report
from hpcjup.session.route import Route
from hpcjup.transport.base import Transport
from hpcjup.tunnel import Tunnel

_ALIVE_EVERY = 1.0  # seconds between (local, free) checks that the SSH connection is up
_STATE_EVERY = 15.0  # seconds between looks at the job's state.json
_RECONNECT_BACKOFF = (1, 2, 4, 8, 15, 30)
_WARN_BEFORE_END = 600


class Holder:
    """Keeps one session's tunnel up for as long as the process runs."""

    def __init__(
        self, app: App, transport: Transport, record: SessionRecord, paths: SessionPaths, conn: Connection
    ) -> None:
        self.app, self.transport, self.record, self.paths, self.conn = app, transport, record, paths, conn
        self.route = Route(transport, conn)
        self.tunnel: Tunnel | None = None

    def serve(
        self,
        *,
        local_port: int | None,
        open_browser: bool,
        on_ready: Callable[[], None] = lambda: None,
        time_left: int | None = None,
    ) -> None:
        """Forward, verify, report the URL, then hold until detached or the job ends."""
        ui, record = self.app.ui, self.record
        with contextlib.closing(self.route), self._tunnel(local_port) as tunnel:
            self.tunnel = tunnel
            api_status(self.tunnel.local_port, self.conn)
            url = lab_url(self.tunnel.local_port, self.conn)
            self._cache(url)
            # Signals detach from here on: one arriving while the result is printed must not kill us.
            with detach_signals() as detached:
                try:
                    result = session_result(record, self.conn, self.tunnel.local_port, url)
                    ui.result(result, text=url)
                    if result["dashboard_url"]:
                        ui.info(
                            f"Dask: scheduler {result['dask_scheduler']} (TLS); dashboard {result['dashboard_url']}"
                        )
                    ui.info(
                        f"Session [bold]{record.name}[/bold]: JupyterLab on {self.conn.node} (job {record.job_id}). Ctrl-C detaches; the job keeps running."
                    )
                    if open_browser:
                        from hpcjup.ui.browser import open_url

                        if not open_url(url):
                            ui.info("No browser here: open the URL above yourself.")
                    on_ready()
                    ended = self._hold(time_left, detached)
                finally:
                    self.app.store.update(record.host, record.name, tunnel=None, last_local_port=self.tunnel.local_port)
        self._report_end(ended)

    def _tunnel(self, local_port: int | None) -> Tunnel:
        """The local end (started by `with`), after the hop to the node in socket mode."""
        self.route.connect()
        return Tunnel(self.route.open, local_port, handoff=self.route.handoff)

    def _cache(self, url: str) -> None:
        import os

        assert self.tunnel is not None
        entry = {
            "host": self.record.host,
            "record": asdict(self.record),
            "connection": self.conn.to_dict(),
            "tunnel": {"pid": os.getpid(), "local_port": self.tunnel.local_port, "url": url},
        }
        self.app.store.save(self.record.host, self.record.name, entry)

    def _hold(self, time_left: int | None, detached: threading.Event) -> str | None:
        """Until a signal (returns None) or the job's end (returns the launcher's reason)."""
        ends_at = time.monotonic() + time_left if time_left else None
        next_state = time.monotonic() + _STATE_EVERY
        while not detached.wait(_ALIVE_EVERY):
            if not self.transport.alive and not self._reconnect(detached):
                return None
            if ends_at is not None and ends_at - time.monotonic() < _WARN_BEFORE_END:
                self.app.ui.warn(
                    f"Session {self.record.name} reaches its time limit in about 10 minutes: save your work."
                )
                ends_at = None
            if time.monotonic() >= next_state:
                next_state = time.monotonic() + _STATE_EVERY
                try:
                    report = read_report(self.transport, self.paths.state)
                except (OSError, EOFError):  # the connection died under us: the next round reconnects
                    continue
                if report is not None and report.ended:
                    return report.reason or "ended"
        return None

    def _reconnect(self, detached: threading.Event) -> bool:
        """Open a new connection with backoff; False if detached meanwhile. The local port stays."""
        self.app.ui.warn(f"The connection to {self.record.host} dropped; reconnecting (the job keeps running)…")
        attempt = 0
        while not detached.is_set():
            try:
                transport = self.app.connect(self.record.host)
            except HpcjupError as exc:
                delay = _RECONNECT_BACKOFF[min(attempt, len(_RECONNECT_BACKOFF) - 1)]
                self.app.ui.info(f"  reconnect failed ({exc.message}); next try in {delay} s")
                attempt += 1
                if detached.wait(delay):
                    return False
                continue
            old, self.transport = self.transport, transport
            self.route.use(transport)
            with contextlib.suppress(Exception):
                old.close()
            self.app.ui.info(
                f"Reconnected to {self.record.host}; the tunnel on port {self.tunnel.local_port if self.tunnel else '?'} works again."
            )
            return True
        return False

    def _report_end(self, ended: str | None) -> None:
        record = self.record
        if ended is None:
            where = "--local" if record.host == LOCAL else f"--host {record.host}"
            self.app.ui.info(
                f"Detached. Job {record.job_id} keeps running.\n"
                f"  come back:  hpcjup attach {record.name} {where}\n"
                f"  stop it:    hpcjup stop {record.name} {where}"
            )
        elif ended in NORMAL_ENDS:
            self.app.ui.info(f"Session {record.name} ended ({ended}).")
        else:
            raise JobFailedError(
                f"Session {record.name} ended: {ended}.", hint=f"`hpcjup logs {record.name}` shows the job's log."
            )


def session_result(record: SessionRecord, conn: Connection, local_port: int, url: str) -> dict[str, Any]:
    """The JSON `start` and `attach` print once the URL answers."""
    dask = conn.dask or {}
    dashboard = dask.get("dashboard_port")
    return {
        "session": record.name,
        "job_id": record.job_id,
        "host": record.host,
        "node": conn.node,
        "remote_address": conn.address,
        "remote_port": conn.port,
        "remote_socket": conn.socket,
        "local_port": local_port,
        "url": url,
        "token": conn.token,
        "dask_scheduler": dask.get("scheduler"),
        # Through Jupyter's authenticated proxy (jupyter-server-proxy): the dashboard itself listens on the node's loopback.
        "dashboard_url": f"http://127.0.0.1:{local_port}/proxy/{dashboard}/status?token={conn.token}"
        if dashboard
        else None,
    }


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

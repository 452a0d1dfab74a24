"""The CLI side of holding a tunnel (shared by `start` and `attach`): what is printed, the browser, exit codes.

The holding itself (reconnects, the job's end, the time-limit warning, the cache) is
`hpcjup.session.holding.SessionHolder`; this module gives it the app's parts and renders its outcome
(`Holder`: there is no `serve` command; the module was cli/serve.py before).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from typing import Any

from hpcjup.cli.app import LOCAL, App, Reach
from hpcjup.errors import AuthError, JobFailedError
from hpcjup.job import DASHBOARD_PATH, NORMAL_ENDS
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import Scheduler
from hpcjup.session.holding import HoldEnd, SessionHolder, Timings, detach_signals, terminate_as_interrupt
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import Connection, SessionRecord
from hpcjup.session.route import Route
from hpcjup.transport.base import Transport

__all__ = ["Holder", "detach_signals", "session_result", "terminate_as_interrupt", "where_option"]

#: For the test suite only: seconds between the holder's scheduler queries (default 60), so a test
#: that kills a job outright sees the holder end within seconds. Not documented for users.
CHECK_EVERY_ENV = "HPCJUP_HOLDER_CHECK_EVERY"


class Holder:
    """A SessionHolder wired to the app, printing what `start` and `attach` show."""

    def __init__(
        self,
        app: App,
        transport: Transport,
        record: SessionRecord,
        paths: SessionPaths,
        conn: Connection,
        scheduler: Scheduler | None = None,
        *,
        reach: Reach,
    ) -> None:
        self.app, self.record = app, record
        self.session = SessionHolder(
            transport,
            record,
            paths,
            conn,
            store=app.store,
            scheduler=scheduler or get_scheduler(record.scheduler),
            connect=lambda host: app.connect(host, reach),  # a reconnect goes the way the command came
            notes=app.ui,
            timings=_timings(),
        )

    @property
    def route(self) -> Route:
        return self.session.route

    @property
    def conn(self) -> Connection:
        return self.session.conn

    def serve(
        self,
        *,
        local_port: int | None,
        open_browser: bool,
        on_ready: Callable[[], None] = lambda: None,
        time_left: int | None = None,
    ) -> None:
        """Forward, verify, print the URL, then hold until detached or the job ends."""

        def ready(port: int, url: str) -> None:
            self._announce(port, url, open_browser)
            on_ready()

        end = self.session.serve(local_port=local_port, on_ready=ready, time_left=time_left)
        report_end(self.app, self.record, end)

    def _announce(self, local_port: int, url: str, open_browser: bool) -> None:
        from hpcjup.ui import escape

        ui, record, conn = self.app.ui, self.record, self.conn
        result = session_result(record, conn, local_port, url)
        ui.result(result, text=url)
        if result["dashboard_url"]:
            ui.info(f"Dask: scheduler {result['dask_scheduler']} (TLS); dashboard {result['dashboard_url']}")
        ui.info(
            f"Session [bold]{escape(record.name)}[/bold]: JupyterLab on {escape(conn.node)} "
            f"(job {escape(record.job_id)}). Ctrl-C detaches; the job keeps running.",
            markup=True,
        )
        if open_browser:
            from hpcjup.ui.browser import open_url

            if not open_url(url):
                ui.info("No browser here: open the URL above yourself.")


def _timings() -> Timings:
    """The holder's timings; the scheduler interval can be shortened for tests (CHECK_EVERY_ENV)."""
    every = os.environ.get(CHECK_EVERY_ENV)
    try:
        return Timings(scheduler_every=float(every)) if every and float(every) > 0 else Timings()
    except ValueError:
        return Timings()


def where_option(host: str) -> str:
    """`--local`, or `--host DEST` with the destination exactly as given, quoted for a shell."""
    return "--local" if host == LOCAL else f"--host {shlex.quote(host)}"


def report_end(app: App, record: SessionRecord, end: HoldEnd) -> None:
    """Say how holding ended; a failed job or a refused reconnect becomes the command's error."""
    where, name = where_option(record.host), shlex.quote(record.name)
    if end.auth is not None:
        exc = end.auth
        raise AuthError(
            f"The tunnel to session {record.name} closed: reconnecting to {record.host} failed: {exc.message} "
            f"Job {record.job_id} keeps running.",
            hint=f"{exc.hint + ' ' if exc.hint else ''}Then come back with `hpcjup attach {name} {where}`.",
        )
    if end.tunnel is not None:  # the local tunnel died (session/holding.py): the command's error, the job runs on
        raise end.tunnel
    if end.ended is None:
        app.ui.info(
            f"Detached. Job {record.job_id} keeps running.\n"
            f"  come back:  hpcjup attach {name} {where}\n"
            f"  stop it:    hpcjup stop {name} {where}"
        )
    elif end.ended in NORMAL_ENDS:
        app.ui.info(f"Session {record.name} ended ({end.ended}).")
    else:
        raise JobFailedError(
            f"Session {record.name} ended: {end.ended}.", hint=f"`hpcjup logs {name} {where}` shows the job's log."
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
        # Through Jupyter's authenticated proxy (jupyter-server-proxy), below its base_url: the dashboard itself
        # listens on a Unix socket only the user can open (older sessions: a loopback port).
        "dashboard_url": f"http://127.0.0.1:{local_port}{conn.base_url}{DASHBOARD_PATH}?token={conn.token}"
        if dask.get("dashboard") == DASHBOARD_PATH
        else f"http://127.0.0.1:{local_port}{conn.base_url}proxy/{dashboard}/status?token={conn.token}"
        if dashboard
        else None,
    }

"""Hold a session's tunnel in the foreground (shared by `start` and `attach`).

Ctrl-C or SIGTERM detaches: the tunnel closes, the job keeps running, and the
message says how to come back and how to stop. While holding, the launcher's
state.json is checked now and then, so a job that ends is reported, not hidden.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from hpcjup.cli.app import LOCAL, App
from hpcjup.errors import ConnectError, JobFailedError
from hpcjup.session.jupyter import api_status, lab_url
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import Connection, SessionRecord, read_report
from hpcjup.transport.base import Transport
from hpcjup.tunnel import Tunnel

_CHECK_EVERY = 15.0  # seconds between looks at the job's state while holding
_NORMAL_ENDS = {"stopped", "idle", "walltime"}


def serve(
    app: App,
    transport: Transport,
    record: SessionRecord,
    paths: SessionPaths,
    conn: Connection,
    *,
    local_port: int | None,
    open_browser: bool,
) -> None:
    """Forward a local port to the session's Jupyter, report the URL, hold until detached."""
    tunnel = Tunnel(lambda: transport.open_stream(conn.address, conn.port), local_port)
    tunnel.start()
    with tunnel:
        api_status(tunnel.local_port, conn)
        url = lab_url(tunnel.local_port, conn)
        app.store.save(
            record.host,
            record.name,
            {"host": record.host, "record": asdict(record), "connection": conn.to_dict(),
             "tunnel": {"pid": os.getpid(), "local_port": tunnel.local_port, "url": url}},
        )  # fmt: skip
        try:
            app.ui.result(_result(record, conn, tunnel.local_port, url), text=url)
            app.ui.info(f"Session [bold]{record.name}[/bold]: JupyterLab on {conn.node} (job {record.job_id}). Ctrl-C detaches; the job keeps running.")
            if open_browser:
                from hpcjup.ui.browser import open_url

                if not open_url(url):
                    app.ui.info("No browser here: open the URL above yourself.")
            ended = _hold(transport, paths)
        finally:
            app.store.update(record.host, record.name, tunnel=None)
    if ended is None:
        where = "--local" if record.host == LOCAL else f"--host {record.host}"
        app.ui.info(
            f"Detached. Job {record.job_id} keeps running.\n"
            f"  come back:  hpcjup attach {record.name} {where}\n"
            f"  stop it:    hpcjup stop {record.name} {where}"
        )
        return
    if ended in _NORMAL_ENDS:
        app.ui.info(f"Session {record.name} ended ({ended}).")
        return
    raise JobFailedError(f"Session {record.name} ended: {ended}.", hint=f"The job's log is {paths.log} on the cluster.")


def _result(record: SessionRecord, conn: Connection, local_port: int, url: str) -> dict[str, Any]:
    return {
        "session": record.name,
        "job_id": record.job_id,
        "host": record.host,
        "node": conn.node,
        "remote_address": conn.address,
        "remote_port": conn.port,
        "local_port": local_port,
        "url": url,
        "token": conn.token,
    }


def _hold(transport: Transport, paths: SessionPaths) -> str | None:
    """Wait for Ctrl-C/SIGTERM (returns None) or the job's end (returns the launcher's reason)."""
    with detach_signals() as detached:
        while not detached.wait(_CHECK_EVERY):
            if getattr(transport, "alive", True) is False:
                raise ConnectError(
                    f"The connection to {transport.name} dropped; the job keeps running.",
                    hint=f"Reconnect with `hpcjup attach {paths.name} --host {transport.name}`.",
                )
            report = read_report(transport, paths.state)
            if report is not None and report.ended:
                return report.reason or "ended"
    return None


@contextlib.contextmanager
def detach_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT, SIGTERM or SIGHUP, instead of their default actions."""
    event = threading.Event()
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    previous = {}
    for name in names:
        if hasattr(signal, name):
            sig = getattr(signal, name)
            previous[sig] = signal.signal(sig, lambda *_: event.set())
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

"""`hpcjup logs`: the job's log, and how the session ended."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, host_options, json_option
from hpcjup.cli.complete import complete_session

if TYPE_CHECKING:
    from hpcjup.session.overview import SessionView
    from hpcjup.transport.base import Transport

_FOLLOW_EVERY = 1.0


@click.command()
@click.argument("session", required=False, shell_complete=complete_session)
@host_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends (Ctrl-C stops).")
@click.option("-n", "--lines", type=click.IntRange(min=0), help="Only the last N lines.")
@json_option
@click.pass_obj
def command(app: App, session: str | None, host: str | None, local: bool, follow: bool, lines: int | None) -> None:
    """Print the job's log (Jupyter's output); for an ended session, say how it ended."""
    from hpcjup.session.overview import pick_session, view_of

    host = app.resolve_host(host, local)
    with app.connect(host) as transport:
        scheduler = app.scheduler(host)
        view = (
            view_of(transport, scheduler, app.store, session)
            if session
            else pick_session(transport, scheduler, app.store, None)
        )
        try:
            text = transport.read_file(view.paths.log).decode(errors="replace")
        except FileNotFoundError:
            text = ""
        shown = text if lines is None else "\n".join(text.splitlines()[-lines:]) + ("\n" if lines and text else "")
        if app.ui.json_mode:
            app.ui.result({**view.to_dict(), "log": shown, "log_path": view.paths.log})
            return
        sys.stdout.write(shown)
        sys.stdout.flush()
        if not view.active:
            app.ui.info(
                f"Session {view.record.name} ended: {view.why}"
                + (f" ({view.report.message})" if view.report and view.report.message else "")
                + "."
            )
        elif follow:
            _follow(app, transport, view, len(text.encode()))


def _follow(app: App, transport: Transport, view: SessionView, offset: int) -> None:
    """Print what the log gains until the launcher records its end."""
    from hpcjup.session.record import read_report

    try:
        while True:
            info = transport.scan(view.paths.dir).get("job.out")
            if info is not None and info.size > offset:
                data = transport.read_file(view.paths.log)
                sys.stdout.write(data[offset:].decode(errors="replace"))
                sys.stdout.flush()
                offset = len(data)
            report = read_report(transport, view.paths.state)
            if report is not None and report.ended:
                app.ui.info(f"Session {view.record.name} ended: {report.reason}.")
                return
            time.sleep(_FOLLOW_EVERY)
    except KeyboardInterrupt:
        return

"""`hpcjup logs`: the job's log (tokens masked), and how the session ended."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.complete import complete_session

if TYPE_CHECKING:
    from hpcjup.session.overview import SessionView
    from hpcjup.transport.base import Transport

_FOLLOW_EVERY = 1.0


@click.command()
@click.argument("session", required=False, shell_complete=complete_session)
@host_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends (Ctrl-C stops).")
@click.option("-n", "--lines", type=click.IntRange(min=0), help="Only the last N lines (0: none, e.g. with -f).")
@json_option
@click.pass_obj
def command(
    app: App, session: str | None, host: str | None, local: bool, follow: bool, lines: int | None, reach: Reach
) -> None:
    """Print the job's log (Jupyter's output, tokens masked); for an ended session, say how it ended.

    At most the last MiB is read: a job's log can be large.
    """
    from hpcjup.session.overview import pick_session
    from hpcjup.session.wait import read_log

    host = app.resolve_host(host, local, session)
    with app.connect(host, reach) as transport:
        view = pick_session(transport, app.store, session)
        text = "" if lines == 0 else read_log(transport, view.paths, lines) or ""
        if app.ui.json_mode:
            app.ui.result({**view.to_dict(), "log": text, "log_path": view.paths.log})
            return
        sys.stdout.write(text)
        sys.stdout.flush()
        if not view.active:
            message = f" ({view.report.message})" if view.report and view.report.message else ""
            app.ui.info(f"Session {view.record.name} ended: {view.why}{message}.")
        elif follow:
            _follow(app, transport, view)


def _follow(app: App, transport: Transport, view: SessionView) -> None:
    """Print what the log gains (one remote watcher tells when) until the launcher records its end."""
    from hpcjup.job import STATE_FILE
    from hpcjup.schedulers.base import JOB_LOG
    from hpcjup.session.wait import mask_tokens, report_of
    from hpcjup.transport.watch import Watch

    offset: int | None = None
    try:
        with Watch(transport, view.paths.dir, [STATE_FILE], [JOB_LOG]) as watch:
            while True:
                changes = watch.changes(_FOLLOW_EVERY)
                log = changes.get(JOB_LOG)
                if log is not None:
                    if offset is None:
                        offset = log.size  # the first report: what was printed above
                    elif log.size > offset:
                        _, data, _ = transport.run_raw(["tail", "-c", f"+{offset + 1}", "--", view.paths.log])
                        sys.stdout.write(mask_tokens(data.decode(errors="replace")))
                        sys.stdout.flush()
                        offset += len(data)
                report = report_of(changes.get(STATE_FILE)) if STATE_FILE in changes else None
                if report is not None and report.ended:
                    app.ui.info(f"Session {view.record.name} ended: {report.reason}.")
                    return
    except KeyboardInterrupt:
        return

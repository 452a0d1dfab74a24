"""`hpcjup logs`: the job's log (tokens masked), and how the session ended.

A job's log is whatever the job's programs printed, and on a terminal an escape sequence in it would
act rather than show (retitle the window, rewrite the screen, answer back into the shell, hide lines
behind a carriage return). So on a terminal its control characters are shown as escapes (\\x1b,
\\x0d); piped or redirected, and with --raw, the log is written as it is, for tools that want it so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.complete import complete_session

if TYPE_CHECKING:
    from hpcjup.session.views import SessionView
    from hpcjup.transport.base import Transport

_FOLLOW_EVERY = 1.0


@click.command()
@click.argument("session", required=False, shell_complete=complete_session)
@host_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends (Ctrl-C stops).")
@click.option("-n", "--lines", type=click.IntRange(min=0), help="Only the last N lines (0: none, e.g. with -f).")
@click.option(
    "--raw", is_flag=True, help="Write control characters as they are, also to a terminal (piped, they always are)."
)
@json_option
@click.pass_obj
def command(
    app: App,
    session: str | None,
    host: str | None,
    local: bool,
    follow: bool,
    lines: int | None,
    raw: bool,
    reach: Reach,
) -> None:
    """Print the job's log (Jupyter's output, tokens masked); for an ended session, say how it ended.

    At most the last MiB is read: a job's log can be large. On a terminal, control characters (escape
    sequences) are shown as \\xNN unless --raw is given.
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
        write = _writer(raw)
        write(text)
        if not view.active:
            message = f" ({view.report.message})" if view.report and view.report.message else ""
            app.ui.info(f"Session {view.record.name} ended: {view.why}{message}.")
        elif follow:
            _follow(app, transport, view, write)


def _writer(raw: bool) -> Callable[[str], None]:
    """Writes log text to stdout: as it is with --raw or when stdout is no terminal, else with control
    characters made visible."""
    from hpcjup.ui import visible

    as_is = raw or not sys.stdout.isatty()

    def write(text: str) -> None:
        sys.stdout.write(text if as_is else visible(text))
        sys.stdout.flush()

    return write


def _follow(app: App, transport: Transport, view: SessionView, write: Callable[[str], None]) -> None:
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
                        write(mask_tokens(data.decode(errors="replace")))
                        offset += len(data)
                report = report_of(changes.get(STATE_FILE)) if STATE_FILE in changes else None
                if report is not None and report.ended:
                    app.ui.info(f"Session {view.record.name} ended: {report.reason}.")
                    return
    except KeyboardInterrupt:
        return

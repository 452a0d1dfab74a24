"""`hpcjup ls`: every session on the host, running or ended, wherever it was started from."""

from __future__ import annotations

import click

from hpcjup.cli.app import App, Reach, host_options, json_option


@click.command()
@host_options
@json_option
@click.pass_obj
def command(app: App, host: str | None, local: bool, reach: Reach) -> None:
    """List the sessions on the host: state, job, partition, time left, local URL, why it ended."""
    from hpcjup.session.groupstatus import groups_text
    from hpcjup.session.overview import overview

    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        views = overview(transport, app.store)
    rows = [view.to_dict() for view in views]
    app.ui.result({"host": host, "sessions": rows}, text=lambda: app.ui.table(rows, host) + groups_text(rows))

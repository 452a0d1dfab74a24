"""`hpcjup prune`: forget ended sessions, on the host and in this laptop's cache."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, Reach, host_options, json_option

if TYPE_CHECKING:
    from hpcjup.session.overview import View


@click.command()
@host_options
@click.option("-n", "--dry-run", is_flag=True, help="Only show what would be removed.")
@json_option
@click.pass_obj
def command(app: App, host: str | None, local: bool, dry_run: bool, reach: Reach) -> None:
    """Remove the sessions that have ended, and damaged ones: their directories on the host (job logs
    included) and this laptop's cache entries. A job that pends for what will never come (more nodes
    than the partition has, an unknown account, a Grid Engine job in error state) is cancelled first.
    Running and pending sessions are never touched otherwise, and notebooks live in Jupyter's working
    directory, not here. The sessions' figures stay in this laptop's archive for `hpcjup stats`.
    """
    from hpcjup.session.overview import SessionView, overview, prunable
    from hpcjup.session.stats import remember

    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        views = overview(transport, app.store, recheck=True)  # it removes directories: no remembered answers
        doomed = prunable(views)
        removed = [{"name": view.paths.name, "job_id": view.job_id, "why": _why(view)} for view in doomed]
        if not dry_run and removed:
            sessions = [view for view in doomed if isinstance(view, SessionView)]
            remember(app.store, host, [(view.record, view.report, view.usage) for view in sessions])
            # One command for all of them, whatever their number: cancel the hopeless jobs, remove the directories.
            kills = [view.scheduler.kill_snippet([view.job_id]) for view in sessions if view.active]
            kills += [
                view.scheduler.leftovers_snippet(view.paths.dir) for view in sessions
            ]  # a launcher killed outright
            remove = shlex.join(["rm", "-rf", "--", *(view.paths.dir for view in doomed)])
            transport.run(["sh", "-c", "; ".join([*filter(None, kills), remove])])
            for item in removed:
                app.store.forget(host, str(item["name"]))
    on_host = {view.paths.name for view in views}
    stale = [name for name in app.store.names(host) if name not in on_host]  # gone from the host already
    if not dry_run:
        for name in stale:
            app.store.forget(host, name)
    verb = "Would remove" if dry_run else "Removed"
    lines = [f"{verb} {r['name']} (job {r['job_id'] or '?'}, {r['why']})" for r in removed]
    lines += [f"{verb} {name} from this laptop's cache (no longer on {host})" for name in stale]
    app.ui.result(
        {"host": host, "dry_run": dry_run, "removed": removed, "forgotten": stale},
        text="\n".join(lines) or f"No ended sessions on {host}.",
    )


def _why(view: View) -> str | None:
    """Why the session goes: how it ended, or why its pending job never starts (it is cancelled)."""
    from hpcjup.session.overview import SessionView

    if isinstance(view, SessionView) and view.active and view.hopeless:
        return f"never starts: {view.hopeless}"
    return view.why

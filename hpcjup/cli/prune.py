"""`hpcjup prune`: forget ended sessions, on the host and in this laptop's cache."""

from __future__ import annotations

import click

from hpcjup.cli.app import App, host_options, json_option


@click.command()
@host_options
@click.option("-n", "--dry-run", is_flag=True, help="Only show what would be removed.")
@json_option
@click.pass_obj
def command(app: App, host: str | None, local: bool, dry_run: bool) -> None:
    """Remove the sessions that have ended, and damaged ones: their directories on the host (job logs
    included) and this laptop's cache entries. Running and pending sessions are never touched, and
    notebooks live in Jupyter's working directory, not here.
    """
    from hpcjup.session.overview import overview, prunable

    host = app.resolve_host(host, local)
    with app.connect(host) as transport:
        views = overview(transport, app.store)
        removed = [{"name": view.paths.name, "job_id": view.job_id, "why": view.why} for view in prunable(views)]
        if not dry_run and removed:
            # One command for all of them, whatever their number.
            transport.run(["rm", "-rf", "--", *(view.paths.dir for view in prunable(views))])
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

"""`hpcjup prune`: forget ended sessions, on the host and in this laptop's cache; `--envs DAYS`: unused environments
and container images."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.env import root_option

if TYPE_CHECKING:
    from hpcjup.session.views import View
    from hpcjup.transport.base import Transport


@click.command()
@host_options
@click.option("-n", "--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option(
    "--envs",
    "env_days",
    metavar="DAYS",
    type=click.IntRange(min=0),
    help="Also remove environments and pulled container images (`hpcjup env ls`) no session has used for DAYS days; "
    "never one a running session uses, nor the current server environment.",
)
@root_option
@json_option
@click.pass_obj
def command(
    app: App, host: str | None, local: bool, dry_run: bool, env_days: int | None, root: str | None, reach: Reach
) -> None:
    """Remove the sessions that have ended, and damaged ones: their directories on the host (job logs
    included) and this laptop's cache entries. A job that pends for what will never come (more nodes
    than the partition has, an unknown account, a Grid Engine job in error state) is cancelled first.
    Running and pending sessions are never touched otherwise, and notebooks live in Jupyter's working
    directory, not here. The sessions' figures stay in this laptop's archive for `hpcjup stats`.
    """
    from hpcjup.session.catalog import REMOVE_SCRIPT, STARTING_GRACE
    from hpcjup.session.overview import overview, prunable
    from hpcjup.session.stats import remember
    from hpcjup.session.views import SessionView

    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        views = overview(transport, app.store, recheck=True)  # it removes directories: no remembered answers
        doomed = prunable(views)
        removed = [{"name": view.paths.name, "job_id": view.job_id, "why": _why(view)} for view in doomed]
        if not dry_run and removed:
            sessions = [view for view in doomed if isinstance(view, SessionView)]
            remember(app.store, host, [(view.record, view.report, view.usage) for view in sessions])
            # One command for all of them, whatever their number: cancel the hopeless jobs, remove the directories
            # that are still what this listing saw (catalog.REMOVE_SCRIPT: a start may have reused a name since).
            kills = [view.scheduler.kill_snippet([view.job_id]) for view in sessions if view.active]
            kills += [
                view.scheduler.leftovers_snippet(view.paths.dir) for view in sessions
            ]  # a launcher killed outright
            grace = str(int(STARTING_GRACE // 60))
            triples = [word for view in doomed for word in (view.paths.name, view.job_id or "", _kind(view))]
            remove = shlex.join(["sh", "-c", REMOVE_SCRIPT, "sh", doomed[0].paths.root, grace, *triples])
            done = transport.run(["sh", "-c", "; ".join([*filter(None, kills), remove])]).stdout.split()
            gone = {done[i + 1] for i, word in enumerate(done[:-1]) if word == "removed"}
            removed = [item for item in removed if item["name"] in gone]
            for item in removed:
                app.store.forget(host, str(item["name"]))
        envs = _prune_envs(transport, root, env_days, views, dry_run) if env_days is not None else None
    on_host = {view.paths.name for view in views}
    stale = [name for name in app.store.names(host) if name not in on_host]  # gone from the host already
    if not dry_run:
        for name in stale:
            app.store.forget(host, name)
    verb = "Would remove" if dry_run else "Removed"
    lines = [f"{verb} {r['name']} (job {r['job_id'] or '?'}, {r['why']})" for r in removed]
    lines += [f"{verb} {name} from this laptop's cache (no longer on {host})" for name in stale]
    data: dict[str, object] = {"host": host, "dry_run": dry_run, "removed": removed, "forgotten": stale}
    if envs is not None:
        data["envs"] = envs
        lines += [
            f"{verb} {'image' if env.get('image') else 'environment'} {env['name']}"
            f"{' (' + str(env['ref']) + ')' if env.get('ref') else ''} (unused for {env['unused_days']} days)"
            for env in envs
        ]
        if not envs:
            lines.append(f"No environment or image on {host} unused for {env_days} days.")
    app.ui.result(data, text="\n".join(lines) or f"No ended sessions on {host}.")


def _prune_envs(
    transport: Transport, root: str | None, days: int, views: list[View], dry_run: bool
) -> list[dict[str, object]]:
    """The environments and images unused for `days` days, removed (one remote command) unless a dry run; an
    image's entry says `image: true` and the ref it was pulled as."""
    import time

    from hpcjup.envs.catalog import prune
    from hpcjup.envs.identity import env_root
    from hpcjup.session.envuse import in_use

    _, gone, images = prune(transport, env_root(root), days, in_use(views), dry_run=dry_run)
    now = time.time()
    return [
        {"name": env.name, "path": env.path, "kb": env.kb, "unused_days": int((now - env.last_used) // 86400)}
        for env in gone
    ] + [
        {
            "name": image.name,
            "path": image.path,
            "kb": image.kb,
            "unused_days": int((now - image.last_used) // 86400),
            "image": True,
            "ref": image.ref,
        }
        for image in images
    ]


def _kind(view: View) -> str:
    """What the removal checks again on the cluster before removing (catalog.REMOVE_SCRIPT)."""
    from hpcjup.session.views import DamagedView

    if not isinstance(view, DamagedView):
        return "ended"
    return "new" if not view.found.has_record_file else "damaged"


def _why(view: View) -> str | None:
    """Why the session goes: how it ended, or why its pending job never starts (it is cancelled)."""
    from hpcjup.session.views import SessionView

    if isinstance(view, SessionView) and view.active and view.hopeless:
        return f"never starts: {view.hopeless}"
    return view.why

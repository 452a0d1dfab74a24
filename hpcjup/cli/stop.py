"""`hpcjup stop`: shut Jupyter down cleanly, end the job, remove the secrets, close tunnels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.complete import complete_session
from hpcjup.errors import ExitCode, SchedulerUnavailable, UsageError

if TYPE_CHECKING:
    from hpcjup.session.views import SessionView


@click.command()
@click.argument("session", required=False, shell_complete=complete_session)
@host_options
@click.option("--all", "stop_all", is_flag=True, help="Stop every running session on the host.")
@click.option(
    "--grace",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Seconds Jupyter gets to shut down before the job is cancelled outright.",
)
@json_option
@click.pass_obj
def command(
    app: App, session: str | None, host: str | None, local: bool, stop_all: bool, grace: int, reach: Reach
) -> None:
    """Stop SESSION (or the only running one): Jupyter saves nothing new but shuts kernels down cleanly, then the job ends."""
    from hpcjup.session.liveholders import end_holder
    from hpcjup.session.overview import overview, pick_session
    from hpcjup.session.stop import stop_sessions, unanswered
    from hpcjup.session.views import SessionView

    if session and stop_all:
        raise UsageError("Give a SESSION or --all, not both.")
    host = app.resolve_host(host, local, session)
    with app.connect(host, reach) as transport:
        if stop_all:  # damaged sessions are skipped: `hpcjup ls` shows them, `hpcjup prune` removes them
            views = overview(transport, app.store)
            targets = [view for view in views if isinstance(view, SessionView) and view.active]
        else:
            targets = [pick_session(transport, app.store, session)]
            if unanswered(targets):  # its job may run on: nothing is cancelled, nothing removed
                raise not_confirmed(targets[0])
        with app.ui.status() as line:
            names = ", ".join(f"{v.record.name} (job {v.record.job_id})" for v in targets)
            line.update(f"Stopping {names}…")
            outcomes = stop_sessions(transport, targets, grace=grace) if targets else []
        for view in targets:
            if view in unanswered(targets):
                continue  # it may still run: this laptop's tunnel and cache entry stay too
            end_holder(app.store.load(host, view.record.name))
            app.store.remove(host, view.record.name)
    stopped = [outcome.__dict__ for outcome in outcomes]
    lines = [
        (
            f"Did not stop {o['name']} (job {o['job_id']}): the scheduler did not answer ({o['reason']}); "
            "nothing was changed"
            if not o["stopped"]
            else f"Stopped {o['name']} (job {o['job_id']}): "
            + (
                ("Jupyter shut down cleanly" if o["graceful"] else "cancelled after the grace period")
                if o["was_active"]
                else f"it had already ended ({o['state'].lower()})"
            )
            + _spared(o["workers_spared"])
        )
        for o in stopped
    ]
    app.ui.result({"host": host, "stopped": stopped}, text="\n".join(lines) or f"No running session on {host}.")
    if any(not o["stopped"] for o in stopped):
        raise SystemExit(int(ExitCode.REMOTE))  # as SchedulerUnavailable: some could not be stopped


def _spared(jobs: tuple[str, ...]) -> str:
    """What stop left running although the session had recorded it: a job under a name hpcjup did not give it."""
    if not jobs:
        return ""
    return f"; left job {', '.join(jobs)} running: recorded as a worker, but not named as this session's jobs"


def not_confirmed(view: SessionView) -> SchedulerUnavailable:
    """The error for stopping a session whose scheduler does not answer."""
    scheduler = view.scheduler.title or view.scheduler.name
    return SchedulerUnavailable(
        f"{scheduler} did not answer about job {view.record.job_id} of {view.record.name} "
        f"({view.status.reason or 'no answer'}): nothing was stopped or removed.",
        hint=f"Run `hpcjup stop {view.record.name}` again once {scheduler} answers; `hpcjup ls` shows its state.",
    )

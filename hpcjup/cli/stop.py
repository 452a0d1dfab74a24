"""`hpcjup stop`: shut Jupyter down cleanly, end the job, remove the secrets, close tunnels."""

from __future__ import annotations

import click

from hpcjup.cli.app import App, host_options, json_option
from hpcjup.errors import SessionNotFound, UsageError


@click.command()
@click.argument("session", required=False)
@host_options
@click.option("--all", "stop_all", is_flag=True, help="Stop every running session on the host.")
@click.option("--grace", type=click.IntRange(min=1), default=60, show_default=True, help="Seconds Jupyter gets to shut down before the job is cancelled outright.")
@json_option
@click.pass_obj
def command(app: App, session: str | None, host: str | None, local: bool, stop_all: bool, grace: int) -> None:
    """Stop SESSION (or the only running one): Jupyter saves nothing new but shuts kernels down cleanly, then the job ends."""
    from hpcjup.session.catalog import find_session, list_sessions
    from hpcjup.session.holder import end_holder
    from hpcjup.session.stop import stop_session

    if session and stop_all:
        raise UsageError("Give a SESSION or --all, not both.")
    host = app.resolve_host(host, local)
    with app.connect(host) as transport:
        scheduler = app.scheduler(host)
        if session:
            targets = [find_session(transport, session)]
        else:
            running = [(p, r) for p, r in list_sessions(transport) if scheduler.status(transport, r.job_id).state.active]
            if not running and not stop_all:
                raise SessionNotFound(f"No running session on {host}.", hint="`hpcjup ls` lists the sessions there.")
            if len(running) > 1 and not stop_all:
                names = ", ".join(r.name for _, r in running)
                raise UsageError(f"Several sessions run on {host}: {names}.", hint="Name one, or pass --all.")
            targets = running
        stopped = []
        with app.ui.status() as line:
            for paths, record in targets:
                line.update(f"Stopping {record.name} (job {record.job_id})…")
                outcome = stop_session(transport, scheduler, paths, record, grace=grace)
                end_holder(app.store.load(host, record.name))
                app.store.remove(host, record.name)
                stopped.append(outcome.__dict__)
    lines = [
        f"Stopped {o['name']} (job {o['job_id']}): " + (("Jupyter shut down cleanly" if o["graceful"] else "cancelled after the grace period") if o["was_active"] else f"it had already ended ({o['state'].lower()})")
        for o in stopped
    ]  # fmt: skip
    app.ui.result({"host": host, "stopped": stopped}, text="\n".join(lines) or f"No running session on {host}.")

"""`hpcjup attach`: reopen the tunnel to a running session, from this or any other laptop."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.complete import complete_session
from hpcjup.cli.detach import Detacher
from hpcjup.cli.holder import Holder, session_result

if TYPE_CHECKING:
    from hpcjup.session.store import CacheEntry


@click.command()
@click.argument("session", required=False, shell_complete=complete_session)
@host_options
@click.option("--local-port", type=click.IntRange(1, 65535), help="Local port (default: the one used before, if free).")
@click.option("--no-browser", is_flag=True, help="Print the URL, do not open a browser.")
@click.option(
    "-d", "--detach", is_flag=True, help="Return once the URL answers; a background process keeps the tunnel."
)
@json_option
@click.pass_obj
def command(
    app: App,
    session: str | None,
    host: str | None,
    local: bool,
    local_port: int | None,
    no_browser: bool,
    detach: bool,
    reach: Reach,
) -> None:
    """Reconnect to SESSION (or the only running one). A pending job is waited for; an ended one is explained."""
    from hpcjup.session.liveholders import end_holder, holder_pid
    from hpcjup.session.overview import ended_error, pick_session
    from hpcjup.session.wait import ReadyWaiter

    host = app.resolve_host(host, local, session)
    detacher = Detacher.prepare(local_port, detach)
    with app.connect_with_status(host, reach) as transport:
        view = pick_session(transport, app.store, session)
        scheduler = view.scheduler
        # The destination as this laptop reached it: session.json has it as the starting laptop spelt it, which
        # this one's ~/.ssh/config may not know. Reconnects, the cache, the log and every hint go by it.
        record = dataclasses.replace(view.record, host=host)
        if not view.active:
            raise ended_error(view, transport)
        cached = view.cached
        held = holder_pid(cached)
        tunnel = cached.tunnel if cached is not None and held is not None else None  # a live holder's
        held_conn = cached.connection if cached is not None else None
        if tunnel is not None and held_conn is not None and local_port in (None, tunnel.local_port):
            # Already held by a live process on this laptop: hand out its URL rather than a second tunnel.
            app.ui.result(session_result(record, held_conn, tunnel.local_port, tunnel.url), text=tunnel.url)
            app.ui.info(f"Session {record.name} is already attached here (pid {held}).")
            detacher.ready(app.store.log_path(record.host, record.name))
            return
        if tunnel is not None:  # held on another port: one holder per session, so the old tunnel moves to the new port
            end_holder(cached)
            app.ui.info(f"Closed the tunnel on port {tunnel.local_port} (pid {held}).")
        with app.ui.status() as line:
            from hpcjup.cli.start import progress_text

            waiter = ReadyWaiter(
                transport, scheduler, record, view.paths, lambda p: line.update(*progress_text(p)), known=view.status
            )
            conn = waiter.wait()  # returns at once for a running session; waits like start for a pending one
        Holder(app, transport, record, view.paths, conn, scheduler, reach=reach).serve(
            local_port=local_port or _previous_port(cached),
            open_browser=not (no_browser or detach),
            on_ready=lambda: detacher.ready(app.store.log_path(record.host, record.name)),
            time_left=waiter.status.time_left or view.status.time_left,
        )


def _previous_port(cached: CacheEntry | None) -> int | None:
    """The local port this laptop used for the session before, if it is free now (open tabs keep working)."""
    from hpcjup.errors import PortBusyError
    from hpcjup.tunnel import bind_loopback

    if cached is None:
        return None
    port = (cached.tunnel.local_port if cached.tunnel else None) or cached.last_local_port
    if port is None:
        return None
    try:
        bind_loopback(port).close()
        return port
    except PortBusyError:
        return None

"""`hpcjup url`, `open` and `disconnect`: the tunnels this laptop holds, without touching the network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from hpcjup.cli.app import App, json_option
from hpcjup.cli.complete import complete_session
from hpcjup.errors import SessionNotFound, UsageError

if TYPE_CHECKING:
    from hpcjup.session.liveholders import HeldEntry


def _one_held(app: App, session: str | None, host: str | None) -> HeldEntry:
    from hpcjup.session.liveholders import held_sessions

    entries = held_sessions(app.store, host, session)
    if not entries:
        what = f"Session {session}" if session else "No session"
        raise SessionNotFound(
            f"{what} is not attached on this laptop.{_why_closed(app, session, host)}",
            hint="Attach with `hpcjup attach -d SESSION`; `hpcjup ls` lists sessions.",
        )
    if len(entries) > 1:
        names = ", ".join(f"{e.record.name} ({e.host})" for e in entries)
        raise UsageError(f"Several sessions are attached: {names}.", hint="Name the one you mean.")
    return entries[0]


def _why_closed(app: App, session: str | None, host: str | None) -> str:
    """Why the named session's holder gave up (e.g. a refused reconnect), as its cache entry records it."""
    if not session:
        return ""
    for h in [host] if host else app.store.hosts():
        entry = app.store.load(h, session)
        error = entry.tunnel_error if entry else None
        if error is not None and error.message:
            return f" Its tunnel closed at {error.at}: {error.message}"
    return ""


def _result(held: HeldEntry) -> dict[str, Any]:
    return {
        "session": held.record.name,
        "host": held.host,
        "job_id": held.record.job_id,
        "local_port": held.tunnel.local_port,
        "url": held.tunnel.url,
        "pid": held.tunnel.pid,
    }


@click.command("url")
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("--host", metavar="DEST", help="Only sessions on this host.")
@json_option
@click.pass_obj
def url_command(app: App, session: str | None, host: str | None) -> None:
    """Print the local URL (with token) of an attached session."""
    held = _one_held(app, session, host)
    app.ui.result(_result(held), text=held.tunnel.url)


@click.command("open")
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("--host", metavar="DEST", help="Only sessions on this host.")
@json_option
@click.pass_obj
def open_command(app: App, session: str | None, host: str | None) -> None:
    """Open an attached session in the browser."""
    from hpcjup.ui.browser import open_url

    held = _one_held(app, session, host)
    opened = open_url(held.tunnel.url)
    app.ui.result({**_result(held), "opened": opened}, text=None if opened else held.tunnel.url)
    if not opened:
        app.ui.info("No browser here: open the URL above yourself.")


@click.command("disconnect")
@click.argument("session", required=False, shell_complete=complete_session)
@click.option("--host", metavar="DEST", help="Only sessions on this host.")
@click.option("--all", "all_", is_flag=True, help="Every attached session.")
@json_option
@click.pass_obj
def disconnect_command(app: App, session: str | None, host: str | None, all_: bool) -> None:
    """Close the tunnel only; the job keeps running (`hpcjup attach` reopens it)."""
    from hpcjup.session.liveholders import end_holder, held_sessions

    entries = held_sessions(app.store, host, session) if all_ else [_one_held(app, session, host)]
    for held in entries:
        end_holder(held.entry)
    names = [held.record.name for held in entries]
    app.ui.result(
        {"disconnected": names},
        text="\n".join(f"Disconnected {n}; its job keeps running." for n in names) or "Nothing was attached.",
    )

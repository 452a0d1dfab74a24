"""Find sessions on a host: the cluster's session directories are the source of truth."""

from __future__ import annotations

from hpcjup.errors import HpcjupError, SessionNotFound
from hpcjup.session.layout import SessionPaths, check_name
from hpcjup.session.record import SessionRecord
from hpcjup.transport.base import Transport


def list_sessions(transport: Transport) -> list[tuple[SessionPaths, SessionRecord]]:
    """Every session directory on the host that has a record, oldest first."""
    home = transport.home()
    found = []
    for name in sorted(transport.scan(SessionPaths(home, "x").root)):
        paths = SessionPaths(home, name)
        try:
            found.append((paths, SessionRecord.from_json(transport.read_file(paths.record))))
        except (FileNotFoundError, NotADirectoryError, HpcjupError):
            continue  # a half-made directory (interrupted start) or something not ours
    return sorted(found, key=lambda item: item[1].created_at)


def find_session(transport: Transport, name: str) -> tuple[SessionPaths, SessionRecord]:
    """The session called `name`; SessionNotFound lists the known ones."""
    paths = SessionPaths(transport.home(), check_name(name))
    try:
        return paths, SessionRecord.from_json(transport.read_file(paths.record))
    except FileNotFoundError:
        known = [record.name for _, record in list_sessions(transport)]
        raise SessionNotFound(
            f"No session {name!r} on {transport.name}.",
            hint=("Known sessions: " + ", ".join(known))
            if known
            else "There are no sessions there; start one with `hpcjup start`.",
        ) from None

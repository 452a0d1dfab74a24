"""What the last start learned about a host: its home directory and batch system.

The next `start` on that host then needs no probe before the upload: the upload's own remote
command checks both (the home is still the home, the scheduler's command is still on the PATH)
before it claims anything, and a start that finds them changed probes afresh and goes on. One
round trip less on every start but the first, which is most of what a laptop 150 ms from its
centre waits for before the job is submitted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from hpcjup.files import private_dirs, write_private
from hpcjup.schedulers import REGISTRY
from hpcjup.session.store import LocalStore


@dataclass(frozen=True)
class HostFacts:
    """A host's home directory (absolute, as `cd -P` gives it) and the scheduler a start detected there
    (None: every start there named its scheduler)."""

    home: str
    scheduler: str | None


def load(store: LocalStore, host: str) -> HostFacts | None:
    """The facts remembered for `host`, or None (none yet, or a file this version cannot use)."""
    try:
        data = json.loads(store.host_file("hosts", host).read_text())
    except (OSError, ValueError):
        return None
    home, scheduler = (data.get("home"), data.get("scheduler")) if isinstance(data, dict) else (None, None)
    if isinstance(home, str) and home.startswith("/") and "\n" not in home and isinstance(scheduler, str | None):
        return HostFacts(home, scheduler if scheduler in REGISTRY else None)
    return None


def save(store: LocalStore, host: str, facts: HostFacts) -> None:
    """Remember `facts` for `host` (0600, like the rest of the cache)."""
    path = store.host_file("hosts", host)
    private_dirs(path.parent)
    write_private(path, json.dumps(asdict(facts)).encode())

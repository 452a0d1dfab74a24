"""What the last start learned about a host: its home directory and batch system.

The next `start` on that host then needs no probe before the upload: the upload's own remote
command checks both (the home is still the home, the scheduler's command is still on the PATH)
before it claims anything, and a start that finds them changed probes afresh and goes on. One
round trip less on every start but the first, which is most of what a laptop 150 ms from its
centre waits for before the job is submitted.

For environments (`start --env`) it also remembers what their names depend on: each env root's
absolute path, each base Python's X.Y, machine and libc, and the Pythons found without JupyterLab
(a bare cluster's first start: its sessions then run JupyterLab from hpcjup's server environment): a warm start then names every
environment locally and the upload's command checks that they are built.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field

from hpcjup.files import private_dirs, write_private
from hpcjup.schedulers import REGISTRY
from hpcjup.session.store import LocalStore


@dataclass(frozen=True)
class HostFacts:
    """A host's home directory (absolute, as `cd -P` gives it) and the scheduler a start detected there
    (None: every start there named its scheduler)."""

    home: str
    scheduler: str | None
    roots: dict[str, str] = field(default_factory=dict)  # env_root setting -> its absolute path on the host
    pythons: dict[str, list[str]] = field(default_factory=dict)  # base Python asked for -> [X.Y, machine, libc]
    current: dict[str, str] = field(default_factory=dict)  # env_root setting -> the server-current env ("" none)
    no_jupyter: list[str] = field(default_factory=list)  # Pythons found without JupyterLab: starts use the server env


def load(store: LocalStore, host: str) -> HostFacts | None:
    """The facts remembered for `host`, or None (none yet, or a file this version cannot use)."""
    try:
        data = json.loads(store.host_file("hosts", host).read_text())
    except (OSError, ValueError):
        return None
    home, scheduler = (data.get("home"), data.get("scheduler")) if isinstance(data, dict) else (None, None)
    if isinstance(home, str) and home.startswith("/") and "\n" not in home and isinstance(scheduler, str | None):
        roots = data.get("roots") or {}
        pythons = data.get("pythons") or {}
        roots = (
            {k: v for k, v in roots.items() if _word(k) and _word(v) and v.startswith("/")}
            if isinstance(roots, dict)
            else {}
        )
        pythons = (
            {
                k: v
                for k, v in pythons.items()
                if _word(k) and isinstance(v, list) and len(v) == 3 and all(map(_word, v))
            }
            if isinstance(pythons, dict)
            else {}
        )
        current = data.get("current") or {}
        current = (
            {k: v for k, v in current.items() if _word(k) and (v == "" or (_word(v) and "/" not in v))}
            if isinstance(current, dict)
            else {}
        )
        no_jupyter = data.get("no_jupyter") or []
        no_jupyter = [p for p in no_jupyter if _word(p)] if isinstance(no_jupyter, list) else []
        return HostFacts(home, scheduler if scheduler in REGISTRY else None, roots, pythons, current, no_jupyter)
    return None


def _word(value: object) -> bool:
    """A remembered name or path: one line of text, no spaces (it goes into names and a remote argv)."""
    return isinstance(value, str) and 0 < len(value) < 4096 and not any(c.isspace() for c in value)


def learn(store: LocalStore, host: str, **changes: object) -> HostFacts | None:
    """Add environment facts (roots, pythons, current: merged; no_jupyter: replaced) to what is remembered for `host`."""
    facts = load(store, host)
    if facts is None:
        return None
    merged: dict[str, object] = {}
    for key, value in changes.items():
        merged[key] = {**getattr(facts, key), **value} if isinstance(value, dict) else value
    facts = dataclasses.replace(facts, **merged)  # type: ignore[arg-type]
    save(store, host, facts)
    return facts


def save(store: LocalStore, host: str, facts: HostFacts) -> None:
    """Remember `facts` for `host` (0600, like the rest of the cache)."""
    path = store.host_file("hosts", host)
    private_dirs(path.parent)
    write_private(path, json.dumps(asdict(facts)).encode())

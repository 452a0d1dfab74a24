"""Where hpcjup keeps its per-user state on this laptop (the sessions' cache, holders' locks, browser pages).

A leaf: the session cache (session/store.py) and the browser's redirect pages (ui/browser.py) both live
under it, and neither layer imports the other for it.
"""

from __future__ import annotations

from pathlib import Path


def state_dir() -> Path:
    """hpcjup's per-user state directory (XDG_STATE_HOME on Linux)."""
    from platformdirs import user_state_path

    return user_state_path("hpcjup", appauthor=False)

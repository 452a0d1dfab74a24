"""Opening the user's browser, without hijacking a terminal on a headless machine."""

from __future__ import annotations

import os
import sys


def open_url(url: str) -> bool:
    """Open `url` in a graphical browser; False where there is none."""
    # Without a display, Python's webbrowser falls back to text browsers (w3m, lynx) that
    # would take over the terminal holding the tunnel: only open one where a GUI exists.
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("BROWSER")
    ):
        return False
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False

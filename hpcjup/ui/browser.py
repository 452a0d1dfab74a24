"""Opening the user's browser, without hijacking a terminal and without the token in a command line."""

from __future__ import annotations

import html
import os
import stat
import sys
import time
from pathlib import Path

_REDIRECT = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="0;url={url}">
<title>Opening JupyterLab</title>
</head>
<body>
<p>This page should take you to <a href="{url}">JupyterLab</a>; if it does not, follow the link.</p>
</body>
</html>
"""
_KEEP_SECONDS = 600  # a browser reads the file after the launcher returns: keep it a while, then sweep it


def open_url(url: str) -> bool:
    """Open `url` in a graphical browser; False where there is none.

    The browser gets a file:// address of a 0600 page that redirects to `url`, as Jupyter does:
    `xdg-open URL` would show the token to every user of the machine in `ps`.
    """
    # Without a display, Python's webbrowser falls back to text browsers (w3m, lynx) that
    # would take over the terminal holding the tunnel: only open one where a GUI exists.
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("BROWSER")
    ):
        return False
    try:
        page = redirect_file(url)
    except OSError:
        return False  # no private place for the page: the user opens the printed URL, the token stays off argv
    import webbrowser

    try:
        return webbrowser.open(page.as_uri(), new=2)
    except webbrowser.Error:
        return False


def redirect_file(url: str, directory: Path | None = None) -> Path:
    """A 0600 HTML file in a 0700 directory that sends the browser on to `url`."""
    directory = directory or _private_dir()
    _sweep(directory)
    path = directory / f"open-{os.getpid()}-{time.monotonic_ns()}.html"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_REDIRECT.format(url=html.escape(url, quote=True)))
    return path


def _private_dir() -> Path:
    """hpcjup's state directory's `open/`, 0700 and ours (the pages hold the token)."""
    from hpcjup.statedir import state_dir

    path = state_dir() / "open"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():  # lstat: a symlink is refused too
        raise OSError(f"{path} is not a directory of this user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _sweep(directory: Path) -> None:
    """Remove pages older than a few minutes: their browser has long read them."""
    cutoff = time.time() - _KEEP_SECONDS
    for old in directory.glob("open-*.html"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass  # another hpcjup swept it first

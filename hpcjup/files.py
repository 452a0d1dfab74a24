"""Writing files on this machine: atomically, private to the user, in directories only the user can enter.

The laptop's cache, config.toml, ssh's wrapper config and the files `--local` jobs read all hold
secrets or must never be seen half written, so they are written one way: a temporary file in the
same directory (a rename across file systems is not atomic), its mode set before any byte is in
it, then `os.replace`. The job side has its own copy (hpcjup/job/ is standard library only).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically with exactly `mode` (0600 unless told); no temporary file is left behind."""
    directory, name = os.path.split(os.fspath(path))
    # mkstemp makes the file 0600 whatever the umask, so the data is never readable by others in between.
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            # Exact (a mode given to open() is filtered by the umask); by path, as Windows has no fchmod.
            os.chmod(tmp, mode)
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_dirs(path: Path) -> None:
    """mkdir -p `path`, each directory it creates 0700 (whatever the umask)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)

"""The job side's one way to write a file others read while it changes: private and whole (standard library only).

Shipped beside launcher.py; the launcher and dasklaunch.py import it from there.
"""

from __future__ import annotations

import contextlib
import datetime
import os


def write_private(path: str, data: bytes) -> None:
    """Write 0600 under a temporary name, fsync, rename: readers never see half a file, nobody else reads it."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)  # the laptop reads it from another host (shared file system): a crash must not leave it empty
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # no half-written temporary file left behind (a full disk)
            os.unlink(tmp)
        raise


def now() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return iso(datetime.datetime.now(datetime.timezone.utc).timestamp())


def iso(epoch: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")

"""The session's private node-local directory: where its sockets and runtime files live (standard library only).

Shipped beside launcher.py. The session directory sits on a shared filesystem and its path can be
long; Unix sockets want node-local storage and a short path (sun_path holds 107 bytes), and what is
in this directory must be out of reach of every other user of the node. So: a fresh directory with
an unguessable name under $TMPDIR (when that is short enough) or /tmp, made by `mkdtemp` (mode 0700,
created exclusively: nobody can have made it first), and checked after the fact: a real directory,
ours, 0700. Nothing here is ever a predictable shared name such as /tmp/hpcjup-UID-SESSION.

What goes in it: Jupyter's runtime files (JUPYTER_RUNTIME_DIR: jpserver-PID.json, which holds the
token, and each kernel's connection file), the kernels' ZeroMQ IPC sockets beside their connection
files, the Dask dashboard's socket, Jupyter's own socket with --socket, Dask's scratch space.
"""

from __future__ import annotations

import os
import stat
import tempfile

#: Room the longest path inside needs: kernel-<36-char uuid>-ipc-<port>, Jupyter's connection file name plus
#: jupyter_client's IPC suffix; sun_path holds 107 bytes and a leading slash.
_LONGEST_NAME = 60
_SUN_PATH = 107


class NotPrivate(OSError):
    """The directory is not ours alone (owner, mode or type wrong): never used."""


def base_dir() -> str:
    """Where the private directory goes: $TMPDIR when it is an absolute, short, existing directory (the batch
    system's per-job node-local space on many clusters), else /tmp."""
    tmp = os.environ.get("TMPDIR") or ""
    if tmp.startswith("/") and os.path.isdir(tmp) and len(tmp) + 1 + 20 + _LONGEST_NAME <= _SUN_PATH:
        return tmp
    return "/tmp"


def make_private_dir(prefix: str = "hpcjup-") -> str:
    """A new directory only this user can enter (0700, unguessable name, checked); its absolute path."""
    path = tempfile.mkdtemp(prefix=prefix, dir=base_dir())
    check_private(path)
    return path


def check_private(path: str) -> None:
    """NotPrivate unless `path` is a directory (not a link) owned by this user with mode 0700."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) != 0o700:
        raise NotPrivate(f"{path} is not a private directory of this user (owner {info.st_uid}, mode {info.st_mode:o})")


def short_enough(path: str) -> bool:
    """Whether a Unix socket at `path` fits in sun_path."""
    return len(os.fsencode(path)) <= _SUN_PATH

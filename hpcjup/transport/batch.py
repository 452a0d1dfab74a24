"""Many files in one remote command: a tar stream each way, so a command's round trips stay constant.

Reading: `find` picks the regular files (bounded in size) and one `tar` streams them back; the
laptop unpacks the archive in memory with the standard library. Writing: the laptop packs the
files (with their modes) into one archive that one remote `tar -x` unpacks. Both need only a POSIX
shell, `find` and `tar` on the login node, which every Linux login node has.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Files read from the cluster are JSON documents of a few KB; anything larger is not ours.
READ_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Entry:
    """One file or directory of an archive read from the cluster."""

    path: str  # relative to the directory that was read
    data: bytes | None  # None for a directory
    mtime: float


def pack(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A tar archive of relative path -> (content, mode); parent directories get 0700."""
    buffer = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        made: set[str] = set()
        for path, (data, mode) in files.items():
            _check_relative(path)
            parts = path.split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in made:
                    made.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, now
                    archive.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, now
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpack(raw: bytes, limit: int = READ_LIMIT) -> list[Entry]:
    """The regular files and directories of an archive read from the cluster (nothing is written).

    Members that are neither, absolute or `..` paths, and files over `limit` are left out: the
    archive comes from the cluster and is not trusted.
    """
    entries: list[Entry] = []
    if not raw:
        return entries
    try:
        archive = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except tarfile.TarError:
        return entries
    with archive:
        try:
            for member in archive:
                path = member.name.removeprefix("./").rstrip("/")
                if not path or path.startswith("/") or ".." in path.split("/"):
                    continue
                if member.isdir():
                    entries.append(Entry(path, None, float(member.mtime)))
                elif member.isreg() and member.size <= limit:
                    fh = archive.extractfile(member)
                    entries.append(Entry(path, fh.read() if fh else b"", float(member.mtime)))
        except (tarfile.TarError, OSError, EOFError):
            pass  # a truncated archive (the command was cut short): what came whole is kept
    return entries


def read_script(depth: int, names: Iterable[str], limit: int = READ_LIMIT) -> str:
    """A sh script that prints the home directory on a line of its own, then streams as tar the
    directories up to `depth` below "$1" (relative to home, or absolute) and the files among them
    named `names` that are regular and at most `limit` bytes; no archive if "$1" does not exist.
    """
    pattern = " -o ".join(f"-name {_sh_word(name)}" for name in names)
    # cd -P with no operand: home, symlinks resolved, in $PWD (no subshell for pwd).
    # -size -Nc: fewer than N bytes. Directories come too, so a session directory without files is seen.
    return (
        'cd -P || exit 1; printf "%s\\n" "$PWD"; cd -- "$1" 2>/dev/null || exit 0; '
        f"find . -mindepth 1 -maxdepth {depth} \\( -type d -o -type f \\( {pattern} \\) -size -{limit + 1}c \\) -print "
        "| tar -cf - --no-recursion -T - 2>/dev/null; exit 0"
    )


def _sh_word(name: str) -> str:
    if not name.replace(".", "").replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"not a plain file name: {name!r}")
    return name


def _check_relative(path: str) -> None:
    if not path or path.startswith("/") or ".." in path.split("/") or "\n" in path:
        raise ValueError(f"not a relative path inside the session: {path!r}")

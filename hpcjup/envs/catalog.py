"""The environments built on a host: listed (one remote command for all), removed, and pruned when unused.

Whether a running session uses an environment is session/'s decision (session/envuse.py): `remove` and
`prune` take it as a plain function, `in_use(path)` -> the sessions using it, so envs/ imports nothing of
session/ (the layer above it).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from hpcjup.envs import script
from hpcjup.envs.errors import EnvBuildError, EnvInUse, EnvNotFound
from hpcjup.envs.pack import Image, image_of
from hpcjup.transport.base import Transport

#: path -> the running or pending sessions that use the environment there (session/envuse.py's `in_use`).
InUse = Callable[[str], list[str]]


@dataclass(frozen=True)
class EnvInfo:
    """One built environment: its name and path, size, file count, last use, and what it was built from."""

    name: str
    path: str
    kb: int
    files: int
    last_used: int  # epoch seconds: the last start (or build) that used it
    meta: dict[str, Any]
    current_server: bool = False  # the server environment new sessions run JupyterLab from (never pruned)
    image: Image | None = None  # its SquashFS image beside it (envs/pack.py), if packed
    beside: int = 0  # its files beside the tree on the shared filesystem: the image, its bad-mark, its log

    @property
    def shared_files(self) -> int:
        """What it costs in inodes on the shared filesystem: the tree (`files`) and what lies beside it."""
        return self.files + self.beside

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_envs(transport: Transport, root: str) -> tuple[str, list[EnvInfo]]:
    """The env root (absolute, on the host) and every environment built under it."""
    result = transport.run(["sh", "-c", script.SCRIPT, "hpcjup-env", "ls", root], timeout=600)
    lines = result.stdout.splitlines()
    absolute = next((line[len("@@hpcjup root ") :] for line in lines if line.startswith("@@hpcjup root ")), root)
    current = next((line.split(" ", 2)[2] for line in lines if line.startswith("@@hpcjup current ")), None)
    found: list[EnvInfo] = []
    beside = {parts[1]: parts[2:] for parts in (line.split(" ") for line in lines if line.startswith("@@beside "))}
    for head, body in itertools.pairwise(lines):
        if not head.startswith("@@env "):
            continue
        parts = head.split(" ")
        if len(parts) != 5 or not all(p.isdigit() for p in parts[2:]):
            continue
        try:
            meta = json.loads(body)
        except ValueError:
            meta = {}
        name = parts[1]
        sizes = int(parts[2]), int(parts[3]), int(parts[4])
        extra = beside.get(name, [])
        image = image_of(meta, bad="bad" in extra) if "sqsh" in extra else None
        found.append(EnvInfo(name, f"{absolute}/{name}", *sizes, meta, name == current, image=image, beside=len(extra)))
    return absolute, found


def remove(transport: Transport, root: str, names: list[str], in_use: InUse) -> str:
    """Remove environments by name (all or none); refused while a running session uses one. The absolute root."""
    absolute, envs = list_envs(transport, root)
    known = {env.name: env for env in envs}
    for name in names:
        if name not in known:
            raise EnvNotFound(f"No environment {name!r} under {absolute}.", hint="`hpcjup env ls` lists them.")
        using = in_use(known[name].path)
        if using:
            raise EnvInUse(
                f"{name} is used by running session(s) {', '.join(using)}.",
                hint="Stop them first (`hpcjup stop NAME`), then remove it.",
            )
    result = transport.run(["sh", "-c", script.SCRIPT, "hpcjup-env", "rm", root, *names], check=False)
    if result.returncode != 0:
        raise EnvBuildError(f"Could not remove {', '.join(names)}: {result.stderr.strip()}", hint="Try again.")
    return absolute


def prune(
    transport: Transport, root: str, days: int, in_use: InUse, *, dry_run: bool = False
) -> tuple[str, list[EnvInfo]]:
    """Remove the environments unused for `days` days that no running session uses, in one command for all
    (which checks each one's last use again: a start since this listing keeps its env). The absolute root and
    what was (or, with `dry_run`, would be) removed."""
    absolute, envs = list_envs(transport, root)
    cutoff = time.time() - days * 86400
    doomed = [env for env in envs if env.last_used < cutoff and not env.current_server and not in_use(env.path)]
    if dry_run or not doomed:
        return absolute, doomed
    argv = ["sh", "-c", script.SCRIPT, "hpcjup-env", "prune", root, str(days), *(env.name for env in doomed)]
    out = transport.run(argv, check=False).stdout.splitlines()
    gone = {line.split(" ")[2] for line in out if line.startswith("@@hpcjup removed ")}
    return absolute, [env for env in doomed if env.name in gone]

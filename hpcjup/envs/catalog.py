"""The environments built on a host, and the container images pulled there: listed (one remote command for all),
removed, and pruned when unused.

Whether a running session uses an environment is session/'s decision (session/envuse.py): `remove` and
`prune` take it as a plain function, `in_use(path)` -> the sessions using it, so envs/ imports nothing of
session/ (the layer above it).
"""

from __future__ import annotations

import itertools
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from hpcjup.envs import container_script, script
from hpcjup.envs.errors import EnvBuildError, EnvInUse, EnvNotFound
from hpcjup.envs.pack import Image, image_of
from hpcjup.transport.base import Transport

#: path -> the running or pending sessions that use the environment there (session/envuse.py's `in_use`).
InUse = Callable[[str], list[str]]


@dataclass(frozen=True)
class EnvInfo:
    """One built environment: its name and path, size and file count on the shared filesystem, last use, and what
    it was built from."""

    name: str
    path: str
    kb: int  # its directory on the shared filesystem (without its tree: a few KB)
    files: int
    last_used: int  # epoch seconds: the last start (or build) that used it
    meta: dict[str, Any]
    current_server: bool = False  # the server environment new sessions run JupyterLab from (never pruned)
    image: Image | None = None  # its SquashFS image beside it (envs/pack.py), if packed
    beside: int = 0  # its files beside the tree on the shared filesystem: the image, its bad-mark, its log
    tree: bool = True  # False: its tree was dropped after packing (envs/pack.py); the image is the environment

    @property
    def shared_files(self) -> int:
        """What it costs in inodes on the shared filesystem: its directory (`files`) and what lies beside it."""
        return self.files + self.beside

    def _packed(self, key: str) -> int | None:
        """A figure of the tree as its image's metadata recorded it when packing (`tree_files`, `tree_kb`)."""
        image = self.meta.get("image")
        value = image.get(key) if isinstance(image, dict) else None
        return value if isinstance(value, int) else None

    @property
    def inside_files(self) -> int:
        """The files of the environment itself: its tree's, or, where that was dropped, its image's (as packed)."""
        counted = None if self.tree else self._packed("tree_files")
        return self.files if self.tree else 0 if counted is None else counted

    @property
    def size_kb(self) -> int:
        """Its size unpacked: the tree's, or, where that was dropped, the tree's as packed."""
        packed = None if self.tree else self._packed("tree_kb")
        return self.kb if packed is None else packed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "inside_files": self.inside_files, "shared_files": self.shared_files}


@dataclass(frozen=True)
class ImageInfo:
    """One pulled container image (envs/container.py): its file or directory, the ref it was pulled as and the
    registry's digest then, the runtime that runs it, size, file count, last use, and whether a ref still names it
    (False: a tag that moved since left it behind)."""

    name: str
    path: str
    kb: int
    files: int
    last_used: int  # epoch seconds: the last start that used it (or its pull)
    runtime: str | None
    digest: str | None  # the registry's manifest digest it was pulled as (None: pulled before hpcjup recorded it)
    current: bool
    ref: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _images_argv(action: str, root: str, *args: str) -> list[str]:
    return ["sh", "-c", container_script.CATALOG, "hpcjup-images", action, root, *args]


def list_envs(transport: Transport, root: str) -> tuple[str, list[EnvInfo]]:
    """The env root (absolute, on the host) and every environment built under it."""
    absolute, envs, _ = list_all(transport, root)
    return absolute, envs


def list_all(transport: Transport, root: str) -> tuple[str, list[EnvInfo], list[ImageInfo]]:
    """The env root (absolute, on the host), every environment built under it and every image pulled into it,
    in one remote command."""
    both = (
        f"{shlex.join(['sh', '-c', script.SCRIPT, 'hpcjup-env', 'ls', root])} && {shlex.join(_images_argv('ls', root))}"
    )
    result = transport.run(["sh", "-c", both], timeout=600)
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
        files = sum(1 for word in extra if word in ("sqsh", "bad", "log"))
        found.append(
            EnvInfo(
                name,
                f"{absolute}/{name}",
                *sizes,
                meta,
                name == current,
                image=image,
                beside=files,
                tree="notree" not in extra,
            )
        )
    return absolute, found, [pulled for line in lines if (pulled := _image_line(line, absolute)) is not None]


def _image_line(line: str, absolute: str) -> ImageInfo | None:
    """`@@image NAME KB FILES USED RUNTIME REMOTE CURRENT REF` (container_script.CATALOG; `-`: not known) as an
    ImageInfo; None for any other line or a malformed one."""
    parts = line.split(" ")
    if (
        len(parts) != 9
        or parts[0] != "@@image"
        or not all(p.isdigit() for p in parts[2:5])
        or parts[7] not in ("0", "1")
    ):
        return None
    name, kb, files, used, runtime, digest, current, ref = parts[1:]
    known = {k: (None if v == "-" else v) for k, v in (("runtime", runtime), ("digest", digest), ("ref", ref))}
    path = f"{absolute}/{container_script.IMAGES}/{name}"
    return ImageInfo(name, path, int(kb), int(files), int(used), current=current == "1", **known)


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
) -> tuple[str, list[EnvInfo], list[ImageInfo]]:
    """Remove the environments and images unused for `days` days that no running session uses, in one command for
    all (which checks each one's last use again: a start since this listing keeps it). The absolute root and what
    was (or, with `dry_run`, would be) removed."""
    absolute, envs, images = list_all(transport, root)
    cutoff = time.time() - days * 86400
    doomed = [env for env in envs if env.last_used < cutoff and not env.current_server and not in_use(env.path)]
    old = [image for image in images if image.last_used < cutoff and not in_use(image.path)]
    if dry_run or not (doomed or old):
        return absolute, doomed, old
    commands = [["sh", "-c", script.SCRIPT, "hpcjup-env", "prune", root, str(days), *(env.name for env in doomed)]]
    commands += [_images_argv("prune", root, str(days), *(image.name for image in old))]
    out = transport.run(["sh", "-c", "; ".join(map(shlex.join, commands))], check=False).stdout.splitlines()
    gone = {line.split(" ")[2] for line in out if line.startswith("@@hpcjup removed ")}
    return absolute, [env for env in doomed if env.name in gone], [image for image in old if image.name in gone]

"""Charliecloud images as SquashFS files: which of a job's commands run one, and how the job gets it mounted.

Debian's ch-run 0.31 has no built-in SquashFUSE ("unknown feature: squash"): it runs an image directory only. A
SquashFS image (what `docker://` pulls become, container_script.py, or a user's own .sqfs) is therefore handed to
job/envlocal.sh as an `image:FILE` argument: on each node it copies the file to node-local storage once, checks
it, mounts it with squashfuse (or unpacks it where FUSE is not usable), and renames FILE in the command it runs,
also inside an argument (`--python-command`, `--kernel NAME=...`), to that node's mount directory.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

#: The argument kind of job/envlocal.sh for an image file to mount (its ENVDIR arguments are absolute paths).
ARG = "image:"
#: What names a SquashFS image file (ch-convert's own suffixes, and .sqsh as hpcjup packs environments).
SUFFIXES = (".sqfs", ".squashfs", ".squash", ".squishy", ".sqsh")


def is_squash(path: str) -> bool:
    """Whether `path` names a SquashFS image file (by its suffix, as ch-convert tells formats)."""
    return path.rstrip("/").endswith(SUFFIXES)


def squash_images(argv: Sequence[str]) -> list[str]:
    """The SquashFS images that `ch-run` runs in a command (its IMAGE: the word before ch-run's `--`)."""
    found = []
    for at, word in enumerate(argv):
        rest = list(argv[at:])
        if word.rsplit("/", 1)[-1] == "ch-run" and "--" in rest:
            image = rest[rest.index("--") - 1]
            if is_squash(image) and image not in found:
                found.append(image)
    return found


def mount_args(commands: Sequence[Sequence[str] | str]) -> list[str]:
    """envlocal.sh's `image:FILE` arguments for every SquashFS image these commands (argv lists, or shell-quoted
    command lines) run with ch-run, each once."""
    images: list[str] = []
    for command in commands:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        images += [image for image in squash_images(argv) if image not in images]
    return [f"{ARG}{image}" for image in images]

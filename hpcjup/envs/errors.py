"""The errors of environment specs and builds (each with its hint and exit code)."""

from __future__ import annotations

from collections.abc import Sequence

from hpcjup.errors import ExitCode, HpcjupError

_FULL = ("quota exceeded", "no space left on device")  # the OS's words (EDQUOT, ENOSPC) as tools print them


class EnvSpecError(HpcjupError):
    """A spec hpcjup cannot build: a file needing root, two binder directories, a bad runtime.txt."""

    exit_code = ExitCode.USAGE


class EnvBuildError(HpcjupError):
    """A build failed on the host (the resolver's or postBuild's own words are in `details`)."""

    exit_code = ExitCode.ENV_BUILD


class EnvInUse(HpcjupError):
    """An environment a running session uses cannot be removed."""

    exit_code = ExitCode.USAGE


class EnvNotFound(HpcjupError):
    """No built environment by that name on the host."""

    exit_code = ExitCode.NOT_FOUND


def said_full(words: str) -> bool:
    """Whether a tool's words say the file system or the quota is full."""
    return any(full in words.lower() for full in _FULL)


def disk_full(host: str, root: str, needs: str, space: Sequence[str], words: str) -> EnvBuildError:
    """The error of a build the file system stopped: which directory, what the env needs, what is left there."""
    avail, inodes = [*space, "?", "?"][:2]
    left = f" ({int(avail) / 1024:.0f} MB and {inodes} inodes free there now)" if avail.isdigit() else ""
    return EnvBuildError(
        f"The environment did not fit under {root} on {host}: the disk or your quota there is full. "
        f"It needs more than {needs}{left}.",
        hint="Free space there (`hpcjup env ls`, `hpcjup prune --envs DAYS`), or put environments on a larger "
        "file system (the `env_root` setting, e.g. $PROJECT/.hpcjup/envs); nothing was left half-built.",
        details=words or None,
    )

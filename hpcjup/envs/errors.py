"""The errors of environment specs and builds (each with its hint and exit code)."""

from __future__ import annotations

from hpcjup.errors import ExitCode, HpcjupError


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

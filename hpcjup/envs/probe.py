"""What a build is told and shows: the host's answer about an environment (`Probe`) and the build's display
(`Progress`); in a module of their own so the ways of building (build.py, buildjob.py, conda_offline.py) share them
without importing each other in a circle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Progress(Protocol):
    """What a build shows while it runs (hpcjup.envs.progress renders it on the UI)."""

    def phase(self, name: str) -> None: ...
    def line(self, text: str) -> None: ...


@dataclass(frozen=True)
class Probe:
    """What the host said about an environment: its name and root, whether it is built, its Python, uv."""

    root: str
    home: str
    name: str | None
    built: bool
    python_version: str | None  # X.Y of the interpreter found
    machine: str | None
    libc: str | None
    interpreter: str | None  # its path on the host
    stage: str | None  # where the spec was staged for a build
    uv: str | None
    uv_sha: str | None  # "host" for the host's own uv
    offline: bool = False  # the build's probe found no package index reachable from the host
    index: str | None = None  # the index it tried
    conda: str | None = None  # a conda spec's build probe: `TOOL|rattler|none KERNEL` (hpcjup.envs.conda)

    @property
    def path(self) -> str:
        """The environment's directory on the host."""
        return f"{self.root}/{self.name}"

"""A build's progress on the UI: phase, the tools' latest line and the elapsed time.

On a terminal one live status line (ui.status()); otherwise plain lines: each phase once, and
the tools' own lines as they come (a log or CI shows what the resolver said).
"""

from __future__ import annotations

import time
from types import TracebackType

from hpcjup.ui import UI
from hpcjup.ui.console import StatusLine


class BuildDisplay:
    """The Progress of hpcjup.envs.build, shown through a UI; a context manager around the build."""

    def __init__(self, ui: UI, what: str) -> None:
        self.ui = ui
        self.what = what
        self.started = time.monotonic()
        self.current = "checking"
        self.last = ""
        self._status: StatusLine | None = None

    def __enter__(self) -> BuildDisplay:
        self._status = self.ui.status().__enter__()
        self._show(plain=f"{self.what}: checking")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._status is not None:
            self._status.__exit__(kind, exc, tb)

    def phase(self, name: str) -> None:
        self.current = name
        self._show(plain=f"{self.what}: {name} ({self._elapsed()})")

    def line(self, text: str) -> None:
        if text:
            self.last = text.strip()
            if not self.ui.interactive:
                self.ui.info(f"  {self.last}")
        self._show()

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.0f} s"

    def _show(self, plain: str | None = None) -> None:
        if self._status is None:
            return
        if self.ui.interactive:
            tail = f" · {self.last[:80]}" if self.last else ""
            self._status.update(f"{self.what}: {self.current} ({self._elapsed()}){tail}")
        elif plain is not None:
            self._status.update(plain, key=plain)

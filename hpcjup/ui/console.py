"""The UI object every command writes through.

Results go to stdout (text, or exactly one JSON object with `--json`); progress,
notes and errors go to stderr, so `hpcjup start --json | jq` sees only the result.
No spinner and no colour unless stderr is a terminal and NO_COLOR is unset.

Text is plain unless a caller says `markup=True` (see ui/markup.py for why, and how).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpcjup.errors import HpcjupError
from hpcjup.ui.markup import plain, styled

if TYPE_CHECKING:
    from rich.console import Console


class UI:
    """Where a command's output goes, and in which form."""

    def __init__(
        self, *, json_mode: bool = False, quiet: bool = False, verbose: int = 0, err: Console | None = None
    ) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self._err = err  # tests pass a recording console; otherwise made on first use

    @property
    def err(self) -> Console:
        """A rich console on stderr, created on first use (importing rich costs startup time)."""
        if self._err is None:
            from rich.console import Console

            plain = bool(os.environ.get("NO_COLOR")) or not (sys.stderr.isatty() and sys.stdout.isatty())
            # soft_wrap off a terminal: a log or a script's grep wants whole lines, not rich's 80 columns.
            self._err = Console(
                stderr=True,
                highlight=False,
                no_color=plain,
                force_terminal=None if not plain else False,
                soft_wrap=plain,
            )
        return self._err

    @property
    def interactive(self) -> bool:
        """Whether a person watches (spinners and colour make sense): both streams on a terminal, no NO_COLOR."""
        return sys.stdout.isatty() and sys.stderr.isatty() and not os.environ.get("NO_COLOR") and not self.quiet

    def info(self, text: str, *, markup: bool = False) -> None:
        """A note for the person at the terminal (suppressed by -q); `markup=True` only for hpcjup's own markup."""
        if not self.quiet:
            self.err.print(styled(text, markup))

    def warn(self, text: str, *, markup: bool = False) -> None:
        """A warning; shown even with -q."""
        self.err.print(plain("warning:", "yellow" if self.interactive else ""), styled(text, markup))

    def result(self, data: dict[str, Any], text: str | Callable[[], str] | None = None) -> None:
        """A command's result: JSON with --json, else the text form (or nothing)."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, default=str) + "\n")
        elif text is not None:
            sys.stdout.write((text() if callable(text) else text) + "\n")
        sys.stdout.flush()

    def error(self, exc: HpcjupError) -> None:
        """Report a failure: message, details, hint on stderr; with --json also the JSON form on stdout."""
        if self.json_mode:
            sys.stdout.write(json.dumps({"error": exc.to_dict()}) + "\n")
            sys.stdout.flush()
        self.err.print(plain("error:", "bold red" if self.interactive else ""), plain(exc.message))
        if exc.details:
            self.err.print(plain(exc.details, "dim"))
        if exc.hint:
            self.err.print(plain(f"hint: {exc.hint}"))

    def table(self, rows: list[dict[str, Any]], host: str) -> str:
        """The text form of `ls`."""
        from hpcjup.ui.tables import sessions_table

        return sessions_table(rows, host, color=self.interactive)

    def status(self) -> StatusLine:
        """A live status line on stderr (a spinner on a terminal, plain lines otherwise)."""
        return StatusLine(self)


class StatusLine:
    """One updating line; without a terminal it prints a line only when the state changes."""

    def __init__(self, ui: UI) -> None:
        self.ui = ui
        self._live: Any = None
        self._last_key: str | None = None

    def __enter__(self) -> StatusLine:
        if self.ui.interactive:
            self._live = self.ui.err.status("")
            self._live.start()
        return self

    def update(self, text: str, key: str | None = None, *, markup: bool = False) -> None:
        """Show `text`; `key` (default: the text) decides what counts as a change for plain output."""
        if self._live is not None:
            self._live.update(styled(text, markup))
        elif not self.ui.quiet and (key or text) != self._last_key:
            self._last_key = key or text
            self.ui.err.print(styled(text, markup))

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

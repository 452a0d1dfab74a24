"""The UI object every command writes through.

Results go to stdout (text, or exactly one JSON object with `--json`); progress,
notes and errors go to stderr, so `hpcjup start --json | jq` sees only the result.
No spinner and no colour unless stderr is a terminal and NO_COLOR is unset.

Text is plain unless a caller says `markup=True`: messages carry node names, pending reasons and
paths from the cluster, and rich would read `[link=...]` or `[/bold]` in them as markup (a disguised
link, or a crash). Control characters (a terminal escape sequence in a job name) are shown as escapes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpcjup.errors import HpcjupError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# C0 controls but newline and tab, DEL and the C1 controls: ESC starts terminal sequences, CR overwrites lines.
# Also Unicode's bidirectional overrides and isolates: they reorder what follows them on screen.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(text: str) -> str:
    """`text` with its control characters written as \\xNN (\\uNNNN), so none reaches the terminal."""
    return _CONTROL.sub(_escaped, str(text))


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with no character that a terminal would act on rather than show (for text from the cluster
    written to a terminal as it is, such as a job's log): control characters become \\xNN, newlines and tabs stay."""
    return _visible(text)


def plain(text: str, style: str = "") -> Text:
    """`text` as it is, for rich: never read as markup, control characters shown as \\xNN."""
    from rich.text import Text

    return Text(_visible(text), style=style)


def escape(value: object) -> str:
    """`value` for a `markup=True` message: rich reads none of it as a tag (e.g. a node name from the cluster)."""
    from rich.markup import escape as escape_markup

    return escape_markup(_visible(str(value)))


def _text(text: str, markup: bool) -> Text:
    """hpcjup's own markup (`markup=True`, values inside escaped by the caller), or plain text."""
    from rich.text import Text

    return Text.from_markup(_visible(text), emoji=False) if markup else plain(text)


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
            self.err.print(_text(text, markup))

    def warn(self, text: str, *, markup: bool = False) -> None:
        """A warning; shown even with -q."""
        self.err.print(plain("warning:", "yellow" if self.interactive else ""), _text(text, markup))

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
            self._live.update(_text(text, markup))
        elif not self.ui.quiet and (key or text) != self._last_key:
            self._last_key = key or text
            self.ui.err.print(_text(text, markup))

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

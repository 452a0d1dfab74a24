"""Text from the cluster on its way to rich: never read as markup, no character a terminal would act on.

Messages carry node names, pending reasons and paths from the cluster, and rich would read `[link=...]`
or `[/bold]` in them as markup (a disguised link, or a crash); control characters (a terminal escape
sequence in a job name) are shown as escapes. A leaf below console.py and tables.py, which both use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcjup.text import visible as text_visible

if TYPE_CHECKING:
    from rich.text import Text


def visible(text: str) -> str:
    """`text` with no character that a terminal would act on rather than show (for text from the cluster
    written to a terminal as it is, such as a job's log): control characters become \\xNN, bidirectional
    overrides \\uNNNN, newlines and tabs stay (hpcjup.text's one escaping)."""
    return text_visible(str(text), bidi=True)


def plain(text: str, style: str = "") -> Text:
    """`text` as it is, for rich: never read as markup, control characters shown as \\xNN."""
    from rich.text import Text

    return Text(visible(text), style=style)


def escape(value: object) -> str:
    """`value` for a `markup=True` message: rich reads none of it as a tag (e.g. a node name from the cluster)."""
    from rich.markup import escape as escape_markup

    return escape_markup(visible(str(value)))


def styled(text: str, markup: bool) -> Text:
    """hpcjup's own markup (`markup=True`, values inside escaped by the caller), or plain text."""
    from rich.text import Text

    return Text.from_markup(visible(text), emoji=False) if markup else plain(text)

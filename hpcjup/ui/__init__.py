"""Output: rich text on a terminal, one JSON object for scripts. The only package that imports rich."""

from hpcjup.ui.console import UI
from hpcjup.ui.markup import escape, visible

__all__ = ["UI", "escape", "visible"]

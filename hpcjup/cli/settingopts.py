"""Command-line options made from the settings' schema: one help text, type, range and choice list per setting.

`hpcjup start`, `doctor` and `profile create` take settings on the command line; each such option is
`setting_option(NAME, FLAGS...)`, whose help, type (an int's range, a string's choices, a flag for a bool)
and shown default come from `config/schema.py`'s `KEYS[NAME]`, the same entry that checks config.toml, site
presets and `HPCJUP_*` variables. The option's parameter is the setting's name, so `typed_options` reads
what was typed without renaming. Click gets no default: the resolver applies the schema's (command line >
environment > profile > site > built-in), so an option left out never hides a profile's value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from hpcjup.config.schema import KEYS

F = TypeVar("F", bound=Callable[..., Any])


def setting_option(name: str, *flags: str, metavar: str | None = None, more: str = "") -> Callable[[F], F]:
    """A click option for setting NAME under FLAGS (`--a/--b` for a bool that can be said both ways).

    `more` adds a sentence for this command only (the schema's text stays the one description)."""
    key = KEYS[name]
    text = key.help[:1].upper() + key.help[1:]
    help_text = f"{text}.{' ' + more if more else ''}"
    kwargs: dict[str, Any] = {"help": help_text, "default": None, "show_default": False}
    if key.default is not None and key.type is not bool:
        kwargs["help"] += f"  [default: {key.default}]"
    if key.type is bool:
        if not any("/" in flag for flag in flags):
            kwargs.update(is_flag=True, flag_value=True)
    elif key.type is int:
        kwargs["type"] = click.IntRange(min=key.low, max=key.high)
    elif key.choices:
        kwargs["type"] = click.Choice(key.choices)
    elif key.type is list:
        kwargs.update(multiple=True, default=())
    if metavar:
        kwargs["metavar"] = metavar
    return click.option(*flags, name, **kwargs)

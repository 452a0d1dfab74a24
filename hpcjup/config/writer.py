"""Writing config.toml: add or replace one `[profiles.NAME]` table, and leave every other line as it was.

The writer only ever adds or replaces one whole table, so it edits lines, not a parsed document:
the user's comments, blank lines, key order and quoting elsewhere stay byte for byte. A replaced
profile keeps its place in the file, and the comment lines just above the next table stay with
that table. The result is parsed before it is written: a file that would not load is never written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpcjup.config.profiles import config_path, load_config, parse_config
from hpcjup.config.schema import HEADER, KEYS, check_table, find_line
from hpcjup.errors import UsageError
from hpcjup.files import write_private

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a bare TOML key: no quoting in [profiles.NAME]


def save_profile(name: str, values: Mapping[str, Any], *, path: Path | None = None, replace: bool = False) -> Path:
    """Add (or with `replace`, rewrite in place) `[profiles.NAME]` in config.toml, keeping everything else as it was."""
    if not PROFILE_NAME.fullmatch(name):
        raise UsageError(
            f"Profile name {name!r} is not valid.", hint="Use letters, digits, '-' and '_' (e.g. juwels-booster)."
        )
    path = path or config_path()
    config = load_config(path)
    checked = check_table(values, path="the command line", text="", table=f"profiles.{name}")
    block = f"[profiles.{name}]\n" + "".join(f"{key} = {toml_value(checked[key])}\n" for key in KEYS if key in checked)
    if name in config.profiles:
        if not replace:
            raise UsageError(
                f"Profile {name!r} already exists in {path}.", hint="Add --force to replace it, or choose another name."
            )
        text = replace_table(config.text, f"profiles.{name}", block, path)
    else:
        text = config.text.rstrip("\n") + ("\n\n" if config.text.strip() else "") + block
    parse_config(path, text)  # never write a file that would not load
    _write_config(path, text)
    return path


def toml_value(value: Any) -> str:
    """A TOML literal for a str, int, bool or list of those (the value types of settings), as tomlkit writes it."""
    import tomlkit  # only `profile create` writes TOML; --help and every other command never load it

    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, (bool, int, str)) for v in items):
        raise TypeError(f"no TOML form for {type(value).__name__}")
    return tomlkit.item(list(value) if isinstance(value, tuple) else value).as_string()


def replace_table(text: str, table: str, block: str, path: Path) -> str:
    """`text` with the `[table]` section (header to the next header) replaced by `block`, in the same place."""
    start = find_line(text, table, None)
    if start is None:  # defined some other way (an inline table): leave the file to its author
        raise UsageError(f"Profile {table.split('.', 1)[1]!r} in {path} is not a [{table}] section; edit it by hand.")
    lines = text.splitlines(keepends=True)
    end = start
    while end < len(lines) and not HEADER.match(lines[end]):
        end += 1
    # Comment lines at the section's end (usually the next table's heading comment) are kept, not dropped.
    while end > start and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    rest = lines[end:]
    return "".join([*lines[: start - 1], block, *(["\n"] if rest and rest[0].strip() else []), *rest])


def _write_config(path: Path, text: str) -> None:
    """Write atomically; a new file is 0600 in a 0700 directory, an existing one keeps its mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    write_private(path, text.encode("utf-8"), mode)

"""Site presets: what is known about a well-known cluster, as defaults below the user's own settings.

A site is one TOML file: facts for people (`title`, `description`, `source`, `hosts`,
`partitions`, `notes`), one fact hpcjup checks (`account_required`) and a `[defaults]` table with
the same keys as a profile. Built-in sites ship in `hpcjup/sites/`; a user adds or overrides one
with `<config dir>/sites/NAME.toml`. A profile selects one with `site = "NAME"`, the command line
with `--site NAME`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hpcjup.config.schema import KEYS, Key, check_table, find_line, parse_toml
from hpcjup.errors import UsageError

SITES_DIR = "sites"
# The keys of a site file besides [defaults]: name -> (type, required).
_FIELDS: dict[str, tuple[type, bool]] = {
    "title": (str, False),
    "description": (str, True),
    "source": (str, True),
    "hosts": (list, False),
    "partitions": (list, False),
    "account_required": (bool, False),
    "notes": (str, False),
}
# A site may preset every setting except `site` itself.
SITE_KEYS: dict[str, Key] = {name: key for name, key in KEYS.items() if name != "site"}


@dataclass(frozen=True)
class Site:
    """One site preset."""

    name: str
    description: str
    source: str  # where the facts come from (the centre's documentation)
    path: str  # the file it was read from
    builtin: bool
    title: str = ""
    hosts: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()
    account_required: bool = False
    notes: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    text: str = field(default="", repr=False)

    def locate(self, key: str) -> str:
        """ "path:line" of `key` in the site's [defaults] (for `profile show`)."""
        line = find_line(self.text, "defaults", key)
        return f"{self.path}:{line}" if line else self.path

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for `hpcjup sites --json`)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "source": self.source,
            "file": self.path,
            "builtin": self.builtin,
            "hosts": list(self.hosts),
            "partitions": list(self.partitions),
            "account_required": self.account_required,
            "notes": self.notes,
            "defaults": {k: list(v) if isinstance(v, tuple) else v for k, v in self.defaults.items()},
        }


def user_sites_dir(config_dir: Path) -> Path:
    """Where a user's own site files live: <config dir>/sites."""
    return config_dir / SITES_DIR


def list_sites(config_dir: Path) -> list[Site]:
    """Every site, built in and the user's (a user file overrides a built-in one of the same name), by name."""
    found = {name: (text, where, True) for name, text, where in _builtin_files()}
    for name, text, where in _user_files(config_dir):
        found[name] = (text, where, False)
    return [parse_site(name, text, where, builtin=b) for name, (text, where, b) in sorted(found.items())]


def load_site(name: str, config_dir: Path) -> Site:
    """The site called `name`; a UsageError listing the known ones if there is none."""
    user_file = user_sites_dir(config_dir) / f"{name}.toml"
    if user_file.is_file():
        return parse_site(name, _read(user_file), str(user_file), builtin=False)
    for builtin_name, text, where in _builtin_files():
        if builtin_name == name:
            return parse_site(name, text, where, builtin=True)
    known = ", ".join(site.name for site in list_sites(config_dir)) or "none"
    raise UsageError(
        f"No site preset {name!r}; known sites: {known}.",
        hint=f"`hpcjup sites` lists them; add your own as {user_file}.",
    )


def parse_site(name: str, text: str, where: str, *, builtin: bool) -> Site:
    """Validate a site file's text; errors name the file, line and key."""
    data = parse_toml(Path(where), text)
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key == "defaults":
            continue
        line = find_line(text, None, key)
        at = f"{where}:{line}" if line else where
        if key not in _FIELDS:
            raise UsageError(
                f"{at}: unknown key {key!r} in a site file.",
                hint=f"Site files have {', '.join(_FIELDS)} and a [defaults] table.",
            )
        kind = _FIELDS[key][0]
        ok = isinstance(value, kind) and (not isinstance(value, list) or all(isinstance(v, str) for v in value))
        if not ok:
            raise UsageError(f"{at}: {key!r} must be {'a list of strings' if kind is list else kind.__name__}.")
        fields[key] = tuple(value) if kind is list else value
    missing = [key for key, (_, required) in _FIELDS.items() if required and key not in fields]
    if missing:
        raise UsageError(f"{where}: the site file lacks {', '.join(missing)}.")
    table = data.get("defaults", {})
    if not isinstance(table, dict):
        raise UsageError(f"{where}: 'defaults' must be a table ([defaults]).")
    defaults = check_table(table, path=where, text=text, table="defaults", allowed=SITE_KEYS)
    fields.setdefault("title", name.upper())
    return Site(name=name, path=where, builtin=builtin, defaults=MappingProxyType(defaults), text=text, **fields)


def _builtin_files() -> list[tuple[str, str, str]]:
    """(name, text, where) of the sites shipped in hpcjup/sites/."""
    from importlib.resources import files

    out = []
    for entry in files("hpcjup.sites").iterdir():
        if entry.name.endswith(".toml") and entry.is_file():
            out.append((entry.name[: -len(".toml")], entry.read_text(encoding="utf-8"), str(entry)))
    return out


def _user_files(config_dir: Path) -> list[tuple[str, str, str]]:
    directory = user_sites_dir(config_dir)
    if not directory.is_dir():
        return []
    return [(path.stem, _read(path), str(path)) for path in sorted(directory.glob("*.toml"))]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}") from None

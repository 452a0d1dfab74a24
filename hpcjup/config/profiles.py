"""Profiles: the settings kept in config.toml, and the one place where precedence is resolved.

config.toml lives in the platform's user config directory (~/.config/hpcjup/ on Linux,
honouring $XDG_CONFIG_HOME) and holds a `[defaults]` table and `[profiles.NAME]` tables whose
keys are named like the options of `hpcjup start`. `resolve()` merges the command line, the
environment, the profile, `[defaults]`, a site preset and the built-in defaults into a frozen
`Resolved` that remembers where every value came from (for `hpcjup profile show`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hpcjup.config.schema import (
    KEYS,
    SCALAR_KEYS,
    Key,
    check_table,
    coerce,
    find_line,
    parse_env,
    parse_toml,
    where_in,
)
from hpcjup.errors import UsageError

if TYPE_CHECKING:
    from hpcjup.config.resources import Resources
    from hpcjup.config.sites import Site

CONFIG_FILE = "config.toml"
PROFILE_ENV = "HPCJUP_PROFILE"
ENV_PREFIX = "HPCJUP_"
LOCAL = "local"  # `--local` in resolve()'s `cli`, and the host name that means this machine

# The schema's names are imported from here too (they lived here first).
__all__ = [
    "CONFIG_FILE",
    "ENV_PREFIX",
    "KEYS",
    "LOCAL",
    "PROFILE_ENV",
    "SCALAR_KEYS",
    "ConfigFile",
    "Key",
    "Resolved",
    "Setting",
    "check_table",
    "coerce",
    "config_dir",
    "config_path",
    "find_line",
    "load_config",
    "parse_config",
    "parse_env",
    "parse_toml",
    "resolve",
]


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from."""

    value: Any
    source: str  # "command line", "environment ($HPCJUP_HOST)", "profile work", "[defaults]", "site juwels", "built-in"
    location: str | None = None  # "path:line" for values read from a file

    def describe(self) -> str:
        """The source, with the file and line if there is one."""
        return f"{self.source} ({self.location})" if self.location else self.source


@dataclass(frozen=True)
class Resolved:
    """Every setting of one invocation after precedence was applied; read-only."""

    settings: Mapping[str, Setting]
    profile: str | None
    path: Path
    site: Site | None = None

    def value(self, key: str) -> Any:
        """The value of `key` (None when nothing set it)."""
        _known(key)
        setting = self.settings.get(key)
        return setting.value if setting else None

    def source(self, key: str) -> str | None:
        """Where the value of `key` came from, e.g. "profile work (/home/me/.config/hpcjup/config.toml:7)"."""
        _known(key)
        setting = self.settings.get(key)
        return setting.describe() if setting else None

    def as_dict(self) -> dict[str, Any]:
        """The set values (lists as lists), in the order of KEYS."""
        return {key: _plain(s.value) for key, s in self.settings.items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        """key -> {value, source, location}, for `profile show --json`."""
        return {
            key: {"value": _plain(s.value), "source": s.source, "location": s.location}
            for key, s in self.settings.items()
        }

    def resources(self) -> Resources:
        """The job's resources from these settings (validated by Resources)."""
        from hpcjup.config.resources import Resources

        return Resources(
            partition=self.value("partition"),
            account=self.value("account"),
            time=self.value("time"),
            time_min=self.value("time_min"),
            nodes=self.value("nodes") or 1,
            cpus=self.value("cpus"),
            mem=self.value("mem"),
            gpus=self.value("gpus"),
            directives=tuple(self.value("directives") or ()),
        )

    def check_site(self) -> None:
        """Refuse what the site preset says cannot work (today: a site that needs an account, and none is set)."""
        if self.site is not None and self.site.account_required and not self.value("account"):
            raise UsageError(
                f"{self.site.title} needs an account (project) for every job, and none is set.",
                hint='Pass --account (-A), set HPCJUP_ACCOUNT, or put `account = "..."` in your profile.',
            )


def config_dir() -> Path:
    """The user config directory: ~/.config/hpcjup on Linux ($XDG_CONFIG_HOME honoured)."""
    from platformdirs import user_config_path

    return user_config_path("hpcjup", appauthor=False)


def config_path() -> Path:
    """Where config.toml is."""
    return config_dir() / CONFIG_FILE


@dataclass(frozen=True)
class ConfigFile:
    """config.toml, parsed and validated; an absent file is an empty one."""

    path: Path
    text: str
    defaults: Mapping[str, Any]
    profiles: Mapping[str, Mapping[str, Any]]

    def locate(self, table: str, key: str | None = None) -> str:
        """ "path:line" of `key` in `[table]` (or of the table's header), "path" if not found."""
        line = find_line(self.text, table, key)
        return f"{self.path}:{line}" if line else str(self.path)


def load_config(path: Path | None = None) -> ConfigFile:
    """Read and validate config.toml; UsageError (file, line, key) when it is malformed."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ConfigFile(path, "", MappingProxyType({}), MappingProxyType({}))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}") from None
    return parse_config(path, text)


def parse_config(path: Path, text: str) -> ConfigFile:
    """Validate config.toml's text (read from `path`)."""
    data = parse_toml(path, text)
    for key in data:
        if key not in ("defaults", "profiles"):
            where = where_in(path, text, None, key)
            hint = (
                "Settings go under [defaults] or [profiles.NAME]."
                if key in KEYS
                else "config.toml has [defaults] and [profiles.NAME] tables only."
            )
            raise UsageError(f"{where}: unknown key {key!r} at the top level.", hint=hint)
    defaults = check_table(_table(data, "defaults", path, text), path=path, text=text, table="defaults")
    profiles = {}
    for name, table in _table(data, "profiles", path, text).items():
        if not isinstance(table, dict):
            raise UsageError(
                f"{where_in(path, text, 'profiles', name)}: profiles.{name} must be a table ([profiles.{name}])."
            )
        profiles[name] = check_table(table, path=path, text=text, table=f"profiles.{name}")
    return ConfigFile(path, text, MappingProxyType(defaults), MappingProxyType(profiles))


def resolve(
    cli: Mapping[str, Any], *, profile: str | None, env: Mapping[str, str] = os.environ, path: Path | None = None
) -> Resolved:
    """Resolve every setting once, into a frozen Resolved that records each value's source.

    Precedence, highest first:
      1. the command line: `cli` holds only the options the user typed (None values are ignored),
         and `local: True` for `--local` (where the session runs, not a setting);
      2. the environment: $HPCJUP_<KEY> for scalar keys (e.g. $HPCJUP_PARTITION), empty ones ignored;
      3. the profile `[profiles.NAME]`, NAME from `profile` (--profile), else $HPCJUP_PROFILE;
      4. `[defaults]` of config.toml (`path`, default: the user config directory's config.toml);
      5. the site preset named by the `site` that 1-4 resolve to (built in, or <config dir>/sites/NAME.toml);
      6. the built-in defaults (KEYS[...].default). On this machine (`--local`, or host "local") the
         built-in python is hpcjup's own interpreter when it has JupyterLab, else `python3`; when
         neither has, a UsageError says what to install (hpcjup.config.environment.local_python).
    Values are checked here (types, choices, and the Slurm resource formats), so an error names
    the file and line, the variable, or the flag it came from.
    """
    cli = dict(cli)
    local = bool(cli.pop(LOCAL, False))
    config = load_config(path)
    name = profile or env.get(PROFILE_ENV, "").strip() or None
    env_values, env_names = _env_values(env)
    layers = [_Layer("command line", _cli_values(cli)), _Layer("environment", env_values, env_names.get)]
    if name is not None:
        if name not in config.profiles:
            raise _no_profile(name, config, from_env=profile is None)
        layers.append(
            _Layer(f"profile {name}", config.profiles[name], lambda key: config.locate(f"profiles.{name}", key))
        )
    layers.append(_Layer("[defaults]", config.defaults, lambda key: config.locate("defaults", key)))
    site = None
    site_name = next((layer.values["site"] for layer in layers if "site" in layer.values), None)
    if site_name is not None:
        from hpcjup.config.sites import load_site

        site = load_site(site_name, config.path.parent)
        layers.append(_Layer(f"site {site.name}", site.defaults, site.locate))
    layers.append(_Layer("built-in", {k: key.default for k, key in KEYS.items() if key.default is not None}))
    settings = {}
    for key in KEYS:
        layer = next((layer for layer in layers if key in layer.values), None)
        if layer is not None:
            settings[key] = Setting(layer.values[key], layer.source, layer.locate(key))
    here = local or ("host" in settings and settings["host"].value == LOCAL)
    if here and settings["python"].source == "built-in":  # nothing chose a Python: find one here that can serve
        from hpcjup.config.environment import local_python

        settings["python"] = Setting(local_python(), "built-in")
    resolved = Resolved(MappingProxyType(settings), name, config.path, site)
    _check_formats(resolved)
    return resolved


@dataclass(frozen=True)
class _Layer:
    """One level of the precedence: where values come from, the values, and how to point at one."""

    source: str
    values: Mapping[str, Any]
    locate: Callable[[str], str | None] = lambda key: None


def _cli_values(cli: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, raw in cli.items():
        if name not in KEYS:
            raise ValueError(f"resolve(): {name!r} is not a setting (known: {', '.join(KEYS)})")
        if raw is not None:
            out[name] = coerce(KEYS[name], raw, f"--{name.replace('_', '-')}")
    return out


def _env_values(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Values from $HPCJUP_<KEY> (scalar keys; empty variables count as unset), and each one's variable."""
    values, names = {}, {}
    for key in SCALAR_KEYS:
        var = ENV_PREFIX + key.upper()
        if env.get(var, "").strip():
            values[key] = parse_env(KEYS[key], env[var], var)
            names[key] = f"${var}"
    return values, names


def _check_formats(resolved: Resolved) -> None:
    """Check values that end up in the batch script, naming where a bad one came from."""
    from hpcjup.config.resources import Resources, parse_duration

    for key in ("partition", "account", "time", "mem", "gpus", "directives"):
        if (value := resolved.value(key)) is None:
            continue
        field: dict[str, Any] = {key: tuple(value) if key == "directives" else value}
        try:
            Resources(**field)
        except UsageError as exc:
            if resolved.settings[key].source == "command line":
                raise
            raise UsageError(
                f"{key} {value!r} from {resolved.source(key)} is not valid: {exc.message.split(': ', 1)[-1]}"
            ) from None
    if (idle := resolved.value("idle_timeout")) is not None:
        parse_duration(idle, f"idle_timeout (from {resolved.source('idle_timeout')})")


def _no_profile(name: str, config: ConfigFile, *, from_env: bool) -> UsageError:
    how, known = (f"${PROFILE_ENV}" if from_env else "--profile"), (", ".join(config.profiles) or "none")
    return UsageError(
        f"No profile {name!r} (from {how}) in {config.path}; profiles there: {known}.",
        hint=f"Create it with `hpcjup profile create {name} --host HOST ...`; `hpcjup profile list` shows what there is.",
    )


def _table(data: Mapping[str, Any], name: str, path: Path, text: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where_in(path, text, None, name)}: {name!r} must be a table ([{name}]).")
    return value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _known(key: str) -> None:
    if key not in KEYS:
        raise KeyError(f"{key!r} is not a setting")

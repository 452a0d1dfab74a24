"""`hpcjup profile list|show|create`: named sets of `hpcjup start` options in config.toml.

Also the two helpers every command with settings uses: `profile_option` (--profile) and
`typed_options` (the options the user actually typed, for `hpcjup.config.profiles.resolve`).
The file itself is written by hpcjup.config.writer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from hpcjup.cli.app import App, json_option
from hpcjup.cli.settingopts import setting_option
from hpcjup.config.profiles import KEYS, LOCAL, PROFILE_ENV, config_path, load_config, parse_toml, resolve
from hpcjup.config.writer import save_profile
from hpcjup.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])


# click parameter name -> setting, where the two differ.
def profile_option(func: F) -> F:
    """Add --profile NAME."""
    return click.option(
        "--profile", metavar="NAME", help=f"Use [profiles.NAME] from config.toml (also ${PROFILE_ENV})."
    )(func)


def typed_options(ctx: click.Context, rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings the user typed on this command line (click's defaults are not typed), by setting name.

    `--local` is passed on as `local: True`: resolve() then picks a Python that can serve on this machine.
    """
    typed: dict[str, Any] = {LOCAL: True} if ctx.params.get(LOCAL) else {}
    for param, value in ctx.params.items():
        key = (rename or {}).get(param, param)
        if key in KEYS and ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE:
            typed[key] = value
    return typed


@click.group("profile")
def command() -> None:
    """Profiles: named sets of `hpcjup start` options in config.toml.

    \b
    hpcjup profile create booster --host juwels -p booster -A myproj modules=Stages/2025,GCC,Python
    hpcjup start --profile booster        (or: export HPCJUP_PROFILE=booster)
    """


@command.command("list")
@json_option
@click.pass_obj
def list_command(app: App) -> None:
    """List the profiles in config.toml."""
    config = load_config()
    chosen = os.environ.get(PROFILE_ENV, "").strip() or None
    rows = [
        {"name": name, "default": name == chosen, **{k: _plain(v) for k, v in values.items()}}
        for name, values in config.profiles.items()
    ]
    data = {"path": str(config.path), "profiles": rows, "defaults": {k: _plain(v) for k, v in config.defaults.items()}}

    def text() -> str:
        if not rows:
            return f"No profiles in {config.path}.\nCreate one: hpcjup profile create NAME --host HOST --partition PARTITION"
        table = [("NAME", "HOST", "PARTITION", "ACCOUNT", "SITE")]
        table += [
            (
                r["name"] + (" *" if r["default"] else ""),
                *(str(r.get(k) or "-") for k in ("host", "partition", "account", "site")),
            )
            for r in rows
        ]
        note = f"\n* = ${PROFILE_ENV}" if chosen else ""
        return f"Profiles in {config.path}:\n" + _columns(table) + note

    app.ui.result(data, text=text)


@command.command("show")
@click.argument("name", required=False)
@json_option
@click.pass_obj
def show_command(app: App, name: str | None) -> None:
    """Show the settings a command would use with profile NAME, and where each comes from.

    Without NAME: $HPCJUP_PROFILE, or only [defaults]. Command-line options are not part of this.
    """
    resolved = resolve({}, profile=name)
    data = {
        "profile": resolved.profile,
        "path": str(resolved.path),
        "site": resolved.site.name if resolved.site else None,
        "settings": resolved.describe(),
    }

    def text() -> str:
        title = (
            f"Profile {resolved.profile}"
            if resolved.profile
            else "No profile (only [defaults], the environment and built-ins)"
        )
        table = [("SETTING", "VALUE", "FROM")]
        table += [(key, _show(s.value), s.describe()) for key, s in resolved.settings.items()]
        return f"{title}, from {resolved.path}:\n" + _columns(table)

    app.ui.result(data, text=text)


@command.command("create")
@click.argument("name")
@click.argument("settings", nargs=-1, metavar="[KEY=VALUE]...")
@setting_option("host", "--host", metavar="DEST")
@setting_option("partition", "-p", "--partition")
@setting_option("account", "-A", "--account")
@setting_option("time", "-t", "--time", metavar="TIME")
@setting_option("site", "--site", metavar="NAME", more="`hpcjup sites` lists them.")
@click.option("--force", is_flag=True, help="Replace the profile if it exists.")
@json_option
@click.pass_obj
def create_command(
    app: App,
    name: str,
    settings: tuple[str, ...],
    host: str | None,
    partition: str | None,
    account: str | None,
    time: str | None,
    site: str | None,
    force: bool,
) -> None:
    """Write profile NAME to config.toml: the options given, plus any KEY=VALUE (e.g. modules=GCC,Python python=~/env/bin/python).

    List values are comma-separated or TOML (binds='["/p/scratch", "/p/project"]'). The rest of
    the file, comments included, is kept.
    """
    values: dict[str, Any] = {}
    for item in settings:
        key, value = parse_assignment(item)
        values[key] = value
    options = {"host": host, "partition": partition, "account": account, "time": time, "site": site}
    values.update({k: v for k, v in options.items() if v is not None})
    if not values:
        raise UsageError("Nothing to write.", hint="Give at least --host, --partition or a KEY=VALUE setting.")
    if "site" in values:
        from hpcjup.config.sites import load_site

        load_site(values["site"], config_path().parent)  # refuse an unknown site now, not at the next start
    path = save_profile(name, values, replace=force)
    resolved = resolve({}, profile=name, env={})  # what the profile gives, without this shell's variables
    app.ui.result(
        {"profile": name, "path": str(path), "settings": resolved.describe()},
        text=f"Wrote [profiles.{name}] to {path}.\nUse it: hpcjup start --profile {name}   (check it: hpcjup doctor --profile {name})",
    )


def parse_assignment(item: str) -> tuple[str, Any]:
    """KEY=VALUE from the command line, VALUE converted to the setting's type."""
    key, sep, raw = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise UsageError(f"{item!r} is not KEY=VALUE.", hint="e.g. modules=GCC,Python or mem=16G.")
    if key not in KEYS:
        import difflib

        close = difflib.get_close_matches(key, list(KEYS), n=1)
        raise UsageError(
            f"Unknown setting {key!r} in {item!r}.",
            hint=(f"Did you mean {close[0]!r}? " if close else "") + f"Settings: {', '.join(KEYS)}.",
        )
    kind = KEYS[key].type
    if kind is list:
        if raw.strip().startswith("["):
            return key, parse_toml(Path(f"the value of {key}"), f"v = {raw}")["v"]
        return key, [part.strip() for part in raw.split(",") if part.strip()]
    if kind is int:
        try:
            return key, int(raw)
        except ValueError:
            raise UsageError(f"{key} must be an integer, not {raw!r}.") from None
    if kind is bool:
        if raw.strip().lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            raise UsageError(f"{key} must be true or false, not {raw!r}.")
        return key, raw.strip().lower() in ("true", "yes", "1", "on")
    return key, raw


def _columns(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(value) or "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

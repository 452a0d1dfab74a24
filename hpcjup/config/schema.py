"""The settings' schema and the TOML helpers that config.toml and site presets share.

`KEYS` names every setting (as `hpcjup start --NAME`), its type, choices and built-in default;
`check_table` validates one table of a file against it, naming file, line and key on an error.
Profiles (config/profiles.py) and site presets (config/sites.py) both read files through here,
so neither needs the other to be imported first.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcjup.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


#: What a `python` setting may be: one word a shell reads as it is (worker-group job scripts run it unquoted),
#: a path or a command name, no leading `-`, `~/` only in front. session.json's `python` is read against it too.
PYTHON_WORD = re.compile(r"(?:~/)?[A-Za-z0-9_./+][A-Za-z0-9_./+-]{0,1023}")


@dataclass(frozen=True)
class Key:
    """One setting: its name (as in `hpcjup start --NAME`), its type, and a line of help."""

    name: str
    type: type
    help: str
    choices: tuple[str, ...] = ()
    default: Any = None
    low: int = 0  # int keys: the smallest value
    high: int | None = None
    shape: tuple[re.Pattern[str], str] | None = None  # str keys: the pattern the whole value matches, and its words


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("host", str, "SSH destination: an alias from ~/.ssh/config or user@host[:port]"),
        Key("partition", str, "partition (queue) to run in"),
        Key("account", str, "account (project) to charge"),
        Key("time", str, "time limit: minutes, HH:MM:SS or D-HH:MM:SS"),
        Key("time_min", str, "the scheduler may shorten the time limit down to this to start sooner"),
        Key("nodes", int, "nodes to allocate", default=1, low=1),
        Key("cpus", int, "CPUs for Jupyter's task", low=1),
        Key("mem", str, "memory per node, e.g. 16G"),
        Key("gpus", str, "GPUs, e.g. 4 or a100:4"),
        Key("directives", list, "extra batch-system options, verbatim, e.g. ['-l storage=gdata/ab12'] (PBS)"),
        Key("workdir", str, "Jupyter's root directory on the cluster"),
        Key(
            "python",
            str,
            "the cluster-side Python with JupyterLab",
            default="python3",
            shape=(PYTHON_WORD, "a path or command name without spaces or shell characters, e.g. ~/env/bin/python"),
        ),
        Key("idle_timeout", str, "end the session after this long unused (0: never)", default="1h"),
        Key(
            "preemptible",
            bool,
            "submit the session's job requeueable: when the scheduler preempts it, it comes back (same URL)",
            default=False,
        ),
        Key("adapt_idle", str, "retire an adaptive worker group's worker after this long idle", default="5m"),
        Key("local_port", int, "local end of the tunnel", low=1, high=65535),
        Key("socket", bool, "Jupyter on a Unix socket on the node, reached by SSH to the node", default=False),
        Key("ssh", str, "SSH backend", choices=("auto", "openssh", "paramiko"), default="auto"),
        Key(
            "scheduler",
            str,
            "batch system: auto (detected on the host), slurm, pbs, lsf, sge, or none (a plain SSH host)",
            default="auto",
        ),
        Key("site", str, "site preset (see `hpcjup sites`)"),
        Key("modules", list, "modules to load before Jupyter starts"),
        Key("module_use", list, "directories to `module use` first"),
        Key("module_purge", bool, "`module purge` before loading", default=False),
        Key("conda", str, "conda/mamba environment: a name or a prefix path"),
        Key("venv", str, "virtual environment directory to activate"),
        Key("setup", list, "shell lines run before Jupyter starts"),
        Key("env", str, "the default kernel's environment: a spec directory or file (requirements.txt, binder/, ...)"),
        Key(
            "kernels",
            list,
            "more kernels, each [NAME=]SPEC: a spec directory or file, cluster:/path of an existing env, "
            "or module:A,B (a module set's python3)",
        ),
        Key("env_root", str, "where environments are built on the cluster (default ~/.hpcjup/envs; $VAR/... allowed)"),
        Key(
            "build",
            str,
            "where environments are built: login (on the login node, before the job) or job (in a batch job on a "
            "compute node, for sites that forbid heavy work on login nodes)",
            choices=("login", "job"),
            default="login",
        ),
        Key(
            "env_mode",
            str,
            "how jobs use an environment's image: auto (unpacked into RAM where it fits in a quarter of the job's "
            "memory, else mounted from node-local storage where FUSE works, else unpacked there), image, unpack, or "
            "direct (the environment in place: its tree is kept on the shared filesystem)",
            choices=("auto", "image", "unpack", "direct"),
            default="auto",
        ),
        Key(
            "offline",
            bool,
            "whether the cluster's login node reaches no package index (the laptop then fetches; unset: found out)",
        ),
        Key("image", str, "container image: a .sif file, docker://..., or a Charliecloud image directory"),
        Key(
            "container_runtime",
            str,
            "container runtime (podman: --local only)",
            choices=("apptainer", "singularity", "charliecloud", "podman"),
        ),
        Key("binds", list, "paths bound into the container (SRC[:DST])"),
        Key("gpu", bool, "make the node's GPUs visible in the container", default=False),
        Key("workers", int, "Dask worker processes in all"),
        Key("worker_cores", int, "threads per Dask worker", low=1),
        Key("worker_memory", str, "memory limit per Dask worker, e.g. 8GB"),
    )
}
SCALAR_KEYS = tuple(name for name, key in KEYS.items() if key.type is not list)
_TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", list: "a list of strings"}


def parse_toml(path: Path, text: str) -> dict[str, Any]:
    """tomllib.loads, with a malformed file reported as a UsageError that names it (tomllib gives the line)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(
            f"{path} is not valid TOML: {exc}.",
            hint="Fix the file by hand; `hpcjup profile create` writes valid entries.",
        ) from None


def check_table(
    values: Mapping[str, Any], *, path: Path | str, text: str, table: str, allowed: Mapping[str, Key] = KEYS
) -> dict[str, Any]:
    """A validated copy of one table (lists become tuples); unknown keys and wrong types name file, line and key."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        where = where_in(path, text, table, key)
        if key not in allowed:
            raise UsageError(f"{where}: unknown key {key!r} in [{table}].", hint=_suggest(key, allowed))
        out[key] = coerce(allowed[key], raw, f"{where}: {key!r} in [{table}]")
    return out


def coerce(key: Key, raw: Any, label: str) -> Any:
    """`raw` (from TOML or click) as `key`'s type; a UsageError starting with `label` otherwise."""
    value: Any = raw
    if key.type is str and isinstance(raw, int) and not isinstance(raw, bool):
        value = str(raw)  # time = 90, gpus = 4, idle_timeout = 3600: numbers are natural there
    elif key.type is list and isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw):
        value = tuple(raw)
    ok = isinstance(value, key.type) and not (key.type is int and isinstance(value, bool))
    if key.type is list:
        ok = isinstance(value, tuple)
    if not ok:
        example = ' e.g. ["a", "b"]' if key.type is list else ""
        raise UsageError(
            f"{label} must be {_TYPE_WORDS[key.type]}{example}, not {_show(raw)}.", hint=f"{key.name}: {key.help}."
        )
    if key.type is str and not value.strip():
        raise UsageError(f"{label} is empty.", hint=f"{key.name}: {key.help}; remove the line to leave it unset.")
    if key.choices and value not in key.choices:
        raise UsageError(f"{label} is {value!r}, not one of {', '.join(key.choices)}.")
    if key.shape and not key.shape[0].fullmatch(value):
        raise UsageError(f"{label} is {value!r}: it must be {key.shape[1]}.", hint=f"{key.name}: {key.help}.")
    if key.type is int and not key.low <= value <= (key.high if key.high is not None else value):
        raise UsageError(
            f"{label} is {value}: it must be at least {key.low}" + (f" and at most {key.high}." if key.high else ".")
        )
    return value


def parse_env(key: Key, text: str, var: str) -> Any:
    """The value of environment variable `var` as `key`'s type."""
    if key.type is int:
        try:
            return coerce(key, int(text.strip()), f"${var}")
        except ValueError:
            raise UsageError(f"${var}={text!r} must be an integer.") from None
    if key.type is bool:
        word = text.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"${var}={text!r} must be true or false (1/0, yes/no).")
    return coerce(key, text.strip(), f"${var}")


HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")


def find_line(text: str, table: str | None, key: str | None) -> int | None:
    """1-based line of `key` in `[table]` (None: the top level), or of the header when `key` is None."""
    current: str | None = None
    key_re = re.compile(rf"""^\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*=""") if key else None
    for number, line in enumerate(text.splitlines(), 1):
        header = HEADER.match(line)
        if header:
            current = ".".join(part.strip().strip("\"'") for part in header.group(1).split("."))
            if key is None and current == table:
                return number
        elif key_re is not None and current == table and key_re.match(line):
            return number
    return None


def where_in(path: Path | str, text: str, table: str | None, key: str | None) -> str:
    """ "path:line" of `key` in `[table]` of `text`, or only the path when the line is not found."""
    line = find_line(text, table, key) if text else None
    return f"{path}:{line}" if line else str(path)


def _suggest(key: str, allowed: Mapping[str, Key]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    known = f"Known keys: {', '.join(allowed)}."
    return f"Did you mean {close[0]!r}? {known}" if close else known


def _show(raw: Any) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(raw), type(raw).__name__)
    return f"{kind} ({raw!r})"

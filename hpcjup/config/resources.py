"""What a session asks the scheduler for, validated once before anything is submitted.

Values end up in batch-script directives, so each is checked against a strict
pattern here: a bad value is a usage error naming the flag, never a broken script.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from hpcjup.errors import UsageError

# Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME = re.compile(r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(?::\d{1,2}){0,2})$")
_MEM = re.compile(r"^\d+(?:[KMGT]B?)?$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")  # partitions, accounts
_GPUS = re.compile(r"^(?:[A-Za-z0-9_-]+:)?\d+$")  # 4, or a100:4


@dataclass(frozen=True)
class Resources:
    """The resources of one session's job; None means "the scheduler's default"."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None
    nodes: int = 1
    cpus: int | None = None
    mem: str | None = None
    gpus: str | None = None

    def __post_init__(self) -> None:
        _check("--partition", self.partition, _NAME, "a partition name such as booster")
        _check("--account", self.account, _NAME, "an account (project) name")
        _check("--time", self.time, _TIME, "minutes, HH:MM:SS or D-HH:MM:SS")
        _check("--mem", self.mem, _MEM, "a size such as 16G or 4000M")
        _check("--gpus", self.gpus, _GPUS, "a count such as 4, or type:count such as a100:4")
        if self.nodes < 1:
            raise UsageError(f"--nodes must be at least 1, not {self.nodes}.")
        if self.cpus is not None and self.cpus < 1:
            raise UsageError(f"--cpus must be at least 1, not {self.cpus}.")

    def to_dict(self) -> dict[str, object]:
        """The set values, for session metadata and JSON output."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Resources:
        """Rebuild from `to_dict` output, ignoring keys this version does not know."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)  # type: ignore[arg-type]


def time_to_seconds(value: str) -> int:
    """Seconds in a Slurm time string (the format `--time` accepts)."""
    days = 0
    if "-" in value:
        d, value = value.split("-", 1)
        days = int(d)
        parts = [int(p) for p in value.split(":")]
        parts += [0] * (3 - len(parts))  # D-HH, D-HH:MM
        h, m, s = parts
    else:
        parts = [int(p) for p in value.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts
    return ((days * 24 + h) * 60 + m) * 60 + s


def _check(flag: str, value: str | None, pattern: re.Pattern[str], expected: str) -> None:
    if value is not None and not pattern.match(value):
        raise UsageError(f"{flag} {value!r} is not valid: expected {expected}.")


_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str) -> int:
    """Seconds in `90`, `90s`, `15m`, `2h` or `1d`; a UsageError naming `flag` otherwise."""
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(
            f"{flag} {text!r} is not a duration.", hint="Use seconds (600) or a number with s, m, h or d (10m, 2h)."
        )
    return int(m.group(1)) * _UNIT[m.group(2).lower()]

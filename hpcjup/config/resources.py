"""What a session asks the scheduler for, validated once before anything is submitted.

Values end up in batch-script directives, so each is checked against a strict
pattern here: a bad value is a usage error naming the flag, never a broken script.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from hpcjup.errors import UsageError

# Whole strings only (fullmatch), ASCII digits only: `$` would let "lab\n" through, `\d` would let "٣" through,
# and either would reach a directive. Bounded digit runs keep int() far from its 4300-digit limit.
# The time formats users type (Slurm's, which sites document): minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM,
# D-HH:MM:SS. Adapters render the limit their own way from `Resources.time_seconds`.
_TIME = re.compile(r"[0-9]{1,9}(?::[0-9]{1,2}){0,2}|[0-9]{1,5}-[0-9]{1,2}(?::[0-9]{1,2}){0,2}")
_MEM = re.compile(r"[0-9]{1,15}(?:[KMGT]B?)?", re.IGNORECASE | re.ASCII)  # ASCII: no Kelvin sign for K
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")  # partitions, accounts
_GPUS = re.compile(r"(?:[A-Za-z0-9_-]{1,64}:)?[0-9]{1,6}")  # 4, or a100:4


@dataclass(frozen=True)
class Resources:
    """The resources of one session's job; None means "the scheduler's default"."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None
    time_min: str | None = None  # the scheduler may shorten the limit down to this to start sooner
    nodes: int = 1
    cpus: int | None = None
    mem: str | None = None
    gpus: str | None = None
    # Options for the batch system the adapter writes verbatim as directives (#SBATCH, #PBS, #BSUB, #$),
    # for what hpcjup has no flag for: `-l storage=gdata/ab12`, `--constraint=gpu`, `-R "span[hosts=1]"`.
    directives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Several, booster,batch, for schedulers that start the job in the first that can; each checked.
        for partition in self.partition.split(",") if self.partition is not None else []:
            _check("--partition", partition, _NAME, "a partition name such as booster, or several: booster,batch")
        _check("--account", self.account, _NAME, "an account (project) name")
        _check("--time", self.time, _TIME, "minutes, HH:MM:SS or D-HH:MM:SS")
        if self.time is not None and time_to_seconds(self.time) == 0:  # schedulers read 0 as "no limit": never meant
            raise UsageError(
                f"--time must be more than 0, not {self.time!r}.", hint="Ask for minutes (30) or HH:MM:SS (2:00:00)."
            )
        _check("--time-min", self.time_min, _TIME, "minutes, HH:MM:SS or D-HH:MM:SS")
        if self.time_min is not None:
            if self.time is None or time_to_seconds(self.time_min) > time_to_seconds(self.time):
                raise UsageError(
                    f"--time-min {self.time_min} needs a --time at least as long.",
                    hint="Give both, e.g. --time 2:00:00 --time-min 30: the job may then start with 30 minutes to 2 hours.",
                )
            if time_to_seconds(self.time_min) == 0:
                raise UsageError(f"--time-min must be more than 0, not {self.time_min!r}.")
        _check("--mem", self.mem, _MEM, "a size such as 16G or 4000M")
        _check("--gpus", self.gpus, _GPUS, "a count such as 4, or type:count such as a100:4")
        if self.nodes < 1:
            raise UsageError(f"--nodes must be at least 1, not {self.nodes}.")
        if self.cpus is not None and self.cpus < 1:
            raise UsageError(f"--cpus must be at least 1, not {self.cpus}.")
        for directive in self.directives:
            check_directive(directive)

    @property
    def time_seconds(self) -> int | None:
        """The time limit in seconds (None: the scheduler's default), for adapters that write their own format."""
        return None if self.time is None else time_to_seconds(self.time)

    @property
    def partitions(self) -> list[str]:
        """The partitions asked for (several: the scheduler picks the one that starts the job first)."""
        return self.partition.split(",") if self.partition else []

    def to_dict(self) -> dict[str, object]:
        """The set values (directives as a list, left out when there are none), for session metadata and JSON."""
        values = {k: v for k, v in asdict(self).items() if v is not None and k != "directives"}
        if self.directives:
            values["directives"] = list(self.directives)
        return values

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Resources:
        """Rebuild from `to_dict` output, ignoring keys this version does not know."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if isinstance(known.get("directives"), list):
            known["directives"] = tuple(known["directives"])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]


# One option and its value, printable ASCII on one line: a directive is a comment line of the job
# script that the scheduler reads, and a newline would start a line the shell runs.
_DIRECTIVE = re.compile(r"-[ -~]{1,255}")


def check_directive(directive: object) -> str:
    """`directive` if it is one batch-system option ("-l wd", "--constraint=gpu"); a UsageError otherwise."""
    if isinstance(directive, str) and _DIRECTIVE.fullmatch(directive) and directive.strip() == directive:
        return directive
    raise UsageError(
        f"--directive {directive!r} is not valid: expected one option on one line, such as '-l wd' or '--constraint=gpu'.",
        hint="Give one option per --directive (or per item of `directives` in a profile), starting with '-'.",
    )


def time_to_seconds(value: str) -> int:
    """Seconds in a time string of the form `--time` accepts (minutes, H:MM:SS, D-HH:MM:SS); ValueError otherwise."""
    if not _TIME.fullmatch(value):
        raise ValueError(f"not a time limit: {value!r}")
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
    if value is not None and not pattern.fullmatch(value):
        raise UsageError(f"{flag} {value!r} is not valid: expected {expected}.")


_DURATION = re.compile(r"([0-9]{1,12})\s*([smhd]?)", re.IGNORECASE | re.ASCII)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_DURATION = 365 * 86400  # far below threading's TIMEOUT_MAX, so every wait can take it


def parse_duration(text: str, flag: str, *, allow_zero: bool = True) -> int:
    """Seconds in `90`, `90s`, `15m`, `2h` or `1d`; a UsageError naming `flag` otherwise.

    `allow_zero=False` for flags where 0 means nothing (a timeout of 0 would give up at once);
    where 0 means "never" (`--idle-timeout`) keep the default.
    """
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise UsageError(
            f"{flag} {text!r} is not a duration.", hint="Use seconds (600) or a number with s, m, h or d (10m, 2h)."
        )
    seconds = int(m.group(1)) * _UNIT[m.group(2).lower()]
    if seconds == 0 and not allow_zero:
        raise UsageError(
            f"{flag} must be more than 0.", hint="Use seconds (600) or a number with s, m, h or d (10m, 2h)."
        )
    if seconds > _MAX_DURATION:
        raise UsageError(f"{flag} {text!r} is too long.", hint="Use at most 365 days (365d).")
    return seconds

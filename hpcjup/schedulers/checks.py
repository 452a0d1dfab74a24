"""What one `doctor` check is, for the scheduler adapters and session/doctor.py alike.

A leaf below both: an adapter's `doctor_checks` returns these, and `hpcjup doctor` (session/doctor.py)
adds its own and reports them all, so neither has to import the other's module for the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hpcjup.transport.base import Transport


class Status(str, Enum):
    """The outcome of one check; only FAIL makes `doctor` exit non-zero."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One check's outcome, what was found, and how to fix a failure."""

    name: str
    status: Status
    summary: str
    fix: str | None = None
    details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {**asdict(self), "status": self.status.value}


class HasCommands(Protocol):
    """What `check_commands` reads of a scheduler adapter (hpcjup.schedulers.base.Scheduler has it)."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def commands(self) -> Sequence[str]: ...


def check_commands(transport: Transport, scheduler: HasCommands) -> Check:
    """The scheduler's commands are on the PATH of a command run over SSH (the check called "scheduler")."""
    script = 'for c; do command -v "$c" >/dev/null 2>&1 || echo "$c"; done'
    missing = transport.run(["sh", "-c", script, "sh", *scheduler.commands], check=False).stdout.split()
    title = scheduler.title or scheduler.name
    if missing:
        return Check(
            "scheduler",
            Status.FAIL,
            f"not found over SSH: {' '.join(missing)}",
            fix=f"hpcjup needs {title} on the login node's PATH for commands run over SSH (not only in a login "
            f"shell); check `ssh HOST command -v {missing[0]}`.",
        )
    names = list(scheduler.commands)
    found = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)
    return Check("scheduler", Status.PASS, f"{found} found")


def first_line(text: str) -> str:
    """The first non-blank line of `text`, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")

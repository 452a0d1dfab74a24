"""A job's state in hpcjup's common vocabulary (Slurm's names), how each scheduler's words map onto it, and what
a scheduler says about one job (`JobStatus`).

A leaf of its own so that the adapters' parsers and the session layer share one table; base.py re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class JobState(str, Enum):
    """A job's state, with Slurm's names as the common vocabulary."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    GONE = "GONE"  # the scheduler no longer knows the job (finished, and forgotten)
    UNKNOWN = "UNKNOWN"  # the scheduler did not answer: counted as active, so nothing is pruned on a guess

    @property
    def active(self) -> bool:
        """Whether the job still holds (or waits for) its allocation."""
        return self in _ACTIVE

    @classmethod
    def parse(cls, text: str) -> JobState:
        """A scheduler's state word (e.g. "CANCELLED by 1000", "CA") as a JobState."""
        word = text.strip().split(" ")[0].rstrip("+").upper()
        word = _SHORT.get(word, word)
        word = _SAME_AS.get(word, word)
        try:
            return cls(word)
        except ValueError:  # a word we do not know: not a reason to call the job over (prune would act on it)
            return cls.UNKNOWN if word else cls.GONE


_ACTIVE = {
    JobState.PENDING,
    JobState.CONFIGURING,
    JobState.RUNNING,
    JobState.COMPLETING,
    JobState.SUSPENDED,
    JobState.UNKNOWN,
}
_SHORT = {
    "PD": "PENDING",
    "CF": "CONFIGURING",
    "R": "RUNNING",
    "CG": "COMPLETING",
    "S": "SUSPENDED",
    "CD": "COMPLETED",
    "F": "FAILED",
    "CA": "CANCELLED",
    "TO": "TIMEOUT",
    "NF": "NODE_FAIL",
    "OOM": "OUT_OF_MEMORY",
    "PR": "PREEMPTED",
    "BF": "BOOT_FAIL",
    "DL": "DEADLINE",
    "RQ": "REQUEUED",
    "RF": "REQUEUE_FED",
    "RH": "REQUEUE_HOLD",
    "RD": "RESV_DEL_HOLD",
    "RS": "RESIZING",
    "RV": "REVOKED",
    "SE": "SPECIAL_EXIT",
    "SI": "SIGNALING",
    "SO": "STAGE_OUT",
    "ST": "STOPPED",
}
# Slurm's other words, as the state they amount to. A requeued job waits again under the same id
# (REQUEUE_HOLD, SPECIAL_EXIT and RESV_DEL_HOLD until someone releases it); STOPPED keeps its CPUs.
_SAME_AS = {
    "REQUEUED": "PENDING",
    "REQUEUE_FED": "PENDING",
    "REQUEUE_HOLD": "PENDING",
    "RESV_DEL_HOLD": "PENDING",
    "SPECIAL_EXIT": "PENDING",
    "RESIZING": "RUNNING",
    "SIGNALING": "RUNNING",
    "STAGE_OUT": "COMPLETING",
    "STOPPED": "SUSPENDED",
    "REVOKED": "CANCELLED",  # a federated sibling: another cluster runs the job
}


@dataclass(frozen=True)
class JobStatus:
    """What the scheduler says about one job."""

    job_id: str
    state: JobState
    reason: str | None = None  # why it pends (Priority, Resources, ...)
    expected_start: str | None = None  # the scheduler's estimate while pending
    nodes: str | None = None
    exit_code: str | None = None
    time_left: int | None = None  # seconds until the time limit, while running
    time_limit: int | None = None  # seconds

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {k: (v.value if isinstance(v, JobState) else v) for k, v in self.__dict__.items()}

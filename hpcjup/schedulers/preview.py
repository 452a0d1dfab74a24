"""What a scheduler says of a job before anything is submitted (`hpcjup start --dry-run`), one partition at a time.

Adapters with `previews_start` fill these from their `preview_snippet`'s output (`parse_preview`);
session/preview.py shows them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionPreview:
    """What the scheduler says, before anything is submitted, of running the job in one partition (queue)."""

    name: str | None  # the partition; None: the scheduler's default (when it did not say which)
    estimate: str | None = None  # the scheduler's expected start, ISO local time as it printed it
    time_limit_seconds: int | None = None  # the partition's limit; None: none, or not known
    idle_nodes: int | None = None
    total_nodes: int | None = None
    free_slots: int | None = None  # schedulers that count slots, not nodes (Grid Engine)
    total_slots: int | None = None
    refusal: str | None = None  # the scheduler's own words when it would never run the job here
    hint: str | None = None  # which flag to change, with a refusal
    note: str | None = None  # what could not be said (e.g. no start estimate on this scheduler)

    @property
    def can_take(self) -> bool:
        """Whether the scheduler would take the job in this partition."""
        return self.refusal is None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return dict(self.__dict__)

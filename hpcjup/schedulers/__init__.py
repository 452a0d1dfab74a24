"""Scheduler adapters: one module per batch system, one registry here."""

from __future__ import annotations

from hpcjup.schedulers.base import JobState, JobStatus, Scheduler

__all__ = ["JobState", "JobStatus", "Scheduler", "get_scheduler"]


def get_scheduler(name: str) -> Scheduler:
    """The adapter for a scheduler name ("slurm", or "local" for `--local`)."""
    if name == "slurm":
        from hpcjup.schedulers.slurm import Slurm

        return Slurm()
    if name == "local":
        from hpcjup.schedulers.local import LocalProcess

        return LocalProcess()
    from hpcjup.errors import UsageError

    raise UsageError(f"Unknown scheduler {name!r}.", hint="Use slurm (or --local).")

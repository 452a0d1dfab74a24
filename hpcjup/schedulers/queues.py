"""The doctor's queue check, one for every batch system: the partition (queue) a session asks for exists, takes
jobs, and allows the time it asks for.

An adapter says what its scheduler lists (`Scheduler.queues`, one remote command: all queues, or only the one
asked for where the scheduler answers for one); `check_queue` judges it the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hpcjup.config.resources import time_to_seconds
from hpcjup.schedulers.checks import Check, Status

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.transport.base import Transport

#: Time limits that are no limit, as schedulers print them.
_UNLIMITED = ("", "infinite", "unlimited")


@dataclass(frozen=True)
class Queue:
    """One queue (partition) as the scheduler lists it."""

    name: str
    state: str | None = "up"  # "up": it takes and starts jobs; else the scheduler's word for it; None: not known
    limit: str | None = None  # its time limit as the scheduler prints it; None: none, or not known
    default: bool = False  # where a job goes that names no queue
    takes_jobs: bool = True  # False: a submission is refused (disabled), not only kept waiting


@dataclass(frozen=True)
class Queues:
    """What one query listed: the queues, or the scheduler's words when it could not answer."""

    found: Sequence[Queue] = ()
    error: str | None = None
    complete: bool = True  # whether `found` is all of them (not only the one asked for)


class ListsQueues(Protocol):
    """What `check_queue` reads of a scheduler adapter (hpcjup.schedulers.base.Scheduler has it)."""

    @property
    def title(self) -> str: ...
    @property
    def queue_check(self) -> str: ...
    @property
    def queue_word(self) -> str: ...
    @property
    def lists_queues(self) -> str: ...
    def queues(self, transport: Transport, wanted: str | None) -> Queues: ...


def check_queue(scheduler: ListsQueues, transport: Transport, resolved: Resolved) -> Check:
    """The queue (--partition) of `resolved` against what `scheduler.queues` lists."""
    name, word, lister = scheduler.queue_check, scheduler.queue_word, scheduler.lists_queues
    wanted = resolved.value("partition")
    listed = scheduler.queues(transport, wanted)
    names = [queue.name for queue in listed.found]
    if listed.error is not None:
        fix = f"Check that {scheduler.title} answers: `{lister}` on the login node lists the {word}s; then pass --partition."
        return Check(name, Status.FAIL, f"{word} {wanted}: {listed.error}" if wanted else listed.error, fix=fix)
    if wanted is None:
        default = next((queue.name for queue in listed.found if queue.default), None)
        if default is not None:
            return Check(name, Status.PASS, f"none set: the cluster's default ({default})")
        if listed.complete:
            return Check(name, Status.PASS, f"none set: {scheduler.title} picks among {', '.join(names) or 'none'}")
        return Check(name, Status.PASS, f"none set: the cluster's default {word}")
    queue = next((queue for queue in listed.found if queue.name == wanted), None)
    if queue is None:
        fix = f"Choose one of: {', '.join(names) or 'none listed'} (`{lister}` shows them)."
        return Check(name, Status.FAIL, f"no {word} {wanted!r} (from {resolved.source('partition')})", fix=fix)
    if queue.state not in (None, "up"):
        if not queue.takes_jobs:
            fix = f"Choose another --partition (`{lister}` shows which take jobs)."
            return Check(name, Status.FAIL, f"{wanted} is {queue.state}: it takes no jobs", fix=fix)
        fix = f"Choose a {word} that is up (`{lister}`)."
        return Check(name, Status.WARN, f"{wanted} is {queue.state}: jobs will pend", fix=fix)
    asked = resolved.value("time")
    if asked is not None and queue.limit is not None and _longer(asked, queue.limit):
        fix = f"Ask for at most --time {queue.limit}, or another {word}."
        return Check(name, Status.FAIL, f"time {asked} is more than {wanted}'s limit {queue.limit}", fix=fix)
    summary = f"{wanted} is up" if queue.state == "up" else f"{wanted} exists"
    return Check(name, Status.PASS, summary + (f", time limit {queue.limit}" if queue.limit else ""))


def _longer(asked: str, limit: str) -> bool:
    """Whether the time asked for is more than the limit (False where either cannot be read)."""
    if limit.strip().lower() in _UNLIMITED:
        return False
    try:
        return time_to_seconds(asked) > time_to_seconds(limit)
    except ValueError:
        return False

"""What a scheduler last said about jobs that are over, kept on this laptop so that `ls` need not ask again.

A job that never ran (cancelled while pending, failed before the launcher started) leaves no state.json
that says it ended, so without this every `ls` would ask its scheduler about it (and, on Slurm, the
accounting daemon too) until `hpcjup prune`. Once the scheduler has said that a job is finished, its
answer is final: it is kept here, per host, keyed by session name AND job id (a reused name with a
new job is asked about again). overview.py decides when a remembered answer stands in for a query;
this module only reads and writes the file: `<state dir>/finished/HOST.json`, 0600, bounded, and a file
that cannot be used is ignored (and rewritten by the next save).
"""

from __future__ import annotations

import json
from typing import Any

from hpcjup.files import private_dirs, write_private
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.session.fields import MAX_TEXT
from hpcjup.session.layout import NAME
from hpcjup.session.store import LocalStore

MAX_REMEMBERED = 1000  # answers per host; the listing's own sessions bound it first (overview keeps only those)
SCHEMA = 1

Key = tuple[str, str]  # (session name, job id)

_TEXTS = ("reason", "expected_start", "nodes", "exit_code")
_NUMBERS = ("time_left", "time_limit")
_FINAL = {state.value for state in JobState if not state.active}


def load(store: LocalStore, host: str) -> dict[Key, JobStatus] | None:
    """The answers remembered for `host` ({} without a file), or None if the file cannot be used."""
    try:
        raw = store.host_file("finished", host).read_bytes()
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    return parse(raw)


def save(store: LocalStore, host: str, answers: dict[Key, JobStatus]) -> None:
    """Remember `answers` for `host` (the last MAX_REMEMBERED of them), atomically and readable by the user only."""
    path = store.host_file("finished", host)
    private_dirs(path.parent)
    write_private(path, dump(answers))


def bounded(answers: dict[Key, JobStatus]) -> dict[Key, JobStatus]:
    """The answers a save keeps: the last MAX_REMEMBERED (compare with this, or more would be rewritten each time)."""
    return dict(list(answers.items())[-MAX_REMEMBERED:])


def dump(answers: dict[Key, JobStatus]) -> bytes:
    """The file's bytes: {"schema": 1, "jobs": [{"session": NAME, **JobStatus.to_dict()}, ...]}."""
    jobs = [{"session": name, **status.to_dict()} for (name, _), status in bounded(answers).items()]
    return json.dumps({"schema": SCHEMA, "jobs": jobs}).encode()


def parse(raw: bytes) -> dict[Key, JobStatus] | None:
    """The file's answers; entries this version would not have written are dropped; None: not such a file."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    jobs = data.get("jobs") if isinstance(data, dict) and data.get("schema") == SCHEMA else None
    if not isinstance(jobs, list):
        return None
    answers: dict[Key, JobStatus] = {}
    for entry in jobs[-MAX_REMEMBERED:]:
        status = _status(entry)
        if status is not None:
            answers[(entry["session"], status.job_id)] = status
    return answers


def _status(entry: Any) -> JobStatus | None:
    """One entry as the JobStatus it was written from, or None (a hand-edited, truncated or foreign entry)."""
    if not isinstance(entry, dict):
        return None
    name, job_id, state = entry.get("session"), entry.get("job_id"), entry.get("state")
    if not (isinstance(name, str) and NAME.fullmatch(name) and _text(job_id) and job_id):
        return None
    if not isinstance(state, str) or state not in _FINAL:
        return None  # only final answers are ever written: an active (or unknown) state here was not
    texts = {key: entry.get(key) for key in _TEXTS}
    numbers = {key: entry.get(key) for key in _NUMBERS}
    if not all(value is None or _text(value) for value in texts.values()):
        return None
    if not all(value is None or (type(value) is int and value >= 0) for value in numbers.values()):
        return None
    return JobStatus(job_id, JobState(state), **texts, **numbers)


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT

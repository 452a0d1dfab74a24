"""The adaptive worker groups' last figures, as `ls` shows them.

The group loop beside the session's Dask scheduler (job/adaptive.py) writes dask/adaptive.json: per
adaptive group, its running and pending jobs (with their ids), its target, bounds, lost jobs and the
scheduler's last refusal. `overview` reads the file with every session's other files; this module parses it
(it came from the cluster: damaged content counts as absent), adds why the group's jobs pend (`with_reasons`:
the scheduler's answer for the waiting ids, asked in the query `ls` makes anyway) and renders the lines under
`ls`'s table. The job side knows no batch system, so the reasons come from the laptop's query: a group that
asks for more than the user's limits allow (a QOS's job limit, a partition's) shows the scheduler's word.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from hpcjup.job import DASK_DIR
from hpcjup.job.contract import ADAPTIVE_STATUS
from hpcjup.schedulers.base import JobState, JobStatus, Scheduler
from hpcjup.session.groups import GROUP_NAME, MAX_READ

ADAPTIVE_FILE = f"{DASK_DIR}/{ADAPTIVE_STATUS}"  # what the group loop (job/adaptive.py) last saw, for `ls`
WAITING = "waiting"  # the figures' key for the ids of the group's jobs that wait in the queue (not shown)
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\[\]-]{0,99}")  # what a scheduler's job id may look like
_MAX_WAITING = 64  # ids asked about per group: a group's maximum beyond this is not asked about job by job


def adaptive_status(data: bytes | None) -> dict[str, dict[str, Any]]:
    """The adaptive groups' last figures from dask/adaptive.json: {group: {running, pending, target, min, max, lost,
    error}}; a damaged file or entry counts as absent (it came from the cluster)."""
    try:
        doc = json.loads((data or b"")[:MAX_READ])
    except ValueError:
        return {}
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, dict):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for name, entry in groups.items():
        if not (GROUP_NAME.fullmatch(name) and isinstance(entry, dict)):
            continue
        figures = {key: entry.get(key) for key in ("running", "pending", "target", "min", "max", "lost")}
        if all(isinstance(value, int) and not isinstance(value, bool) for value in figures.values()):
            error = entry.get("error")
            found[name] = {**figures, "error": error[:500] if isinstance(error, str) else None}
            found[name][WAITING] = _waiting(entry.get("jobs"))
    return found


def _waiting(jobs: object) -> tuple[str, ...]:
    """The ids of the jobs the loop submitted that wait in the queue ({id: the loop's state}), checked."""
    if not isinstance(jobs, dict):
        return ()
    ids = [i for i, state in jobs.items() if state == "pending" and isinstance(i, str) and _JOB_ID.fullmatch(i)]
    return tuple(ids[:_MAX_WAITING])


def with_reasons(
    groups: tuple[tuple[str, dict[str, Any]], ...], answers: Mapping[str, JobStatus], scheduler: Scheduler
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The groups' figures with why their waiting jobs pend, from the scheduler's `answers` (id -> status):
    `pending_reasons` {the scheduler's reason: jobs}, and `never_starts` (what is wrong, in words) when waiting
    will not clear a reason (a partition's limit, a per-job limit of the QOS); the ids themselves are dropped."""
    out = []
    for name, figures in groups:
        shown = {k: v for k, v in figures.items() if k != WAITING}
        pending = [answers[i] for i in figures.get(WAITING, ()) if i in answers]
        pending = [s for s in pending if s.state is JobState.PENDING]
        shown["pending_reasons"] = dict(Counter(s.reason or "no reason given" for s in pending))
        verdicts = [v for v in (scheduler.never_starts(s) for s in pending) if v is not None]
        shown["never_starts"] = verdicts[0][0] if verdicts else None
        out.append((name, shown))
    return tuple(out)


def groups_text(rows: list[dict[str, Any]]) -> str:
    """Lines under `ls`'s table for the sessions' adaptive groups (rows: SessionView.to_dict()); "" without any."""
    lines = []
    for row in rows:
        for name, g in (row.get("worker_groups") or {}).items():
            line = f"  {row['session']}/{name}: {g['running']} running, {g['pending']} pending, target {g['target']}"
            line += f" ({g['min']}-{g['max']} jobs)" + (f", {g['lost']} lost" if g["lost"] else "")
            reasons = g.get("pending_reasons") or {}
            if reasons:
                line += "; pending: " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
            if g.get("never_starts"):
                line += f" (will not start: {g['never_starts']})"
            lines.append(line + (f"; refused: {g['error']}" if g["error"] else ""))
    return "\n".join(["", "Adaptive worker groups:", *lines]) if lines else ""

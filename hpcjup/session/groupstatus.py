"""The adaptive worker groups' last figures, as `ls` shows them.

The group loop beside the session's Dask scheduler (job/adaptive.py) writes dask/adaptive.json: per
adaptive group, its running and pending jobs, its target, bounds, lost jobs and the scheduler's last
refusal. `overview` reads the file with every session's other files; this module parses it (it came
from the cluster: damaged content counts as absent) and renders the lines under `ls`'s table.
"""

from __future__ import annotations

import json
from typing import Any

from hpcjup.job import DASK_DIR
from hpcjup.job.contract import ADAPTIVE_STATUS
from hpcjup.session.groups import GROUP_NAME, MAX_READ

ADAPTIVE_FILE = f"{DASK_DIR}/{ADAPTIVE_STATUS}"  # what the group loop (job/adaptive.py) last saw, for `ls`


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
    return found


def groups_text(rows: list[dict[str, Any]]) -> str:
    """Lines under `ls`'s table for the sessions' adaptive groups (rows: SessionView.to_dict()); "" without any."""
    lines = []
    for row in rows:
        for name, g in (row.get("worker_groups") or {}).items():
            line = f"  {row['session']}/{name}: {g['running']} running, {g['pending']} pending, target {g['target']}"
            line += f" ({g['min']}-{g['max']} jobs)" + (f", {g['lost']} lost" if g["lost"] else "")
            lines.append(line + (f"; refused: {g['error']}" if g["error"] else ""))
    return "\n".join(["", "Adaptive worker groups:", *lines]) if lines else ""

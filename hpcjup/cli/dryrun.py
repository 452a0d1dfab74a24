"""What `hpcjup start --dry-run` shows: the job script, each partition's verdict, the environments' state.

Submits nothing; exits 5 (SUBMIT) unless every partition asked for would take the job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hpcjup.errors import ExitCode, SubmitError
from hpcjup.ui.tables import duration, expected_start

if TYPE_CHECKING:
    from hpcjup.cli.app import App
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.session.request import StartRequest
    from hpcjup.transport.base import Transport


def show_preview(
    ctx: click.Context,
    app: App,
    transport: Transport,
    scheduler: Scheduler,
    request: StartRequest,
    envs: list[dict[str, str]] | None = None,
) -> None:
    """--dry-run: the script and each partition's verdict; exit 5 unless every partition would take the job."""
    from hpcjup.session.preview import preview

    found = preview(transport, scheduler, request)
    rows = [{**p.to_dict(), "estimate_relative": expected_start(p.estimate)} for p in found.partitions]
    data: dict[str, object] = {
        "script": found.script,
        "scheduler": found.scheduler,
        "host": found.host,
        "session": found.session,
        "partitions": rows,
        "envs": envs or [],
    }
    error = None
    refused = [p for p in found.partitions if not p.can_take]
    if refused:  # one refused partition of several: Slurm refuses `-p a,b` with an unknown partition in it
        words = "; ".join(f"{p.name or 'the default partition'}: {p.refusal}" for p in refused)
        where = "" if len(refused) == len(found.partitions) else " in every partition asked for"
        error = SubmitError(
            f"{scheduler.title or scheduler.name} would not take the job{where} ({words}).", hint=refused[0].hint
        )
        data["error"] = error.to_dict()
    title = scheduler.title or scheduler.name
    lines = [f"# The job script for session {found.session}, as `hpcjup start` would submit it:", found.script]
    lines += [preview_line(title, row) for row in rows]
    verbs = {"built": "built, reused", "missing": "not built: `start` builds it first", "existing": "used as it is"}
    lines += [f"environment {e['env']} ({e['source']}): {verbs[e['state']]}" for e in envs or []]
    app.ui.result(data, text="\n".join(lines))
    if error is not None:
        if not app.ui.json_mode:
            raise error
        app.ui.warn(f"{error.message} Hint: {error.hint}")
        ctx.exit(int(ExitCode.SUBMIT))


def preview_line(title: str, row: dict[str, object]) -> str:
    """One partition's verdict in words."""
    name = row["name"] or "the default partition"
    if row["refusal"]:
        return f"{name}: {title} would refuse the job: {row['refusal']}" + (f" ({row['hint']})" if row["hint"] else "")
    parts = [f"{title} would start it {row['estimate_relative']}"] if row["estimate"] else []
    limit = row["time_limit_seconds"]
    parts.append(f"time limit {duration(limit) if isinstance(limit, int) else 'none'}")
    if row["total_nodes"] is not None:
        parts.append(f"{row['idle_nodes']} of {row['total_nodes']} nodes idle")
    if row["total_slots"] is not None:
        parts.append(f"{row['free_slots']} of {row['total_slots']} slots free")
    if row["note"]:
        parts.append(str(row["note"]))
    return f"{name}: " + "; ".join(parts)

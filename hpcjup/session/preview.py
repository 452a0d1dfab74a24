"""`hpcjup start --dry-run`: the job script `start` would submit, and what the scheduler says of it, per partition.

Nothing is submitted and nothing is created on the cluster: besides learning the home directory (in the
detection probe when the scheduler is detected), one remote command asks every question at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hpcjup.schedulers.base import PartitionPreview, Scheduler
from hpcjup.session.jobscript import render_job
from hpcjup.session.layout import SessionPaths, check_name, new_name
from hpcjup.session.request import StartRequest
from hpcjup.session.submit import resolve_workdir
from hpcjup.transport.base import Transport


@dataclass(frozen=True)
class Preview:
    """A dry run's result."""

    script: str
    scheduler: str
    host: str
    session: str  # the name the script was rendered for (a new one on each dry run unless --name)
    partitions: list[PartitionPreview]


def preview(transport: Transport, scheduler: Scheduler, request: StartRequest) -> Preview:
    """Render the job exactly as `submit` would, and ask the scheduler about it in one remote command."""
    name, script = render_script(transport, scheduler, request)
    partitions: list[str | None] = list(request.resources.partitions) or [None]
    if scheduler.previews_start:
        snippet = scheduler.preview_snippet(script, partitions)
        result = transport.run(["sh", "-c", snippet], check=False, timeout=120)
        found = scheduler.parse_preview(result.stdout, partitions)
    else:
        found = scheduler.parse_preview("", partitions)
    host = transport.host
    return Preview(script, scheduler.name, host, name, found)


def render_script(transport: Transport, scheduler: Scheduler, request: StartRequest) -> tuple[str, str]:
    """(session name, the job script `submit` would upload for `request`): the same rendering, `render_job`."""
    home = transport.home()
    request = dataclasses.replace(request, workdir=resolve_workdir(request.workdir, home))
    paths = SessionPaths(home, check_name(request.name) if request.name else new_name())
    return paths.name, render_job(paths, scheduler, request)

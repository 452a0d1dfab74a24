"""Tables for the terminal."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def duration(seconds: int | None) -> str:
    """1:05:00-style time for a number of seconds."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}-{text}" if days else text


def expected_start(text: str | None, now: datetime | None = None) -> str | None:
    """A scheduler's expected start time, relative as well as absolute: "in about 4 min (14:03)".

    Schedulers print local time without a zone (Slurm: 2026-11-25T14:03:11); text that is not an
    ISO time is shown as it came.
    """
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text
    now = now or (datetime.now(when.tzinfo) if when.tzinfo else datetime.now())
    seconds = (when - now).total_seconds()
    clock = when.strftime("%H:%M") if abs(seconds) < 86400 else when.strftime("%Y-%m-%d %H:%M")
    if seconds < 60:
        return f"any moment now ({clock})"
    if seconds < 5400:
        return f"in about {round(seconds / 60)} min ({clock})"
    if seconds < 2 * 86400:
        return f"in about {seconds / 3600:.0f} h ({clock})"
    return f"in about {seconds / 86400:.0f} days ({clock})"


def sessions_table(rows: list[dict[str, Any]], host: str, *, color: bool) -> str:
    """`ls` output: one line per session."""
    if not rows:
        return f"No sessions on {host}."
    from rich.console import Console
    from rich.table import Table

    from hpcjup.ui.markup import plain

    table = Table(box=None, pad_edge=False, header_style="bold" if color else "")
    for column in ("SESSION", "JOB", "STATE", "PARTITION", "NODES", "TIME LEFT", "URL / WHY"):
        table.add_column(column)
    for row in rows:
        detail = row["local_url"] or ""
        if row["pending_reason"]:
            detail = f"pending: {row['pending_reason']}" + (
                f", start {expected_start(row['expected_start'])}" if row["expected_start"] else ""
            )
        elif row.get("unknown_because"):
            detail = f"scheduler did not answer: {row['unknown_because']}"
        elif row["ended_because"]:
            detail = row["ended_because"] + (
                f" (exit {row['exit_code']})" if row["exit_code"] not in (None, 0, "0:0") else ""
            )
        cells = (
            row["session"],
            row["job_id"],
            row["state"],
            row["partition"] or "-",
            row["node_list"] or row["nodes"],
            duration(row["time_left"]),
            detail,
        )
        # Cells come from the cluster (node lists, pending reasons, ended_because): Text, never markup.
        table.add_row(*(plain(str(cell)) for cell in cells))
    console = Console(width=200, no_color=not color, force_terminal=color, highlight=False)
    with console.capture() as capture:
        console.print(table)
    return capture.get().rstrip()

"""`hpcjup stats`: how long sessions waited, how they ended, and what their nodes did, per partition."""

from __future__ import annotations

import csv
import io
import sys
from typing import Any

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.errors import UsageError

BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"  # partial blocks: a bar's last cell in eighths of a character
CSV_COLUMNS = (
    "host",
    "partition",
    "sessions",
    "queue_wait_n",
    "queue_wait_median_s",
    "queue_wait_p90_s",
    "start_to_url_n",
    "start_to_url_median_s",
    "start_to_url_p90_s",
    "ended",
    "node_hours_n",
    "node_hours_allocated",
    "node_hours_busy",
    "idle_given_back_n",
    "idle_given_back_node_hours",
)


@click.command()
@host_options
@click.option("--since", metavar="DATE", help="Only sessions submitted since: 2026-11-01, 2026-11-01T09:30, 7d, 12h.")
@click.option("--csv", "csv_mode", is_flag=True, help="Print one CSV row per host and partition.")
@json_option
@click.pass_obj
def command(app: App, host: str | None, local: bool, since: str | None, csv_mode: bool, reach: Reach) -> None:
    """Per host and partition: sessions, queue wait (median, p90), job start to URL, how sessions ended,
    node-hours allocated and with a busy kernel, node-hours the idle timeout gave back."""
    from hpcjup.session.stats import collect, parse_since, report

    if csv_mode and app.ui.json_mode:
        raise UsageError("--json and --csv exclude each other.", hint="Choose one.")
    cutoff = parse_since(since) if since else None  # before connecting: a typo costs no login
    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        collected = collect(transport, app.store, host)
    result = report(collected, host, cutoff)
    if csv_mode:
        sys.stdout.write(to_csv(result["groups"]))
        sys.stdout.flush()
        return
    app.ui.result(result, text=lambda: render(result, color=app.ui.interactive))


def to_csv(groups: list[dict[str, Any]]) -> str:
    """One row per host and partition; seconds and node-hours as numbers, empty where unknown."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for g in groups:
        qw, su, nh, ib = g["queue_wait"], g["start_to_url"], g["node_hours"], g["idle_given_back"]
        ended = ";".join(f"{reason}={n}" for reason, n in g["ended"].items())
        row = [g["host"], g["partition"], g["sessions"], qw["n"], qw["median"], qw["p90"], su["n"], su["median"]]
        row += [su["p90"], ended, nh["n"], nh["allocated"], nh["busy"], ib["n"], ib["node_hours"]]
        writer.writerow(["" if v is None else _number(v) for v in row])
    return out.getvalue()


def _number(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def short(seconds: float | None) -> str:
    """A duration for a table cell: 0.8 s, 42 s, 4m05s, 2h10m, 3d04h."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """`value` as a bar of block characters, `largest` filling `width` cells."""
    if largest <= 0:
        return ""
    eighths = round(max(0.0, value) / largest * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "") or "▏"


def render(result: dict[str, Any], *, color: bool) -> str:
    """The text form: the table per partition, queue wait per day as a bar chart, the footnotes."""
    if not result["sessions"]:
        since = f" since {result['since']}" if result["since"] else ""
        return f"No sessions on {result['host']}{since}."
    from rich.console import Console
    from rich.table import Table

    from hpcjup.ui.console import plain

    style = "bold" if color else ""
    table = Table(box=None, pad_edge=False, header_style=style, title_justify="left")
    headers = (
        "PARTITION",
        "SESSIONS",
        "WAIT",
        "WAIT p90",
        "TO URL",
        "URL p90",
        "ENDED",
        "NODE-H",
        "BUSY",
        "IDLE GAVE BACK",
    )
    for column in headers:
        table.add_column(column, justify="left" if column in ("PARTITION", "ENDED") else "right")
    for g in result["groups"]:
        qw, su, nh = g["queue_wait"], g["start_to_url"], g["node_hours"]
        ended = ", ".join(f"{reason} {n}" for reason, n in g["ended"].items())
        cells = [g["partition"], g["sessions"], short(qw["median"]), short(qw["p90"]), short(su["median"])]
        cells += [short(su["p90"]), ended, _hours(nh["allocated"], nh["n"]), _hours(nh["busy"], nh["n"])]
        cells.append(_hours(g["idle_given_back"]["node_hours"], g["idle_given_back"]["n"]))
        table.add_row(*(plain(str(cell)) for cell in cells))  # partitions and reasons come from the cluster
    days = result["queue_wait_by_day"]
    chart = Table(
        box=None, pad_edge=False, header_style=style, title="Queue wait per day (median)", title_justify="left"
    )
    for column in ("DAY", "N", "MEDIAN", ""):
        chart.add_column(column, justify="right" if column in ("N", "MEDIAN") else "left")
    largest = max((d["median"] for d in days), default=0.0)
    for d in days:
        chart.add_row(
            d["day"], str(d["n"]), short(d["median"]), plain(bar(d["median"], largest), "cyan" if color else "")
        )
    console = Console(width=200, no_color=not color, force_terminal=color, highlight=False)
    with console.capture() as capture:
        console.print(plain(f"{result['host']}: {result['sessions']} sessions" + _since(result)))
        console.print(table)
        if days:
            console.print()
            console.print(chart)
        for note in result["notes"]:
            console.print(plain(f"* {note}", "dim" if color else ""))
    return "\n".join(line.rstrip() for line in capture.get().rstrip().splitlines())


def _hours(value: float, n: int) -> str:
    return f"{value:.2f}" if n else "-"


def _since(result: dict[str, Any]) -> str:
    return f" since {result['since']}" if result["since"] else ""

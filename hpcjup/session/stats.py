"""`hpcjup stats`: queue waits, time to URL, endings and node-hours per host and partition.

Every session's session.json, state.json and usage.json come in one remote command (a tar stream);
the scheduler is asked once per scheduler in use, and only about sessions whose launcher has not
recorded an end (as `ls` does). Sessions gone from the host count from this laptop's archive of
earlier runs and its session cache. Older sessions without usage.json count where their records
allow (created_at, the end reason) and are left out of the figures they lack; damaged records are
skipped and counted.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hpcjup.config.resources import time_to_seconds
from hpcjup.errors import DamagedDocument, UsageError
from hpcjup.job import REASON_IDLE, STATE_FILE, USAGE_FILE
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.session import finished
from hpcjup.session.catalog import SessionDir
from hpcjup.session.layout import NAME, RECORD_FILE, SESSIONS_DIR, SessionPaths
from hpcjup.session.record import JobReport, SessionRecord
from hpcjup.session.store import LocalStore
from hpcjup.session.usage import JobUsage, SessionFigures, UsageArchive, moment, read_usage
from hpcjup.transport.base import Transport

DEFAULT_PARTITION = "(default)"
_RELATIVE = re.compile(r"([0-9]{1,6})\s*([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
SINCE_HINT = "Use an ISO date or time (2026-11-01, 2026-11-01T09:30, 2026-11-01T09:30+01:00) or a relative time: 30m, 12h, 7d, 2w."


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """--since: an ISO date/time (naive means UTC) or "<N><s|m|h|d|w>" before now; UsageError otherwise."""
    now = now or datetime.now(timezone.utc)
    value = text.strip().lower()
    try:
        relative = _RELATIVE.fullmatch(value)
        if relative:
            return now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        if not value or not value[0].isascii() or not value[0].isdigit():
            raise ValueError(value)
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise UsageError(f"--since {text!r} is neither a date nor a relative time.", hint=SINCE_HINT) from None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def p90(values: list[float]) -> float | None:
    """The 90th percentile, nearest rank: the smallest value at least 90% of the values do not exceed."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


@dataclass
class Collected:
    """The sessions of one host, and what could not be used."""

    figures: list[SessionFigures] = field(default_factory=list)
    damaged: int = 0
    problems: list[str] = field(default_factory=list)


def collect(transport: Transport, store: LocalStore, host: str) -> Collected:
    """Every session of `host`: its records on the cluster (one read), the scheduler for those without an end,
    and this laptop's archive and cache for sessions no longer there. The archive is brought up to date."""
    entries = transport.read_tree(SESSIONS_DIR, [RECORD_FILE, STATE_FILE, USAGE_FILE], depth=2)
    files: dict[str, dict[str, bytes]] = {}
    for entry in entries:
        parts = entry.path.split("/")
        if len(parts) == 1 and entry.data is None:
            files.setdefault(parts[0], {})
        elif len(parts) == 2 and entry.data is not None:
            files.setdefault(parts[0], {})[parts[1]] = entry.data
    out = Collected()
    parsed = []
    for name, docs in sorted(files.items()):
        if not NAME.fullmatch(name) or RECORD_FILE not in docs:
            continue  # not a session, or a start still uploading (ls shows it)
        try:
            record = SessionRecord.from_json(docs[RECORD_FILE])
            report = JobReport.from_json(docs[STATE_FILE]) if STATE_FILE in docs else None
        except DamagedDocument as exc:
            out.damaged += 1
            out.problems.append(f"{name}: {exc.message}")
            continue
        usage, problem = read_usage(docs.get(USAGE_FILE))
        if problem:
            out.damaged += 1
            out.problems.append(f"{name}: {problem}")
            continue
        parsed.append((record, report, usage))
    statuses = _statuses(transport, parsed, finished.load(store, host) or {})  # what `ls` learned: not asked again
    current = [figures_of(r, rep, u, statuses.get(r.name), host) for r, rep, u in parsed]
    out.figures = merge(current, store, host)
    return out


#: A launcher rewrites usage.json at least every 5 minutes while it runs; one silent for longer than this was
#: killed outright (the margin covers clock differences between laptop and cluster): the scheduler is not asked.
SILENT_FOR = 3600.0


def _statuses(
    transport: Transport,
    parsed: list[tuple[SessionRecord, JobReport | None, JobUsage | None]],
    remembered: dict[finished.Key, JobStatus] | None = None,
) -> dict[str, JobStatus]:
    """The scheduler's word on the sessions whose launcher has not recorded an end (one query per scheduler),
    but for the finished jobs this laptop remembers (`remembered`, session/finished.py)."""
    from hpcjup.session.overview import job_statuses

    home, now = transport.home(), time.time()
    statuses: dict[str, JobStatus] = {}
    open_ = []
    for record, report, usage in parsed:
        if report is not None and report.ended:
            continue
        if usage is not None and usage.updated_at is not None and now - usage.updated_at > SILENT_FOR:
            statuses[record.name] = JobStatus(record.job_id, JobState.GONE)
        else:
            open_.append(SessionDir(SessionPaths(home, record.name), record, report))
    return {**statuses, **(job_statuses(transport, open_, remembered) if open_ else {})}


def merge(current: list[SessionFigures], store: LocalStore, host: str) -> list[SessionFigures]:
    """The host's sessions, plus those only this laptop still knows (archived figures, else the cache's record)."""
    archive = UsageArchive(store)
    known = archive.load(host)
    known.update({f.key: f for f in current})
    names = {f.name for f in known.values()}
    for name in store.names(host):
        entry = store.load(host, name)
        record = entry.record if entry else None
        if name in names or record is None:
            continue
        gone = figures_of(record, None, None, JobStatus(record.job_id, JobState.GONE), host, end="gone")
        known[gone.key] = gone
    archive.save(host, [f for f in known.values() if f.end != "gone"])
    return sorted(known.values(), key=lambda f: f.created_at)


def remember(
    store: LocalStore, host: str, sessions: Iterable[tuple[SessionRecord, JobReport | None, bytes | None]]
) -> None:
    """Archive these ended sessions' figures on this laptop (for `hpcjup prune`, before it removes them), so that
    later statistics still count them: `sessions` are (session.json, state.json, usage.json's raw bytes or None)."""
    archive = UsageArchive(store)
    known = archive.load(host)
    for record, report, raw in sessions:
        figures = figures_of(record, report, read_usage(raw)[0], None, host)
        known[figures.key] = figures
    archive.save(host, list(known.values()))


def figures_of(
    record: SessionRecord,
    report: JobReport | None,
    usage: JobUsage | None,
    status: JobStatus | None,
    host: str,
    end: str | None = None,
) -> SessionFigures:
    """One session's figures from whatever records it has."""
    asked = record.resources.get("time")
    limit = usage.time_limit if usage and usage.time_limit else _seconds_or_none(asked)
    partition = (usage.partition if usage else None) or record.resources.get("partition") or DEFAULT_PARTITION
    until = None
    if usage is not None:
        until = usage.ended_at or usage.updated_at
    return SessionFigures(
        name=record.name,
        job_id=record.job_id,
        host=host,
        partition=str(partition),
        created_at=moment(record.created_at) or 0.0,
        end=end or ending(report, usage, status),
        nodes=usage.nodes if usage else _int_or(record.resources.get("nodes"), 1),
        submitted_at=usage.submitted_at if usage else None,
        started_at=usage.started_at if usage else None,
        ready_at=usage.ready_at if usage else None,
        until=until,
        busy_seconds=usage.busy_seconds if usage else None,
        time_limit=limit,
        has_usage=usage is not None,
    )


def ending(report: JobReport | None, usage: JobUsage | None, status: JobStatus | None) -> str:
    """How a session ended: the launcher's reason; else, for a job it never recorded an end for, the scheduler's."""
    if usage is not None and usage.end_reason:
        return usage.end_reason
    if report is not None and report.ended:
        return report.reason or "ended"
    state = status.state if status is not None else JobState.UNKNOWN
    if state in (JobState.RUNNING, JobState.CONFIGURING, JobState.COMPLETING, JobState.SUSPENDED):
        return "running"
    if state is JobState.PENDING:
        return "pending"
    if state is JobState.UNKNOWN:
        return "unknown"
    if state in (JobState.GONE, JobState.COMPLETED):  # ended without the launcher's word: killed outright
        return "lost" if report is not None or usage is not None else "never-started"
    return state.value.lower().replace("_", "-")  # cancelled, timeout, node-fail, out-of-memory, ...


def _seconds_or_none(value: Any) -> int | None:
    try:
        return time_to_seconds(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


# -- the figures ---------------------------------------------------------------------------------


def summarize(figures: Iterable[SessionFigures]) -> list[dict[str, Any]]:
    """Per host and partition: sessions, queue wait, start to URL, endings, node-hours."""
    groups: dict[tuple[str, str], list[SessionFigures]] = {}
    for f in figures:
        groups.setdefault((f.host, f.partition), []).append(f)
    return [_group(host, partition, items) for (host, partition), items in sorted(groups.items())]


def _group(host: str, partition: str, items: list[SessionFigures]) -> dict[str, Any]:
    waits = [w for w in (f.queue_wait for f in items) if w is not None]
    readies = [r for r in (f.to_ready for f in items) if r is not None]
    held = [f for f in items if f.used is not None and f.busy_seconds is not None]
    idle = [f for f in items if f.end == REASON_IDLE and f.used is not None and f.time_limit]
    given_back = sum(f.nodes * max(0.0, (f.time_limit or 0) - (f.used or 0.0)) for f in idle) / 3600
    return {
        "host": host,
        "partition": partition,
        "sessions": len(items),
        "queue_wait": {"n": len(waits), "median": median(waits), "p90": p90(waits)},
        "start_to_url": {"n": len(readies), "median": median(readies), "p90": p90(readies)},
        "ended": dict(sorted(Counter(f.end for f in items).items())),
        "node_hours": {
            "n": len(held),
            "allocated": sum(f.nodes * (f.used or 0.0) for f in held) / 3600,
            "busy": sum(f.nodes * (f.busy_seconds or 0.0) for f in held) / 3600,
        },
        "idle_given_back": {"n": len(idle), "node_hours": given_back},
    }


def waits_by_day(figures: Iterable[SessionFigures]) -> list[dict[str, Any]]:
    """Queue wait per UTC day of submission: sessions with a known wait, their median and longest."""
    days: dict[str, list[float]] = {}
    for f in figures:
        if f.queue_wait is not None:
            day = datetime.fromtimestamp(f.created_at, timezone.utc).date().isoformat()
            days.setdefault(day, []).append(f.queue_wait)
    return [{"day": d, "n": len(w), "median": median(w), "max": max(w)} for d, w in sorted(days.items())]


def notes(figures: list[SessionFigures], damaged: int) -> list[str]:
    """Footnotes: what was left out of which figure, and why."""
    out = []
    old = sum(1 for f in figures if not f.has_usage)
    if old:
        out.append(
            f"{old} of {len(figures)} sessions have no usage record (started by an older hpcjup, removed from the "
            "host, or never started): counted in sessions and endings only."
        )
    if any(f.end in ("running", "lost") for f in figures):
        out.append(
            "Running sessions, and sessions whose job was killed outright (lost), count up to their last record."
        )
    if damaged:
        out.append(f"{damaged} damaged session record(s) skipped (`hpcjup ls` shows them).")
    return out


def report(collected: Collected, host: str, since: datetime | None) -> dict[str, Any]:
    """The result of `hpcjup stats`: the groups, queue wait per day, footnotes."""
    cutoff = since.timestamp() if since else None
    figures = [f for f in collected.figures if cutoff is None or f.created_at >= cutoff]
    return {
        "host": host,
        "since": since.isoformat(timespec="seconds") if since else None,
        "sessions": len(figures),
        "groups": summarize(figures),
        "queue_wait_by_day": waits_by_day(figures),
        "damaged": collected.damaged,
        "notes": notes(figures, collected.damaged),
    }

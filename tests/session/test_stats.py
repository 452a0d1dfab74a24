"""`hpcjup stats`' figures: percentiles on known data, endings, node-hours, old and damaged records, --since."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup.errors import UsageError
from hpcjup.session.record import SessionRecord
from hpcjup.session.stats import collect, ending, median, p90, parse_since, report, summarize
from hpcjup.session.store import CacheEntry, LocalStore
from hpcjup.session.usage import JobUsage, SessionFigures, UsageArchive
from hpcjup.transport.local import LocalTransport

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc).timestamp()


def iso(offset: float) -> str:
    return datetime.fromtimestamp(T0 + offset, timezone.utc).isoformat(timespec="milliseconds")


def test_median_and_p90_on_known_data() -> None:
    assert (median(list(range(1, 11))), p90([float(v) for v in range(10, 0, -1)])) == (5.5, 9.0)
    assert (median([3.0]), p90([3.0])) == (3.0, 3.0)
    assert (median([1.0, 2.0]), p90([1.0, 2.0])) == (1.5, 2.0)
    assert p90([float(v) for v in range(1, 21)]) == 18.0
    assert (median([]), p90([])) == (None, None)


def figures(name: str, **kw: Any) -> SessionFigures:
    base: dict[str, Any] = {"name": name, "job_id": name, "host": "h", "partition": "batch", "created_at": T0}
    return SessionFigures(**{**base, "end": "stopped", "has_usage": True, **kw})


def test_queue_wait_start_to_url_node_hours_and_what_idle_gave_back() -> None:
    rows = [
        # 2 nodes, waited 60 s, Jupyter after 5 s, held 1 h, busy 30 min, ended by the idle timeout of a 2 h job.
        figures(
            "a",
            submitted_at=T0 + 1,
            started_at=T0 + 61,
            ready_at=T0 + 66,
            until=T0 + 3661,
            nodes=2,
            busy_seconds=1800.0,
            time_limit=7200,
            end="idle",
        ),
        figures("b", started_at=T0 + 10, ready_at=T0 + 12, until=T0 + 370, busy_seconds=0.0, time_limit=3600),
        figures("c", started_at=T0 - 5),  # the node's clock behind the laptop's: a wait of 0, never negative
        figures("old", end="walltime", has_usage=False),  # an older session: counted, no figures
        figures("other", partition="gpu", end="no-jupyter"),
    ]
    assert rows[2].queue_wait == 0.0 and rows[3].queue_wait is None and rows[3].used is None
    batch, gpu = summarize(rows)
    assert (batch["partition"], batch["sessions"], gpu["partition"], gpu["sessions"]) == ("batch", 4, "gpu", 1)
    assert batch["queue_wait"] == {"n": 3, "median": 10.0, "p90": 60.0}  # a: from submitted_at; b: from created_at
    assert batch["start_to_url"] == {"n": 2, "median": 3.5, "p90": 5.0}
    assert batch["ended"] == {"idle": 1, "stopped": 2, "walltime": 1}
    assert batch["node_hours"] == {"n": 2, "allocated": pytest.approx(2.1), "busy": pytest.approx(1.0)}
    assert batch["idle_given_back"] == {"n": 1, "node_hours": pytest.approx(2.0)}  # 2 nodes x (2 h - 1 h)
    assert gpu["ended"] == {"no-jupyter": 1} and gpu["queue_wait"]["n"] == 0


def test_how_a_session_ended_without_the_launchers_word() -> None:
    from hpcjup.schedulers.base import JobState, JobStatus
    from hpcjup.session.record import JobReport

    def status(state: JobState) -> JobStatus:
        return JobStatus("1", state)

    usage = JobUsage(started_at=T0)
    assert ending(JobReport("ended", reason="idle"), None, None) == "idle"
    assert ending(JobReport("running"), usage, status(JobState.GONE)) == "lost"  # killed outright
    assert ending(None, None, status(JobState.GONE)) == "never-started"
    assert ending(None, None, status(JobState.PENDING)) == "pending"
    assert ending(JobReport("running"), usage, status(JobState.RUNNING)) == "running"
    assert ending(JobReport("running"), usage, status(JobState.NODE_FAIL)) == "node-fail"
    assert ending(None, None, None) == "unknown"


def session(home: Path, name: str, files: dict[str, Any]) -> Path:
    directory = home / ".hpcjup" / "sessions" / name
    directory.mkdir(parents=True, mode=0o700)
    for file, content in files.items():
        (directory / file).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return directory


def record(name: str, offset: float = 0, **kw: Any) -> dict[str, Any]:
    resources = {"partition": "batch", "time": "1:00:00", "nodes": 1, **kw}
    return {
        "name": name,
        "host": "local",
        "scheduler": "local",
        "job_id": f"job-{name}",
        "created_at": iso(offset),
        "resources": resources,
    }


def usage(offset: float, end: str | None, **kw: Any) -> dict[str, Any]:
    doc = {
        "schema": 1,
        "job_id": "x",
        "partition": "batch",
        "nodes": 1,
        "time_limit": 3600,
        "submitted_at": iso(offset),
        "started_at": iso(offset + 30),
        "ready_at": iso(offset + 33),
        "ended_at": iso(offset + 630) if end else None,
        "end_reason": end,
        "busy_seconds": 60.0,
        "sample_seconds": 60,
        "updated_at": iso(offset + 630),
    }
    return {**doc, **kw}


def ended(reason: str) -> dict[str, Any]:
    return {"schema": 1, "state": "ended", "reason": reason, "updated_at": iso(700)}


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalTransport, LocalStore, Path]:
    """A host that is this machine, its home in tmp_path, and a laptop cache beside it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return LocalTransport(), LocalStore(tmp_path / "state"), home


def test_records_old_damaged_lost_and_gone_sessions_count_where_they_can(host: Any) -> None:
    transport, store, home = host
    session(
        home, "new", {"session.json": record("new"), "state.json": ended("stopped"), "usage.json": usage(0, "stopped")}
    )
    session(home, "old", {"session.json": record("old", 100), "state.json": ended("idle")})  # before usage.json
    session(
        home,
        "killed",
        {"session.json": record("killed", 200), "state.json": {"state": "running"}, "usage.json": usage(200, None)},
    )
    session(home, "queued", {"session.json": record("queued", 300)})  # its job is gone: it never started
    session(home, "broken", {"session.json": b"{not json", "state.json": ended("stopped")})
    session(home, "hostile", {"session.json": record("hostile", 400), "usage.json": usage(400, "idle", nodes=True)})
    session(home, "garbled", {"session.json": record("garbled", 400), "usage.json": usage(0, "x", started_at="soon")})
    cached = SessionRecord.from_dict(record("pruned", 500))
    store.save("local", "pruned", CacheEntry(host="local", record=cached))  # only the cache knows it
    collected = collect(transport, store, "local")
    assert collected.damaged == 3 and len(collected.problems) == 3
    assert any("hostile" in p and "nodes" in p for p in collected.problems)
    result = report(collected, "local", None)
    (group,) = result["groups"]
    assert group["sessions"] == 5
    assert group["ended"] == {"gone": 1, "idle": 1, "lost": 1, "never-started": 1, "stopped": 1}
    assert group["queue_wait"] == {"n": 2, "median": 30.0, "p90": 30.0}
    # killed: up to its last record (600 s), like "new"; both 1 node and 60 busy seconds.
    assert group["node_hours"] == {"n": 2, "allocated": pytest.approx(1200 / 3600), "busy": pytest.approx(120 / 3600)}
    notes = " ".join(result["notes"])
    assert "3 of 5 sessions have no usage record" in notes and "3 damaged" in notes and "last record" in notes


def test_sessions_removed_from_the_host_still_count_from_the_laptops_archive(host: Any) -> None:
    transport, store, home = host
    directory = session(home, "a", {"session.json": record("a"), "usage.json": usage(0, "idle")})
    collect(transport, store, "local")
    archive = UsageArchive(store)
    assert oct(archive.path("local").stat().st_mode & 0o777) == "0o600"
    for name in directory.iterdir():  # what `hpcjup prune` does
        name.unlink()
    directory.rmdir()
    (group,) = report(collect(transport, store, "local"), "local", None)["groups"]
    assert (group["sessions"], group["ended"], group["idle_given_back"]["n"]) == (1, {"idle": 1}, 1)
    entry = json.loads(archive.path("local").read_text())["sessions"][0]
    hostile = [{**entry, "busy_seconds": "x"}, {**entry, "nodes": 0}, {**entry, "until": True}, {"name": 1}, "junk"]
    archive.path("local").write_text(json.dumps({"sessions": hostile}))  # hand-edited: ignored, no crash
    assert report(collect(transport, store, "local"), "local", None)["sessions"] == 0


def test_since_keeps_the_sessions_submitted_from_then_on(host: Any) -> None:
    transport, store, home = host
    session(home, "early", {"session.json": record("early"), "usage.json": usage(0, "stopped")})
    session(home, "late", {"session.json": record("late", 86400), "usage.json": usage(86400, "stopped")})
    collected = collect(transport, store, "local")
    since = datetime.fromtimestamp(T0 + 3600, timezone.utc)
    result = report(collected, "local", since)
    assert result["sessions"] == 1 and result["since"] == "2026-11-02T09:00:00+00:00"
    assert [d["day"] for d in report(collected, "local", None)["queue_wait_by_day"]] == ["2026-11-02", "2026-11-03"]


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("12h", NOW - timedelta(hours=12)),
        (" 2W ", NOW - timedelta(weeks=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc)),
        ("2026-11-01T09:30", datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc)),
        ("2026-11-01T09:30+01:00", datetime(2026, 11, 1, 8, 30, tzinfo=timezone.utc)),
        ("2026-11-01T09:30:00Z", datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc)),
    ],
)
def test_since_parses_iso_dates_and_relative_times(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "7", "d7", "-7d", "7y", "2026-13-01", "１d", "٣d", "99999999d"])
def test_since_refuses_what_it_cannot_read_with_a_hint(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_since(text, NOW)
    assert "7d" in (info.value.hint or "") and "2026-11-01" in (info.value.hint or "")


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(r"\A[0-9]{1,8}\s*[smhdwy]?\Z"),
        st.from_regex(
            r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?\Z"
        ),
        st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
    )
)
def test_since_either_parses_or_is_a_usage_error_with_a_hint(text: str) -> None:
    try:
        when = parse_since(text, NOW)
    except UsageError as exc:
        assert exc.hint and "7d" in exc.hint
    else:
        assert when.tzinfo is not None and when.utcoffset() == timedelta(0)


def test_prune_can_archive_what_it_removes(host: Any) -> None:
    from hpcjup.session.record import JobReport, SessionRecord
    from hpcjup.session.stats import remember

    transport, store, _ = host
    raw = json.dumps(usage(0, "walltime")).encode()
    remember(store, "local", [(SessionRecord.from_json(json.dumps(record("gone")).encode()), JobReport("ended"), raw)])
    (group,) = report(collect(transport, store, "local"), "local", None)["groups"]
    assert (group["sessions"], group["ended"], group["queue_wait"]["n"]) == (1, {"walltime": 1}, 1)


def test_a_launcher_silent_for_an_hour_is_not_asked_about(host: Any) -> None:
    """Killed outright long ago: counted as lost without a scheduler query (one that runs no command here)."""
    from hpcjup.session.record import JobReport, SessionRecord
    from hpcjup.session.stats import _statuses
    from hpcjup.session.usage import JobUsage

    class NoCommands(LocalTransport):
        def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
            raise AssertionError(f"asked the scheduler: {command}")

    silent = SessionRecord.from_json(json.dumps({**record("silent"), "scheduler": "slurm", "job_id": "42"}).encode())
    usage_doc = JobUsage(started_at=T0, updated_at=T0 + 60)  # a month before the tests' "now"
    statuses = _statuses(NoCommands(), [(silent, JobReport("running"), usage_doc)])
    assert ending(JobReport("running"), usage_doc, statuses["silent"]) == "lost"


def test_a_finished_job_ls_remembered_is_not_asked_about(host: Any) -> None:
    """A job that never ran (no state.json): `ls` remembered the scheduler's last word; `stats` takes it too."""
    from hpcjup.schedulers.base import JobState, JobStatus
    from hpcjup.session.record import SessionRecord
    from hpcjup.session.stats import _statuses

    class NoCommands(LocalTransport):
        def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
            raise AssertionError(f"asked the scheduler: {command}")

    queued = SessionRecord.from_json(json.dumps({**record("queued"), "scheduler": "slurm", "job_id": "43"}).encode())
    cancelled = JobStatus("43", JobState.CANCELLED)
    statuses = _statuses(NoCommands(), [(queued, None, None)], {("queued", "43"): cancelled})
    assert statuses["queued"] == cancelled
    assert ending(None, None, statuses["queued"]) == "cancelled"

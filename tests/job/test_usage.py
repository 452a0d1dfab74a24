"""usage.json's busy-time estimate from two samples of Jupyter's kernels (pure: no Jupyter here)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from hpcjup.job import LAUNCHER_PATH

sys.path.insert(0, str(LAUNCHER_PATH.parent))  # the job files import each other from beside themselves
from usage import busy_between, process_start

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def kernel(state: str, last: float | None = None) -> dict[str, object]:
    stamp = None if last is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(last)) + ".000000Z"
    return {"id": "k", "execution_state": state, "last_activity": stamp}


def test_busy_at_both_samples_counts_the_whole_interval() -> None:
    assert busy_between([kernel("busy", T0 + 5)], T0, T0 + 10, was_busy=True) == (10.0, True)


def test_work_that_ended_counts_up_to_its_last_activity() -> None:
    assert busy_between([kernel("idle", T0 + 4)], T0, T0 + 10, was_busy=True) == (4.0, False)


def test_work_that_began_or_came_and_went_counts_half() -> None:
    assert busy_between([kernel("busy", T0 + 9), kernel("idle")], T0, T0 + 10, was_busy=False) == (5.0, True)
    assert busy_between([kernel("idle", T0 + 6)], T0, T0 + 10, was_busy=False) == (3.0, False)


def test_idle_kernels_and_nonsense_count_nothing() -> None:
    assert busy_between([kernel("idle", T0 - 50)], T0, T0 + 10, was_busy=False) == (0.0, False)
    assert busy_between([], T0, T0 + 10, was_busy=False) == (0.0, False)
    assert busy_between({"kernels": 3}, T0, T0 + 10, was_busy=False) == (0.0, False)
    assert busy_between(["x", {"last_activity": "not a time"}], T0, T0 + 10, was_busy=False) == (0.0, False)


def test_a_process_start_time_is_read_from_proc() -> None:
    started = process_start()
    assert started is not None and started <= time.time()
    assert process_start(str(os.getppid())) <= started + 0.05  # type: ignore[operator]  # 10 ms ticks, two clocks
    assert process_start("999999999") is None


def test_usage_json_is_written_when_busy_time_changed_and_as_a_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import usage

    record = usage.Usage(str(tmp_path), "77", str(tmp_path / "launcher.py"))
    record.ready(2)
    path = tmp_path / "usage.json"
    first = json.loads(path.read_text())
    assert (first["job_id"], first["submitted_at"], first["busy_seconds"], first["sample_seconds"]) == (
        "77",
        None,
        0.0,
        2,
    )
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    record.sample([kernel("busy")])  # busy now, but written at most every MIN_WRITE seconds
    assert json.loads(path.read_text())["busy_seconds"] == 0.0
    monkeypatch.setattr(usage, "MIN_WRITE", 0.0)
    time.sleep(0.2)
    record.sample([kernel("busy")])
    busy = json.loads(path.read_text())["busy_seconds"]
    assert busy >= 0.2
    monkeypatch.setattr(usage, "HEARTBEAT", 0.0)
    monkeypatch.setattr(usage, "MIN_WRITE", 1e9)
    before = json.loads(path.read_text())["updated_at"]
    time.sleep(0.01)
    record.sample(None)  # Jupyter did not answer: nothing counted, but the heartbeat still says it lives
    assert json.loads(path.read_text())["updated_at"] > before
    record.ended("walltime")
    last = json.loads(path.read_text())
    assert last["end_reason"] == "walltime" and last["ended_at"] and last["busy_seconds"] >= busy


def test_a_usage_json_that_cannot_be_written_never_ends_the_session(tmp_path: Path) -> None:
    import usage

    (tmp_path / "usage.json").mkdir()  # os.replace onto it fails, as a full disk or a quota would
    record = usage.Usage(str(tmp_path), "77", str(tmp_path / "launcher.py"))
    record.ready(2)
    record.ended("stopped")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usage.json"], "no temporary file left behind"

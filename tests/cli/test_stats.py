"""`hpcjup stats` on the real mini-cluster: a stopped and an idle-ended session counted, in JSON, CSV and text."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from hpcjup.cli.stats import bar, render, short, to_csv
from tests.cli.helpers import run, wait_for
from tests.cli.kernel import run_in_kernel

pytestmark = pytest.mark.one_backend

HOST = ["--host", "minicluster"]


def remote_commands(stderr: str) -> list[str]:
    """The remote commands `-v` logged (one line each, whatever the backend)."""
    return [
        line for line in stderr.splitlines() if line.startswith(("hpcjup.remote:", "hpcjup.ssh:")) and " -> " in line
    ]


def start_detached(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run(["start", *HOST, "-d", "--json", "--partition", "booster", "--time", "30", *args], env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ended_because(env: dict[str, str], name: str) -> str | None:
    result = run(["ls", *HOST, "--json"], env)
    assert result.returncode == 0, result.stderr
    return {row["session"]: row for row in json.loads(result.stdout)["sessions"]}[name]["ended_because"]


@pytest.mark.cluster
def test_stats_counts_a_stopped_and_an_idle_session(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    since = (datetime.now(timezone.utc) - timedelta(seconds=2)).isoformat(timespec="seconds")
    stopped = start_detached(laptop_env, "--name", "stats-stopped")
    start_detached(laptop_env, "--name", "stats-idle", "--idle-timeout", "10s")
    assert run_in_kernel(f"http://127.0.0.1:{stopped['local_port']}", stopped["token"], "print(1)").strip() == "1"
    assert run(["stop", "stats-stopped", *HOST], laptop_env, timeout=120).returncode == 0
    wait_for(lambda: ended_because(laptop_env, "stats-idle") == "idle", 120, "the idle session to end", interval=2)

    result = run(["-v", "stats", *HOST, "--since", since, "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    # One read of every record, then at most the queries `ls` makes (per scheduler, not per session).
    commands = remote_commands(result.stderr)
    listing = remote_commands(run(["-v", "ls", *HOST], laptop_env).stderr)
    assert sum("-name usage.json" in c for c in commands) == 1 and len(commands) <= len(listing), commands
    stats = json.loads(result.stdout)
    (group,) = stats["groups"]
    assert (stats["sessions"], group["partition"], group["sessions"]) == (2, "booster", 2)
    assert group["ended"] == {"idle": 1, "stopped": 1}
    assert group["queue_wait"]["n"] == 2 and 0 <= group["queue_wait"]["median"] <= group["queue_wait"]["p90"] < 60
    assert group["start_to_url"]["n"] == 2 and 0.5 < group["start_to_url"]["median"] < 60  # JupyterLab takes ~2 s
    hours = group["node_hours"]
    assert hours["n"] == 2 and 0 < hours["allocated"] < 0.1 and 0 <= hours["busy"] <= hours["allocated"]
    # The idle timeout gave back what was left of its 30 minutes on its one node.
    assert group["idle_given_back"]["n"] == 1 and 0.4 < group["idle_given_back"]["node_hours"] < 0.5
    assert stats["damaged"] == 0 and stats["notes"] == []
    assert [day["n"] for day in stats["queue_wait_by_day"]] == [2]

    as_csv = run(["stats", *HOST, "--since", since, "--csv"], laptop_env)
    assert as_csv.returncode == 0, as_csv.stderr
    (row,) = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert (row["partition"], row["sessions"], row["ended"]) == ("booster", "2", "idle=1;stopped=1")
    text = run(["stats", *HOST, "--since", since], laptop_env)
    assert text.returncode == 0 and "booster" in text.stdout and "Queue wait per day" in text.stdout, text.stdout


def test_stats_refuses_a_bad_since_and_json_with_csv_before_connecting(laptop_env: dict[str, str]) -> None:
    bad = run(["stats", "--host", "nowhere.invalid", "--since", "last week", "--json"], laptop_env)
    assert bad.returncode == 2 and "7d" in json.loads(bad.stdout)["error"]["hint"]
    both = run(["stats", "--host", "nowhere.invalid", "--json", "--csv"], laptop_env)
    assert both.returncode == 2 and "exclude each other" in both.stderr


RESULT = {
    "host": "juwels",
    "since": None,
    "sessions": 3,
    "groups": [
        {
            "host": "juwels",
            "partition": "booster",
            "sessions": 3,
            "queue_wait": {"n": 2, "median": 90.0, "p90": 4000.0},
            "start_to_url": {"n": 2, "median": 2.25, "p90": 3.0},
            "ended": {"idle": 1, "stopped": 1, "walltime": 1},
            "node_hours": {"n": 2, "allocated": 3.5, "busy": 1.25},
            "idle_given_back": {"n": 1, "node_hours": 0.5},
        }
    ],
    "queue_wait_by_day": [
        {"day": "2026-11-01", "n": 1, "median": 40.0, "max": 40.0},
        {"day": "2026-11-02", "n": 1, "median": 4000.0, "max": 4000.0},
    ],
    "damaged": 1,
    "notes": ["1 damaged session record(s) skipped (`hpcjup ls` shows them)."],
}


def test_the_text_form_draws_queue_wait_per_day_and_keeps_the_footnotes() -> None:
    text = render(RESULT, color=False)
    assert "booster" in text and "1m30s" in text and "1h06m" in text and "idle 1, stopped 1, walltime 1" in text
    day1, day2 = (line for line in text.splitlines() if line.startswith("2026-11-0"))
    assert day2.endswith("█" * 40) and day1.endswith(" ▍")  # 40 s of 4000 s: 3.2 eighths of a cell
    assert "* 1 damaged session record(s) skipped" in text


def test_csv_has_one_row_per_partition_with_numbers() -> None:
    (row,) = list(csv.DictReader(io.StringIO(to_csv(RESULT["groups"]))))  # type: ignore[arg-type]
    assert (row["queue_wait_median_s"], row["node_hours_busy"], row["ended"]) == (
        "90.0",
        "1.25",
        "idle=1;stopped=1;walltime=1",
    )


def test_durations_and_bars() -> None:
    assert [short(s) for s in (None, 0.84, 42, 245, 7800, 3 * 86400 + 4 * 3600)] == [
        "-",
        "0.8 s",
        "42 s",
        "4m05s",
        "2h10m",
        "3d04h",
    ]
    assert (bar(1, 1, 8), bar(1, 2, 8), bar(1, 16, 8), bar(0, 1, 8), bar(1, 0)) == ("█" * 8, "████", "▌", "▏", "")

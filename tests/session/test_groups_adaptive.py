"""Adaptive worker groups on the laptop's side: the PARTITION:MIN-MAX spec, `scale`'s range, groups.json entries and
the loop's status file as `ls` reads it (no cluster)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.errors import UsageError
from hpcjup.job.contract import ADAPTIVE_TOKEN
from hpcjup.session.groupjobs import _RENDER, lifetime_args
from hpcjup.session.groups import DEFAULT_IDLE, WorkerGroup, parse_range, worker_name
from hpcjup.session.groups import group_of as _group_of
from hpcjup.session.groupstatus import adaptive_status, groups_text

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
counts = st.integers(min_value=0, max_value=999_999)


def test_a_range_makes_an_adaptive_group() -> None:
    group = WorkerGroup.parse("batch:0-16x8", idle=30)
    assert (group.partition, group.jobs, group.maximum, group.cores, group.idle) == ("batch", 0, 16, 8, 30)
    assert group.adaptive and not group.preemptible
    assert WorkerGroup.parse("gpu:2-4:preemptible").preemptible


def test_the_old_spec_stays_a_fixed_group() -> None:
    group = WorkerGroup.parse("batch:4x8")
    assert (group.jobs, group.maximum, group.adaptive) == (4, None, False)
    assert group.to_json() == {"partition": "batch", "jobs": 4, "cores": 8, "memory": None}


@pytest.mark.parametrize("text", ["batch:3-2", "batch:-2", "batch:1-", "batch:0-2x0", "batch:0-2:pre", "batch:0-2x1:"])
def test_bad_ranges_are_refused(text: str) -> None:
    with pytest.raises(UsageError) as info:
        WorkerGroup.parse(text)
    assert info.value.hint and "MIN-MAX" in info.value.hint


@given(names, counts, counts, st.integers(min_value=1, max_value=999_999), st.booleans())
def test_every_well_formed_spec_parses_back_to_its_numbers(
    partition: str, low: int, high: int, cores: int, preemptible: bool
) -> None:
    text = f"{partition}:{low}-{high}x{cores}" + (":preemptible" if preemptible else "")
    if low > high:
        with pytest.raises(UsageError):
            WorkerGroup.parse(text)
        return
    group = WorkerGroup.parse(text)
    assert (group.partition, group.jobs, group.maximum, group.cores, group.preemptible) == (
        partition,
        low,
        high,
        cores,
        preemptible,
    )
    # groups.json round trip: what the laptop writes, the next `scale` (from any laptop) reads back the same
    assert _group_of(group.name, json.loads(json.dumps(group.to_json()))) == group


@given(st.text(max_size=40))
def test_any_text_either_parses_or_is_a_usage_error(text: str) -> None:
    try:
        group = WorkerGroup.parse(text)
    except UsageError:
        return
    assert group.cores >= 1 and (group.maximum is None or group.maximum >= group.jobs)
    assert "\n" not in group.partition and ":" not in group.partition


@given(st.text(max_size=20))
def test_scale_ranges(text: str) -> None:
    try:
        low, high = parse_range(text)
    except UsageError:
        return
    assert low >= 0 and (high is None or high >= low)


def test_scale_range_forms() -> None:
    assert parse_range("4") == (4, None)
    assert parse_range("0-16") == (0, 16)
    with pytest.raises(UsageError):
        parse_range("5-1")


def test_an_entry_without_max_is_fixed_and_a_default_idle_applies() -> None:
    assert _group_of("g", {"partition": "batch", "jobs": 2}) == WorkerGroup("g", "batch", 2)
    group = _group_of("g", {"partition": "batch", "jobs": 0, "min": 1, "max": 3})
    assert group is not None and (group.jobs, group.maximum, group.idle) == (1, 3, DEFAULT_IDLE)


def test_the_loops_status_file_is_read_defensively() -> None:
    good = {"running": 1, "pending": 2, "target": 3, "min": 0, "max": 4, "lost": 5, "error": "x" * 900}
    doc = {"groups": {"batch": good, "../x": good, "bad": {**good, "running": "1"}, "nolist": []}}
    found = adaptive_status(json.dumps(doc).encode())
    assert list(found) == ["batch"]
    assert found["batch"]["pending"] == 2 and len(found["batch"]["error"]) == 500
    assert adaptive_status(b"{not json") == {} and adaptive_status(None) == {} and adaptive_status(b"[]") == {}


@pytest.mark.parametrize(("walltime", "lifetime"), [(3600, "3420s"), (600, "480s"), (299, None), (None, None)])
def test_worker_jobs_retire_before_their_own_limit(walltime: int | None, lifetime: str | None) -> None:
    args = lifetime_args(walltime)
    assert (args[1] if args else None) == lifetime


def test_ls_lines_for_adaptive_groups() -> None:
    figures = {"running": 2, "pending": 1, "target": 3, "min": 0, "max": 16, "lost": 4, "error": None}
    rows = [{"session": "lab", "worker_groups": {"batch": figures}}, {"session": "plain", "worker_groups": {}}]
    text = groups_text(rows)
    assert text.splitlines()[1:] == [
        "Adaptive worker groups:",
        "  lab/batch: 2 running, 1 pending, target 3 (0-16 jobs), 4 lost",
    ]
    refused = {**figures, "lost": 0, "error": "sbatch: error: invalid partition"}
    assert groups_text([{"session": "lab", "worker_groups": {"gpu": refused}}]).endswith(
        "lab/gpu: 2 running, 1 pending, target 3 (0-16 jobs); refused: sbatch: error: invalid partition"
    )
    assert groups_text(rows[1:]) == ""


RENDER_PYTHON = Path("/opt/hpcjup-cluster-env/bin/python")


@pytest.mark.skipif(not RENDER_PYTHON.exists(), reason="the cluster environment (tests/cluster/install.sh) is missing")
@pytest.mark.parametrize("spec", ["batch:2", "batch:0-2"])
def test_each_job_of_a_group_gives_its_worker_its_own_name(spec: str) -> None:
    """Dask refuses a worker whose name it already knows: with one name per group, a fixed group of 2 jobs had
    one worker. dask-jobqueue renders the script here as on the login node; the name is expanded by each job's
    shell (a fixed group) or by the loop's token (an adaptive one)."""
    group = WorkerGroup.parse(spec)
    spec_doc = {
        "module": "slurm",
        "class": "SLURMJob",
        "scheduler": "tls://127.0.0.1:1",
        "name": "hpcjup+lab+batch",
        "worker_name": worker_name("lab", group),
        "options": {"queue": "batch", "account": None, "walltime": "00:10:00"},
        "cores": 1,
        "memory": "1GB",
        "python": "python3",
        "group": "batch",
        "prologue": [],
        "logdir": None,
        "extra": [],
    }
    script = subprocess.run(
        [str(RENDER_PYTHON), "-c", _RENDER], input=json.dumps(spec_doc), capture_output=True, text=True, check=True
    ).stdout
    assert "#SBATCH -J hpcjup+lab+batch\n" in script, "the job's name stays the group's (stop checks it)"
    word = shlex.split(next(line for line in script.splitlines() if "--name" in line).split("--name ", 1)[1])[0]
    if group.adaptive:
        names = {word.replace(ADAPTIVE_TOKEN, token) for token in ("0123abcd", "89abcdef")}
    else:
        names = {subprocess.run(["bash", "-c", f"echo {word}"], capture_output=True, text=True).stdout for _ in "ab"}
    assert len(names) == 2 and all(name.startswith("hpcjup+lab+batch+") for name in names)

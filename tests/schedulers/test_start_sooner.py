"""Start sooner with the scheduler's own mechanisms: --time-min and several partitions, where supported."""

from __future__ import annotations

import pytest

from hpcjup.config.resources import Resources
from hpcjup.errors import UsageError
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JobSpec


def spec(**resources: object) -> JobSpec:
    return JobSpec(
        name="lab", session_dir="/h/.hpcjup/sessions/lab", command=["python3", "l.py"], resources=Resources(**resources)
    )  # type: ignore[arg-type]


def test_slurm_renders_time_min_and_partition_lists() -> None:
    script = get_scheduler("slurm").render(spec(time="30", time_min="5", partition="booster,batch"))
    assert "#SBATCH --time=30" in script and "#SBATCH --time-min=5" in script
    assert "#SBATCH --partition=booster,batch" in script
    # The limit actually granted is learned in the job (squeue %l), so the launcher's clocks follow it.
    assert 'squeue -h -j "$SLURM_JOB_ID" -o %l' in script
    assert 'HPCJUP_JOB_PARTITION="${SLURM_JOB_PARTITION:-}"' in script  # the partition it started in, not the list


@pytest.mark.parametrize("name", ["sge", "lsf"])
def test_schedulers_without_shrinking_refuse_time_min(name: str) -> None:
    with pytest.raises(UsageError, match="--time-min"):
        get_scheduler(name).check_request(Resources(time="30", time_min="5"))


@pytest.mark.parametrize("name", ["pbs", "lsf", "sge"])
def test_one_queue_per_job_elsewhere(name: str) -> None:
    with pytest.raises(UsageError, match="one partition"):
        get_scheduler(name).check_request(Resources(partition="a,b"))
    get_scheduler(name).check_request(Resources(partition="a"))


@pytest.mark.parametrize("time,time_min", [(None, "5"), ("5", "30"), ("30", "0")])
def test_time_min_needs_a_longer_time(time: str | None, time_min: str) -> None:
    with pytest.raises(UsageError, match="--time-min"):
        Resources(time=time, time_min=time_min)


def test_partition_lists_are_checked_one_by_one() -> None:
    assert Resources(partition="booster,batch").partitions == ["booster", "batch"]
    for bad in ("booster,", ",batch", "booster,,batch", "booster;rm"):
        with pytest.raises(UsageError):
            Resources(partition=bad)


def test_expected_start_is_shown_relative_and_absolute() -> None:
    from datetime import datetime

    from hpcjup.ui.tables import expected_start

    now = datetime(2026, 12, 1, 14, 0, 0)
    assert expected_start("2026-12-01T14:04:10", now) == "in about 4 min (14:04)"
    assert expected_start("2026-12-01T17:00:00", now) == "in about 3 h (17:00)"
    assert expected_start("2026-12-01T13:59:30", now) == "any moment now (13:59)"
    assert expected_start("2026-12-05T14:00:00", now) == "in about 4 days (2026-12-05 14:00)"
    assert expected_start("Tue Dec  1 14:04", now) == "Tue Dec  1 14:04"  # not ISO: as the scheduler said

import pytest

from hpcjup.config.resources import Resources, parse_duration, time_to_seconds
from hpcjup.errors import ExitCode, UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("5:30", 330), ("1:00:00", 3600), ("2-0", 172800), ("1-2:03", 93780), ("1-02:03:04", 93784)],
)
def test_slurm_time_formats(text: str, seconds: int) -> None:
    assert time_to_seconds(text) == seconds
    Resources(time=text)  # accepted by validation too


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("time", "2h", "--time"),
        ("time", "1:00:00; rm -rf ~", "--time"),
        ("partition", "booster\n#SBATCH --account=other", "--partition"),
        ("account", "-x", "--account"),
        ("mem", "lots", "--mem"),
        ("gpus", "a100:four", "--gpus"),
    ],
)
def test_bad_values_name_the_flag(field: str, value: str, flag: str) -> None:
    with pytest.raises(UsageError) as info:
        Resources(**{field: value})
    assert flag in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


def test_round_trip_keeps_only_set_values() -> None:
    res = Resources(partition="booster", time="1:00:00", gpus="4")
    assert res.to_dict() == {"partition": "booster", "time": "1:00:00", "nodes": 1, "gpus": "4"}
    assert Resources.from_dict({**res.to_dict(), "future_key": 1}) == res


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "--idle-timeout") == seconds


def test_bad_duration_names_the_flag() -> None:
    with pytest.raises(UsageError, match="--idle-timeout"):
        parse_duration("soon", "--idle-timeout")

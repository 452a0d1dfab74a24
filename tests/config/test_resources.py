from pathlib import Path

import pytest

from hpcjup.config.resources import Resources, parse_duration, time_to_seconds
from hpcjup.errors import ExitCode, UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 1800), ("5:30", 330), ("1:00:00", 3600), ("2-0", 172800), ("1-2:03", 93780), ("1-02:03:04", 93784)],
)
def test_time_formats_users_type(text: str, seconds: int) -> None:
    assert time_to_seconds(text) == seconds
    assert Resources(time=text).time_seconds == seconds  # what adapters render in their own format
    assert Resources(time=text).time == text  # the user's words are kept (Slurm takes them as they are)


def test_no_time_is_the_schedulers_default() -> None:
    assert Resources().time_seconds is None


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


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", "1:00:00\n"),  # match(...$) accepted a trailing newline: the directive line ended early
        ("mem", "16G\n"),
        ("gpus", "4\n"),
        ("partition", "booster\n"),
        ("account", "proj1\n"),
        ("time", "٣٠"),  # Arabic-Indic digits matched \d and reached the directive
        ("mem", "١٦G"),
        ("mem", "16\u212a"),  # KELVIN SIGN matched K under IGNORECASE
        ("gpus", "a100:٤"),
        ("time", "9" * 5000),  # passed the pattern, then int() raised ValueError (4300-digit limit)
    ],
)
def test_whole_ascii_values_only(field: str, value: str) -> None:
    with pytest.raises(UsageError, match=f"--{field}"):
        Resources(**{field: value})


@pytest.mark.parametrize("text", ["0", "00:00:00", "0:0", "0-0", "0-00:00:00"])
def test_time_zero_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--time must be more than 0") as info:
        Resources(time=text)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("text", ["", "1:00:00\n", "٣", "1_000", "+5", "5--3", "1:2:3:4", " 5"])
def test_time_to_seconds_takes_only_slurm_times(text: str) -> None:
    with pytest.raises(ValueError):
        time_to_seconds(text)


@pytest.mark.parametrize("text", ["0", "0s", "0m", "0h"])
def test_zero_duration_refused_where_it_means_nothing(text: str) -> None:
    with pytest.raises(UsageError, match="--timeout must be more than 0"):
        parse_duration(text, "--timeout", allow_zero=False)
    assert parse_duration(text, "--idle-timeout") == 0  # --idle-timeout 0 means "never": still accepted


@pytest.mark.parametrize("text", ["9" * 5000, "١٠m", "10m\n5", "366d", "99999999999"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--timeout"):
        parse_duration(text, "--timeout")


def test_directives_are_kept_in_order_and_survive_the_record() -> None:
    resources = Resources(directives=("-l wd", "-l storage=gdata/ab12"))
    assert Resources.from_dict(resources.to_dict()) == resources
    assert resources.to_dict()["directives"] == ["-l wd", "-l storage=gdata/ab12"]
    assert "directives" not in Resources().to_dict()


@pytest.mark.parametrize("bad", ["", "wd", "-l wd\n#!/bin/sh", "-l wd; rm -rf ~\r", " -l wd", "-" + "x" * 300])
def test_a_directive_that_is_not_one_option_on_one_line_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="--directive"):
        Resources(directives=(bad,))


def test_directives_come_from_a_profile_and_a_bad_one_names_the_file(tmp_path: Path) -> None:
    from hpcjup.config.profiles import resolve

    config = tmp_path / "config.toml"
    config.write_text('[profiles.gadi]\ndirectives = ["-l wd", "-l storage=gdata/ab12+scratch/ab12"]\n')
    resolved = resolve({}, profile="gadi", env={}, path=config)
    assert resolved.resources().directives == ("-l wd", "-l storage=gdata/ab12+scratch/ab12")
    config.write_text('[profiles.bad]\ndirectives = ["-l wd\\n#SBATCH --wrap=id"]\n')
    with pytest.raises(UsageError, match=r"config\.toml"):
        resolve({}, profile="bad", env={}, path=config)

"""Property-based tests: every parser of user and cluster input, driven with hostile text.

For ANY text a parser returns a valid value or raises one of hpcjup's own errors (which the CLI turns
into a message and an exit code), never ValueError, IndexError or a value that breaks what consumes it.
Each test draws from `hostile()`: arbitrary Unicode, valid values, and valid values with a newline,
a NUL, a dash, non-ASCII digits, brackets or a 5000-digit number spliced in.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hpcjup.config.resources import Resources, parse_duration, time_to_seconds
from hpcjup.errors import HpcjupError, SubmitError
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.schedulers.slurm import Slurm, _parse_squeue, _seconds
from hpcjup.session import finished
from hpcjup.session.groups import WorkerGroup
from hpcjup.session.layout import check_name
from hpcjup.transport.destination import parse_destination, split_destination
from hpcjup.ui.tables import duration
from tests.schedulers.test_job_ids import ScriptedTransport

EXAMPLES = 300
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What an attacker (or a confused shell) splices into otherwise valid text.
JUNK = st.sampled_from(
    ["\n", "\r", "\r\n", "\x00", "\t", " ", "-", "--", "[", "]", "[/bold]", ";", "$(id)", "٣", "１", "_", "+", ":", "@"]
)
HUGE = st.sampled_from([10, 19, 20, 400, 4300, 4301, 5000]).map(lambda n: "9" * n)  # int() refuses > 4300 digits


def hostile(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Arbitrary text, valid text, and valid text with junk before, after or inside it."""

    def splice(parts: tuple[str, str, int]) -> str:
        text, junk, at = parts
        at = at % (len(text) + 1)
        return text[:at] + junk + text[at:]

    return st.one_of(
        st.text(max_size=80),
        valid,
        st.tuples(valid, JUNK | HUGE).map(lambda p: p[0] + p[1]),
        st.tuples(JUNK | HUGE, valid).map(lambda p: p[0] + p[1]),
        st.tuples(valid, JUNK | HUGE, st.integers(min_value=0)).map(splice),
        HUGE,
    )


def _fails_only_with_ours(call: object, *args: object, **kwargs: object) -> object | None:
    """The call's value, or None if it raised an HpcjupError (anything else propagates and fails the test)."""
    try:
        return call(*args, **kwargs)  # type: ignore[operator]
    except HpcjupError:
        return None


NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
DIGITS = st.integers(min_value=0, max_value=10**6).map(str)
TIMES = st.one_of(
    DIGITS,
    st.builds("{}:{:02d}".format, st.integers(0, 10**4), st.integers(0, 59)),
    st.builds("{}:{:02d}:{:02d}".format, st.integers(0, 10**3), st.integers(0, 59), st.integers(0, 59)),
    st.builds("{}-{}".format, st.integers(0, 400), st.integers(0, 23)),
    st.builds(
        "{}-{:02d}:{:02d}:{:02d}".format,
        st.integers(0, 400),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
    ),
)
SIZES = st.builds("{}{}".format, DIGITS, st.sampled_from(["", "K", "M", "G", "T", "KB", "gb", "t"]))
GPUS = st.one_of(DIGITS, st.builds("{}:{}".format, NAMES, DIGITS))
DURATIONS = st.builds("{}{}".format, DIGITS, st.sampled_from(["", "s", "m", "h", "d", "M", " s"]))
HOSTS = st.one_of(NAMES, st.from_regex(r"\[[0-9a-f:]{2,12}\]", fullmatch=True))
DESTINATIONS = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(["", "ssh://"]),
    st.one_of(st.just(""), NAMES.map(lambda u: u + "@")),
    HOSTS,
    st.one_of(st.just(""), st.integers(0, 99999).map(lambda p: f":{p}")),
)
GROUPS = st.builds("{}:{}{}".format, NAMES, DIGITS, st.one_of(st.just(""), DIGITS.map(lambda c: f"x{c}")))
SAFE = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: what may go into a directive or an argv


# -- user input ---------------------------------------------------------------------------------------------


@PROPERTY
@given(hostile(NAMES))
@example("lab\n")  # found by this property: match(...$) let it through, and sbatch ignored every directive
def test_session_names(text: str) -> None:
    name = _fails_only_with_ours(check_name, text)
    if name is not None:
        assert name == text
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", text), "a name is a plain ASCII word"
        assert "\n" not in text and not text.startswith("-") and "/" not in text


@PROPERTY
@given(hostile(TIMES))
@example("0")  # these were found by this property (or by reading it after): each passed --time validation
@example("00:00:00")
@example("1:00:00\n")
@example("٣")
@example("9" * 5000)
def test_time_limits(text: str) -> None:
    res = _fails_only_with_ours(Resources, time=text)
    if res is not None:
        assert SAFE.fullmatch(text), "--time goes into a directive: printable ASCII only"
        assert time_to_seconds(text) > 0, "an accepted --time is a positive duration"


@PROPERTY
@given(hostile(TIMES))
def test_time_to_seconds_is_never_negative(text: str) -> None:
    # A helper for validated values and squeue's output: ValueError is its contract (doctor and
    # the Slurm adapter catch it); what it returns must agree with what --time accepts.
    try:
        seconds = time_to_seconds(text)
    except ValueError:
        return
    assert seconds >= 0
    assert SAFE.fullmatch(text)


@PROPERTY
@given(st.integers(min_value=0, max_value=10**9))
def test_time_round_trip(seconds: int) -> None:
    assert time_to_seconds(duration(seconds)) == seconds


@PROPERTY
@given(hostile(DURATIONS), st.booleans())
def test_durations(text: str, allow_zero: bool) -> None:
    seconds = _fails_only_with_ours(parse_duration, text, "--timeout", allow_zero=allow_zero)
    if seconds is not None:
        assert isinstance(seconds, int) and seconds >= (0 if allow_zero else 1)
        assert seconds <= 365 * 86400, "a duration fits every wait (threading.TIMEOUT_MAX)"


@PROPERTY
@given(
    st.integers(min_value=1, max_value=365 * 86400),
    st.sampled_from([("", 1), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]),
)
def test_duration_round_trip(seconds: int, unit: tuple[str, int]) -> None:
    n = max(1, seconds // unit[1])  # every whole number of units up to the 365-day bound
    assert parse_duration(f"{n}{unit[0]}", "--timeout", allow_zero=False) == n * unit[1]


@PROPERTY
@given(hostile(SIZES))
def test_memory_sizes(text: str) -> None:
    if _fails_only_with_ours(Resources, mem=text) is not None:
        assert re.fullmatch(r"[0-9]+(?:[KMGT]B?)?", text, re.IGNORECASE)


@PROPERTY
@given(hostile(GPUS))
def test_gpu_specs(text: str) -> None:
    if _fails_only_with_ours(Resources, gpus=text) is not None:
        assert re.fullmatch(r"(?:[A-Za-z0-9_-]+:)?[0-9]+", text)


@PROPERTY
@given(hostile(NAMES), st.sampled_from(["partition", "account"]))
def test_partition_and_account_names(text: str, field: str) -> None:
    if _fails_only_with_ours(Resources, **{field: text}) is not None:
        assert SAFE.fullmatch(text) and not text.startswith("-")


@PROPERTY
@given(hostile(DESTINATIONS))
@example("\x1b")  # found by this property: an escape (or a NUL, "host\n") was a host name
@example("host\n")
@example("a\x00b")
@example("me@host:٢٢")
def test_ssh_destinations(text: str) -> None:
    parts = _fails_only_with_ours(split_destination, text)
    if parts is not None:
        user, host, port = parts  # type: ignore[misc]
        assert host and SAFE.fullmatch(host) and not host.startswith("-") and "@" not in host
        assert user is None or (SAFE.fullmatch(user) and "@" not in user)
        assert port is None or 0 < port < 65536


@PROPERTY
@given(NAMES, NAMES, st.integers(1, 65535))
def test_ssh_destination_round_trip(user: str, host: str, port: int) -> None:
    assert split_destination(f"{user}@{host}:{port}") == (user, host, port)


@pytest.fixture(scope="module")
def ssh_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "config"
    path.write_text(
        "Host juwels\n  HostName juwels.fz-juelich.de\n  User me\n  Port 2222\nHost *.cluster\n  User other\n"
    )
    return path


@settings(PROPERTY, max_examples=100)  # paramiko parses the files for every example
@given(text=hostile(DESTINATIONS))
def test_parse_destination(ssh_config: Path, text: str) -> None:
    dest = _fails_only_with_ours(parse_destination, text, ssh_config)
    if dest is not None:
        assert 0 < dest.port < 65536 and dest.hostname  # type: ignore[attr-defined]


@PROPERTY
@given(hostile(GROUPS))
@example("batch:" + "9" * 5000)  # ValueError (int's 4300-digit limit), not a UsageError
def test_worker_group_specs(text: str) -> None:
    group = _fails_only_with_ours(WorkerGroup.parse, text)
    if group is not None:
        assert Resources(partition=group.partition)  # type: ignore[attr-defined]  # a partition --partition accepts


@PROPERTY
@given(hostile(GROUPS))
@example("batch:4x0")
def test_worker_groups_have_cores(text: str) -> None:
    group = _fails_only_with_ours(WorkerGroup.parse, text)
    if group is not None:
        assert group.cores >= 1  # type: ignore[attr-defined]


# -- cluster input: what squeue, sacct and sbatch print ---------------------------------------------------

FIELDS = st.one_of(
    st.sampled_from(["PENDING", "RUNNING", "CANCELLED by 0", "CD", "None", "(null)", "N/A", "UNLIMITED", "INVALID"]),
    TIMES,
    st.text(max_size=20),
    HUGE,
)
LINES = st.lists(FIELDS, max_size=9).map("|".join)


def _valid_status(status: JobStatus, job_id: str) -> None:
    assert status.job_id == job_id and isinstance(status.state, JobState)
    for value in (status.time_left, status.time_limit):
        assert value is None or value >= 0


@PROPERTY
@given(hostile(TIMES))
def test_squeue_durations(text: str) -> None:
    value = _seconds(text)
    assert value is None or value >= 0


@PROPERTY
@given(LINES)
def test_squeue_lines(line: str) -> None:
    _valid_status(_parse_squeue("42", line), "42")


@PROPERTY
@given(st.lists(LINES, max_size=4).map("\n".join), st.lists(LINES, max_size=3).map("\n".join), st.integers(0, 2))
def test_status_from_any_squeue_and_sacct_output(squeue: str, sacct: str, code: int) -> None:
    transport = ScriptedTransport({"squeue": (code, squeue + "|42", ""), "sacct": (code, sacct, "")})
    status = _fails_only_with_ours(Slurm().status, transport, "42")
    if status is not None:
        _valid_status(status, "42")  # type: ignore[arg-type]
    statuses = _fails_only_with_ours(Slurm().statuses, transport, ["42", "43"])
    if statuses is not None:
        assert set(statuses) == {"42", "43"}  # type: ignore[arg-type]


@PROPERTY
@given(hostile(st.builds("{}{}".format, DIGITS, st.sampled_from(["", ";cluster", ";c1\n"]))), st.integers(0, 1))
def test_sbatch_output(stdout: str, code: int) -> None:
    transport = ScriptedTransport({"sbatch": (code, stdout, "sbatch: error: nope" if code else "")})
    try:
        job_id = Slurm().submit(transport, "/home/u/.hpcjup/sessions/lab")
    except SubmitError:
        return
    assert re.fullmatch(r"[0-9]+(?:[_+][0-9]+)?", job_id), "an ASCII job id: it goes on squeue's and scancel's argv"


# -- job ids read back from session.json --------------------------------------------------------------------

ANY_ID = st.one_of(hostile(DIGITS), st.integers(), st.none(), st.lists(DIGITS, max_size=2))


@PROPERTY
@given(ANY_ID)
def test_job_ids(job_id: object) -> None:
    slurm = Slurm()
    checked = _fails_only_with_ours(slurm.check_job_id, job_id)
    if checked is not None:
        assert checked == job_id and re.fullmatch(r"[0-9]+(?:[_+][0-9]+)?", checked)  # type: ignore[arg-type]


@PROPERTY
@given(hostile(DIGITS), st.booleans())
def test_no_command_line_carries_a_non_id(job_id: str, graceful: bool) -> None:
    transport = ScriptedTransport({"squeue": (0, f"RUNNING|None|N/A|node1|1:00|1:00:00|{job_id}\n", "")})
    slurm = Slurm()
    _fails_only_with_ours(slurm.status, transport, job_id)
    _fails_only_with_ours(slurm.cancel, transport, job_id, graceful=graceful)
    slurm.statuses(transport, [job_id, "42"])
    if not slurm.is_job_id(job_id):
        # Where an id could stand (`-j X`, `--jobs=X`, after `--`), it is never there; `-t all` is squeue's own word.
        carried = [
            word
            for argv in transport.argvs
            for i, word in enumerate(argv)
            if i and argv[i - 1] != "-t" and word in (job_id, f"{job_id},42", f"--jobs={job_id}")
        ]
        assert not carried, transport.argvs


DIRECTIVES = st.one_of(
    st.sampled_from(["-l wd", "-l storage=gdata/ab12+scratch/ab12", "--constraint=gpu", '-R "span[hosts=1]"']),
    st.builds("-{}".format, st.from_regex(r"[ -~]{1,40}", fullmatch=True)),
)


@given(hostile(DIRECTIVES))
@PROPERTY
def test_directives(text: str) -> None:
    """A directive reaches the job script as one comment line: never a newline, never a line that is no option."""
    value = _fails_only_with_ours(Resources, directives=(text,))
    if value is not None:
        assert "\n" not in text and "\r" not in text and "\x00" not in text and text.startswith("-")
        assert text.isascii() and text == text.strip()


# -- the laptop's memory of finished jobs (read back from disk, perhaps hand-edited or cut short) ------------

FINAL = st.sampled_from([state for state in JobState if not state.active])
OPTIONAL_TEXT = st.none() | st.text(max_size=30)
FINISHED = st.builds(
    JobStatus,
    job_id=DIGITS,
    state=FINAL,
    reason=OPTIONAL_TEXT,
    expected_start=OPTIONAL_TEXT,
    nodes=OPTIONAL_TEXT,
    exit_code=OPTIONAL_TEXT,
    time_left=st.none() | st.integers(0, 10**6),
    time_limit=st.none() | st.integers(0, 10**6),
)
ENTRY_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 10**20), hostile(DIGITS), st.lists(DIGITS, max_size=2)
)


@PROPERTY
@given(st.dictionaries(st.tuples(NAMES, DIGITS), FINISHED, max_size=5))
def test_finished_jobs_round_trip(answers: dict[tuple[str, str], JobStatus]) -> None:
    answers = {(name, job_id): dataclasses.replace(status, job_id=job_id) for (name, job_id), status in answers.items()}
    assert finished.parse(finished.dump(answers)) == answers


@PROPERTY
@given(
    st.one_of(
        st.binary(max_size=200),
        hostile(st.just('{"schema": 1, "jobs": [{"session": "lab", "job_id": "1", "state": "FAILED"}]}')).map(
            str.encode
        ),
        st.lists(
            st.dictionaries(
                st.sampled_from(["session", "job_id", "state", "reason", "exit_code", "time_left", "time_limit"]),
                ENTRY_VALUES | FINAL.map(lambda s: s.value) | st.sampled_from(["RUNNING", "UNKNOWN", "lab"]),
            )
            | ENTRY_VALUES,
            max_size=4,
        ).map(lambda jobs: json.dumps({"schema": 1, "jobs": jobs}).encode()),
    )
)
def test_finished_jobs_from_any_file(raw: bytes) -> None:
    """Whatever the file holds, the listing gets usable final answers (or none): never an exception."""
    answers = finished.parse(raw)
    for (name, job_id), status in (answers or {}).items():
        assert check_name(name) == name and status.job_id == job_id and not status.state.active
        for value in (status.time_left, status.time_limit):
            assert value is None or (type(value) is int and value >= 0)
        for text in (status.reason, status.expected_start, status.nodes, status.exit_code):
            assert text is None or isinstance(text, str)

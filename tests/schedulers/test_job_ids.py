"""Job ids read back from session.json never reach a scheduler command unless they are job ids."""

from __future__ import annotations

import shlex

import pytest

from hpcjup.errors import ExitCode, SubmitError, UsageError
from hpcjup.schedulers.base import JobState, Scheduler
from hpcjup.schedulers.slurm import Slurm
from hpcjup.transport.base import Stream, Transport


class ScriptedTransport(Transport):
    """Answers each command by its program name from a script, and records every argv it was asked to run.

    The commands go through the real `Transport.run` (quoting, error type); only the remote side is scripted.
    """

    name = "scripted"

    def __init__(self, answers: dict[str, tuple[int, str, str]] | None = None) -> None:
        self.answers = answers or {}
        self.argvs: list[list[str]] = []

    def _exec(self, command: str, input: bytes | None, timeout: float) -> tuple[int, str, str]:
        argv = shlex.split(command)
        self.argvs.append(argv)
        program = "sbatch" if argv[0] == "sh" and "sbatch" in argv[2] else argv[0]
        return self.answers.get(program, (0, "", ""))

    def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        returncode, stdout, stderr = self._exec(command, input, timeout)
        return returncode, stdout.encode(), stderr.encode()

    def home(self) -> str:
        return "/home/u"

    def read_file(self, path: str) -> bytes:
        raise FileNotFoundError(path)

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        raise NotImplementedError

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        raise NotImplementedError

    def remove(self, path: str) -> None:
        raise NotImplementedError

    def open_stream(self, host: str, port: int) -> Stream:
        raise NotImplementedError

    def open_unix_stream(self, path: str) -> Stream:
        raise NotImplementedError

    def hop(self, node: str) -> Transport:
        raise NotImplementedError


HOSTILE_IDS = ["--me", "-u", "1,--me", "42 --me", "42\n", "$(id)", "٤٢", "", "42;43"]


@pytest.mark.parametrize("job_id", HOSTILE_IDS)
def test_status_of_a_non_id_runs_nothing(job_id: str) -> None:
    transport = ScriptedTransport()
    with pytest.raises(UsageError, match="is not a Slurm job id") as info:
        Slurm().status(transport, job_id)
    assert transport.argvs == []  # before: `squeue -h -t all -j --me ...`, every job of the user
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("job_id", HOSTILE_IDS)
@pytest.mark.parametrize("graceful", [True, False])
def test_cancel_of_a_non_id_runs_nothing(job_id: str, graceful: bool) -> None:
    transport = ScriptedTransport()
    with pytest.raises(UsageError, match="is not a Slurm job id"):
        Slurm().cancel(transport, job_id, graceful=graceful)
    assert transport.argvs == []  # before: `scancel --me` cancelled every job of the user


def test_a_number_from_a_damaged_session_json_is_not_an_id() -> None:
    with pytest.raises(UsageError, match="job id 42 is not a Slurm job id"):
        Slurm().check_job_id(42)


def test_statuses_leave_non_ids_off_the_command_line() -> None:
    answer = "@@hpcjup squeue\nRUNNING|None|N/A|node1|10:00|1:00:00|42\n@@hpcjup end 0\n"
    transport = ScriptedTransport({"sh": (0, answer, "")})
    found = Slurm().statuses(transport, ["42", "--me", "43,44"])
    assert found["--me"].state is JobState.GONE and found["43,44"].state is JobState.GONE
    assert found["42"].state is JobState.RUNNING
    [argv] = transport.argvs  # one remote command; the ids travel as one argument, only the valid ones
    assert argv[:2] == ["sh", "-c"] and argv[4] == "42" and "--me" not in argv and "43,44" not in argv


def test_statuses_of_only_non_ids_asks_nothing() -> None:
    transport = ScriptedTransport()
    assert Slurm().statuses(transport, ["--me"])["--me"].state is JobState.GONE
    assert transport.argvs == []


@pytest.mark.parametrize("job_id", ["42", "123_4", "123+1"])
def test_cancel_ends_scancels_options(job_id: str) -> None:
    answer = f"@@hpcjup squeue\nRUNNING|None|N/A|node1|10:00|1:00:00|{job_id}\n@@hpcjup end 0\n"
    transport = ScriptedTransport({"sh": (0, answer, "")})
    Slurm().cancel(transport, job_id)
    Slurm().cancel(transport, job_id, graceful=False)
    scancels = [argv for argv in transport.argvs if argv[0] == "scancel"]
    assert scancels == [["scancel", "--batch", "--signal=TERM", "--", job_id], ["scancel", "--", job_id]]


@pytest.mark.parametrize(
    ("stdout", "job_id"), [("42\n", "42"), ("42;cluster\n", "42"), ("sbatch: warning: x\n42\n", "42")]
)
def test_sbatch_job_id(stdout: str, job_id: str) -> None:
    assert Slurm().submit(ScriptedTransport({"sbatch": (0, stdout, "")}), "/h/s") == job_id


@pytest.mark.parametrize("stdout", ["--me\n", "٤٢\n", "42 43\n", "Submitted batch job 42\n", ""])
def test_sbatch_output_that_is_no_job_id(stdout: str) -> None:
    with pytest.raises(SubmitError, match="sbatch printed no job id"):
        Slurm().submit(ScriptedTransport({"sbatch": (0, stdout, "")}), "/h/s")


def test_the_default_pattern_is_digits() -> None:
    assert Scheduler.job_id_pattern.fullmatch("12345")
    assert not Scheduler.job_id_pattern.fullmatch("123_4")
    assert not Scheduler.job_id_pattern.fullmatch("-1")

"""What `Scheduler` does for every adapter (issue 24): the job environment checked against the job contract, and
the doctor's one queue check (schedulers/queues.py) over each adapter's `queues()`, on recorded scheduler output."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup.config.profiles import Resolved, resolve
from hpcjup.errors import HpcjupError
from hpcjup.job import contract
from hpcjup.schedulers import get_scheduler
from hpcjup.schedulers.base import JOB_ENVIRONMENT, JobSpec, Scheduler
from hpcjup.schedulers.checks import Status
from hpcjup.schedulers.slurm import Slurm
from hpcjup.transport.base import CommandResult

DATA = Path(__file__).parent / "data"
SPEC = JobSpec(name="x", session_dir="/s", command=["l"])


class Replay:
    """Answers every command with one recorded output, and writes down what it was asked."""

    name = "replay"
    destination = "replay"

    def __init__(self, stdout: str = "", stderr: str = "", returncode: int = 0) -> None:
        self.answer = (returncode, stdout, stderr)
        self.commands: list[str] = []

    def run(self, argv: Sequence[str], *, check: bool = True, **_: object) -> CommandResult:
        self.commands.append(shlex.join(argv))
        returncode, stdout, stderr = self.answer
        return CommandResult(tuple(argv), returncode, stdout, stderr)


def settings_of(tmp_path: Path, partition: str | None = None, time: str | None = None) -> Resolved:
    return resolve({"partition": partition, "time": time}, profile=None, env={}, path=tmp_path / "none.toml")


# -- the job environment -------------------------------------------------------------------------------
def test_the_contract_lists_every_name_the_launcher_reads() -> None:
    names = {value for key, value in vars(contract).items() if key.startswith("ENV_")}
    assert set(JOB_ENVIRONMENT) == names and len(JOB_ENVIRONMENT) == 17


@pytest.mark.parametrize("name", ["slurm", "pbs", "pbs-nci", "lsf", "sge", "local", "none"])
def test_every_adapter_exports_the_contracts_names_once_each_in_its_order(name: str) -> None:
    exported = [
        line.split("=", 1)[0].removeprefix("export ")
        for line in get_scheduler(name).job_environment(SPEC)
        if line.startswith("export ")
    ]
    assert exported == list(JOB_ENVIRONMENT)


class Forgetful(Slurm):
    """Slurm, with one name of the job's environment left out and one spelt wrong."""

    def environment(self, spec: JobSpec) -> Mapping[str, str]:
        values = dict(super().environment(spec))
        del values[contract.ENV_WARN_SECONDS]
        return {**values, "HPCJUP_PARTITON": "x"}


def test_an_environment_that_does_not_match_the_contract_is_never_rendered() -> None:
    with pytest.raises(HpcjupError) as caught:
        Forgetful().render(SPEC)
    assert "missing: HPCJUP_WARN_SECONDS" in str(caught.value) and "unknown: HPCJUP_PARTITON" in str(caught.value)


# -- the doctor's queue check --------------------------------------------------------------------------
SINFO = "batch|up|1-00:00:00\ndevel|up|2:00:00\nold|down|infinite\n"
LSF_QUEUE = "QUEUE_NAME      PRIO STATUS          MAX JL/U JL/P JL/H NJOBS  PEND   RUN  SUSP\nnormal           30  Open:Active       -    -    -    -     0     0     0     0\n"
CASES = [
    # adapter, --partition, --time, (returncode, stdout, stderr), status, words in the summary, words in the fix
    ("slurm", None, None, (0, SINFO, ""), Status.PASS, "Slurm picks among batch, devel, old", None),
    ("slurm", "old", None, (0, SINFO, ""), Status.WARN, "old is down: jobs will pend", "sinfo -s"),
    ("slurm", "devel", None, (1, "", "slurm_load_partitions: Unable to contact slurm controller"), Status.FAIL,
     "partition devel: sinfo failed: slurm_load_partitions: Unable to contact", "sinfo -s"),
    ("pbs", None, None, (0, "", ""), Status.PASS, "none set: the cluster's default queue", None),
    ("pbs", "qexp", "30", (0, (DATA / "pbs/qstat_queues.json").read_text(), ""), Status.PASS,
     "qexp is up, time limit 01:00:00", None),
    ("pbs", "qexp", "2:00:00", (0, (DATA / "pbs/qstat_queues.json").read_text(), ""), Status.FAIL,
     "time 2:00:00 is more than qexp's limit 01:00:00", "--time 01:00:00"),
    ("pbs", "nosuch", None, (170, "", "qstat: Unknown queue nosuch\n"), Status.FAIL,
     "queue nosuch: qstat: Unknown queue nosuch", "qstat -Q"),
    ("lsf", "normal", None, (0, LSF_QUEUE, ""), Status.PASS, "normal exists", None),
    ("lsf", "nosuch", None, (255, "", "nosuch: No such queue\n"), Status.FAIL, "queue nosuch: nosuch: No such queue",
     "bqueues"),
    ("sge", None, None, (0, (DATA / "sge/qconf-sql.txt").read_text(), ""), Status.PASS,
     "none set: Grid Engine picks among all.q", None),
    ("sge", "all.q", None, (0, (DATA / "sge/qconf-sql.txt").read_text(), ""), Status.PASS, "all.q exists", None),
    ("sge", "gpu.q", None, (0, (DATA / "sge/qconf-sql.txt").read_text(), ""), Status.FAIL,
     "no queue 'gpu.q' (from", "Choose one of: all.q (`qconf -sql` shows them)."),
]  # fmt: skip


@pytest.mark.parametrize(("name", "partition", "time", "answer", "status", "summary", "fix"), CASES)
def test_one_queue_check_for_every_scheduler(
    name: str,
    partition: str | None,
    time: str | None,
    answer: tuple[int, str, str],
    status: Status,
    summary: str,
    fix: str | None,
    tmp_path: Path,
) -> None:
    from hpcjup.schedulers.queues import check_queue

    scheduler = get_scheduler(name)
    replay = Replay(answer[1], answer[2], answer[0])
    check = check_queue(scheduler, replay, settings_of(tmp_path, partition, time))  # type: ignore[arg-type]
    assert check.name == ("queue" if name == "sge" else "partition")
    assert check.status is status and summary in check.summary, check
    assert fix is None or fix in (check.fix or ""), check
    if name in ("pbs", "lsf"):  # they answer for one queue: none asked, nothing run
        assert bool(replay.commands) == (partition is not None)


@pytest.mark.parametrize("name", ["slurm", "pbs", "lsf", "sge"])
def test_without_the_commands_every_check_of_the_scheduler_is_skipped(name: str, tmp_path: Path) -> None:
    scheduler = get_scheduler(name)
    replay = Replay(" ".join(scheduler.commands))  # the probe prints each missing command
    checks = scheduler.doctor_checks(replay, settings_of(tmp_path, "q"))  # type: ignore[arg-type]
    assert checks[0].name == "scheduler" and checks[0].status is Status.FAIL
    assert checks[1].name == scheduler.queue_check and len(checks) == 1 + 1 + len(scheduler.request_checks())
    assert all(check.status is Status.SKIP and scheduler.title in check.summary for check in checks[1:])


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(["slurm", "pbs", "lsf", "sge"]),
    stdout=st.text(alphabet=st.sampled_from('ab*|: \n-0123456789{}"[],upINFdow'), max_size=300),
    returncode=st.integers(min_value=0, max_value=3),
    partition=st.sampled_from([None, "a", "ab", "up"]),
    time=st.sampled_from([None, "30", "1:00:00", "2-00:00:00"]),
)
def test_the_queue_check_judges_any_answer_without_raising(
    name: str, stdout: str, returncode: int, partition: str | None, time: str | None
) -> None:
    from hpcjup.schedulers.queues import check_queue

    scheduler: Scheduler = get_scheduler(name)
    resolved = resolve(
        {"partition": partition, "time": time}, profile=None, env={}, path=Path("/nonexistent/none.toml")
    )
    check = check_queue(scheduler, Replay(stdout, "", returncode), resolved)  # type: ignore[arg-type]
    assert check.name == scheduler.queue_check and check.summary
    assert check.status is not Status.FAIL or check.fix
    assert not re.search(r"[\x00-\x08]", check.summary)

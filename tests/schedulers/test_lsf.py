"""The LSF adapter against output recorded from IBM Spectrum LSF (tests/schedulers/data/lsf/SOURCES.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup import job
from hpcjup.config.resources import Resources
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError
from hpcjup.schedulers.base import JobSpec, JobState
from hpcjup.schedulers.lsf import LSF
from hpcjup.schedulers.lsf_parse import exec_hosts, parse_bjobs, parse_bsub, submit_error
from tests.schedulers.test_pbs import Replay

DATA = Path(__file__).parent / "data" / "lsf"
SPEC = JobSpec(
    name="lab-1a2b",
    session_dir="/home/u/.hpcjup/sessions/lab-1a2b",
    command=["python3", "/home/u/.hpcjup/sessions/lab-1a2b/launcher.py"],
    resources=Resources(partition="pbatch", account="proj1", time="2:00:00", nodes=2, cpus=8, mem="16G", gpus="4"),
    warn_seconds=300,
    setup=(". /home/u/.hpcjup/sessions/lab-1a2b/setup.sh",),
)


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# -- rendering -----------------------------------------------------------------------------------
def test_render_directives() -> None:
    lines = LSF().render(SPEC).splitlines()
    for directive in [
        "#BSUB -J hpcjup-lab-1a2b",
        "#BSUB -o job.out",
        "#BSUB -n 16",
        '#BSUB -R "span[ptile=8]"',
        '#BSUB -R "rusage[mem=2048MB]"',  # per slot: 16G per node over 8 slots
        "#BSUB -W 120",
        "#BSUB -q pbatch",
        "#BSUB -P proj1",
        '#BSUB -gpu "num=4"',
        "#BSUB -wa USR1",
        "#BSUB -wt 5",
    ]:
        assert directive in lines
    # LSF's cwd is the submission directory, and -o is copied at the end unless the site writes it directly.
    assert lines.index("cd /home/u/.hpcjup/sessions/lab-1a2b || exit 1") < lines.index("exec >>job.out 2>&1")
    assert lines.index("exec >>job.out 2>&1") < lines.index("umask 077") < lines.index(SPEC.setup[0])
    assert lines[-1] == "exec python3 /home/u/.hpcjup/sessions/lab-1a2b/launcher.py"


def test_render_minimal_request() -> None:
    directives = [
        ln
        for ln in LSF().render(JobSpec(name="x", session_dir="/s", command=["l"])).splitlines()
        if ln.startswith("#BSUB")
    ]
    assert directives == [
        "#BSUB -J hpcjup-x",
        "#BSUB -o job.out",
        "#BSUB -n 1",
        '#BSUB -R "span[ptile=1]"',
        "#BSUB -rn",
    ]


def test_typed_gpus_and_odd_times() -> None:
    spec = JobSpec(
        name="x", session_dir="/s", command=["l"], resources=Resources(time="90:30", gpus="v100:2"), warn_seconds=30
    )
    script = LSF().render(spec)
    assert "#BSUB -W 91" in script  # 90 min 30 s, rounded up: never less than asked
    assert '#BSUB -gpu "num=2:gmodel=v100"' in script
    assert "#BSUB -wt 1" in script


def test_job_environment_from_lsf_variables() -> None:
    env = {
        "LSB_JOBID": "806290",
        "LSB_MCPU_HOSTS": "h41n04 8 h41n05 8",
        "LSB_QUEUE": "pbatch",
        "LSB_PROJECT_NAME": "proj1",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        ["sh", "-c", "\n".join(LSF().job_environment(SPEC)) + "\nenv"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if line.startswith("HPCJUP_"))
    assert got[job.ENV_SCHEDULER] == "lsf"
    assert got[job.ENV_JOB_ID] == "806290"
    assert got[job.ENV_NODE] == "h41n04"
    assert got[job.ENV_NODELIST] == "h41n04 h41n05"
    assert got[job.ENV_CPUS] == "8"
    assert got[job.ENV_LAUNCH] == "blaunch {host}"
    assert got[job.ENV_TIME_LIMIT] == "7200"
    assert got[job.ENV_WARN_SIGNAL] == "1"  # -wa USR1
    assert got[job.ENV_PARTITION] == "pbatch" and got[job.ENV_ACCOUNT] == "proj1"
    assert got[job.ENV_JOBQUEUE] == "lsf" and got[job.ENV_SUBMIT] == "bsub"
    assert got[job.ENV_SCRUB] == "LSB_" and "LSB_DEFAULTQUEUE" in got[job.ENV_SCRUB_KEEP].split()


# -- submission ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("recording", "job_id"), [("bsub.out", "1234"), ("bsub_default.out", "12345")])
def test_bsub_prints_the_id(recording: str, job_id: str) -> None:
    assert parse_bsub(recorded(recording)) == job_id


def test_submit_feeds_the_script_on_stdin() -> None:
    """bsub reads #BSUB lines only from a script on its stdin."""
    transport = Replay(recorded("bsub.out"))
    assert LSF().submit(transport, "/home/u/s") == "1234"  # type: ignore[arg-type]
    assert "bsub < job.sh" in transport.commands[0][2] and transport.commands[0][-1] == "/home/u/s"


@pytest.mark.parametrize(
    ("recording", "words", "hint"),
    [
        ("bsub_no_queue.err", "nosuchq: No such queue. Job not submitted.", "bqueues"),
        ("bsub_too_many.err", "Too many processors requested. Job not submitted.", "fewer --nodes"),
    ],
)
def test_refusal_in_bsubs_words(recording: str, words: str, hint: str) -> None:
    with pytest.raises(SubmitError) as raised:
        LSF().submit(Replay(stderr=recorded(recording), returncode=255), "/s")  # type: ignore[arg-type]
    assert words in raised.value.message and hint in (raised.value.hint or "") and raised.value.exit_code == 5


def test_no_lsf_on_path() -> None:
    assert "no LSF commands" in (submit_error(RemoteCommandError(["sh"], 127, "", "bsub: not found")).hint or "")


# -- state ------------------------------------------------------------------------------------------
def test_states_reasons_hosts_and_limits() -> None:
    found = parse_bjobs(recorded("bjobs_hpcjup.json"))
    running, pending, failed = found["806290"], found["806291"], found["806292"]
    assert running.state is JobState.RUNNING and running.nodes == "batch1,h41n04,h41n05" and running.time_limit == 86400
    assert pending.state is JobState.PENDING and pending.reason == "New job is waiting for scheduling"
    assert pending.expected_start is None  # bjobs -o has none
    assert failed.state is JobState.FAILED and failed.exit_code == "130"
    assert "806293" not in found  # the ERROR record: LSF no longer knows it


def test_done_and_exit_recordings() -> None:
    done = parse_bjobs(recorded("bjobs_done.json"))["22005"]
    assert done.state is JobState.COMPLETED and done.nodes == "exec-host" and done.time_limit == 600
    states = {k: v.state for k, v in parse_bjobs(recorded("bjobs_exit.json")).items()}
    assert states == {
        "487641": JobState.FAILED,
        "487642": JobState.FAILED,
        "488155": JobState.FAILED,
        "491861": JobState.COMPLETED,
        "491864": JobState.COMPLETED,
        "491867": JobState.COMPLETED,
    }


def test_suspended_while_pending_is_pending() -> None:
    status = parse_bjobs(recorded("bjobs_psusp.json"))["58652"]
    assert status.state is JobState.PENDING and "suspended while pending" in (status.reason or "")


def test_statuses_one_query() -> None:
    transport = Replay(recorded("bjobs_hpcjup.json"))
    found = LSF().statuses(transport, ["806290", "806291", "806293", "$(id)"])  # type: ignore[arg-type]
    assert len(transport.commands) == 1
    assert transport.commands[0] == [
        "bjobs",
        "-a",
        "-hms",
        "-o",
        "jobid stat queue exec_host pend_reason exit_code runtimelimit",
        "-json",
        "806290",
        "806291",
        "806293",
    ]
    assert found["806290"].state is JobState.RUNNING
    assert found["806293"].state is JobState.GONE and found["$(id)"].state is JobState.GONE


def test_nothing_known_is_gone_and_a_broken_bjobs_an_error() -> None:
    gone = LSF().statuses(Replay("", recorded("bjobs_not_found.err"), returncode=255), ["1"])  # type: ignore[arg-type]
    assert gone["1"].state is JobState.GONE
    with pytest.raises(RemoteCommandError):
        LSF().statuses(Replay("", "LSF is down. Please wait ...", returncode=255), ["1"])  # type: ignore[arg-type]


def test_exec_hosts() -> None:
    assert exec_hosts("4*hostA:4*hostB") == "hostA,hostB"
    assert exec_hosts(None) is None


# -- ending jobs -----------------------------------------------------------------------------------
def test_snippets() -> None:
    lsf = LSF()
    assert lsf.stop_snippet(["1"], ["2"]) == "bkill -s TERM 1 >/dev/null 2>&1; bkill 2 >/dev/null 2>&1"
    assert lsf.kill_snippet(["1", "-u all"]) == "bkill 1 >/dev/null 2>&1"
    assert lsf.cancel_own_snippet({"0 all": "hpcjup+lab+"}) == ""


def test_cancel_own_snippet_asks_for_the_users_own_jobs_with_whole_names() -> None:
    """The judging itself runs in tests/schedulers/test_cancel_names.py; here: the query asked."""
    snippet = LSF().cancel_own_snippet({"5": "hpcjup+lab+", "6": "hpcjup+lab+"})
    assert "bjobs -u \"$(id -un)\" -o 'jobid stat job_name' -json 5 6" in snippet


def test_worker_jobs_take_project() -> None:
    lsf = LSF()
    assert lsf.jobqueue == ("lsf", "LSFJob")
    assert lsf.worker_job_options("pbatch", "proj1", "1:30:00") == {
        "queue": "pbatch",
        "project": "proj1",
        "walltime": "01:30",
    }
    transport = Replay(recorded("bsub.out"))
    script = "/home/u/.hpcjup/sessions/lab/dask/batch.sh"  # where session/groups.py wrote dask-jobqueue's script
    assert lsf.submit_worker(transport, script) == "1234"  # type: ignore[arg-type]
    # bsub reads #BSUB lines from the script on its stdin: the file, not its path.
    argv = transport.commands[0]
    assert argv[-1] == script and 'bsub < "$1"' in argv[2]


def test_directives_come_after_hpcjups_own() -> None:
    resources = Resources(directives=('-R "span[hosts=1]"', "-app jupyter"))
    lines = LSF().render(JobSpec(name="x", session_dir="/s", command=["l"], resources=resources)).splitlines()
    directives = [line for line in lines if line.startswith("#BSUB")]
    assert directives[-2:] == ['#BSUB -R "span[hosts=1]"', "#BSUB -app jupyter"]


# -- any input at all: a value or an hpcjup error, nothing else ---------------------------------------
values = st.none() | st.booleans() | st.integers() | st.text(max_size=30) | st.lists(st.text(max_size=5), max_size=3)
record = st.dictionaries(
    st.sampled_from(["JOBID", "STAT", "EXEC_HOST", "PEND_REASON", "EXIT_CODE", "RUNTIMELIMIT", "ERROR"]), values
)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_bjobs_any_text(text: str) -> None:
    try:
        parse_bjobs(text)
    except HpcjupError:
        pass


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["COMMAND", "JOBS", "RECORDS"]), values | st.lists(record | values, max_size=5)))
def test_bjobs_any_document(document: dict[str, object]) -> None:
    try:
        found = parse_bjobs(json.dumps(document))
    except HpcjupError:
        return
    for job_id, status in found.items():
        assert status.job_id == job_id and isinstance(status.state, JobState)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_bsub_any_output(text: str) -> None:
    try:
        assert LSF().is_job_id(parse_bsub(text))
    except SubmitError:
        pass


def test_a_warning_that_would_reach_the_start_is_the_launchers_timer() -> None:
    """--time 1 with a 30 s warning: -wt counts whole minutes, so `-wt 1` would signal the job as it starts
    (and the session would end at once); the launcher's own timer warns instead."""
    short = JobSpec(name="x", session_dir="/s", command=["l"], resources=Resources(time="1"), warn_seconds=30)
    script = LSF().render(short)
    assert "#BSUB -wa" not in script and "#BSUB -wt" not in script
    assert f'export {job.ENV_WARN_SIGNAL}=""' in script and f"export {job.ENV_TIME_LIMIT}=60" in script
    longer = JobSpec(name="x", session_dir="/s", command=["l"], resources=Resources(time="2"), warn_seconds=30)
    script = LSF().render(longer)
    assert "#BSUB -wa USR1" in script and "#BSUB -wt 1" in script and f"export {job.ENV_WARN_SIGNAL}=1" in script


def test_time_limit_without_time_comes_from_bjobs(tmp_path: Path) -> None:
    """No --time: the queue's default run limit, read from `bjobs -o runtimelimit` in the job (0 when bjobs
    says nothing), so the Dask lifetimes and `hpcjup stats` know it."""
    fake = tmp_path / "bjobs"
    fake.write_text("#!/bin/sh\necho '12:00:00/hostA'\n")
    fake.chmod(0o755)
    lines = [
        line
        for line in LSF().job_environment(JobSpec(name="x", session_dir="/s", command=["l"]))
        if job.ENV_TIME_LIMIT in line
    ]
    script = "\n".join(lines) + f'\necho "${job.ENV_TIME_LIMIT}"'
    found = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "LSB_JOBID": "7"},
        capture_output=True,
        text=True,
    )
    assert found.stdout.strip() == str(12 * 3600)
    none = subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert none.stdout.strip() == "0"


def test_worker_jobs_carry_the_sessions_directives() -> None:
    options = LSF().worker_job_options("pbatch", "proj1", "30", directives=('-R "select[gpu]"',))
    assert options["job_extra_directives"] == ['-R "select[gpu]"']


def test_a_job_an_administrator_suspended_while_pending_is_not_waited_for() -> None:
    """PSUSP with LSF's own words (as IBM's lsf-python-api shows them, PR #60's example output): waiting will
    not clear it; a job pending for resources is waited for."""
    from hpcjup.schedulers.lsf import LSF
    from hpcjup.schedulers.lsf_parse import job_status

    admin = {"JOBID": "3864", "STAT": "PSUSP", "PEND_REASON": "Job was suspended by LSF admin or root while pending;"}
    verdict = LSF().never_starts(job_status(admin))
    assert verdict is not None and "administrator" in verdict[0]
    waiting = {"JOBID": "3866", "STAT": "PEND", "PEND_REASON": "Job's resource requirements not satisfied: 1 host;"}
    assert LSF().never_starts(job_status(waiting)) is None


def test_a_state_word_we_do_not_know_is_not_taken_for_an_end() -> None:
    """UNKNOWN is active: prune never removes a session on a guess (it was FAILED)."""
    from hpcjup.schedulers.base import JobState
    from hpcjup.schedulers.lsf_parse import job_status

    assert job_status({"JOBID": "3867", "STAT": "NEWSTATE"}).state is JobState.UNKNOWN

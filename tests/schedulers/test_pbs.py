"""The PBS Pro adapter against output recorded from PBS Pro / OpenPBS (tests/schedulers/data/pbs/SOURCES.md)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup import job
from hpcjup.config.resources import Resources
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError, UsageError
from hpcjup.schedulers.base import JobSpec, JobState, JobStatus
from hpcjup.schedulers.pbs import PBSPro
from hpcjup.schedulers.pbs_nci import NCIGadi
from hpcjup.schedulers.pbs_parse import exec_hosts, parse_qstat, parse_qsub, parse_queues, submit_error
from hpcjup.transport.base import CommandResult

DATA = Path(__file__).parent / "data" / "pbs"
SPEC = JobSpec(
    name="lab-1a2b",
    session_dir="/home/u/.hpcjup/sessions/lab-1a2b",
    command=["python3", "/home/u/.hpcjup/sessions/lab-1a2b/launcher.py"],
    resources=Resources(
        partition="main", account="UABC0001", time="2:00:00", nodes=2, cpus=8, mem="16G", gpus="a100:4"
    ),
    warn_seconds=300,
    setup=(". /home/u/.hpcjup/sessions/lab-1a2b/setup.sh",),
)


def recorded(name: str) -> str:
    return (DATA / name).read_text()


class Replay:
    """A transport that answers each command with a recorded output and remembers what was asked."""

    name = "replay"
    destination = "replay"

    def __init__(self, stdout: str = "", stderr: str = "", returncode: int = 0) -> None:
        self.answer = (returncode, stdout, stderr)
        self.commands: list[list[str]] = []

    def run(self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 120, check: bool = True):
        self.commands.append(list(argv))
        rc, out, err = self.answer
        if check and rc != 0:
            raise RemoteCommandError(list(argv), rc, out, err)
        return CommandResult(tuple(argv), rc, out, err)


# -- rendering -----------------------------------------------------------------------------------
def test_render_directives() -> None:
    lines = PBSPro().render(SPEC).splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in [
        "#PBS -N hpcjup-lab-1a2b",
        "#PBS -o job.out",
        "#PBS -j oe",
        "#PBS -k oed",
        "#PBS -l select=2:ncpus=8:mem=16gb:ngpus=4:gpu_type=a100",
        "#PBS -l place=scatter",
        "#PBS -l walltime=02:00:00",
        "#PBS -q main",
        "#PBS -A UABC0001",
    ]:
        assert directive in lines
    assert not any(line.startswith("#PBS -V") for line in lines), (
        "the job gets no copy of the login shell's environment"
    )
    assert lines.index('cd "$PBS_O_WORKDIR" || exit 1') < lines.index("umask 077") < lines.index(SPEC.setup[0])
    assert lines[-1] == "exec python3 /home/u/.hpcjup/sessions/lab-1a2b/launcher.py"


def test_render_minimal_request_has_only_what_was_asked() -> None:
    script = PBSPro().render(JobSpec(name="x", session_dir="/s", command=["l"]))
    directives = [line for line in script.splitlines() if line.startswith("#PBS")]
    assert "#PBS -l select=1" in directives
    assert not [d for d in directives if "walltime" in d or " -q " in d or " -A " in d or "place" in d]


@pytest.mark.parametrize(
    ("mem", "pbs"), [("16G", "16gb"), ("4000M", "4000mb"), ("4000", "4000mb"), ("1T", "1tb"), ("16GB", "16gb")]
)
def test_memory_units(mem: str, pbs: str) -> None:
    script = PBSPro().render(JobSpec(name="x", session_dir="/s", command=["l"], resources=Resources(mem=mem)))
    assert f"#PBS -l select=1:mem={pbs}" in script


def test_job_environment_from_pbs_variables(tmp_path: Path) -> None:
    """The exported HPCJUP_* values, computed by sh from the variables PBS sets in a job."""
    nodefile = tmp_path / "nodes"
    nodefile.write_text("node7\nnode7\nnode3\nnode3\n")
    lines = PBSPro().job_environment(SPEC)
    env = {
        "PBS_JOBID": "1234.pbs01",
        "PBS_NODEFILE": str(nodefile),
        "NCPUS": "8",
        "PBS_QUEUE": "main",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        ["sh", "-c", "\n".join(lines) + "\nenv"], env=env, capture_output=True, text=True, check=True
    ).stdout
    got = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("HPCJUP_"))
    assert got[job.ENV_SCHEDULER] == "pbs"
    assert got[job.ENV_JOB_ID] == "1234.pbs01"
    assert got[job.ENV_NODE] == "node7"
    assert got[job.ENV_NODELIST] == "node7 node3"
    assert got[job.ENV_CPUS] == "8"
    assert got[job.ENV_LAUNCH] == "pbsdsh -h {host} --"
    assert got[job.ENV_TIME_LIMIT] == "7200"
    assert got[job.ENV_WARN_SIGNAL] == ""  # no signal before the walltime: the launcher's own timer
    assert got[job.ENV_WARN_SECONDS] == "300"
    assert got[job.ENV_PARTITION] == "main"
    assert got[job.ENV_ACCOUNT] == "UABC0001"
    assert got[job.ENV_JOBQUEUE] == "pbs"
    assert got[job.ENV_SUBMIT] == "qsub"


def test_time_limit_without_time_comes_from_qstat(tmp_path: Path) -> None:
    """No --time: the queue's default walltime, read from `qstat -f` in the job (0 when qstat says nothing)."""
    fake = tmp_path / "qstat"
    fake.write_text("#!/bin/sh\necho 'Job Id: 1.s'\necho '    Resource_List.walltime = 01:30:00'\n")
    fake.chmod(0o755)
    lines = [
        line
        for line in PBSPro().job_environment(JobSpec(name="x", session_dir="/s", command=["l"]))
        if job.ENV_TIME_LIMIT in line
    ]
    script = "\n".join(lines) + f'\necho "${job.ENV_TIME_LIMIT}"'
    out = subprocess.run(
        ["sh", "-c", script], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert out.stdout.strip() == "5400"
    none = subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert none.stdout.strip() == "0"


# -- submission ------------------------------------------------------------------------------------
def test_qsub_prints_the_id() -> None:
    assert parse_qsub(recorded("qsub.out")) == "2154.edtb-01.mcp.alcf.anl.gov"


def test_submit_runs_qsub_in_the_session_directory() -> None:
    transport = Replay(recorded("qsub.out"))
    assert PBSPro().submit(transport, "/home/u/s") == "2154.edtb-01.mcp.alcf.anl.gov"  # type: ignore[arg-type]
    argv = transport.commands[0]
    assert argv[:2] == ["sh", "-c"] and 'cd "$1"' in argv[2] and "qsub job.sh" in argv[2] and argv[-1] == "/home/u/s"


@pytest.mark.parametrize(
    ("recording", "words", "hint"),
    [
        ("qsub_unknown_queue.err", "Unknown queue", "qstat -Q"),
        ("qsub_limits.err", "Job violates queue and/or server resource limits", "resources_max"),
        ("qsub_would_exceed.err", "would exceed queue generic's per-user limit", "Ask for less"),
    ],
)
def test_refusal_in_qsubs_words(recording: str, words: str, hint: str) -> None:
    transport = Replay(stderr=recorded(recording), returncode=170)
    with pytest.raises(SubmitError) as raised:
        PBSPro().submit(transport, "/s")  # type: ignore[arg-type]
    assert words in raised.value.message and "qsub: " not in raised.value.message
    assert hint in (raised.value.hint or "")
    assert raised.value.exit_code == 5


def test_no_pbs_on_path() -> None:
    error = submit_error(RemoteCommandError(["sh"], 127, "", "sh: 1: exec: qsub: not found"))
    assert "no PBS commands" in (error.hint or "")


# -- state ------------------------------------------------------------------------------------------
def test_running_job() -> None:
    status = parse_qstat(recorded("qstat_running.json"), ["1008.qot-calc0"])["1008.qot-calc0"]
    assert status.state is JobState.RUNNING
    assert status.nodes == "qot-calc0,qot-calc1"
    assert status.time_limit == 4 * 3600
    assert status.time_left == 4 * 3600 - 600
    assert status.reason is None and status.expected_start is None


def test_finished_job() -> None:
    status = parse_qstat(recorded("qstat_finished.json"), ["2154.edtb-01.mcp.alcf.anl.gov"])[
        "2154.edtb-01.mcp.alcf.anl.gov"
    ]
    assert status.state is JobState.COMPLETED and status.exit_code == "0"


def test_pending_reasons_and_expected_start() -> None:
    found = parse_qstat(recorded("qstat_queued.json"), ["1010.pbs-server", "1011.pbs-server", "1012.pbs-server"])
    waiting, never, held = found["1010.pbs-server"], found["1011.pbs-server"], found["1012.pbs-server"]
    assert waiting.state is JobState.PENDING
    assert waiting.reason == "Insufficient amount of resource: ncpus (R: 2 A: 1 T: 2)"
    assert waiting.expected_start == "Thu Apr 15 01:34:17 2021"
    assert never.reason == "Can Never Run: Insufficient amount of resource: ncpus (R: 3 A: 2 T: 2)"
    assert never.expected_start is None  # "UNKNOWN"
    assert held.state is JobState.PENDING and held.reason == "held (u)"


@pytest.mark.parametrize(
    ("job_id", "state", "exit_code"),
    [
        ("1020.gadi-pbs", JobState.CANCELLED, "271"),  # 256 + SIGTERM: qdel
        ("1021.gadi-pbs", JobState.TIMEOUT, "-29"),  # JOB_EXEC_KILL_WALLTIME
        ("1022.gadi-pbs", JobState.CANCELLED, None),  # deleted before it ran
        ("1023.gadi-pbs", JobState.FAILED, "1"),
    ],
)
def test_finished_states(job_id: str, state: JobState, exit_code: str | None) -> None:
    status = parse_qstat(recorded("qstat_killed.json"), [job_id])[job_id]
    assert (status.state, status.exit_code) == (state, exit_code)


def test_short_id_matches_the_full_server_name() -> None:
    """qsub may print 1008.qot-calc0 while qstat's key carries the full server name, or the reverse."""
    assert parse_qstat(recorded("qstat_running.json"), ["1008"])["1008"].state is JobState.RUNNING


def test_statuses_asks_once_and_forgotten_jobs_are_gone() -> None:
    transport = Replay(recorded("qstat_running.json"), recorded("qstat_unknown.err"), returncode=153)
    found = PBSPro().statuses(transport, ["1008.qot-calc0", "2001.g3", "not;an id"])  # type: ignore[arg-type]
    assert len(transport.commands) == 1
    assert transport.commands[0] == ["qstat", "-f", "-F", "json", "-x", "1008.qot-calc0", "2001.g3"]
    assert found["1008.qot-calc0"].state is JobState.RUNNING
    assert found["2001.g3"].state is JobState.GONE and found["not;an id"].state is JobState.GONE


def test_no_jobs_key_means_none_known() -> None:
    transport = Replay(recorded("qstat_none.json"), recorded("qstat_unknown.err"), returncode=153)
    assert PBSPro().statuses(transport, ["2001.g3"])["2001.g3"].state is JobState.GONE  # type: ignore[arg-type]


def test_qstat_failing_outright_is_an_error_not_gone() -> None:
    transport = Replay("", "qstat: cannot connect to server pbs01 (errno=111)", returncode=2)
    with pytest.raises(RemoteCommandError):
        PBSPro().statuses(transport, ["1.pbs01"])  # type: ignore[arg-type]


def test_exec_hosts() -> None:
    assert exec_hosts("charon24/0*2+charon21/0*2") == "charon24,charon21"
    assert exec_hosts("") is None


def test_queue_listing() -> None:
    queues = parse_queues(recorded("qstat_queues.json"))
    assert queues["qexp"]["resources_max"] == {"ncpus": 144, "nodect": 4, "walltime": "01:00:00"}


# -- ending jobs -----------------------------------------------------------------------------------
def test_snippets() -> None:
    pbs = PBSPro()
    assert pbs.stop_snippet(["1.s"], ["2.s"]) == "qsig -s TERM 1.s 2>/dev/null; qdel 2.s 2>/dev/null"
    assert pbs.kill_snippet(["1.s", "x;rm"]) == "qdel 1.s 2>/dev/null"
    assert (
        pbs.stop_snippet([], []) == ""
        and pbs.kill_snippet([]) == ""
        and pbs.cancel_own_snippet({"$(x)": "hpcjup+lab+"}) == ""
    )


def test_cancel_own_snippet_cancels_only_own_active_jobs_named_as_the_sessions(tmp_path: Path) -> None:
    """The snippet in a real sh, `qstat` replaying a recording (the user's name for its owner, one job renamed as
    a session's worker), `qdel` recording: the worker job goes, the other recorded one is spared."""
    user = pwd.getpwuid(os.getuid()).pw_name
    text = recorded("qstat_queued.json").replace("hpcuser@", f"{user}@").replace('"hpcjup-lab"', '"hpcjup+lab+scale"')
    (tmp_path / "answer.json").write_text(text)
    (tmp_path / "qstat").write_text(f"#!/bin/sh\ncat {tmp_path}/answer.json\n")
    (tmp_path / "qdel").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/deleted\n')
    for name in ("qstat", "qdel"):
        (tmp_path / name).chmod(0o755)
    snippet = PBSPro().cancel_own_snippet({"1010.pbs-server": "hpcjup+lab+", "1011": "hpcjup+lab+", "7": "hpcjup+lab+"})
    out = subprocess.run(
        ["sh", "-c", snippet], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert out.stdout.splitlines() == ["hpcjup-cancelled 1010.pbs-server", "hpcjup-spared 1011"]
    assert (tmp_path / "deleted").read_text().split() == ["1010.pbs-server"]


def test_worker_jobs() -> None:
    pbs = PBSPro()
    assert pbs.jobqueue == ("pbs", "PBSJob")
    assert pbs.worker_job_options("main", "UABC0001", "90") == {
        "queue": "main",
        "account": "UABC0001",
        "walltime": "01:30:00",
    }
    transport = Replay(recorded("qsub.out"))
    script = "/home/u/.hpcjup/sessions/lab/dask/batch.sh"  # where session/groups.py wrote dask-jobqueue's script
    assert pbs.submit_worker(transport, script) == "2154.edtb-01.mcp.alcf.anl.gov"  # type: ignore[arg-type]
    # qsub reads the file (its #PBS lines); fed the path on stdin it would run a job without them.
    argv = transport.commands[0]
    assert argv[-1] == script and 'qsub "$1"' in argv[2]


# -- any input at all: a value or an hpcjup error, nothing else ---------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
job_like = st.dictionaries(
    st.sampled_from(
        [
            "job_state",
            "comment",
            "Exit_status",
            "exec_host",
            "Resource_List",
            "resources_used",
            "estimated",
            "Hold_Types",
        ]
    ),
    json_values,
)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_qstat_any_text(text: str) -> None:
    try:
        found = parse_qstat(text, ["1.s"])
    except HpcjupError:
        return
    assert set(found) <= {"1.s"}


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["Jobs", "timestamp", "pbs_server"]),
        json_values | st.dictionaries(st.sampled_from(["1.s", "1.t", "2.s"]), job_like),
    )
)
def test_qstat_any_document(document: dict[str, object]) -> None:
    try:
        found = parse_qstat(json.dumps(document), ["1.s", "2.s"])
    except HpcjupError:
        return
    for status in found.values():
        assert isinstance(status.state, JobState)


@settings(max_examples=200)
@given(st.text(max_size=200), st.text(max_size=200))
def test_qsub_any_output(stdout: str, stderr: str) -> None:
    try:
        job_id = parse_qsub(stdout, stderr)
    except SubmitError:
        return
    assert PBSPro().is_job_id(job_id)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_queues_any_text(text: str) -> None:
    try:
        parse_queues(text)
    except HpcjupError:
        pass


# -- shrink-to-fit (--time-min) -------------------------------------------------------------------------
def granted_limit(lines: list[str], qstat_says: str | None, tmp_path: Path) -> str:
    """HPCJUP_TIME_LIMIT as the job computes it, with a `qstat -f` that prints `qstat_says` (None: no qstat)."""
    path = "/usr/bin:/bin"
    if qstat_says is not None:
        fake = tmp_path / "qstat"
        fake.write_text(f"#!/bin/sh\necho 'Job Id: 1.s'\necho '    Resource_List.walltime = {qstat_says}'\n")
        fake.chmod(0o755)
        path = f"{tmp_path}:{path}"
    script = "\n".join(line for line in lines if job.ENV_TIME_LIMIT in line) + f'\necho "${job.ENV_TIME_LIMIT}"'
    return subprocess.run(["sh", "-c", script], env={"PATH": path}, capture_output=True, text=True).stdout.strip()


def test_time_min_is_a_shrink_to_fit_job(tmp_path: Path) -> None:
    """--time 30 --time-min 5: min_walltime/max_walltime and no walltime (PBS sets it when the job starts);
    the job reads the walltime it was granted from qstat, so the launcher's timer follows it."""
    pbs = PBSPro()
    resources = Resources(time="30", time_min="5")
    pbs.check_request(resources)  # shrink-to-fit: accepted
    spec = JobSpec(name="x", session_dir="/s", command=["l"], resources=resources, warn_seconds=75)
    directives = [line for line in pbs.render(spec).splitlines() if line.startswith("#PBS")]
    assert "#PBS -l min_walltime=00:05:00,max_walltime=00:30:00" in directives
    assert not [d for d in directives if "-l walltime=" in d]
    assert granted_limit(pbs.job_environment(spec), "00:08:00", tmp_path) == "480"


def test_shrink_to_fit_limits_in_qstat() -> None:
    """Queued: no walltime yet, the most it may get (max_walltime); running: the walltime PBS chose."""
    found = parse_qstat(recorded("qstat_stf.json"), ["1030.qot-calc0", "1031.qot-calc0"])
    queued, running = found["1030.qot-calc0"], found["1031.qot-calc0"]
    assert queued.state is JobState.PENDING and queued.time_limit == 10 * 3600
    assert queued.reason == "Job would conflict with reservation or top job"
    assert running.state is JobState.RUNNING and running.time_limit == 3600 + 40 * 60
    assert running.time_left == 3600 + 39 * 60


# -- --directive: the user's own options -----------------------------------------------------------------
def test_directives_come_after_hpcjups_own() -> None:
    resources = Resources(partition="main", directives=("-l storage=gdata/ab12+scratch/ab12", "-W group_list=x"))
    lines = PBSPro().render(JobSpec(name="x", session_dir="/s", command=["l"], resources=resources)).splitlines()
    directives = [line for line in lines if line.startswith("#PBS")]
    assert directives[-2:] == ["#PBS -l storage=gdata/ab12+scratch/ab12", "#PBS -W group_list=x"]
    assert lines.index(directives[-1]) < lines.index('cd "$PBS_O_WORKDIR" || exit 1')


# -- NCI Gadi: job-wide resources, -P ---------------------------------------------------------------------
GADI = Resources(
    partition="normal",
    account="ab12",
    time="2:00:00",
    nodes=2,
    cpus=48,
    mem="190G",
    directives=("-l storage=gdata/ab12+scratch/ab12", "-l jobfs=100GB"),
)


def test_gadi_script_has_the_directives_ncis_examples_have() -> None:
    """NCI's documented job scripts (https://opus.nci.org.au/display/Help/PBS+Directives+Explained) ask with
    `-P`, job-wide `-l ncpus=`, `-l mem=`, `-l walltime=`, `-l storage=`, `-l jobfs=`, and never `select=`."""
    script = NCIGadi().render(JobSpec(name="lab", session_dir="/s", command=["l"], resources=GADI))
    directives = [line for line in script.splitlines() if line.startswith("#PBS")]
    for line in [
        "#PBS -P ab12",
        "#PBS -q normal",
        "#PBS -l ncpus=96",  # two whole 48-core nodes
        "#PBS -l mem=380gb",  # --mem is per node; Gadi's mem is the job's
        "#PBS -l walltime=02:00:00",
        "#PBS -l storage=gdata/ab12+scratch/ab12",
        "#PBS -l jobfs=100GB",
    ]:
        assert line in directives
    assert not [d for d in directives if "select=" in d or " -A " in d or "place=" in d]


def test_gadi_gpus_are_job_wide() -> None:
    resources = Resources(partition="gpuvolta", cpus=12, gpus="1")
    script = NCIGadi().render(JobSpec(name="g", session_dir="/s", command=["l"], resources=resources))
    assert "#PBS -l ngpus=1" in script and "#PBS -l ncpus=12" in script


def test_gadi_cpus_per_node_from_pbs_ncpus(tmp_path: Path) -> None:
    nodefile = tmp_path / "nodes"
    nodefile.write_text("gadi-cpu-clx-0001\n" * 48 + "gadi-cpu-clx-0002\n" * 48)
    lines = NCIGadi().job_environment(JobSpec(name="x", session_dir="/s", command=["l"], resources=GADI))
    env = {"PBS_NCPUS": "96", "NCPUS": "48", "PBS_NODEFILE": str(nodefile), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["sh", "-c", "\n".join(lines) + "\nenv"], env=env, capture_output=True, text=True).stdout
    got = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("HPCJUP_"))
    assert got[job.ENV_CPUS] == "48"
    assert got[job.ENV_NODELIST] == "gadi-cpu-clx-0001 gadi-cpu-clx-0002"
    assert got[job.ENV_SCHEDULER] == "pbs-nci"


def test_gadi_refuses_nodes_without_cpus() -> None:
    with pytest.raises(UsageError, match="--cpus"):
        NCIGadi().check_request(Resources(nodes=2))
    NCIGadi().check_request(Resources(nodes=2, cpus=48))


def test_gadi_worker_jobs_charge_with_p() -> None:
    options = NCIGadi().worker_job_options("normal", "ab12", "30")
    assert options == {"queue": "normal", "account": None, "walltime": "00:30:00", "job_extra_directives": ["-P ab12"]}


# -- jobs that can never start ----------------------------------------------------------------------------
def test_can_never_run_and_admin_holds_are_not_waited_for() -> None:
    """PBS's own "Can Never Run: ..." never clears; an operator's or the system's hold is not the user's to
    release; ordinary waiting and a user hold are waited for."""
    pbs = PBSPro()
    found = parse_qstat(recorded("qstat_queued.json"), ["1010.pbs-server", "1011.pbs-server", "1012.pbs-server"])
    what, hint = pbs.never_starts(found["1011.pbs-server"]) or ("", "")
    assert "more than the queue" in what and "--nodes" in hint and "qstat -Qf" in hint
    assert pbs.never_starts(found["1010.pbs-server"]) is None  # Insufficient amount of resource: waits
    assert pbs.never_starts(found["1012.pbs-server"]) is None  # held (u): the user's own hold
    held = JobStatus("1.s", JobState.PENDING, reason="held (s): job held, too many failed attempts to run")
    assert "holds it" in (pbs.never_starts(held) or ("",))[0]


def test_worker_jobs_carry_the_sessions_directives() -> None:
    """A worker job needs the session's own options as much as the session does (Gadi: -l storage=)."""
    storage = ("-l storage=gdata/ab12",)
    assert PBSPro().worker_job_options("main", "UABC0001", "30", directives=storage)["job_extra_directives"] == [
        "-l storage=gdata/ab12"
    ]
    assert "job_extra_directives" not in PBSPro().worker_job_options("main", None, "30")
    gadi = NCIGadi().worker_job_options("normal", "ab12", "30", directives=storage, cores=4, memory="16GB")
    assert gadi["job_extra_directives"] == ["-P ab12", "-l storage=gdata/ab12"]
    assert gadi["resource_spec"] == "ncpus=4,mem=16gb"  # no select= chunk for PBSJob to write
    assert NCIGadi().worker_job_options("normal", None, "30", cores=2, memory="4GiB")["resource_spec"] == "ncpus=2"


def test_a_state_letter_we_do_not_know_is_not_taken_for_an_end() -> None:
    """UNKNOWN is active: prune never removes a session on a guess (it was FAILED)."""
    from hpcjup.schedulers.base import JobState
    from hpcjup.schedulers.pbs_parse import _state

    assert _state("Z", None) is JobState.UNKNOWN and _state("", None) is JobState.GONE

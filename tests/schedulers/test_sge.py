"""The Grid Engine adapter's rendering and parsing, against output recorded from Son of Grid Engine 8.1.9.

tests/schedulers/data/sge/README.md says how each recording was made; tests/cli/test_sge.py runs
the adapter against the real cell.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup import job
from hpcjup.config.resources import Resources
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError, UsageError
from hpcjup.schedulers.base import JobSpec, JobState
from hpcjup.schedulers.sge import GridEngine
from hpcjup.schedulers.sge_parse import (
    parse_cluster_queues,
    parse_qacct,
    parse_qstat_xml,
    parse_statuses,
    state_of,
    submit_error,
)
from hpcjup.transport.base import CommandResult

DATA = Path(__file__).parent / "data" / "sge"
SGE = GridEngine()
SPEC = JobSpec(
    name="lab-1a2b",
    session_dir="/home/u/.hpcjup/sessions/lab-1a2b",
    command=["python3", "/home/u/.hpcjup/sessions/lab-1a2b/launcher.py", "--session-dir", "/home/u/s"],
    resources=Resources(partition="all.q", account="proj1", time="2:00:00", cpus=8, mem="16G", gpus="2"),
    warn_seconds=300,
    setup=(". /home/u/.hpcjup/sessions/lab-1a2b/setup.sh",),
)


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# -- rendering -------------------------------------------------------------------------------------------
def test_render_directives() -> None:
    lines = SGE.render(SPEC).splitlines()
    assert lines[0] == "#!/bin/bash -l"
    directives = [line for line in lines if line.startswith("#$ ")]
    assert directives == [
        "#$ -N hpcjup-lab-1a2b",
        "#$ -o job.out",
        "#$ -j y",
        "#$ -cwd",
        "#$ -S /bin/bash",
        "#$ -v PATH",
        "#$ -notify",
        "#$ -r n",
        "#$ -q all.q",
        "#$ -P proj1",
        "#$ -l h_rt=7200",
        "#$ -pe smp 8",
        "#$ -l h_vmem=2048M",  # 16 GiB for the job = 2 GiB for each of its 8 slots
        "#$ -l gpu=2",
    ]
    assert "-V" not in directives  # never the whole login environment
    body = lines[lines.index("umask 077") :]
    assert body == [
        "umask 077",
        SPEC.setup[0],
        "exec python3 /home/u/.hpcjup/sessions/lab-1a2b/launcher.py --session-dir /home/u/s",
    ]


def test_render_leaves_out_unset_resources_and_uses_mpi_across_hosts() -> None:
    plain = SGE.render(JobSpec(name="x", session_dir="/h/x", command=["python3", "l.py"]))
    assert not any(word in plain for word in ("-q ", "-P ", "h_rt", "-pe ", "h_vmem", "gpu"))
    two = SGE.render(JobSpec(name="x", session_dir="/h/x", command=["l"], resources=Resources(nodes=2, cpus=3)))
    assert "#$ -pe mpi 6" in two.splitlines()


def test_render_quotes_the_command() -> None:
    spec = JobSpec(name="x", session_dir="/h/x", command=["python3", "/h/my dir/launcher.py", "--workdir", "$HOME; rm"])
    assert SGE.render(spec).splitlines()[-1] == "exec python3 '/h/my dir/launcher.py' --workdir '$HOME; rm'"


def test_typed_gpus_are_refused_before_submission() -> None:
    spec = JobSpec(name="x", session_dir="/h/x", command=["l"], resources=Resources(gpus="a100:2"))
    with pytest.raises(UsageError, match="GPU types") as caught:
        SGE.render(spec)
    assert "qconf -sc" in (caught.value.hint or "")


def _environment(spec: JobSpec, env: dict[str, str]) -> dict[str, str]:
    """Run the script's environment lines in a real bash with Grid Engine's variables; the HPCJUP_* it exports."""
    script = "\n".join([*SGE.job_environment(spec), "env"])
    out = subprocess.run(
        ["bash", "-c", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("HPCJUP_"))


def test_job_environment_of_a_one_host_job() -> None:
    env = _environment(SPEC, {"JOB_ID": "42", "HOSTNAME": "vm.example.org", "NSLOTS": "8", "QUEUE": "all.q"})
    assert env[job.ENV_SCHEDULER] == "sge" and env[job.ENV_JOB_ID] == "42"
    assert env[job.ENV_NODE] == "vm" and env[job.ENV_NODELIST] == "vm" and env[job.ENV_CPUS] == "8"
    assert env[job.ENV_LAUNCH] == "" and env[job.ENV_WARN_SIGNAL] == ""  # the launcher's own timer
    assert env[job.ENV_TIME_LIMIT] == "7200" and env[job.ENV_WARN_SECONDS] == "300"
    assert (env[job.ENV_PARTITION], env[job.ENV_ACCOUNT]) == ("all.q", "proj1")
    assert (env[job.ENV_JOBQUEUE], env[job.ENV_SUBMIT], env[job.ENV_SCRUB]) == ("sge", "qsub", "")


def test_job_environment_of_a_pe_job_across_hosts(tmp_path: Path) -> None:
    # pe_hostfile as Grid Engine writes it (host slots queue processors), this host not first, one host twice.
    hostfile = tmp_path / "pe_hostfile"
    hostfile.write_text(
        "n2.cl 4 all.q@n2.cl UNDEFINED\nvm.cl 2 all.q@vm.cl UNDEFINED\nvm.cl 1 b.q@vm.cl UNDEFINED\n"
        "n3 4 all.q@n3 UNDEFINED\n"
    )
    spec = JobSpec(name="x", session_dir="/h/x", command=["l"], resources=Resources(nodes=3))
    env = _environment(
        spec, {"JOB_ID": "7", "HOSTNAME": "vm", "NSLOTS": "11", "PE_HOSTFILE": str(hostfile), "QUEUE": "all.q"}
    )
    assert env[job.ENV_NODELIST] == "vm n2 n3" and env[job.ENV_CPUS] == "3"
    assert env[job.ENV_LAUNCH] == "qrsh -inherit -nostdin {host}"
    assert env[job.ENV_PARTITION] == "all.q"  # the queue Grid Engine chose, from $QUEUE
    assert env[job.ENV_TIME_LIMIT] == "0"  # no h_rt asked for: no timer


def test_job_environment_of_a_one_host_pe_job_has_no_launch_command() -> None:
    recorded_hostfile = "vm 2 all.q@vm UNDEFINED\n"  # job 2's pe_hostfile (-pe smp 2) on the real cell
    path = Path("/tmp/hpcjup-test-pe_hostfile")
    path.write_text(recorded_hostfile)
    try:
        env = _environment(SPEC, {"JOB_ID": "2", "HOSTNAME": "vm", "NSLOTS": "2", "PE_HOSTFILE": str(path)})
    finally:
        path.unlink()
    assert (env[job.ENV_NODELIST], env[job.ENV_CPUS], env[job.ENV_LAUNCH]) == ("vm", "2", "")


# -- parsing recorded output ---------------------------------------------------------------------------------
def test_qstat_xml_pending_held_running() -> None:
    found = parse_qstat_xml(recorded("qstat-xml-mixed.txt"))
    assert {job_id: s.state for job_id, s in found.items()} == {
        "2": JobState.RUNNING,
        "3": JobState.PENDING,
        "4": JobState.PENDING,
        "5": JobState.PENDING,
    }
    assert found["2"].nodes == "vm" and found["3"].nodes is None
    assert found["4"].reason == "held" and found["3"].reason is None


def test_qstat_xml_with_requests_gives_the_time_limit() -> None:
    found = parse_qstat_xml(recorded("qstat-xml-r-mixed.txt"))
    assert found["6"].time_limit == 600 and found["7"].time_limit is None


def test_qstat_xml_deleting_and_error_states() -> None:
    deleting = parse_qstat_xml(recorded("qstat-xml-deleting.txt"))["2"]
    assert deleting.state is JobState.COMPLETING and deleting.state.active
    error = parse_qstat_xml(recorded("qstat-xml-error.txt"))["7"]
    # Eqw stays in the queue until deleted: active, so `stop` deletes it; never_starts says why it cannot start.
    assert error.state is JobState.PENDING and error.state.active
    assert error.reason == "error state (Eqw)"


def test_qstat_xml_without_jobs() -> None:
    assert parse_qstat_xml(recorded("qstat-xml-none.txt")) == {}


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("qw", JobState.PENDING),
        ("hqw", JobState.PENDING),
        ("r", JobState.RUNNING),
        ("Rr", JobState.RUNNING),
        ("t", JobState.CONFIGURING),
        ("dr", JobState.COMPLETING),
        ("dt", JobState.COMPLETING),
        ("Eqw", JobState.PENDING),
        ("s", JobState.SUSPENDED),
        ("S", JobState.SUSPENDED),
        ("", JobState.GONE),
    ],
)
def test_state_codes(code: str, state: JobState) -> None:
    assert state_of(code)[0] is state


def test_qacct_records() -> None:
    assert parse_qacct(recorded("qacct-completed.txt"))["2"].state is JobState.COMPLETED
    killed = parse_qacct(recorded("qacct-killed.txt"))["3"]
    assert (killed.state, killed.exit_code, killed.nodes) == (JobState.CANCELLED, "137", "vm")
    assert parse_qacct(recorded("qacct-timeout.txt"))["16"].state is JobState.TIMEOUT
    assert parse_qacct(recorded("qacct-unknown.txt")) == {}
    assert sorted(parse_qacct(recorded("qacct-many.txt"))) == ["2", "3"]
    assert sorted(parse_qacct(recorded("qacct-owner.txt")), key=int) == ["1", "2", "3", "6", "15", "16"]


@pytest.mark.parametrize(
    ("name", "words", "hint"),
    [
        ("qsub-unknown-queue.txt", 'job requests unknown queue "nosuch"', "qconf -sql"),
        ("qsub-unknown-pe.txt", 'parallel environment "nosuch" does not exist', "qconf -spl"),
        ("qsub-unknown-resource.txt", 'unknown resource "gpu"', "qconf -sc"),
        ("qsub-unknown-project.txt", 'project "nosuch" does not exist', "qconf -sprjl"),
        ("qsub-we-fail.txt", "no suitable queues", "qstat -g c"),
    ],
)
def test_refusals_keep_the_schedulers_words_and_hint_what_to_run(name: str, words: str, hint: str) -> None:
    exc = submit_error(RemoteCommandError(["qsub"], 1, "", recorded(name)))
    assert isinstance(exc, SubmitError) and words in exc.message and "Exiting" not in exc.message
    assert "Unable to run job" not in exc.message and hint in (exc.hint or "")


def test_statuses_of_jobs_in_error_state_carry_qstats_error_reason() -> None:
    found = parse_statuses(recorded("statuses-eqw.txt"))
    can_not_open = 'error state (Eqw): error: can\'t open output file "/nonexistent/x/y.out": No such file or directory'
    assert (found["84"].state, found["84"].reason) == (JobState.PENDING, can_not_open)
    assert found["85"].reason == can_not_open
    what, hint = SGE.never_starts(found["84"]) or ("", "")
    assert what.startswith("Grid Engine put it in error state") and "qstat -j 84" in hint
    assert all(SGE.never_starts(status) is None for job_id, status in found.items() if job_id not in ("84", "85"))


def test_never_starts_only_for_the_error_state() -> None:
    found = parse_qstat_xml(recorded("qstat-xml-mixed.txt"))  # running, waiting, held
    assert all(SGE.never_starts(status) is None for status in found.values())


def test_stop_of_a_session_in_error_state_deletes_its_job() -> None:
    """stop() puts active jobs that do not run among the pending ones: their snippet deletes them."""
    error = parse_statuses(recorded("statuses-eqw.txt"))["84"]
    assert error.state.active and error.state is not JobState.RUNNING
    assert SGE.stop_snippet([], [error.job_id]) == "qdel 84 >/dev/null 2>&1"


# -- --directive and start --dry-run --------------------------------------------------------------------------
def test_directives_are_written_verbatim_after_hpcjups_own() -> None:
    spec = JobSpec(name="x", session_dir="/h/x", command=["l"], resources=Resources(directives=("-l h=vm", "-R y")))
    directives = [line for line in SGE.render(spec).splitlines() if line.startswith("#$ ")]
    assert directives[-2:] == ["#$ -l h=vm", "#$ -R y"] and directives[0] == "#$ -N hpcjup-x"


def test_preview_of_a_queue_says_there_is_no_estimate_but_that_it_could_run() -> None:
    [queue] = SGE.parse_preview(recorded("preview-all-q.txt"), ["all.q"])
    assert queue.can_take and queue.estimate is None and "no start estimate" in (queue.note or "")
    assert (queue.free_slots, queue.total_slots, queue.time_limit_seconds) == (4, 4, None)  # h_rt INFINITY
    [anyq] = SGE.parse_preview(recorded("preview-any-queue.txt"), [None])
    assert anyq.can_take and (anyq.name, anyq.free_slots, anyq.total_slots) == (None, 4, 4)


def test_preview_refusals_keep_grid_engines_words() -> None:
    [big] = SGE.parse_preview(recorded("preview-too-many-slots.txt"), ["all.q"])
    assert (
        big.refusal == 'Job 95 cannot run in PE "smp" because it only offers 0 slots; verification: no suitable queues'
    )
    assert "qstat -g c" in (big.hint or "")
    [nosuch] = SGE.parse_preview(recorded("preview-unknown-queue.txt"), ["nosuch"])
    assert nosuch.refusal == 'Job was rejected because job requests unknown queue "nosuch"'
    assert "qconf -sql" in (nosuch.hint or "") and nosuch.total_slots is None


def test_cluster_queue_summary() -> None:
    text = recorded("preview-all-q.txt").split("@@hpcjup end")[0]
    assert parse_cluster_queues(text) == {"all.q": (4, 4)}


# -- the adapter against a replayed conversation ------------------------------------------------------------------
class Replay:
    """A transport that answers each command with recorded output, in order, and keeps the argv it got."""

    name = "replay"
    destination = "replay"

    def __init__(self, *answers: tuple[int, str, str]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], *, check: bool = True, **_: Any) -> CommandResult:
        self.calls.append(list(argv))
        rc, out, err = self.answers.pop(0)
        if check and rc != 0:
            raise RemoteCommandError(list(argv), rc, out, err)
        return CommandResult(tuple(argv), rc, out, err)


def test_submit_reads_the_terse_id_and_refusals_become_submit_errors() -> None:
    replay = Replay((0, recorded("qsub-terse.txt"), ""), (1, "", recorded("qsub-unknown-queue.txt")))
    assert SGE.submit(replay, "/home/u/s") == "2"  # type: ignore[arg-type]
    assert replay.calls[0][-1] == "/home/u/s" and ": >>job.out && qsub -terse job.sh" in replay.calls[0][2]
    with pytest.raises(SubmitError, match="unknown queue"):
        SGE.submit(replay, "/home/u/s")  # type: ignore[arg-type]


def test_submit_without_an_id_is_an_error() -> None:
    with pytest.raises(SubmitError, match="no job id"):
        SGE.submit(Replay((0, recorded("qsub-plain.txt"), "")), "/s")  # type: ignore[arg-type]
    assert SGE.submit(Replay((0, "123.1-4:1\n", "")), "/s") == "123"  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "12a", "-u", "1 2", "1\n", "12.3", "x" * 30])
def test_job_ids_are_checked(bad: str) -> None:
    assert not SGE.is_job_id(bad)
    with pytest.raises(UsageError):
        SGE.check_job_id(bad)
    assert SGE.stop_snippet([bad], [bad]) == "" and SGE.kill_snippet([bad]) == ""
    assert SGE.cancel_own_snippet({bad: "hpcjup+lab+"}) == ""


def test_snippets() -> None:
    assert SGE.stop_snippet(["12"], ["13", "x;y"]) == "qdel 12 13 >/dev/null 2>&1"
    killed = SGE.kill_snippet(["12", "13"])
    assert killed.startswith("qdel 12 13 >/dev/null 2>&1; ") and killed.endswith("|| qdel -f 12 13 >/dev/null 2>&1")
    assert "qstat -j 12,13" in killed
    assert 'qstat -xml -u "$(id -un)"' in SGE.cancel_own_snippet({"12": "hpcjup+lab+", "13": "hpcjup+lab+"})


def test_cancel_own_snippet_cancels_only_listed_jobs_named_as_the_sessions(tmp_path: Path) -> None:
    """The snippet in a real sh, with qstat and qdel on PATH replaced by scripts that replay the recording
    (two jobs renamed as session lab's workers; pend1, recorded too, keeps the user's own name)."""
    text = (
        recorded("qstat-xml-mixed.txt").replace(">run1<", ">hpcjup+lab+scale<").replace(">held1<", ">hpcjup+lab+gpu<")
    )
    (tmp_path / "answer.xml").write_text(text)
    (tmp_path / "qstat").write_text(f"#!/bin/sh\ncat {tmp_path / 'answer.xml'}\n")
    (tmp_path / "qdel").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "deleted"}\n')
    for name in ("qstat", "qdel"):
        (tmp_path / name).chmod(0o755)
    out = subprocess.run(
        ["sh", "-c", SGE.cancel_own_snippet({job_id: "hpcjup+lab+" for job_id in ("2", "4", "3", "99")})],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        check=True,
    ).stdout
    assert out.splitlines() == ["hpcjup-cancelled 2", "hpcjup-spared 3", "hpcjup-cancelled 4"]
    assert (tmp_path / "deleted").read_text().split() == ["2", "4"]


def test_worker_job_options_use_sgejob_names_and_grid_engines_time_format() -> None:
    # hpcjup's --time 20 means 20 minutes; Grid Engine's h_rt=20 would be 20 seconds.
    assert SGE.worker_job_options("all.q", "proj1", "20") == {
        "queue": "all.q",
        "project": "proj1",
        "walltime": "0:20:00",
        "job_extra_directives": ["-v PATH"],  # the cluster's Python, as the login shell finds it; never -V
    }
    assert SGE.worker_job_options("all.q", None, "1-02:03:04")["walltime"] == "26:03:04"
    assert SGE.jobqueue == ("sge", "SGEJob") and not SGE.estimates_start and not SGE.signals_before_limit


# -- hostile input ----------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.binary().map(lambda b: b.decode("latin-1")),
        st.sampled_from(sorted(p.name for p in DATA.glob("qstat-xml*"))).flatmap(
            lambda name: st.integers(0, 4000).map(lambda cut: recorded(name)[:cut])
        ),
    )
)
def test_qstat_xml_parsing_never_raises(text: str) -> None:
    for status in parse_qstat_xml(text).values():
        assert SGE.is_job_id(status.job_id)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.sampled_from([*sorted(p.name for p in DATA.glob("preview-*.txt")), "statuses-eqw.txt"]).flatmap(
            lambda name: st.integers(0, 6000).map(lambda cut: recorded(name)[:cut])
        ),
    ),
    st.lists(st.one_of(st.none(), st.sampled_from(["all.q", "nosuch"])), min_size=1, max_size=2),
)
def test_preview_and_status_parsing_never_raise(text: str, queues: list[str | None]) -> None:
    previews = SGE.parse_preview(text, queues)
    assert len(previews) == len(queues) and all(p.can_take == (p.refusal is None) for p in previews)
    assert all(SGE.is_job_id(job_id) for job_id in parse_statuses(text))


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["qsub-terse.txt", "qsub-plain.txt", "qsub-unknown-queue.txt"]))
def test_qsub_and_qacct_parsing_raise_only_hpcjup_errors(noise: str, name: str) -> None:
    text = recorded(name) + noise
    try:
        job_id = SGE.submit(Replay((0, text, "")), "/s")  # type: ignore[arg-type]
    except HpcjupError:
        pass
    else:
        assert SGE.is_job_id(job_id)
    assert all(SGE.is_job_id(k) for k in parse_qacct(noise + recorded("qacct-many.txt") + noise))

"""The Slurm adapter's rendering and parsing, against output recorded from Slurm 22.05."""

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcjup import job
from hpcjup.config.resources import Resources
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError
from hpcjup.schedulers.base import JobSpec, JobState, PartitionPreview
from hpcjup.schedulers.slurm import Slurm, _parse_squeue, submit_error
from hpcjup.schedulers.slurm_parse import parse_sinfo

DATA = Path(__file__).parent / "data" / "slurm"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


SPEC = JobSpec(
    name="lab-1a2b",
    session_dir="/home/u/.hpcjup/sessions/lab-1a2b",
    command=[
        "python3",
        "/home/u/.hpcjup/sessions/lab-1a2b/launcher.py",
        "--session-dir",
        "/home/u/.hpcjup/sessions/lab-1a2b",
    ],
    resources=Resources(partition="booster", account="proj1", time="2:00:00", nodes=2, cpus=8, mem="16G", gpus="4"),
    warn_seconds=300,
)


def test_render_directives_and_exec() -> None:
    script = Slurm().render(SPEC)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash -l"
    for directive in [
        "#SBATCH --job-name=hpcjup-lab-1a2b",
        "#SBATCH --output=job.out",
        "#SBATCH --partition=booster",
        "#SBATCH --account=proj1",
        "#SBATCH --time=2:00:00",
        "#SBATCH --nodes=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16G",
        "#SBATCH --gpus=4",
        "#SBATCH --signal=B:USR1@300",
    ]:
        assert directive in lines
    assert "umask 077" in lines
    assert lines[-1].startswith("exec python3 /home/u/.hpcjup/sessions/lab-1a2b/launcher.py --session-dir")


def test_render_leaves_out_unset_resources() -> None:
    script = Slurm().render(JobSpec(name="x", session_dir="/h/x", command=["python3", "l.py"]))
    assert "--partition" not in script and "--account" not in script and "--time" not in script


def test_render_quotes_the_command() -> None:
    spec = JobSpec(name="x", session_dir="/h/x", command=["python3", "/h/my dir/launcher.py", "--workdir", "$HOME; rm"])
    assert Slurm().render(spec).splitlines()[-1] == "exec python3 '/h/my dir/launcher.py' --workdir '$HOME; rm'"


@pytest.mark.parametrize(
    ("line", "state", "reason", "start", "left"),
    [
        ("PENDING|Resources|2026-11-25T14:03:11|||1:00:00", JobState.PENDING, "Resources", "2026-11-25T14:03:11", None),
        ("PENDING|Priority|N/A||0:00|1:00:00", JobState.PENDING, "Priority", None, 0),
        ("RUNNING|None|2026-11-25T13:00:00|node1|58:12|1:00:00", JobState.RUNNING, None, "2026-11-25T13:00:00", 3492),
        ("COMPLETED|None|2026-11-25T13:00:00|node1|0:00|UNLIMITED", JobState.COMPLETED, None, "2026-11-25T13:00:00", 0),
        (
            "CANCELLED|None|2026-11-25T13:00:00|node[1-2]|INVALID|1-00:00:00",
            JobState.CANCELLED,
            None,
            "2026-11-25T13:00:00",
            None,
        ),
    ],
)
def test_parse_squeue(line: str, state: JobState, reason: str | None, start: str | None, left: int | None) -> None:
    status = _parse_squeue("42", line)
    assert (status.state, status.reason, status.expected_start, status.time_left) == (state, reason, start, left)


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("CANCELLED by 1000", JobState.CANCELLED),
        ("OOM", JobState.OUT_OF_MEMORY),
        ("TO", JobState.TIMEOUT),
        ("REQUEUED", JobState.PENDING),  # waits again under the same id: not over (it was FAILED)
        ("RH", JobState.PENDING),
        ("SPECIAL_EXIT", JobState.PENDING),
        ("STOPPED", JobState.SUSPENDED),
        ("STAGE_OUT", JobState.COMPLETING),
        ("SIGNALING", JobState.RUNNING),
        ("REVOKED", JobState.CANCELLED),
        ("SOMETHING_NEW", JobState.UNKNOWN),  # a word we do not know is no reason to call the job over
        ("", JobState.GONE),
    ],
)
def test_state_words(word: str, state: JobState) -> None:
    assert JobState.parse(word) is state


def test_active_states() -> None:
    assert JobState.PENDING.active and JobState.RUNNING.active and JobState.COMPLETING.active
    assert not JobState.COMPLETED.active and not JobState.CANCELLED.active and not JobState.GONE.active


def test_submit_error_keeps_the_schedulers_words_and_hints_sinfo() -> None:
    stderr = "sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified\n"
    error = submit_error(RemoteCommandError(["sbatch"], 1, "", stderr))
    assert isinstance(error, SubmitError)
    assert "invalid partition specified: nosuch" in error.message
    assert "sinfo" in (error.hint or "")


def test_submit_error_for_accounts_hints_sacctmgr() -> None:
    stderr = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n"
    assert "sacctmgr" in (submit_error(RemoteCommandError(["sbatch"], 1, "", stderr)).hint or "")


def exported(lines: list[str], env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The HPCJUP_* variables the script's environment lines export, run by the real sh."""
    script = "\n".join([*lines, "env"])
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if line.startswith("HPCJUP_"))


def test_job_environment_from_slurms_variables(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    scontrol = bindir / "scontrol"  # as Slurm 22.05 prints `scontrol show hostnames node[1-3]`
    scontrol.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames node[1-3]" ] && printf "node1\\nnode2\\nnode3\\n"\n')
    scontrol.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "77", "SLURMD_NODENAME": "node2", "SLURM_JOB_NODELIST": "node[1-3]"}
    env = {"PATH": f"{bindir}:/usr/bin:/bin", **slurm, "SLURM_CPUS_ON_NODE": "8", "SLURM_JOB_ACCOUNT": "acct"}
    spec = JobSpec(name="x", session_dir="/h/x", command=["true"], resources=Resources(partition="booster", time="90"))
    got = exported(Slurm().job_environment(spec), env, tmp_path)
    assert set(got) == {getattr(job, name) for name in dir(job) if name.startswith("ENV_")}
    assert (got["HPCJUP_JOB_SCHEDULER"], got["HPCJUP_JOB_ID"], got["HPCJUP_NODE"]) == ("slurm", "77", "node2")
    assert got["HPCJUP_NODELIST"].split() == ["node2", "node1", "node3"], "each host once, this one first"
    assert got["HPCJUP_CPUS"] == "8" and got["HPCJUP_TIME_LIMIT"] == "5400" and got["HPCJUP_WARN_SIGNAL"] == "1"
    assert (got["HPCJUP_JOB_PARTITION"], got["HPCJUP_JOB_ACCOUNT"]) == ("booster", "acct"), (
        "the request, else Slurm's choice"
    )
    assert (got["HPCJUP_JOBQUEUE"], got["HPCJUP_SUBMIT"], got["HPCJUP_SCRUB"]) == ("slurm", "sbatch", "SLURM_")
    assert got["HPCJUP_SCRUB_KEEP"] == "SLURM_CONF"
    launch = got["HPCJUP_LAUNCH"].replace("{host}", "node3").replace("{cpus}", "4")
    assert launch.split()[:2] == ["srun", "--overlap"] and "-w node3" in launch and "--cpus-per-task=4" in launch


def test_render_exports_the_job_environment_before_the_launcher() -> None:
    lines = Slurm().render(SPEC).splitlines()
    exports = [i for i, line in enumerate(lines) if line.startswith("export HPCJUP_")]
    assert exports and max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < exports[0]
    assert exports[-1] < lines.index("umask 077")


def test_local_job_environment_is_this_host(tmp_path: Path) -> None:
    from hpcjup.schedulers.local import LocalProcess

    spec = JobSpec(name="x", session_dir="/h/x", command=["true"], resources=Resources(time="1:00:00"), warn_seconds=60)
    got = exported(LocalProcess().job_environment(spec), {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert got["HPCJUP_NODELIST"] == got["HPCJUP_NODE"] and got["HPCJUP_LAUNCH"] == "" and got["HPCJUP_SUBMIT"] == ""
    pid, _, start = got["HPCJUP_JOB_ID"].partition(".")  # PID.START: the launcher's pid and its start time
    assert int(got["HPCJUP_CPUS"]) >= 1 and pid.isdigit() and start.isdigit() and int(start) > 0
    assert (got["HPCJUP_TIME_LIMIT"], got["HPCJUP_WARN_SIGNAL"], got["HPCJUP_WARN_SECONDS"]) == ("3600", "0", "60")


def test_worker_jobs_use_dask_jobqueues_slurm_job() -> None:
    assert Slurm().jobqueue == ("slurm", "SLURMJob")
    assert Slurm().worker_job_options("batch", None, "30") == {"queue": "batch", "account": None, "walltime": "30"}


# -- --directive ---------------------------------------------------------------------------------------------
def test_directives_are_written_verbatim_after_hpcjups_own() -> None:
    spec = JobSpec(
        name="x",
        session_dir="/h/x",
        command=["l"],
        resources=Resources(partition="booster", directives=("--constraint=gpu", "--qos=debug")),
    )
    lines = Slurm().render(spec).splitlines()
    directives = [line for line in lines if line.startswith("#SBATCH")]
    assert directives[-2:] == ["#SBATCH --constraint=gpu", "#SBATCH --qos=debug"]  # the last word wins in sbatch
    assert "#SBATCH --partition=booster" in directives[:-2]


# -- start --dry-run: recorded output of the preview snippet ---------------------------------------------------
def test_preview_of_a_partition_and_the_default() -> None:
    booster, default = Slurm().parse_preview(recorded("preview-booster-and-default.txt"), ["booster", None])
    assert booster == PartitionPreview("booster", estimate="2026-12-02T01:16:25", idle_nodes=1, total_nodes=2)
    assert default.name == "booster" and default.estimate == "2026-12-02T01:16:25"  # the partition Slurm chose
    assert default.can_take and default.time_limit_seconds is None  # the mini-cluster's partitions have no limit


def test_preview_refusal_keeps_slurms_words_with_a_hint() -> None:
    [booster] = Slurm().parse_preview(recorded("preview-too-many-nodes.txt"), ["booster"])
    assert not booster.can_take and booster.estimate is None
    assert booster.refusal == "Requested node configuration is not available"
    assert "--nodes" in (booster.hint or "") and booster.total_nodes == 2


def test_preview_of_an_unknown_partition_beside_a_good_one() -> None:
    nosuch, booster = Slurm().parse_preview(recorded("preview-unknown-partition.txt"), ["nosuch", "booster"])
    assert nosuch.refusal == "invalid partition specified: nosuch; Invalid partition name specified"
    assert "sinfo -s" in (nosuch.hint or "") and nosuch.total_nodes is None
    assert booster.can_take and booster.estimate == "2026-12-02T01:16:25"


def test_preview_of_two_busy_partitions_gives_each_its_own_estimate() -> None:
    previews = Slurm().parse_preview(recorded("preview-two-partitions.txt"), ["booster", "batch"])
    assert [(p.name, p.estimate) for p in previews] == [
        ("booster", "2026-12-02T01:46:22"),
        ("batch", "2026-12-02T01:46:22"),
    ]


def test_sinfo_time_limits_and_node_counts() -> None:
    # Lines as `sinfo -h -o '%P|%a|%l|%F'` prints them (Slurm's documented formats; the mini-cluster has no limits).
    found = parse_sinfo("gpu*|up|1-00:00:00|3/1/0/4\ndebug|down|30:00|0/0/2/2\nbad|up|x|1/2\n")
    assert found == {"": ("up", 86400, 1, 4), "gpu": ("up", 86400, 1, 4), "debug": ("down", 1800, 0, 2)}


def test_preview_without_sinfo_is_a_clear_error() -> None:
    with pytest.raises(RemoteCommandError, match="sinfo: not found") as caught:
        Slurm().parse_preview("@@hpcjup sinfo\nsh: 1: sinfo: not found\n\n@@hpcjup end 127\n", ["booster"])
    assert "sinfo -s" in (caught.value.hint or "") and caught.value.returncode == 127
    with pytest.raises(RemoteCommandError, match="no output"):
        Slurm().parse_preview("", ["booster"])


def test_schedulers_without_a_preview_say_so_plainly() -> None:
    from hpcjup.schedulers import get_scheduler

    none = get_scheduler("none")
    assert not none.previews_start and none.preview_snippet("#!/bin/sh\n", [None]) == ""
    [preview] = none.parse_preview("", [None])
    assert (
        preview.can_take and preview.estimate is None and preview.note == f"no start estimate on {none.title or 'none'}"
    )


def test_preview_snippet_passes_the_script_verbatim_to_sbatch_on_stdin(tmp_path: Path) -> None:
    """The snippet in a real sh; sbatch and sinfo are scripts that show what they got (quoting is the point)."""
    (tmp_path / "sinfo").write_text("#!/bin/sh\necho 'booster*|up|infinite|0/2/0/2'\n")
    (tmp_path / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/args; cat > {tmp_path}/script; exit 1\n')
    for name in ("sinfo", "sbatch"):
        (tmp_path / name).chmod(0o755)
    script = "#!/bin/bash\n#SBATCH --job-name='x y'\necho \"$HOME\" `id` $(id) \\ 'q'\n"
    snippet = Slurm().preview_snippet(script, ["booster", None])
    out = subprocess.run(
        ["sh", "-c", snippet], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True, check=True
    ).stdout
    assert (tmp_path / "script").read_text() == script
    assert (tmp_path / "args").read_text().splitlines() == ["--test-only --partition=booster", "--test-only"]
    assert [p.refusal for p in Slurm().parse_preview(out, ["booster", None])] == [
        "sbatch --test-only exited with 1",
        "sbatch --test-only exited with 1",
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.sampled_from(sorted(p.name for p in DATA.glob("preview-*.txt"))).flatmap(
            lambda name: st.integers(0, 2000).map(lambda cut: recorded(name)[:cut])
        ),
        st.sampled_from(sorted(p.name for p in DATA.glob("preview-*.txt"))).flatmap(
            lambda name: st.text().map(lambda noise: recorded(name).replace("\n", "\n" + noise, 3))
        ),
    ),
    st.lists(st.one_of(st.none(), st.sampled_from(["booster", "batch", "nosuch"])), min_size=1, max_size=3),
)
def test_preview_parsing_gives_previews_or_a_clear_error(text: str, partitions: list[str | None]) -> None:
    try:
        previews = Slurm().parse_preview(text, partitions)
    except HpcjupError as exc:
        assert exc.hint
        return
    assert len(previews) == len(partitions)
    for preview in previews:
        assert preview.can_take == (preview.refusal is None)
        assert preview.estimate is None or len(preview.estimate) == 19

"""Worker groups without a cluster: names, specs, and the record of job ids (read with the real local shell)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcjup.errors import UsageError
from hpcjup.job.contract import GROUPS_FILE
from hpcjup.session.groupjobs import load_groups, worker_prologue
from hpcjup.session.groups import (
    JOBS_FILE,
    WorkerGroup,
    check_group_name,
    check_partition,
    ids_in,
    job_name,
    valid_ids,
)
from hpcjup.session.layout import SessionPaths
from hpcjup.transport.local import LocalTransport


@pytest.fixture
def paths(tmp_path: Path) -> SessionPaths:
    paths = SessionPaths(str(tmp_path), "lab")
    Path(paths.dir, "dask").mkdir(parents=True)
    return paths


@pytest.mark.parametrize("name", ["gpu", "batch.2", "a_b-c", "x" * 64])
def test_group_names_follow_the_session_name_rule(name: str) -> None:
    assert check_group_name(name) == name


@pytest.mark.parametrize("name", ["gpu\n", "../x", "a/b", "", ".hidden", "a+b", "x" * 65, "a b", "-a"])
def test_group_names_that_are_no_safe_path_component_are_refused(name: str) -> None:
    with pytest.raises(UsageError) as info:
        check_group_name(name)
    assert info.value.hint and "letters, digits" in info.value.hint


@pytest.mark.parametrize("text", ["batch:2x4\nx", "batch:\n2", "ba/tch:2", "batch:", "batch:2x", "b+c:2"])
def test_worker_group_specs_match_whole_strings(text: str) -> None:
    with pytest.raises(UsageError):
        WorkerGroup.parse(text)


def test_worker_group_spec() -> None:
    assert WorkerGroup.parse(" gpu:4x8 ") == WorkerGroup("gpu", "gpu", 4, 8)


def test_partitions_may_hold_a_plus_but_no_newline() -> None:
    assert check_partition("gpu+big") == "gpu+big"
    with pytest.raises(UsageError):
        check_partition("gpu\n#SBATCH --account=other")


def test_worker_job_names_cannot_collide_with_a_session_name() -> None:
    # `lab`'s group `2` and the session `lab-2`: the old names were hpcjup-lab-2 for both.
    assert job_name("lab", "2") == "hpcjup+lab+2" != "hpcjup-lab-2"


def test_only_well_formed_job_ids_survive() -> None:
    ids = ["12", "12", "7_3", "--me", "-1", "12 13", "1;x", "", 5, None, "4\n", "٣"]
    assert valid_ids(ids) == ["12", "7_3"]


def test_recorded_ids_come_from_groups_json_and_the_wrapper_file(paths: SessionPaths) -> None:
    groups = {
        "batch": {"partition": "batch", "jobs": 2, "cores": 1, "memory": None, "job_ids": ["101", "102"]},
        "gpu": {"partition": "gpu", "jobs": 1, "cores": 4, "memory": "8GB", "job_ids": ["103", "--me", "1 2"]},
        "../evil": {"partition": "x", "jobs": 1, "job_ids": ["999"]},
        "broken": "not an object",
    }
    Path(paths.file(GROUPS_FILE)).write_text(json.dumps(groups))
    Path(paths.file(JOBS_FILE)).write_text("104\n--all\n105\n101\n")
    groups_json, jobs_file = Path(paths.file(GROUPS_FILE)).read_bytes(), Path(paths.file(JOBS_FILE)).read_bytes()
    assert ids_in(groups_json, jobs_file) == ["101", "102", "103", "104", "105"]
    assert sorted(load_groups(LocalTransport(), paths)) == ["batch", "gpu"]


@pytest.mark.parametrize("content", [None, b"", b"{trunc", b"[1, 2]", b'{"batch": {"job_ids": "101"}}'])
def test_a_missing_or_damaged_record_names_no_job(paths: SessionPaths, content: bytes | None) -> None:
    if content is not None:
        Path(paths.file(GROUPS_FILE)).write_bytes(content)
    assert ids_in(content, None) == []
    assert load_groups(LocalTransport(), paths) == {}


def test_worker_prologue_sources_the_profile_environment_when_there_is_one(tmp_path: Path) -> None:
    import subprocess

    paths = SessionPaths(str(tmp_path / "it's here"), "lab")
    Path(paths.dir, "dask").mkdir(parents=True)
    assert worker_prologue(paths)[0] == "umask 077"  # the worker's scratch and files are nobody else's
    script = "\n".join([*worker_prologue(paths), 'echo "${FROM_SETUP:-none} $DASK_CONFIG"'])
    assert (
        subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout == f"none {paths.dir}/dask/config\n"
    )
    Path(paths.file("setup.sh")).write_text("FROM_SETUP=venv\n")
    assert (
        subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout == f"venv {paths.dir}/dask/config\n"
    )


def test_the_job_side_sources_the_same_setup_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import hpcjup.job

    monkeypatch.syspath_prepend(str(hpcjup.job.LAUNCHER_PATH.parent))  # the job files import each other from there
    dasklaunch = importlib.import_module("daskscale")  # dasklaunch.py's scale-out jobs
    assert dasklaunch.SETUP_FILE == hpcjup.job.SETUP_FILE


def test_worker_jobs_carry_the_sessions_directives(paths: SessionPaths) -> None:
    """`-l storage=...` (Gadi), `--constraint=gpu`: a worker job needs them as much as the session's job did."""
    from hpcjup.schedulers.slurm import Slurm
    from hpcjup.session.groupjobs import _render
    from hpcjup.session.groups import WorkerGroup
    from hpcjup.session.record import SessionRecord
    from tests.schedulers.test_job_ids import ScriptedTransport

    record = SessionRecord(
        "lab", "h", "slurm", "7", "2026-12-01T00:00:00+00:00", resources={"directives": ["--constraint=gpu"]}
    )
    sent: list[bytes] = []

    class LoginNode(ScriptedTransport):
        """Renders nothing itself: keeps what it was sent, and the script it was asked to write."""

        def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
            sent.append(input or b"")
            return super()._exec_raw(command, input, timeout)

        def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
            self.written = data

    transport = LoginNode({"bash": (0, "#!/bin/bash\n", "")})
    _render(transport, Slurm(), paths, record, "tls://n:1", WorkerGroup.parse("batch:2"))
    spec = json.loads(sent[-1])
    assert spec["options"]["job_extra_directives"] == ["--constraint=gpu"]


def test_worker_groups_run_in_the_sessions_container(paths: SessionPaths) -> None:
    """A session started in a container records the runtime's whole command; its worker-group jobs are rendered
    (by the real dask-jobqueue) and run through the same command, not with the bare Python path (issue 23).
    `env VAR=1 PYTHON` stands in for a container runtime's prefix: like `ch-run IMG --`, it runs the next words."""
    import shlex

    from hpcjup.schedulers.slurm import Slurm
    from hpcjup.session.groupjobs import _render
    from hpcjup.session.record import SessionRecord
    from tests.cli.helpers import CLUSTER_PYTHON

    if not Path(CLUSTER_PYTHON).exists():
        pytest.skip(f"{CLUSTER_PYTHON} missing (tests/cluster/install.sh creates it)")
    command = ["env", "HPCJUP_IN_CONTAINER=1", CLUSTER_PYTHON]
    record = SessionRecord("lab", "h", "slurm", "7", "2026-12-01T00:00:00+00:00", python_command=shlex.join(command))
    assert SessionRecord.from_json(record.to_json()).worker_python == command
    script = Path(_render(LocalTransport(), Slurm(), paths, record, "tls://n:1", WorkerGroup.parse("batch:2")))
    assert f"{shlex.join(command)} -m distributed.cli.dask_worker tls://n:1" in script.read_text()


@pytest.mark.parametrize("value", ["ch-run 'img", "a\nb", 7, "x" * 5000])
def test_a_python_command_that_is_no_one_line_command_is_damaged(value: object) -> None:
    from hpcjup.errors import DamagedDocument
    from hpcjup.session.record import SessionRecord

    doc = json.loads(SessionRecord("lab", "h", "slurm", "7", "2026-12-01T00:00:00+00:00").to_json())
    with pytest.raises(DamagedDocument, match="python_command"):
        SessionRecord.from_json(json.dumps(dict(doc, python_command=value)).encode())

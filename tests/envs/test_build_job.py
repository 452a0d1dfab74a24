"""`build = "job"` for real: the build runs in a Slurm (and a Grid Engine) job on a compute node of the mini-cluster,
real uv and PyPI; the laptop follows the job's output over the one connection, and a Ctrl-C cancels the job."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from hpcjup.config.resources import Resources
from hpcjup.envs.build import check, ensure
from hpcjup.envs.buildjob import JobPlace, place
from hpcjup.envs.errors import EnvBuildError
from hpcjup.envs.spec import EnvSpec
from hpcjup.errors import ExitCode, Interrupted
from hpcjup.schedulers import get_scheduler
from hpcjup.transport import Transport
from tests.cluster.procs import wait_until
from tests.envs.conftest import TEST_ROOT, leftovers

pytestmark = pytest.mark.cluster

Host = Callable[[], Transport]
MakeSpec = Callable[..., EnvSpec]


class Seen:
    """A Progress that records what the laptop would show; `stop_at` raises KeyboardInterrupt at a phase (Ctrl-C)."""

    def __init__(self, stop_at: str | None = None) -> None:
        self.phases: list[str] = []
        self.lines: list[str] = []
        self.stop_at = stop_at

    def phase(self, name: str) -> None:
        self.phases.append(name)
        if self.stop_at and self.stop_at in name:
            raise KeyboardInterrupt

    def line(self, text: str) -> None:
        if text:
            self.lines.append(text)


def slurm(**more: Any) -> JobPlace:
    return place(get_scheduler("slurm"), Resources(time="10", **more))


def job_id(seen: Seen) -> str:
    found = [m.group(1) for p in seen.phases if (m := re.fullmatch(r"build job (\S+) submitted", p))]
    assert len(found) == 1, seen.phases
    return found[0]


def test_a_build_job_builds_on_a_compute_node_and_a_second_start_reuses_it(
    host: Host, make_spec: MakeSpec, minicluster: Any
) -> None:
    spec = make_spec({"requirements.txt": "six\n"})
    transport, seen = host(), Seen()
    # keep_tree: the env runs in place below (env_mode direct's way); the job's build gets the choice too.
    built = ensure(transport, spec, TEST_ROOT, job=slurm(), progress=seen, keep_tree=True)
    assert built.built_now
    jid = job_id(seen)
    # It ran in that job on a compute node: the build's own log says where (the job contract's HPCJUP_NODE).
    log = transport.read_file(f"{built.path}.log").decode()
    assert re.search(rf"^hpcjup: building {built.name} on node[12] in job {jid}$", log, re.M), log[:500]
    assert any(re.fullmatch(r"building on node[12]", line) for line in seen.lines), seen.lines
    # The laptop showed uv's own lines as they came from the job's output.
    assert any("six" in line for line in seen.lines), seen.lines
    assert leftovers(transport, built.name) == []  # no job directory, stage, lock or half-built env
    out = transport.run([built.python, "-c", "import six, sys; print(sys.prefix)"]).stdout
    assert out.strip() == built.path

    again = Seen()
    reused = ensure(host(), spec, TEST_ROOT, job=slurm(), progress=again, keep_tree=True)
    assert (reused.built_now, reused.path) == (False, built.path)
    assert not any("build job" in p for p in again.phases), again.phases  # no job at all


def test_a_failing_spec_in_a_build_job_leaves_only_its_log(host: Host, make_spec: MakeSpec, minicluster: Any) -> None:
    spec = make_spec({"requirements.txt": "hpcjup-surely-no-such-package-4712\n"})
    transport, seen = host(), Seen()
    with pytest.raises(EnvBuildError) as caught:
        ensure(transport, spec, TEST_ROOT, job=slurm(), progress=seen)
    error = caught.value
    assert error.exit_code == ExitCode.ENV_BUILD == 11  # as a login build's
    assert "did not resolve" in error.message
    assert "hpcjup-surely-no-such-package-4712" in (error.details or "")  # uv's words, from the job's output
    name = check(transport, spec, TEST_ROOT).name
    assert name and leftovers(transport, name) == []
    failed = transport.read_file(f"{transport.home()}/{TEST_ROOT}/{name}.failed.log").decode()
    assert "hpcjup-surely-no-such-package-4712" in failed and f"in job {job_id(seen)}" in failed


def test_ctrl_c_while_the_build_job_waits_cancels_it(host: Host, make_spec: MakeSpec, minicluster: Any) -> None:
    """The job pends (it may begin only in an hour); Ctrl-C at the queue state the laptop shows cancels it."""
    spec = make_spec({"requirements.txt": "six\n"})
    transport, seen = host(), Seen(stop_at="pending")
    waiting = slurm(directives=("--begin=now+3600",))
    with pytest.raises(Interrupted, match="was cancelled"):
        ensure(transport, spec, TEST_ROOT, job=waiting, progress=seen)
    jid = job_id(seen)
    assert any("reason: BeginTime" in p for p in seen.phases), seen.phases
    state = transport.run(["squeue", "-h", "-j", jid, "-o", "%T"], check=False).stdout.strip()
    assert state in ("", "CANCELLED", "COMPLETING"), state  # gone, not left in the queue
    name = check(transport, spec, TEST_ROOT).name
    assert name and leftovers(transport, name) == []  # its job directory and its stage went too


def test_a_build_job_on_grid_engine(host: Host, make_spec: MakeSpec, sge_cell: Any) -> None:
    spec = make_spec({"requirements.txt": "six\n"})
    transport, seen = host(), Seen()
    built = ensure(transport, spec, TEST_ROOT, job=place(get_scheduler("sge"), Resources(time="10")), progress=seen)
    assert built.built_now
    log = transport.read_file(f"{built.path}.log").decode()
    assert f"in job {job_id(seen)}" in log
    assert leftovers(transport, built.name) == []


def test_ctrl_c_while_the_build_job_runs_cancels_it_and_leaves_only_the_log(
    host: Host, make_spec: MakeSpec, minicluster: Any
) -> None:
    spec = make_spec({"requirements.txt": "six\n", "postBuild": "#!/bin/sh\necho long-postbuild\nsleep 60\n"})
    transport, seen = host(), Seen(stop_at="postBuild")
    with pytest.raises(Interrupted, match="was cancelled"):
        ensure(transport, spec, TEST_ROOT, job=slurm(), progress=seen)
    jid = job_id(seen)
    name = check(transport, spec, TEST_ROOT).name
    assert name is not None
    failed = f"{transport.home()}/{TEST_ROOT}/{name}.failed.log"

    def cleaned() -> bool:  # the job's SIGTERM reaches the build, whose trap removes what it wrote
        queued = transport.run(["squeue", "-h", "-j", jid, "-o", "%T"], check=False).stdout.strip()
        return queued in ("", "CANCELLED") and leftovers(transport, name) == []

    wait_until(cleaned, 30, "the cancelled build job to end and clean up")
    assert "long-postbuild" in transport.read_file(failed).decode()
    assert not check(transport, spec, TEST_ROOT).built


def test_a_build_job_killed_outright_is_noticed(host: Host, make_spec: MakeSpec, minicluster: Any) -> None:
    """A SIGKILL (an OOM killer, a node's reboot): the build says nothing more; the scheduler's state ends the wait."""
    spec = make_spec({"requirements.txt": "six\n", "postBuild": "#!/bin/sh\nsleep 60\n"})
    transport = host()

    class Kill(Seen):
        def phase(self, name: str) -> None:
            super().phase(name)
            if name == "postBuild":
                # The builder's pid from its lock: the job's batch shell (the job script execs the build).
                owner = f"{transport.home()}/{TEST_ROOT}/.lock-{check(transport, spec, TEST_ROOT).name}/owner"
                kill = 'set -- $(cat "$1"); set -- $(cat "/proc/$2/stat"); pkill -9 -s "$6"'  # its whole session
                transport.run(["sh", "-c", kill, "sh", owner])

    with pytest.raises(EnvBuildError, match=r"ended \(.*\) without a result") as caught:
        ensure(transport, spec, TEST_ROOT, job=slurm(), progress=Kill())
    assert caught.value.exit_code == ExitCode.ENV_BUILD
    assert not check(transport, spec, TEST_ROOT).built  # never used half-built (the next build takes its lock over)

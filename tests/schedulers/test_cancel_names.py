"""`cancel_own_snippet` checks each recorded job's name again before cancelling it (issue 23, item 3).

A recorded worker id is only a claim: the notebook's submit wrapper (or an old one) may have recorded a job
the user submitted by hand. Each adapter's snippet runs here in the real sh, with stand-ins for the
scheduler's query (printing the format the real command prints: tests/schedulers/data/*/) and for its cancel
command (which logs what it was given): a recorded job named `production-run` survives and is reported, one
named `hpcjup+lab+scale` (session lab's scale-out job) is cancelled.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpcjup.schedulers.base import Scheduler
from hpcjup.schedulers.lsf import LSF
from hpcjup.schedulers.pbs import PBSPro
from hpcjup.schedulers.sge import GridEngine
from hpcjup.schedulers.slurm import Slurm
from hpcjup.session.groups import job_name

USER = pwd.getpwuid(os.getuid()).pw_name
LAB = job_name("lab", "")  # what every job of session `lab` is named from: hpcjup+lab+
#: job id -> name, as the user's own active jobs: 5 was submitted by hand, 6 and 8 are session lab's own,
#: 9 is another session's (lab2), 10 only contains lab's prefix further on.
JOBS = {
    "5": "production-run",
    "6": "hpcjup+lab+scale",
    "8": "hpcjup+lab+gpu",
    "9": "hpcjup+lab2+scale",
    "10": "x-hpcjup+lab+scale",
}
EXPECTED = ["hpcjup-spared 5", "hpcjup-cancelled 6", "hpcjup-cancelled 8", "hpcjup-spared 9", "hpcjup-spared 10"]


def run(tmp_path: Path, scheduler: Scheduler, query: str, output: str, cancel: str, ids: list[str]) -> str:
    """The snippet for `ids` (all recorded by session lab; 7 is not among the listed jobs) in a real sh, with
    `query` printing `output` and `cancel` logging its arguments to tmp_path/cancelled."""
    (tmp_path / "listing").write_text(output)
    (tmp_path / query).write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/asked\ncat {tmp_path}/listing\n')
    (tmp_path / cancel).write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/cancelled\n')
    for name in (query, cancel):
        (tmp_path / name).chmod(0o755)
    snippet = scheduler.cancel_own_snippet({job_id: LAB for job_id in ids})
    done = subprocess.run(
        ["sh", "-c", snippet], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True, check=True
    )
    return done.stdout


def cancelled(tmp_path: Path) -> list[str]:
    path = tmp_path / "cancelled"
    return path.read_text().split() if path.exists() else []


def test_slurm_cancels_only_the_jobs_named_as_the_sessions(tmp_path: Path) -> None:
    listing = "".join(f"{job_id} {name}\n" for job_id, name in JOBS.items())  # squeue -o '%i %j'
    out = run(tmp_path, Slurm(), "squeue", listing, "scancel", [*JOBS, "7"])
    assert out.splitlines() == EXPECTED
    assert cancelled(tmp_path) == ["--", "6", "8"]
    assert (tmp_path / "asked").read_text().split() == ["-h", "--me", "--jobs=5,6,8,9,10,7", "-o", "%i", "%j"]


def test_slurm_array_tasks_are_judged_by_their_name_and_cancelled_by_the_arrays_id(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        Slurm(),
        "squeue",
        "12_1 hpcjup+lab+gpu\n12_2 hpcjup+lab+gpu\n13_1 big-array\n",
        "scancel",
        ["12", "13"],
    )
    assert out.splitlines() == ["hpcjup-cancelled 12", "hpcjup-spared 13"]
    assert cancelled(tmp_path) == ["--", "12"]


def test_slurm_names_are_never_cut_or_split(tmp_path: Path) -> None:
    """A name with spaces, or whose start differs only by a leading space, is judged on the whole name."""
    listing = "5  hpcjup+lab+scale\n6 hpcjup+lab+scale with words\n"
    out = run(tmp_path, Slurm(), "squeue", listing, "scancel", ["5", "6"])
    assert out.splitlines() == ["hpcjup-spared 5", "hpcjup-cancelled 6"]


def test_pbs_cancels_only_the_jobs_named_as_the_sessions(tmp_path: Path) -> None:
    """qstat -f -F json as PBS prints it (data/pbs/qstat_queued.json's shape): the user's own unfinished jobs."""
    jobs = {
        f"{job_id}.pbs01.example.org": {"Job_Name": name, "Job_Owner": f"{USER}@login1", "job_state": "R"}
        for job_id, name in JOBS.items()
    }
    jobs["11.pbs01.example.org"] = {"Job_Name": "hpcjup+lab+scale", "Job_Owner": "other@login1", "job_state": "R"}
    jobs["12.pbs01.example.org"] = {"Job_Name": "hpcjup+lab+scale", "Job_Owner": f"{USER}@login1", "job_state": "F"}
    for attrs in jobs.values():
        attrs["Resource_List"] = {"ncpus": 1, "select": "1:ncpus=1"}
    text = json.dumps({"timestamp": 1618432467, "pbs_version": "20.0.1", "Jobs": jobs}, indent=4)
    text = text.replace('": ', '":')  # PBS writes no space after the colon
    out = run(tmp_path, PBSPro(), "qstat", text, "qdel", [*(f"{j}.pbs01" for j in JOBS), "11.pbs01", "12.pbs01"])
    assert out.splitlines() == [line + ".pbs01" for line in EXPECTED]  # the recorded ids, as recorded
    assert cancelled(tmp_path) == ["6.pbs01.example.org", "8.pbs01.example.org"]  # the ids qstat lists
    assert (tmp_path / "asked").read_text().split()[:3] == ["-f", "-F", "json"]


def test_lsf_cancels_only_the_jobs_named_as_the_sessions(tmp_path: Path) -> None:
    """bjobs -o 'jobid stat job_name' -json as LSF prints it (data/lsf/bjobs_hpcjup.json's shape)."""
    records: list[dict[str, str]] = [{"JOBID": j, "STAT": "RUN", "JOB_NAME": name} for j, name in JOBS.items()]
    records += [{"JOBID": "11", "STAT": "DONE", "JOB_NAME": "hpcjup+lab+scale"}]
    records += [{"JOBID": "7", "ERROR": "Job <7> is not found"}]
    text = json.dumps({"COMMAND": "bjobs", "JOBS": len(records), "RECORDS": records}, indent=2).replace('": ', '":')
    out = run(tmp_path, LSF(), "bjobs", text, "bkill", [*JOBS, "11", "7"])
    assert out.splitlines() == EXPECTED
    assert cancelled(tmp_path) == ["6", "8"]
    assert (tmp_path / "asked").read_text().split()[:2] == ["-u", USER]


def test_grid_engine_cancels_only_the_jobs_named_as_the_sessions(tmp_path: Path) -> None:
    """qstat -xml -u USER as Son of Grid Engine prints it (data/sge/qstat-xml-mixed.txt's shape)."""
    entries = "".join(
        f'    <job_list state="running">\n      <JB_job_number>{job_id}</JB_job_number>\n'
        f"      <JAT_prio>0.25000</JAT_prio>\n      <JB_name>{name}</JB_name>\n      <JB_owner>{USER}</JB_owner>\n"
        "      <state>r</state>\n    </job_list>\n"
        for job_id, name in JOBS.items()
    )
    text = f"<?xml version='1.0'?>\n<job_info>\n  <queue_info>\n{entries}  </queue_info>\n  <job_info>\n  </job_info>\n</job_info>\n"
    out = run(tmp_path, GridEngine(), "qstat", text, "qdel", [*JOBS, "7"])
    assert out.splitlines() == EXPECTED
    assert cancelled(tmp_path) == ["6", "8"]
    assert (tmp_path / "asked").read_text().split() == ["-xml", "-u", USER]


def test_a_recorded_id_that_is_not_a_job_id_never_reaches_a_command() -> None:
    for scheduler in (Slurm(), PBSPro(), LSF(), GridEngine()):
        assert scheduler.cancel_own_snippet({"$(x)": LAB, "-u all": LAB}) == ""
        assert scheduler.cancel_own_snippet({}) == ""
    assert Slurm().cancel_own_snippet({"5": "hpcjup+lab+; rm -rf ~"}) == ""  # a prefix hpcjup never gives


names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(names, names.map(lambda tail: LAB + tail), names.map(lambda head: head + LAB)))
def test_a_job_is_cancelled_exactly_when_its_name_starts_with_the_sessions(tmp_path: Path, name: str) -> None:
    """Any name squeue may print (spaces, quotes, backslashes, awk's and sh's special characters)."""
    (tmp_path / "cancelled").unlink(missing_ok=True)
    out = run(tmp_path, Slurm(), "squeue", f"5 {name}\n", "scancel", ["5"])
    expected = name.startswith(LAB)
    assert out.splitlines() == ["hpcjup-cancelled 5" if expected else "hpcjup-spared 5"]
    assert cancelled(tmp_path) == (["--", "5"] if expected else [])

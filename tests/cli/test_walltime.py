"""A session ends by itself at its walltime, on the mini-cluster's real Slurm: SIGUSR1 before the limit
(`--signal=B:USR1@30` for a 2-minute job; Slurm sends it within its 30 s check of time limits, so 60-90 s in), the
launcher ends the session "walltime" with exit code 0, the job and Jupyter go, and the detached holder lets go.

one_backend: the end comes from the scheduler and the launcher on the node; the laptop's part (ls, a holder that
notices an end it did not cause) is the same as for the idle end, which test_sessions.py runs on each SSH backend.
The wait is Slurm's: the session cannot be shorter than 2 minutes (with 1, the warning could come before it
answers)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.cli.helpers import port_listening, session_jobs, wait_for
from tests.cli.kernel import run_in_kernel
from tests.cli.test_sessions import HOME, ended, start_detached

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]


def test_walltime_ends_a_session_by_itself(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    walltime = start_detached(laptop_env, "--name", "shortlived", "--time", "2")
    assert run_in_kernel(f"http://127.0.0.1:{walltime['local_port']}", walltime["token"], "print(1)").strip() == "1"
    row = wait_for(lambda: ended(laptop_env, "shortlived"), 200, "the end by walltime", 2)
    assert row["ended_because"] == "walltime", row
    state = json.loads((HOME / ".hpcjup/sessions/shortlived/state.json").read_text())
    assert (state["reason"], state["exit_code"]) == ("walltime", 0)
    assert not session_jobs(minicluster, ("shortlived",))
    assert subprocess.run(["ps", "-p", str(state["pid"])], capture_output=True).returncode == 1  # the launcher went
    wait_for(lambda: not port_listening(walltime["local_port"]), 30, "the holder to exit")

"""Slurm's states for many jobs in one remote command: the real sh script, with stand-ins for squeue and sacct
that answer as Slurm 22.05 does (recorded on the mini-cluster) and log how they were called."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hpcjup.schedulers.base import JobState
from hpcjup.schedulers.slurm import Slurm
from tests.schedulers.test_job_ids import ScriptedTransport

# squeue -h -t all -j ... -o '%T|%r|%S|%N|%L|%l|%i' on the mini-cluster: a running and a pending job.
RUNNING = "RUNNING|None|2026-12-02T01:12:24|node1|9:57|10:00|42"
PENDING = "PENDING|Resources|2026-12-02T01:30:00|||30:00|44"
# sacct -n -P -X -j 43 -o JobIDRaw,State,ExitCode,NodeList,Timelimit for a job squeue has forgotten.
FINISHED = "43|COMPLETED|0:0|node2|00:10:00"
# Older Slurm refuses the whole list when one id is unknown ("slurm_load_jobs error: Invalid job id specified").
SQUEUE = r"""#!/bin/sh
printf '%s\n' "$*" >> "$LOG"
case "$5" in
  *43*) [ "$5" = 43 ] || { echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1; } ;;
esac
for id in $(echo "$5" | tr , ' '); do
  case $id in 42) echo 'RUNNING_LINE' ;; 44) echo 'PENDING_LINE' ;; esac
done
""".replace("RUNNING_LINE", RUNNING).replace("PENDING_LINE", PENDING)
SACCT = f"""#!/bin/sh
printf 'sacct %s\\n' "$*" >> "$LOG"
echo '{FINISHED}'
"""


class Host(ScriptedTransport):
    """Runs the command for real with `sh`, the stand-ins first on the PATH."""

    def __init__(self, bin_dir: Path, log: Path) -> None:
        super().__init__()
        self.env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log)}

    def _exec(self, command: str, input: bytes | None, timeout: float) -> tuple[int, str, str]:
        done = subprocess.run(["sh", "-c", command], env=self.env, capture_output=True, text=True, timeout=timeout)
        self.argvs.append([command])
        return done.returncode, done.stdout, done.stderr


@pytest.fixture
def host(tmp_path: Path) -> tuple[Host, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name, text in (("squeue", SQUEUE), ("sacct", SACCT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return Host(bin_dir, log), log


def test_live_jobs_take_one_command_and_no_accounting(host: tuple[Host, Path]) -> None:
    transport, log = host
    found = Slurm().statuses(transport, ["42", "44"])
    assert found["42"].state is JobState.RUNNING and found["42"].nodes == "node1"
    assert found["44"].state is JobState.PENDING and found["44"].reason == "Resources"
    assert len(transport.argvs) == 1 and "sacct" not in log.read_text()


def test_a_forgotten_job_is_asked_of_accounting_in_the_same_command(host: tuple[Host, Path]) -> None:
    """squeue refuses the list (older Slurm), asks one at a time; sacct only for the one it no longer shows."""
    transport, log = host
    found = Slurm().statuses(transport, ["42", "43", "44"])
    assert (found["42"].state, found["43"].state, found["44"].state) == (
        JobState.RUNNING,
        JobState.COMPLETED,
        JobState.PENDING,
    )
    assert found["43"].exit_code == "0:0" and found["43"].time_limit == 600
    assert len(transport.argvs) == 1
    assert "sacct -n -P -X -j 43 " in log.read_text()  # only the forgotten one


def test_without_accounting_a_forgotten_job_is_gone(host: tuple[Host, Path]) -> None:
    transport, _ = host
    (Path(transport.env["PATH"].split(":")[0]) / "sacct").unlink()
    found = Slurm().statuses(transport, ["43"])
    assert found["43"].state is JobState.GONE and len(transport.argvs) == 1


def test_one_status_is_one_command(host: tuple[Host, Path]) -> None:
    transport, _ = host
    assert Slurm().status(transport, "43").state is JobState.COMPLETED and len(transport.argvs) == 1


def squeue_without_accounting(transport: Host, script: str) -> None:
    """This squeue stand-in instead of the recorded one, and no sacct (accounting off)."""
    bin_dir = Path(transport.env["PATH"].split(":")[0])
    (bin_dir / "squeue").write_text(script)
    (bin_dir / "sacct").unlink()


def test_without_a_controller_no_job_is_called_gone(host: tuple[Host, Path]) -> None:
    """squeue cannot reach slurmctld (and accounting is off): UNKNOWN, which prune never acts on (it was GONE)."""
    transport, _ = host
    squeue_without_accounting(
        transport,
        "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n",
    )
    found = Slurm().statuses(transport, ["42", "43"])
    assert {s.state for s in found.values()} == {JobState.UNKNOWN} and len(transport.argvs) == 1
    assert "controller" in (found["42"].reason or "")


def test_older_slurm_refusing_every_forgotten_id_still_means_gone(host: tuple[Host, Path]) -> None:
    """All ids forgotten on a Slurm that refuses each one: its own-jobs query answers, so they are GONE."""
    transport, _ = host
    squeue_without_accounting(
        transport,
        '#!/bin/sh\ncase "$*" in *" -j "*) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;; esac\n',
    )
    found = Slurm().statuses(transport, ["45", "46"])
    assert {s.state for s in found.values()} == {JobState.GONE}


# What squeue 22.05 prints after ~18 s when slurmctld is stopped (seen on the mini-cluster).
NO_CONTROLLER = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def test_a_stopped_controller_is_asked_once_whatever_the_number_of_jobs(host: tuple[Host, Path]) -> None:
    """One failing squeue answers for every job: no id-by-id retries, no own-jobs query, no accounting (each
    of those waited another ~18 s for the absent controller: `ls` of three sessions took 121 s)."""
    transport, log = host
    bin_dir = Path(transport.env["PATH"].split(":")[0])
    (bin_dir / "squeue").write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$LOG\"\necho '{NO_CONTROLLER}' >&2\nexit 1\n"
    )
    found = Slurm().statuses(transport, ["42", "43", "44"])
    assert {s.state for s in found.values()} == {JobState.UNKNOWN}
    assert {s.reason for s in found.values()} == {NO_CONTROLLER}  # Slurm's own words
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and not any(call.startswith("sacct") for call in calls)


def test_a_squeue_that_never_answers_is_cut_off(host: tuple[Host, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller that takes the connection but never answers: the query is bounded (coreutils timeout)."""
    import time

    from hpcjup.schedulers import shell, slurm_sh

    transport, _ = host
    monkeypatch.setattr(
        slurm_sh, "STATUSES", slurm_sh.STATUSES.replace(f"timeout {shell.QUERY_SECONDS} ", "timeout 1 ")
    )
    squeue_without_accounting(transport, "#!/bin/sh\nexec sleep 30\n")
    started = time.monotonic()
    found = Slurm().statuses(transport, ["42", "43"])
    assert time.monotonic() - started < 10
    assert {s.state for s in found.values()} == {JobState.UNKNOWN}
    assert found["42"].reason == f"squeue did not answer within {shell.QUERY_SECONDS} s"

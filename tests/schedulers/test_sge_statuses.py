"""Grid Engine's states for many jobs in one remote command: the real sh script, with stand-ins for qstat and
qacct that print output recorded on the real cell (tests/schedulers/data/sge) and log how they were called."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hpcjup.schedulers.base import JobState
from hpcjup.schedulers.sge import GridEngine
from tests.schedulers.test_job_ids import ScriptedTransport

DATA = Path(__file__).parent / "data" / "sge"
QSTAT = r"""#!/bin/sh
printf 'qstat %s\n' "$*" >> "$LOG"
[ -n "$QSTAT_HANGS" ] && exec sleep 30
[ -n "$QSTAT_DOWN" ] && { printf '%s\n' "$QMASTER_DOWN" >&2; exit 1; }
case " $* " in *" -xml "*) cat "$QSTAT_XML" ;; *" -j "*) cat "$DATA/qstat-j-error.txt" ;; esac
"""
# What SGE 8.1.9's qstat prints at once when no qmaster listens (seen on this machine's cell).
QMASTER_DOWN = """error: commlib error: got select error (Connection refused)
error: unable to send message to qmaster using port 6444 on host "vm": got send error"""
QACCT = r"""#!/bin/sh
printf 'qacct %s\n' "$*" >> "$LOG"
case " $* " in *" -o "*) cat "$DATA/qacct-owner.txt" ;; *) cat "$DATA/qacct-completed.txt" ;; esac
"""


class Cell(ScriptedTransport):
    """Runs the command for real with `sh`, the stand-ins first on the PATH."""

    def __init__(self, tmp: Path, xml: str) -> None:
        super().__init__()
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name, text in (("qstat", QSTAT), ("qacct", QACCT)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(stat.S_IRWXU)
        self.log = tmp / "calls.log"
        self.log.touch()
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "LOG": str(self.log),
            "DATA": str(DATA),
            "QSTAT_XML": str(DATA / xml),
            "QMASTER_DOWN": QMASTER_DOWN,
        }

    def _exec(self, command: str, input: bytes | None, timeout: float) -> tuple[int, str, str]:
        done = subprocess.run(["sh", "-c", command], env=self.env, capture_output=True, text=True, timeout=timeout)
        self.argvs.append([command])
        return done.returncode, done.stdout, done.stderr


def test_qstat_and_accounting_for_the_missing_are_one_command(tmp_path: Path) -> None:
    cell = Cell(tmp_path, "qstat-xml-mixed.txt")
    found = GridEngine().statuses(cell, ["2", "4", "16", "999", "1;rm"])
    assert {k: v.state for k, v in found.items()} == {
        "2": JobState.RUNNING,
        "4": JobState.PENDING,
        "16": JobState.TIMEOUT,  # from the owner's accounting scan: qstat no longer lists it
        "999": JobState.GONE,
        "1;rm": JobState.GONE,  # not a job id: never on a command line
    }
    assert len(cell.argvs) == 1 and "1;rm" not in cell.argvs[0][0]
    calls = cell.log.read_text().splitlines()
    assert [c for c in calls if c.startswith("qacct")] == [f"qacct -o {_me()} -d 30 -j"]


def test_live_jobs_need_no_accounting(tmp_path: Path) -> None:
    cell = Cell(tmp_path, "qstat-xml-mixed.txt")
    assert GridEngine().statuses(cell, ["2", "4"])["2"].state is JobState.RUNNING
    assert "qacct" not in cell.log.read_text()


def test_one_finished_job_is_one_qacct_by_id(tmp_path: Path) -> None:
    cell = Cell(tmp_path, "qstat-xml-none.txt")
    assert GridEngine().status(cell, "2").state is JobState.COMPLETED
    assert len(cell.argvs) == 1 and "qacct -j 2" in cell.log.read_text()


def test_a_qmaster_that_does_not_answer_is_unknown_in_its_words_not_gone(tmp_path: Path) -> None:
    """`ls` then shows the sessions UNKNOWN with Grid Engine's words, and `prune` removes nothing on a guess;
    one qstat, no accounting."""
    cell = Cell(tmp_path, "qstat-xml-mixed.txt")
    cell.env["QSTAT_DOWN"] = "1"
    found = GridEngine().statuses(cell, ["2", "16"])
    assert {s.state for s in found.values()} == {JobState.UNKNOWN}
    assert found["2"].reason == QMASTER_DOWN.splitlines()[-1]
    assert cell.log.read_text().splitlines() == [f"qstat -xml -r -u {_me()}"]


def test_a_qstat_that_never_answers_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from hpcjup.schedulers import sge_sh, shell

    monkeypatch.setattr(sge_sh, "QSTAT", sge_sh.QSTAT.replace(f"timeout {shell.QUERY_SECONDS} ", "timeout 1 "))
    cell = Cell(tmp_path, "qstat-xml-mixed.txt")
    cell.env["QSTAT_HANGS"] = "1"
    started = time.monotonic()
    found = GridEngine().statuses(cell, ["2"])
    assert time.monotonic() - started < 10 and found["2"].state is JobState.UNKNOWN
    assert found["2"].reason == f"qstat did not answer within {shell.QUERY_SECONDS} s"


def _me() -> str:
    return subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()

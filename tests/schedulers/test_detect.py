"""Which batch system a host has: found by its commands on the PATH of a non-interactive shell."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hpcjup.errors import ExitCode, SubmitError, UsageError
from hpcjup.schedulers import detect, get_scheduler
from hpcjup.transport.local import LocalTransport


class Host(LocalTransport):
    """This machine, with only `bindir` and the basic tools on PATH (as a login node would have them)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir

    def _exec_raw(self, command: str, input: bytes | None, timeout: float) -> tuple[int, bytes, bytes]:
        path = os.environ["PATH"]
        os.environ["PATH"] = str(self.bindir)
        try:
            return super()._exec_raw(command, input, timeout)
        finally:
            os.environ["PATH"] = path


def fake(bindir: Path, *names: str, output: str = "") -> None:
    """A bin directory with `sh` and the tools the probe uses, plus fake commands called `names`."""
    bindir.mkdir(exist_ok=True)
    for tool in ("sh", "head", "tr"):
        if not (bindir / tool).exists():
            (bindir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    for name in names:
        (bindir / name).write_text(f"#!/bin/sh\nprintf '%s\\n' {output!r}\n")
        (bindir / name).chmod(0o755)


def test_slurm_found_and_home_learned(tmp_path: Path) -> None:
    fake(tmp_path / "bin", "sbatch", "squeue", "scancel")
    host = Host(tmp_path / "bin")
    assert detect(host) == "slurm"
    assert host._home == str(Path.home().resolve())


def test_partial_slurm_is_not_slurm(tmp_path: Path) -> None:
    fake(tmp_path / "bin", "sbatch")  # no squeue, no scancel: it could not be driven
    with pytest.raises(SubmitError) as info:
        detect(Host(tmp_path / "bin"))
    assert "--scheduler none" in (info.value.hint or "") and info.value.exit_code == ExitCode.SUBMIT
    assert "squeue" in info.value.message  # says what was looked for


def test_unknown_scheduler_lists_the_known_ones() -> None:
    with pytest.raises(UsageError) as info:
        get_scheduler("moab")
    assert "slurm" in (info.value.hint or "") and "none" in (info.value.hint or "")
    assert get_scheduler("none").name == "none" and get_scheduler("none").bind_address == "127.0.0.1"


@pytest.mark.parametrize(
    "says,expected",
    [("pbs_version = 2022.1.1", "pbs"), ("SGE 8.1.9", "sge"), ("GE 8.1.9", "sge")],
)
def test_qsub_flavours(tmp_path: Path, says: str, expected: str) -> None:
    """PBS and Grid Engine both have qsub, qstat and qdel: `qstat`'s own words tell them apart."""
    fake(tmp_path / "bin", "qsub", "qdel", "qsig")
    fake(tmp_path / "bin", "qstat", output=says)
    assert detect(Host(tmp_path / "bin")) == expected


def test_lsf(tmp_path: Path) -> None:
    fake(tmp_path / "bin", "bsub", "bjobs", "bkill")
    assert detect(Host(tmp_path / "bin")) == "lsf"


def test_torque_is_named_not_guessed(tmp_path: Path) -> None:
    fake(tmp_path / "bin", "qsub", "qdel", "qsig")
    fake(tmp_path / "bin", "qstat", output="Version: 6.1.3")
    with pytest.raises(SubmitError) as info:
        detect(Host(tmp_path / "bin"))
    assert "Torque" in info.value.message

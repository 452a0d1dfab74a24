"""hpcjup.files.write_private: the one way the laptop writes a file atomically and privately."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcjup.files import private_dirs, write_private


@pytest.fixture
def umask() -> Iterator[None]:
    """A permissive umask, so a mode that only looks right because of the umask shows."""
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("mode", [0o600, 0o700, 0o640])
def test_the_file_gets_exactly_the_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "f"
    write_private(path, b"secret", mode)
    assert path.read_bytes() == b"secret"
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.usefixtures("umask")
def test_the_default_is_private_and_a_replaced_file_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    os.chmod(path, 0o664)
    write_private(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_private(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_relative_path_is_written_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_private("plain", b"x")
    assert (tmp_path / "plain").read_bytes() == b"x"


@pytest.mark.usefixtures("umask")
def test_private_dirs_makes_each_missing_directory_0700_and_leaves_existing_ones(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    private_dirs(tmp_path / "a" / "b")
    private_dirs(tmp_path / "a" / "b")  # already there: nothing to do
    assert [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path, tmp_path / "a", tmp_path / "a" / "b")] == [
        0o755,
        0o700,
        0o700,
    ]

"""Many files in one command: the tar streams both ways, and what a hostile archive cannot do."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path

from hpcjup.transport.batch import READ_LIMIT, pack, unpack
from hpcjup.transport.local import LocalTransport
from hpcjup.transport.watch import Watch


def test_pack_keeps_modes_and_makes_private_dirs() -> None:
    raw = pack({"job.sh": (b"#!/bin/sh\n", 0o700), "dask/key.pem": (b"k", 0o600)})
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        modes = {m.name: (m.type, m.mode) for m in archive}
    assert modes == {
        "job.sh": (tarfile.REGTYPE, 0o700),
        "dask": (tarfile.DIRTYPE, 0o700),
        "dask/key.pem": (tarfile.REGTYPE, 0o600),
    }


def test_unpack_ignores_what_is_not_a_plain_file_inside() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, kind in (
            ("../escape", tarfile.REGTYPE),
            ("/etc/passwd", tarfile.REGTYPE),
            ("link", tarfile.SYMTYPE),
            ("ok", tarfile.REGTYPE),
            ("big", tarfile.REGTYPE),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            data = b"x" * (READ_LIMIT + 1 if name == "big" else 2)
            info.size = 0 if kind == tarfile.SYMTYPE else len(data)
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    assert [(e.path, e.data) for e in unpack(buffer.getvalue())] == [("ok", b"xx")]
    assert unpack(buffer.getvalue()[:700]) == []  # truncated: what came whole only (nothing here)
    assert unpack(b"not a tar") == []


def test_read_tree_one_command_bounded(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "session.json").write_text(name)
    (tmp_path / "b" / "state.json").write_bytes(b"x" * (READ_LIMIT + 1))  # too large: left out
    (tmp_path / "b" / "other").write_text("not asked for")
    entries = {e.path: e.data for e in LocalTransport().read_tree(str(tmp_path), ["session.json", "state.json"])}
    assert entries == {"a": None, "b": None, "a/session.json": b"a", "b/session.json": b"b"}
    assert LocalTransport().read_tree(str(tmp_path / "missing"), ["session.json"]) == []


def test_watch_reports_changes_as_they_happen(tmp_path: Path) -> None:
    def later() -> None:
        time.sleep(0.3)
        (tmp_path / "state.json.tmp").write_text('{"state": "running"}')
        os.replace(tmp_path / "state.json.tmp", tmp_path / "state.json")

    seen: list[dict] = []
    with Watch(LocalTransport(), str(tmp_path), ["state.json"], ["job.out"]) as watch:
        assert watch.changes(5) == {"state.json": None, "job.out": None}  # the first report: all absent
        threading.Thread(target=later).start()
        started = time.monotonic()
        while not seen and time.monotonic() - started < 5:
            change = watch.changes(1)
            if change:
                seen.append(change)
        delay = time.monotonic() - started
    assert seen and seen[0]["state.json"] is not None and seen[0]["state.json"].data == '{"state": "running"}'
    assert delay < 1.5  # polled every 0.1 s on the far side
    assert watch.started == 1  # one remote process for the whole wait

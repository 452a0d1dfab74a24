"""`prune`'s removal re-checks each directory on the cluster, in the same command, before `rm -rf`: a name a
`start` reused since the listing, one it is replacing right now (its lock), and a directory without
session.json that is young by the cluster's clock (the laptop's may be hours off) all stay."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from hpcjup.session.catalog import REMOVE_SCRIPT
from hpcjup.session.record import SessionRecord


def _session(root: Path, name: str, job_id: str | None) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    if job_id is not None:
        (directory / "session.json").write_bytes(SessionRecord(name, "h", "slurm", job_id, "2026-01-01").to_json())
    return directory


def _remove(root: Path, *triples: str) -> list[str]:
    done = subprocess.run(["sh", "-c", REMOVE_SCRIPT, "sh", str(root), "10", *triples], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1::2]


def test_only_what_is_still_as_prune_saw_it_goes(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    _session(root, "ended", "11")
    _session(root, "reused", "13")  # prune saw job 12 end; a start has since put job 13 under the name
    _session(root, "locked", "14")
    (root / ".lock-locked").mkdir()  # a start is replacing it at this moment
    young, old = _session(root, "young", None), _session(root, "old", None)
    long_ago = time.time() - 3600
    os.utime(old, (long_ago, long_ago))
    removed = _remove(root, "ended", "11", "ended", "reused", "12", "ended", "locked", "14", "ended")
    removed += _remove(root, "young", "", "new", "old", "", "new")
    assert removed == ["ended", "old"]
    assert sorted(p.name for p in root.iterdir()) == [".lock-locked", "locked", "reused", "young"]
    assert young.is_dir()

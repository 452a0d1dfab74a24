"""The laptop's session cache: private files, typed entries in the format older versions wrote."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hpcjup.session.record import SessionRecord
from hpcjup.session.store import CacheEntry, LocalStore, Preemption, TunnelError, TunnelInfo

RECORD = {
    "name": "lab",
    "host": "juwels",
    "scheduler": "slurm",
    "job_id": "4242",
    "created_at": "2026-01-01T10:00:00+00:00",
    "resources": {"partition": "batch", "nodes": 1},
    "workdir": None,
    "idle_timeout": None,
    "python": "python3",
    "python_command": "",
    "envs": [],
    "hpcjup_version": "1.4.0",
    "schema": 1,
}
CONNECTION = {
    "job_id": "4242",
    "node": "node1",
    "address": "10.0.0.5",
    "port": 8888,
    "token": "abc123abc123abc123",
    "base_url": "/",
    "socket": None,
    "pid": 77,
    "started_at": None,
    "ready_at": None,
    "jupyter_server_version": None,
    "dask": None,
    "dask_missing": None,
    "restarts": 0,
    "schema": 1,
}
# A holder's entry exactly as hpcjup wrote it before entries were typed (SessionHolder._cache: plain dicts).
OLD_HELD = {
    "host": "juwels",
    "record": RECORD,
    "connection": CONNECTION,
    "tunnel": {"pid": 1234, "lock": "/state/holders/juwels/lab.lock", "local_port": 8890, "url": "http://x/?token=t"},
}
# ... and after it let go (store.update: tunnel removed, the error and the port added).
OLD_CLOSED = {
    "host": "juwels",
    "record": RECORD,
    "connection": CONNECTION,
    "tunnel_error": {"message": "Reconnecting was refused.", "hint": None, "at": "2026-01-01T11:00:00+00:00"},
    "last_local_port": 8890,
    "preempted": {"at": "2026-01-01T10:30:00+00:00", "restarts": 1},
    "restarts": 2,
}


def _write(store: LocalStore, data: Any) -> Path:
    path = store.root / "sessions" / "juwels" / "lab.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def test_entries_are_private_even_in_a_missing_state_dir(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "nonexistent" / "state" / "hpcjup")
    store.save("user@host:2222", "lab-1", CacheEntry(host="user@host:2222"))
    path = next((tmp_path / "nonexistent").rglob("*.json"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for parent in path.parents:
        if parent == tmp_path:
            break
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700, parent
    assert store.load("user@host:2222", "lab-1") == CacheEntry(host="user@host:2222")


def test_update_replaces_parts_and_none_removes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    tunnel = TunnelInfo(pid=1, local_port=8888, url="http://127.0.0.1:8888/")
    store.save("h", "s", CacheEntry(host="h", tunnel=tunnel))
    assert store.update("h", "s", tunnel=None, last_local_port=8888) == CacheEntry(host="h", last_local_port=8888)
    assert json.loads((tmp_path / "sessions" / "h" / "s.json").read_text()) == {"host": "h", "last_local_port": 8888}
    assert store.update("h", "t", restarts=1) == CacheEntry(restarts=1)  # a missing entry starts empty
    assert store.names("h") == ["s", "t"] and store.hosts() == ["h"]
    store.remove("h", "s")
    store.remove("h", "t")
    assert store.load("h", "s") is None and store.hosts() == []


def test_entries_written_by_the_old_code_read_and_are_written_back_unchanged(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for old in (OLD_HELD, OLD_CLOSED):
        path = _write(store, old)
        entry = store.load("juwels", "lab")
        assert entry is not None and entry.host == "juwels"
        assert entry.record == SessionRecord.from_dict(RECORD) and entry.connection is not None
        assert entry.connection.token == "abc123abc123abc123"
        store.save("juwels", "lab", entry)
        assert json.loads(path.read_text()) == old  # the file format is the old one
    held = CacheEntry.from_json(json.dumps(OLD_HELD))
    assert held is not None and held.tunnel == TunnelInfo(
        1234, 8890, "http://x/?token=t", "/state/holders/juwels/lab.lock"
    )
    closed = CacheEntry.from_json(json.dumps(OLD_CLOSED))
    assert closed is not None and closed.tunnel is None and closed.last_local_port == 8890 and closed.restarts == 2
    assert closed.tunnel_error == TunnelError("Reconnecting was refused.", None, "2026-01-01T11:00:00+00:00")
    assert closed.preempted == Preemption("2026-01-01T10:30:00+00:00", 1)


def test_damaged_parts_read_as_absent_and_a_damaged_file_as_no_entry(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    damaged = {
        "host": 7,
        "record": {"name": "lab"},  # an older or damaged record: not a session.json
        "connection": {"job_id": "1", "node": "-oProxyCommand=x", "address": "a", "port": 1, "token": "t"},
        "tunnel": {"pid": True, "local_port": 8888, "url": "u"},  # true is no pid
        "tunnel_error": "refused",
        "last_local_port": "8888",
        "preempted": {"at": 1},
    }
    _write(store, damaged)
    assert store.load("juwels", "lab") == CacheEntry()
    # A tunnel from before the lock file: read (attach reuses its port), but no holder can be proven by it.
    old_tunnel = CacheEntry.from_json(json.dumps({"tunnel": {"pid": 5, "local_port": 8000, "url": "u"}}))
    assert old_tunnel is not None and old_tunnel.tunnel == TunnelInfo(5, 8000, "u", None)
    for text in ("", "{not json", "[1, 2]", '"text"', "null", "\udcff"):
        path = _write(store, None)
        path.write_text(text, errors="surrogateescape")
        assert store.load("juwels", "lab") is None, text
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert store.load("juwels", "lab") is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["host", "record", "connection", "tunnel", "tunnel_error", "last_local_port", "preempted", "restarts", "x"]
)
PARTS = st.fixed_dictionaries(
    {},
    optional={
        "pid": JSON | st.integers(),
        "lock": JSON | st.text(),
        "local_port": JSON | st.integers(),
        "url": JSON | st.text(),
        "message": JSON | st.text(),
        "at": JSON | st.text(),
        "restarts": JSON | st.integers(),
    },
)


@given(st.dictionaries(KEYS, JSON | PARTS | st.just(RECORD) | st.just(CONNECTION), max_size=9) | JSON)
def test_any_json_reads_as_an_entry_or_none_and_an_entry_reads_back_the_same(data: Any) -> None:
    entry = CacheEntry.from_json(json.dumps(data))
    assert (entry is None) == (not isinstance(data, dict))
    if entry is not None:
        assert CacheEntry.from_json(entry.to_json()) == entry


@given(st.binary(max_size=64))
def test_any_bytes_read_cleanly(raw: bytes) -> None:
    entry = CacheEntry.from_json(raw)
    assert entry is None or isinstance(entry, CacheEntry)


def test_lock_files_live_in_private_dirs_and_forget_removes_only_unheld_ones(tmp_path: Path) -> None:
    from hpcjup.session.locks import HolderLock

    store = LocalStore(tmp_path / "state")
    path = store.lock_path("user@host:2222", "lab-1")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with HolderLock(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        store.forget("user@host:2222", "lab-1")
        assert path.exists()  # its holder is alive
    store.forget("user@host:2222", "lab-1")
    assert not path.exists()

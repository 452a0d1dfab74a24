import stat
from pathlib import Path

from hpcjup.session.store import LocalStore


def test_entries_are_private_even_in_a_missing_state_dir(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "nonexistent" / "state" / "hpcjup")
    store.save("user@host:2222", "lab-1", {"token": "secret"})
    path = next((tmp_path / "nonexistent").rglob("*.json"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for parent in path.parents:
        if parent == tmp_path:
            break
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700, parent
    assert store.load("user@host:2222", "lab-1") == {"token": "secret"}


def test_update_merges_and_none_removes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.save("h", "s", {"a": 1, "tunnel": {"pid": 1}})
    assert store.update("h", "s", tunnel=None, b=2) == {"a": 1, "b": 2}
    assert store.names("h") == ["s"] and store.hosts() == ["h"]
    store.remove("h", "s")
    assert store.load("h", "s") is None and store.hosts() == []


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

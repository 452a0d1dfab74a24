"""Which local process holds a session's tunnel: only the one holding its lock, never a reused pid."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import AuthError, ConnectError, UsageError
from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.session.holding import SessionHolder, Timings
from hpcjup.session.layout import SessionPaths
from hpcjup.session.liveholders import end_holder, held_sessions, holder_pid
from hpcjup.session.locks import HolderLock, locked_by
from hpcjup.session.record import Connection, SessionRecord
from hpcjup.session.store import CacheEntry, LocalStore, TunnelInfo

# A process that holds a session's lock the way a holder does, then waits to be signalled.
HOLDER = """
import sys, time
from pathlib import Path
from hpcjup.session.locks import HolderLock
lock = HolderLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def entry(pid: int, lock: Path | None, name: str = "lab") -> CacheEntry:
    tunnel = TunnelInfo(pid=pid, local_port=8888, url="http://127.0.0.1:8888/lab?token=t", lock=lock and str(lock))
    record = SessionRecord(name, "h", "slurm", "1", "2026-01-01T00:00:00+00:00")
    return CacheEntry(host="h", record=record, tunnel=tunnel)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is no holder, with "hpcjup" in its command line (as a reused pid may have)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "hpcjup"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A process holding the lock file tmp_path/lab.lock."""
    lock = tmp_path / "lab.lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    yield proc, lock
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("with_lock_file", [False, True])
def test_a_live_unrelated_process_is_neither_the_holder_nor_signalled(
    bystander: subprocess.Popen[bytes], tmp_path: Path, with_lock_file: bool
) -> None:
    lock = None
    if with_lock_file:  # a lock file that names the pid, left behind by a holder that died (nobody holds it)
        lock = tmp_path / "lab.lock"
        lock.write_text(str(bystander.pid))
    stale = entry(bystander.pid, lock)
    assert holder_pid(stale) is None
    assert end_holder(stale, timeout=1) is False
    assert bystander.poll() is None  # still running: it was not signalled


def test_the_process_holding_the_lock_is_the_holder_and_ends_on_request(
    holder: tuple[subprocess.Popen[str], Path],
) -> None:
    proc, lock = holder
    assert locked_by(lock) == proc.pid
    assert holder_pid(entry(proc.pid, lock)) == proc.pid
    assert end_holder(entry(proc.pid, lock), timeout=5) is True
    assert proc.wait(timeout=5) != 0  # SIGTERM
    assert locked_by(lock) is None and holder_pid(entry(proc.pid, lock)) is None


def test_an_entry_naming_another_pid_than_the_lock_holder_is_not_held(
    holder: tuple[subprocess.Popen[str], Path], bystander: subprocess.Popen[bytes]
) -> None:
    _, lock = holder
    assert holder_pid(entry(bystander.pid, lock)) is None
    assert end_holder(entry(bystander.pid, lock), timeout=1) is False
    assert bystander.poll() is None


def test_a_second_holder_is_refused_while_the_first_lives(holder: tuple[subprocess.Popen[str], Path]) -> None:
    proc, lock = holder
    with pytest.raises(UsageError, match=f"pid {proc.pid}"):
        HolderLock(lock).acquire(timeout=0.3)


def test_the_lock_is_released_with_the_holder_and_can_be_taken_again(tmp_path: Path) -> None:
    lock = tmp_path / "lab.lock"
    with HolderLock(lock):
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        assert lock.read_text() == str(os.getpid())
    assert locked_by(lock) is None
    with HolderLock(lock):
        pass


def test_held_sessions_lists_only_live_holders(holder: tuple[subprocess.Popen[str], Path], tmp_path: Path) -> None:
    proc, lock = holder
    store = LocalStore(tmp_path / "state")
    store.save("h", "lab", entry(proc.pid, lock))
    store.save("h", "gone", entry(proc.pid + 1, tmp_path / "none.lock", "gone"))
    assert [e.record.name for e in held_sessions(store)] == ["lab"]


def test_held_sessions_skip_damaged_entries(holder: tuple[subprocess.Popen[str], Path], tmp_path: Path) -> None:
    """A cache file that is no entry, or an entry missing its record, is as if no holder kept it: never a crash."""
    proc, lock = holder
    store = LocalStore(tmp_path / "state")
    store.save("h", "lab", entry(proc.pid, lock))
    (store.root / "sessions" / "h" / "list.json").write_text("[1, 2]")
    (store.root / "sessions" / "h" / "norecord.json").write_text(
        json.dumps({"host": "h", "record": {"name": "norecord"}, "tunnel": {"pid": proc.pid, "lock": str(lock)}})
    )
    assert [e.record.name for e in held_sessions(store)] == ["lab"]
    assert holder_pid(store.load("h", "list")) is None


# -- the holding loop, driven with stand-ins for the connection and the scheduler ---------------------------------


class Gone:
    """A connection that has dropped."""

    alive = False

    def close(self) -> None:
        pass


class Up(Gone):
    alive = True

    def read_file(self, path: str) -> bytes:
        raise FileNotFoundError(path)  # no state.json: the launcher has not recorded an end


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.lines.append(f"warning: {text}")


class Squeue:
    """A scheduler whose answers are scripted."""

    def __init__(self, *states: Any) -> None:
        self.states = list(states)

    def status(self, transport: Any, job_id: str) -> Any:
        return JobStatus(job_id, self.states.pop(0))


def session_holder(
    tmp_path: Path, transport: Any, connect: Any, scheduler: Any = None, **timings: Any
) -> SessionHolder:
    record = SessionRecord("lab", "alice@127.0.0.1:2222", "slurm", "42", "2024-01-01T00:00:00Z")
    conn = Connection("42", "node1", "127.0.0.2", 8888, "token")
    defaults = {"alive_every": 0.01, "backoff": (0.01,), "state_every": 1e6, "scheduler_every": 1e6}
    return SessionHolder(
        transport,
        record,
        SessionPaths("/home/alice", "lab"),
        conn,
        store=LocalStore(tmp_path),
        scheduler=scheduler or Squeue(JobState.RUNNING),
        connect=connect,
        notes=Notes(),
        timings=Timings(**{**defaults, **timings}),
    )


def test_reconnect_retries_connect_errors_and_stops_at_the_first_auth_error(tmp_path: Path) -> None:
    tried: list[str] = []

    def connect(host: str) -> Any:
        tried.append(host)
        if len(tried) < 3:
            raise ConnectError("Connection refused")
        raise AuthError("HOST KEY CHANGED for 127.0.0.1", hint="Ask your centre.")

    holder = session_holder(tmp_path, Gone(), connect)
    end = holder._hold(None, threading.Event())
    assert end.auth is not None and "HOST KEY CHANGED" in end.auth.message and not end.detached
    assert tried == ["alice@127.0.0.1:2222"] * 3  # the destination as given, never retried after the refusal
    assert sum("reconnect failed" in line for line in holder.notes.lines) == 2
    assert any("Not retrying" in line for line in holder.notes.lines)


def test_the_scheduler_ends_the_hold_when_the_job_is_gone_without_a_word_from_the_launcher(tmp_path: Path) -> None:
    scheduler = Squeue(JobState.RUNNING, JobState.GONE, JobState.GONE)
    holder = session_holder(tmp_path, Up(), lambda host: Up(), scheduler, scheduler_every=0.01, state_every=0.01)
    end = holder._hold(None, threading.Event())
    assert end.ended and "job 42 is over" in end.ended and "no longer knows it" in end.ended
    assert scheduler.states == []  # GONE once is not enough: a failing squeue looks the same


def test_a_cancelled_job_ends_the_hold_at_once(tmp_path: Path) -> None:
    holder = session_holder(tmp_path, Up(), lambda host: Up(), Squeue(JobState.CANCELLED), scheduler_every=0.01)
    end = holder._hold(None, threading.Event())
    assert end.ended and "CANCELLED" in end.ended


def test_a_dead_tunnel_ends_the_hold_and_is_recorded_for_ls(tmp_path: Path) -> None:
    """The accept thread died for good (not a descriptor shortage): holding on would leave browsers hanging."""
    import socket

    from hpcjup.tunnel import Tunnel

    holder = session_holder(tmp_path, Up(), lambda host: Up())
    tunnel = Tunnel(lambda: socket.create_connection(("127.0.0.1", 9)))
    port = tunnel.start()
    holder.tunnel = tunnel
    try:
        assert tunnel._listener is not None
        tunnel._listener.close()  # the listening socket is gone under the accept thread: accept() fails (EBADF)
        tunnel._wake_w.send(b"x")
        detached = threading.Event()
        threading.Timer(5, detached.set).start()  # a holder that does not notice would hold on (detached at 5 s)
        end = holder._hold(None, detached)
        assert end.tunnel is not None and not end.detached and end.ended is None
        assert f"port {port} stopped accepting connections" in end.tunnel.message and "hpcjup attach lab" in (
            end.tunnel.hint or ""
        )
        holder._uncache(end, port)
        recorded = holder.store.load(holder.host, "lab")
        assert recorded is not None and recorded.tunnel_error is not None
        assert "stopped accepting connections" in recorded.tunnel_error.message
    finally:
        tunnel.__exit__(None, None, None)  # the error was reported by the holder: leaving does not raise it again

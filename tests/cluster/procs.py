"""Process and socket helpers for the mini-cluster: pid files, /proc scans, deadline waits."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `predicate` until it returns something truthy; RuntimeError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"mini-cluster: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may contain spaces and parens
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def kill_outright(pids: Iterable[int]) -> None:
    """SIGKILL each process still there; one that ended meanwhile (e.g. with its parent) is no error."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cmdline(pid: int) -> str:
    """The process's command line, space-separated ('' if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pid_from_file(pid_file: Path, expect: str) -> int | None:
    """The live pid in `pid_file` if its command line contains `expect` (guards against pid reuse)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) and expect in cmdline(pid) else None


def all_pids() -> list[int]:
    """Every pid in /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for other in all_pids():
        stat = _stat(other)
        if stat is not None:
            children.setdefault(stat[1], []).append(other)
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def ancestors() -> set[int]:
    """This process and its parents, which a sweep must never touch."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        stat = _stat(pid)
        pid = stat[1] if stat else 0
    return pids


def leftovers(env_entry: str, root: Path, daemons: Iterable[str], uid: int) -> list[int]:
    """Processes of one cluster: daemons (by program name) whose environment holds `env_entry` or
    whose command line names a path under `root`, and any process of `uid` whose environment holds it."""
    needle, names, spared, under = b"\0" + env_entry.encode() + b"\0", tuple(daemons), ancestors(), f"{root}/"
    found = []
    for pid in all_pids():
        if pid in spared or not alive(pid):
            continue
        try:
            environ = b"\0" + Path(f"/proc/{pid}/environ").read_bytes() + b"\0"
            owner = Path(f"/proc/{pid}").stat().st_uid
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            continue
        marked = needle in environ
        # Debian runs slurmctld-wlm etc. through alternatives; sshd overwrites its environment with its title.
        if (owner == uid and marked) or (exe.startswith(names) and (marked or under in cmdline(pid))):
            found.append(pid)
    return found


def stop(pids: Iterable[int], timeout: float = 20) -> None:
    """SIGTERM the processes, SIGKILL whatever is left after `timeout`, and wait until all are gone."""
    pids = [pid for pid in pids if alive(pid)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not any(alive(pid) for pid in pids), timeout, f"pids {pids} to exit", interval=0.1)
    except RuntimeError:
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        wait_until(lambda: not any(alive(pid) for pid in pids), 10, f"pids {pids} to die after SIGKILL", interval=0.1)


def _signal(pid: int, sig: int) -> None:
    """Send `sig`, ignoring a process that is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something already holds `port` (any address)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def ssh_banner(port: int, address: str = "127.0.0.1") -> bool:
    """Whether an SSH server answers with its banner on address:port."""
    try:
        with socket.create_connection((address, port), timeout=2) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False

"""Watch a session directory with one long-lived remote process instead of a new command per poll.

The watcher runs on the login node in the standard library of whatever `python3` (or `python`,
>= 3.6) a non-interactive shell finds there; nothing is installed. It stats the named files every
0.1 s and prints one JSON line per change: {name: {"size": N, "data": TEXT}} (data only for the
files whose content is wanted, and only up to a size limit), {name: null} when a file goes. It
ends when its stdin closes (the laptop is gone, or the connection dropped) or after a day, so it
is never left running on the login node. Where no Python is found, `Watch` falls back to
reading the directory with one remote command per second.
"""

from __future__ import annotations

import json
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpcjup.transport.base import RemoteProcess, Transport
from hpcjup.transport.batch import READ_LIMIT

# Runs on the login node: Python >= 3.6, standard library only; argv: DIR LIMIT CONTENT_NAMES... -- PRESENCE_NAMES...
WATCHER = r"""
import json, os, select, sys, time
args = sys.argv[1:]
d, limit = args[0], int(args[1])
split = args.index("--")
content, presence = args[2:split], args[split + 1:]
seen = {}
end = time.time() + 86400
print(json.dumps({"": {"size": 0, "data": "hello"}}), flush=True)
while time.time() < end:
    change = {}
    for name in content + presence:
        path = os.path.join(d, name)
        try:
            st = os.stat(path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            key = None
        if name in seen and seen[name] == key:
            continue
        seen[name] = key
        if key is None:
            change[name] = None
            continue
        item = {"size": key[1], "data": None}
        if name in content and key[1] <= limit:
            try:
                with open(path, "rb") as fh:
                    item["data"] = fh.read(limit).decode("utf-8", "replace")
            except OSError:
                seen.pop(name, None)
                continue
        change[name] = item
    if change:
        try:
            print(json.dumps(change), flush=True)
        except (BrokenPipeError, OSError):
            break
    if select.select([0], [], [], 0.1)[0] and not os.read(0, 4096):
        break
"""
# $1: a sh snippet to run first (e.g. the scheduler's cancel), $2: one to run after the watcher ends
# (its stdin closed), the rest the watcher's program and arguments. Without a Python, a marker line,
# then wait for stdin's end all the same (`cat`), so the snippet after still runs when the laptop says.
_RUNNER = r"""
before=$1 after=$2; shift 2
eval "$before"
found=
for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1; then found=$p; break; fi
done
if [ -n "$found" ]; then "$found" -c "$@"; else echo "HPCJUP-NO-PYTHON"; cat >/dev/null; fi
eval "$after"
"""
NO_PYTHON = b"HPCJUP-NO-PYTHON"


@dataclass(frozen=True)
class FileState:
    """A watched file as last seen: its size and, for content files, its text (None if too large)."""

    size: int
    data: str | None


class Watch:
    """The changes of a few files of one directory, as they happen."""

    def __init__(
        self,
        transport: Transport,
        directory: str,
        content: Sequence[str],
        presence: Sequence[str] = (),
        *,
        before: str = "",
        after: str = "",
    ) -> None:
        self.transport, self.directory = transport, directory
        self.before, self.after = before, after
        self.output = b""  # what `after` printed (see finish)
        self.content, self.presence = list(content), list(presence)
        self.files: dict[str, FileState] = {}
        self._buffer = b""
        self._proc: RemoteProcess | None = None
        self._polling = False
        self._next_poll = 0.0
        self.started = 0  # remote commands started (the benchmark counts them)

    def __enter__(self) -> Watch:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        argv = ["sh", "-c", _RUNNER, "sh", self.before, self.after, WATCHER, self.directory, str(READ_LIMIT)]
        argv += [*self.content, "--", *self.presence]
        self.started += 1
        self._proc = self.transport.start_process(argv)

    def changes(self, timeout: float) -> dict[str, FileState | None]:
        """What changed within `timeout` seconds (empty if nothing); the first call reports every file."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            found = self._take_lines()
            if found:
                return found
            remaining = deadline - time.monotonic()
            if self._polling:
                wait = self._next_poll - time.monotonic()
                if wait > remaining:
                    time.sleep(max(0.0, remaining))
                    return {}
                time.sleep(max(0.0, wait))
                return self._poll()
            if remaining <= 0:
                return {}
            if self._proc is None:
                raise EOFError("the watcher is closed")
            if select.select([self._proc], [], [], remaining)[0]:
                chunk = self._proc.read_some()
                if chunk:
                    self._buffer += chunk
                else:
                    self._lost()

    def _take_lines(self) -> dict[str, FileState | None]:
        changed: dict[str, FileState | None] = {}
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip() == NO_PYTHON:
                self._polling = True  # the process stays: closing its stdin still runs `after`
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue  # not ours (a login banner); the watcher only prints JSON lines
            if not isinstance(doc, dict):
                continue
            for name, item in doc.items():
                if name == "" or name not in self.content + self.presence:
                    continue
                self._remember(name, _state(item), changed)
        return changed

    def _remember(self, name: str, state: FileState | None, changed: dict[str, FileState | None]) -> None:
        """Note a file's new state, in `files` and in this round's changes."""
        changed[name] = state
        if state is None:
            self.files.pop(name, None)
        else:
            self.files[name] = state

    def _lost(self) -> None:
        """The watcher ended: no Python there (fall back to polling), or the connection dropped (raise)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()
        if not self.transport.alive:
            raise EOFError("the connection dropped while watching")
        if self._polling:
            return
        self._polling = True

    def _poll(self) -> dict[str, FileState | None]:
        self._next_poll = time.monotonic() + 1.0
        self.started += 1
        # Only the content files: a presence file (the job's log) may be large, and the scheduler says as much.
        entries = {e.path: e for e in self.transport.read_tree(self.directory, self.content, depth=1)}
        changed: dict[str, FileState | None] = {}
        for name in self.content:
            entry = entries.get(name)
            state = None
            if entry is not None and entry.data is not None:
                state = FileState(len(entry.data), entry.data.decode("utf-8", "replace"))
            if self.files.get(name) != state:
                self._remember(name, state, changed)
        return changed

    def finish(self, timeout: float = 60.0) -> bytes:
        """End the watcher and wait (up to `timeout`) for the `after` snippet to run; what it printed."""
        proc = self._proc
        if proc is None:
            return self.output
        proc.close_input()
        end = time.monotonic() + timeout
        tail = b""
        while time.monotonic() < end and select.select([proc], [], [], max(0.0, end - time.monotonic()))[0]:
            chunk = proc.read_some()
            if not chunk:
                break
            tail += chunk
        self.close()
        # Whatever is not a watcher line (JSON) is the snippet's output.
        lines = (self._buffer + tail).split(b"\n")
        self.output = b"\n".join(line for line in lines if line and not line.startswith(b"{"))
        return self.output

    def close(self) -> None:
        """Close the watcher's stdin: it ends on the login node."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()


def _state(item: Any) -> FileState | None:
    if not isinstance(item, dict):
        return None
    size = item.get("size")
    data = item.get("data")
    return FileState(size if isinstance(size, int) else 0, data if isinstance(data, str) else None)

"""hpcjup's long-lived remote scripts (an environment build, an image pull) as the laptop reads them: stdout line by
line as it comes, with a clock for the display, and their `@@hpcjup WORD REST` lines told from the tools' own."""

from __future__ import annotations

import collections
import select
import time
from collections.abc import Callable, Iterator, Sequence

from hpcjup.envs.probe import Progress
from hpcjup.transport.base import Transport


def remote_lines(
    transport: Transport,
    argv: Sequence[str],
    progress: Progress,
    deadline: float,
    *,
    on_quiet: Callable[[], None] | None = None,
) -> Iterator[str]:
    """A long-lived remote command's stdout, line by line as it comes (a quiet second ticks `progress`'s clock and
    calls `on_quiet`, which may raise to end the wait), for at most `deadline` seconds; the command's end closes
    when the caller stops reading (or is interrupted)."""
    proc = transport.start_process(argv)
    buffer = b""
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([proc], [], [], 1.0)
            if not ready:
                progress.line("")  # lets the display tick its clock
                if on_quiet is not None:
                    on_quiet()
                continue
            chunk = proc.read_some()
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                yield raw.decode(errors="replace").rstrip("\r")
        if buffer:
            yield buffer.decode(errors="replace")
    finally:
        proc.close()


def script_line(line: str, tail: collections.deque[str], progress: Progress) -> tuple[str, str] | None:
    """A line of one of hpcjup's remote scripts: the tools' own words (kept in `tail`, shown) or a phase (shown)
    give None; an `@@hpcjup WORD REST` line gives (WORD, REST) for the caller."""
    if not line.startswith("@@hpcjup "):
        tail.append(line)
        progress.line(line)
        return None
    word, _, rest = line[len("@@hpcjup ") :].partition(" ")
    if word == "phase":
        progress.phase(rest)
        return None
    return word, rest

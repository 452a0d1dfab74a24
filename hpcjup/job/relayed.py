"""A per-host launch that the host-side relay (relay.sh) runs for a launcher inside a container image.

Standard library only, Python >= 3.9, shipped beside dasklaunch.py, which launches Dask's workers on the other hosts
through it when $HPCJUP_RELAY names the relay's FIFO (the scheduler's per-host launch, srun or blaunch, is on the
host, not in the image).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from typing import Any

from atomic import write_private  # beside this file (the launcher puts its directory on sys.path)


class Relayed:
    """One per-host launch run by the host-side relay (relay.sh) for a launcher inside a container image, seen as
    the launcher sees its own children: poll() and wait() read the exit code the relay records, signal() asks the
    relay to pass a signal on. Its argv goes to a file first (shell words), then one line to the relay's FIFO."""

    made = 0  # launches asked for by this launcher: each its own number (the relay's directory is this job run's)

    def __init__(self, channel: str, argv: list[str]) -> None:
        Relayed.made += 1
        self.number, self.dir, self.channel = Relayed.made, os.path.dirname(channel), channel
        self.returncode = None  # type: int | None
        write_private(os.path.join(self.dir, f"{self.number}.argv"), shlex.join(argv).encode())
        self.ask(f"launch {self.number}")

    def ask(self, line: str) -> None:
        """One request to the relay; OSError (ENXIO) when nobody reads its FIFO: the relay is gone."""
        fd = os.open(self.channel, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, (line + "\n").encode())  # one short write: atomic on a FIFO, never mixed with another
        finally:
            os.close(fd)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                with open(os.path.join(self.dir, f"{self.number}.exit")) as fh:
                    self.returncode = int(fh.read())
            except (OSError, ValueError):
                return None
        return self.returncode

    def signal(self, signum: int) -> None:
        with contextlib.suppress(OSError):  # the relay gone: it stopped its launches when the launcher ended
            self.ask(f"signal {self.number} {signal.Signals(signum).name[3:]}")

    def wait(self, timeout: float = 10.0) -> int | None:
        """The exit code, waiting at most `timeout` seconds for the relay to record it (None: not yet)."""
        end = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        return self.returncode


def signal_launch(proc: Any, signum: int) -> None:
    """`signum` to a launched process group (its own session), or through the relay to a relayed launch."""
    if isinstance(proc, Relayed):
        proc.signal(signum)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)

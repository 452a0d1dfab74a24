"""No batch system: a plain SSH host such as a dedicated analysis server (`--scheduler none`).

The launcher runs detached on the host itself, exactly as `--local` runs it on this machine, with
the same lifecycle: stop, idle release and nothing left running after `stop`.
"""

from __future__ import annotations

from hpcjup.schedulers.local import LocalProcess


class NoScheduler(LocalProcess):
    """The launcher as a detached process on the SSH host."""

    name = "none"
    title = "no batch system"

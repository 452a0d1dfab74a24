"""Grid Engine's own `hpcjup doctor` check after the queue check (queues.py): the whole request, verified by
`qsub -w v` (nothing is submitted)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from hpcjup.schedulers.base import JobSpec
from hpcjup.schedulers.checks import Check, Status
from hpcjup.schedulers.sge_parse import _hint, _message

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.transport.base import Transport


def check_request(directives: Callable[[JobSpec], list[str]], transport: Transport, resolved: Resolved) -> Check:
    """Grid Engine could run the job as configured (`qsub -w v` of the adapter's `directives`, less the session's
    own name, log, directory and notify: verified, nothing submitted)."""
    spec = JobSpec(name="doctor", session_dir="/", command=["true"], resources=resolved.resources())
    keep = [o for o in directives(spec) if not o.startswith(("-N ", "-o ", "-cwd", "-v ", "-notify"))]
    argv = ["qsub", "-w", "v", "-N", "hpcjup-doctor", "-o", "/dev/null", *(w for o in keep for w in o.split(" "))]
    argv += ["-b", "y", "true"]
    result = transport.run(argv, check=False, timeout=60)
    text = _message(result.stderr + "\n" + result.stdout)
    if result.returncode != 0:
        fix = _hint(text, result.returncode)
        return Check(
            "request", Status.FAIL, f"Grid Engine would refuse the job: {text}", fix=fix, details=shlex.join(argv)
        )
    return Check("request", Status.PASS, f"Grid Engine would accept the job: {text or 'ok'}")

"""A preemptible session's job that runs again: how often it ran before, and what it keeps between runs.

Standard library only, shipped beside launcher.py. `start --preemptible` submits the job requeueable and
passes the launcher --preemptible. When the scheduler preempts the job it sends SIGTERM (the launcher shuts
Jupyter down cleanly: files saved on disk stay, the kernels' memory is lost), then requeues it under the same
job id; later it runs again, maybe on another node and port, and the launcher writes a new connection.json.

The launcher cannot tell a preemption's SIGTERM from `hpcjup stop`'s (both are a plain SIGTERM from the batch
system), so a preemptible session that ends by a stop signal keeps its token file and Dask key in the session
directory (0600, in its 0700 directory, as while it ran): a requeued run reuses them. `hpcjup stop` removes
both after the job's end; a job that never runs again leaves them to `prune`. The token stays the same so that
an open JupyterLab tab (which sends the token with each request) and the laptop's URL work again as they are.
Where the scheduler does not say how often the job ran (HPCJUP_RESTARTS), the state.json of the run before, of
the same job id, does.
"""

from __future__ import annotations

import json
import os

from contract import ENV_RESTARTS, REASON_STOPPED, TOKEN_FILE  # beside this file

_TOKEN_CHARS = frozenset("0123456789abcdef")


class Rerun:
    """What the launcher of job `job_id` in `session_dir` knows of the job's earlier runs."""

    def __init__(self, session_dir: str, job_id: str, preemptible: bool, state_file: str) -> None:
        self.dir, self.preemptible = session_dir, preemptible
        self.count = restarts(os.path.join(session_dir, state_file), job_id)
        self.keep = False  # the session's secrets stay at its end (set by `ended`)

    def kept_token(self) -> str:
        """The token of the run before ("" for a first run, or when it is gone or not one of ours)."""
        if not self.preemptible or self.count == 0:
            return ""
        try:
            with open(os.path.join(self.dir, TOKEN_FILE)) as fh:
                token = fh.read()
        except OSError:
            return ""
        return token if len(token) == 64 and set(token) <= _TOKEN_CHARS else ""

    def ended(self, reason: str) -> None:
        """The session ends for `reason`: its secrets stay if a preemptible job was stopped by a signal (it may run
        again)."""
        self.keep = self.preemptible and reason == REASON_STOPPED

    def fields(self) -> dict:
        """What state.json and connection.json say of it."""
        return {"preemptible": self.preemptible, "restarts": self.count}


def restarts(state_path: str, job_id: str) -> int:
    """How often this job ran before: HPCJUP_RESTARTS where the scheduler says, else one more than the run before
    recorded in state.json if that was the same job (0 for a new job)."""
    given = os.environ.get(ENV_RESTARTS, "")
    if given.isascii() and given.isdigit():  # not "²", which isdigit() but int() refuses
        return int(given)
    try:
        with open(state_path, "rb") as fh:
            before = json.loads(fh.read(65536))
    except (OSError, ValueError):
        return 0
    if not isinstance(before, dict) or before.get("job_id") != job_id:
        return 0
    count = before.get("restarts")
    return (count if isinstance(count, int) and count >= 0 else 0) + 1

"""A Dask worker preload: a worker without a nanny (a worker-group job's) retires on SIGTERM instead of dying.

Loaded into every worker of the session (dask/config: distributed.worker.preload, beside daskhttp.py), it acts
only where the worker is the job's own process (`--no-nanny`, as worker-group jobs run): there SIGTERM is what a
batch system sends before it preempts or cancels a job (Slurm: at the start of a partition's GraceTime), and
dask-worker would close at once, losing what the worker holds. Here the worker retires instead: the scheduler
moves its data to workers that stay, then it closes and the job ends. A second SIGTERM ends it at once.
Runs in the worker's Python (`distributed` is there); under a nanny the nanny's own shutdown stays as it is.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    """Install the SIGTERM handler in a nanny-less worker (Dask calls this as the worker starts)."""
    if getattr(worker, "nanny", None) or not hasattr(worker, "close_gracefully"):
        return
    loop = asyncio.get_running_loop()

    def retire(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)  # nothing printed in a handler; a second SIGTERM ends the worker
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(worker.close_gracefully(reason="SIGTERM")))

    signal.signal(signal.SIGTERM, retire)

"""No batch system: the launcher runs as a detached process on this machine (`--local`).

The "job id" is the launcher's pid; it leads its own session (setsid), so it outlives
the command that started it, like a batch job outlives `sbatch`.
"""

from __future__ import annotations

from hpcjup.errors import SubmitError
from hpcjup.job import LAUNCHER_FILE
from hpcjup.schedulers.base import (
    JOB_LOG,
    JOB_SCRIPT,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
)
from hpcjup.transport.base import Transport


class LocalProcess(Scheduler):
    """Runs the job script in the background on the transport's machine."""

    name = "local"
    bind_address = "127.0.0.1"  # a workstation's Jupyter needs no address but loopback

    def render(self, spec: JobSpec) -> str:
        lines = [
            "#!/bin/sh",
            f"# hpcjup session {spec.name}: JupyterLab on this machine.",
            "umask 077",
            *spec.setup,
            self.exec_line(spec.command),
            "",
        ]
        return "\n".join(lines)

    def submit(self, transport: Transport, session_dir: str) -> str:
        # Backgrounded without job control, the child is no group leader, so setsid execs in
        # place and $! is the launcher's pid.
        script = 'cd "$1" && umask 077 && { setsid sh "$2" </dev/null >"$3" 2>&1 & echo $!; }'
        result = transport.run(["sh", "-c", script, "sh", session_dir, JOB_SCRIPT, JOB_LOG], check=False)
        pid = result.stdout.strip()
        if result.returncode != 0 or not pid.isdigit():
            raise SubmitError(f"Could not start the launcher: {result.stderr.strip() or result.stdout.strip()}")
        return pid

    def status(self, transport: Transport, job_id: str) -> JobStatus:
        # `ps` rather than `kill -0`: a recycled pid must also still run our job script.
        result = transport.run(["ps", "-o", "args=", "-p", job_id], check=False)
        alive = result.returncode == 0 and LAUNCHER_FILE in result.stdout
        return JobStatus(job_id, JobState.RUNNING if alive else JobState.GONE)

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        if self.status(transport, job_id).state is not JobState.RUNNING:
            return
        # SIGTERM: the launcher shuts Jupyter down and escalates to SIGKILL itself after its grace
        # period, so the hard path (a hung launcher) is rare. `kill -s` works in every sh.
        transport.run(["kill", "-s", "TERM" if graceful else "KILL", job_id], check=False)

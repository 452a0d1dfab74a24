"""No batch system: the launcher runs as a detached process on this machine (`--local`).

The "job id" is the launcher's pid; it leads its own session (setsid), so it outlives
the command that started it, like a batch job outlives `sbatch`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from hpcjup import job
from hpcjup.errors import RemoteCommandError, SubmitError
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
    title = "this machine"
    bind_address = "127.0.0.1"  # a workstation's Jupyter needs no address but loopback

    def render(self, spec: JobSpec) -> str:
        lines = [
            "#!/bin/sh",
            f"# hpcjup session {spec.name}: JupyterLab on this machine.",
            *self.job_environment(spec),
            "umask 077",
            *spec.setup,
            self.exec_line(spec.command),
            "",
        ]
        return "\n".join(lines)

    def job_environment(self, spec: JobSpec) -> list[str]:
        # The "job" is this host and the launcher's pid ($$: the script execs the launcher); no per-node
        # launch, no worker jobs; a --time is the launcher's own timer (no scheduler ends or warns the job).
        limit = spec.resources.time_seconds or 0
        return [
            f"export {job.ENV_SCHEDULER}={self.name}",
            f"export {job.ENV_JOB_ID}=$$",
            f'export {job.ENV_NODE}="$(hostname -s 2>/dev/null || hostname)"',
            f'export {job.ENV_NODELIST}="${job.ENV_NODE}"',
            f'export {job.ENV_CPUS}="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"',
            f"export {job.ENV_LAUNCH}=",
            f"export {job.ENV_TIME_LIMIT}={limit}",
            f"export {job.ENV_WARN_SIGNAL}=0",
            f"export {job.ENV_WARN_SECONDS}={spec.warn_seconds or 0 if limit else 0}",
            f"export {job.ENV_PARTITION}=",
            f"export {job.ENV_ACCOUNT}=",
            f"export {job.ENV_JOBQUEUE}=",
            f"export {job.ENV_SUBMIT}=",
            f"export {job.ENV_SCRUB}=",
            f"export {job.ENV_SCRUB_KEEP}=",
        ]

    # Backgrounded without job control, the child is no group leader, so setsid execs in place and $!
    # is the launcher's pid.
    submit_command = f"{{ setsid sh {JOB_SCRIPT} </dev/null >{JOB_LOG} 2>&1 & echo $!; }}"

    def parse_submission(self, stdout: str, stderr: str) -> str:
        pid = stdout.strip()
        if not self.is_job_id(pid):
            raise SubmitError(f"Could not start the launcher: {stderr.strip()[:200] or pid[:200]}")
        return pid

    def refusal(self, exc: RemoteCommandError) -> SubmitError:
        return SubmitError(f"Could not start the launcher: {exc.stderr.strip()[:200] or exc.stdout.strip()[:200]}")

    def status(self, transport: Transport, job_id: str) -> JobStatus:
        if not (job_id.isascii() and job_id.isdigit()):  # a pid, or nothing of ours: never let it reach `ps` or `kill`
            return JobStatus(job_id, JobState.GONE)
        # `ps` rather than `kill -0`: a recycled pid must also still run our job script. -ww: without a
        # terminal, ps cuts lines at 80 columns, and a long home directory hides the launcher's name.
        result = transport.run(["ps", "-ww", "-o", "args=", "-p", job_id], check=False)
        # Until the script execs the launcher (it first exports the job's environment), ps shows `sh job.sh`.
        alive = result.returncode == 0 and (LAUNCHER_FILE in result.stdout or f"sh {JOB_SCRIPT}" in result.stdout)
        return JobStatus(job_id, JobState.RUNNING if alive else JobState.GONE)

    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        ids = self.ids([*running, *pending])
        return shlex.join(["kill", "-s", "TERM", *ids]) + " 2>/dev/null" if ids else ""

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        # The whole tree of each launcher, as cancel(graceful=False) does.
        return "; ".join(shlex.join(["sh", "-c", _KILL_TREE, "sh", pid, str(KILL_WAIT)]) for pid in self.ids(job_ids))

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        if self.status(transport, job_id).state is not JobState.RUNNING:
            return
        if graceful:
            # SIGTERM: the launcher shuts Jupyter and Dask down and escalates to SIGKILL itself after
            # its grace period. `kill -s` works in every sh.
            transport.run(["kill", "-s", "TERM", job_id], check=False)
            return
        # Jupyter, its kernels and Dask lead their own sessions: killing the launcher alone leaves
        # them running. End the whole tree in one remote command.
        transport.run(["sh", "-c", _KILL_TREE, "sh", job_id, str(KILL_WAIT)], timeout=KILL_WAIT + 30, check=False)


KILL_WAIT = 5  # seconds the tree gets between TERM and KILL

# $1: the launcher's pid, $2: seconds to wait. The tree is read once, before any signal, from
# `ps -e -o pid=,ppid=` (Linux and macOS): once a parent dies, its children move to init and
# could no longer be told from other processes. TERM all, wait, then KILL what is left.
_KILL_TREE = r"""
tree=$(ps -e -o pid=,ppid= | awk -v root="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END { todo = root; out = root
          while (todo != "") { n = split(todo, now, " "); todo = ""
              for (i = 1; i <= n; i++) { m = split(kids[now[i]], k, " ")
                  for (j = 1; j <= m; j++) { out = out " " k[j]; todo = todo " " k[j] } } }
          print out }')
kill -s TERM $tree 2>/dev/null
list=$(echo $tree | tr ' ' ,)
i=0
while :; do
    # Zombies count as gone: they only wait for a parent (or init) to reap them.
    left=$(ps -o pid=,stat= -p "$list" | awk '$2 !~ /^Z/ { print $1 }')
    [ -n "$left" ] || exit 0
    [ "$i" -lt "$(($2 * 10))" ] || break
    sleep 0.1 2>/dev/null || sleep 1
    i=$((i + 1))
done
kill -s KILL $left 2>/dev/null
exit 0
"""

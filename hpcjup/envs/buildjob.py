"""Building an environment in a batch job on a compute node (`build = "job"`), for sites whose login nodes
forbid heavy work.

The build itself is the login build's: the same `hpcjup-env build` action of envs/script.py, with the spec
staged, uv brought and an offline host's wheels uploaded by the same probe on the login node, so its name,
atomic rename, lock per spec and failure log are the same. Only where it runs differs: `submit` renders a
job script through the scheduler adapter's own template (its directives, then the job contract's variables,
then the build in the shell's place) into ROOT/.job-NAME-XXXX and submits it in ONE remote command (script on
stdin). `follow_argv` is the one long-lived remote command that streams the job's output to the laptop (so
hpcjup.envs.build reads the same phase lines as from a login build); when the laptop closes it (Ctrl-C, a
lost connection) before the build said `done` or `failed`, it cancels the job, and in every case removes the
job's directory. `JobWatch` asks the scheduler, politely, how the job is doing while it waits (the queue
state) and notices a job that ended without a result (time limit, node failure).

Why the session's job is submitted only after the build, not with a dependency on the build job (`afterok`):
a dependency exists in different forms per batch system (Grid Engine's -hold_jid starts the dependent job even
when the first one failed), a failed build would leave a session job waiting forever for a dependency that can
no longer be satisfied, and the upload's check would refuse the session (its env is not built yet). A build
happens once per spec; the queue wait it could save is paid once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hpcjup.config.resources import Resources, time_to_seconds
from hpcjup.errors import HpcjupError, RemoteCommandError
from hpcjup.job import JOB_LOG, JOB_SCRIPT

if TYPE_CHECKING:
    from hpcjup.envs.probe import Progress
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.transport.base import Transport

BUILD_TIME = 60 * 60  # the build job's time limit in seconds (the session's, when that is shorter)
ENV_JOB = "HPCJUP_ENV_JOB"  # set in the build job: the build's stdin is nothing there (envs/script.py)
#: Seconds between scheduler queries while the job waits; the last repeats (<= 6 a minute after the first).
POLL = (2.0, 3.0, 5.0, 10.0, 10.0, 15.0)
RUNNING_POLL = 10.0  # once it runs, its output shows it is alive: ask only whether it ended (<= 6 a minute)
GRACE = 5.0  # after the scheduler says it ended, how long its last lines may take to arrive

# $1: the job's directory, $2: the build's stage; the rest: the scheduler's cancel command and the job id.
# Streams the job's output from its first byte, as it grows (the file appears when the job starts); ends when
# the laptop closes our stdin: then a job that never said `done` or `failed` is cancelled and its stage removed
# (a build that had started removes it itself on the cancel's SIGTERM), and the job's directory goes.
FOLLOW = f"""
d=$1 stage=$2; shift 2
tail -n +1 -F "$d/{JOB_LOG}" 2>/dev/null &
t=$!
cat >/dev/null
kill "$t" 2>/dev/null
grep -q '^@@hpcjup \\(done\\|failed\\) ' "$d/{JOB_LOG}" 2>/dev/null || {{ "$@" >/dev/null 2>&1; rm -rf "$stage"; }}
rm -rf "$d"
"""
# $1: the job's directory (made here, 0700, its parent the env root); stdin: the job script.
_SUBMIT = f'd=$1; mkdir -p -- "${{d%/*}}" && mkdir -m 700 "$d" && cat >"$d/{JOB_SCRIPT}" && cd "$d" && umask 077 && '


@dataclass(frozen=True)
class JobPlace:
    """Where a build job runs: the batch system and the job's resources (one node, the session's placement)."""

    scheduler: Scheduler
    resources: Resources


def place(scheduler: Scheduler, session: Resources) -> JobPlace:
    """A build job's place from the session's request: its partition, account, CPUs, memory and directives (a
    site's `-l storage=...`), one node, and at most BUILD_TIME (less when the session asks for less)."""
    limit = BUILD_TIME
    if session.time is not None:
        limit = min(limit, time_to_seconds(session.time))
    minutes = max(1, limit // 60)
    return JobPlace(scheduler, replace(session, nodes=1, time=str(minutes), time_min=None, gpus=None))


def submit(transport: Transport, where: JobPlace, directory: str, name: str, command: Sequence[str]) -> str:
    """Render `command` as a job of `where` in `directory` (made here, its parent too) and submit it, in one remote command; the
    job id. A refusal is the scheduler's own words (SubmitError)."""
    from hpcjup.schedulers.base import JobSpec

    spec = JobSpec(name=name, session_dir=directory, command=[*command], resources=where.resources)
    script = where.scheduler.render(spec).encode()
    try:
        result = transport.run(
            ["sh", "-c", _SUBMIT + where.scheduler.submit_command, "sh", directory], input=script, timeout=60
        )
    except RemoteCommandError as exc:
        transport.run(["rm", "-rf", "--", directory], check=False)
        raise where.scheduler.refusal(exc) from exc
    return where.scheduler.parse_submission(result.stdout, result.stderr)


def job_directory(root: str, name: str) -> str:
    """A new directory for one build job of env NAME under the env root (the build's sweep removes a day-old one)."""
    return f"{root}/.job-{name}-{secrets.token_hex(4)}"


def follow_argv(directory: str, stage: str, scheduler: Scheduler, job_id: str) -> list[str]:
    """The long-lived command that streams the job's output and, closed early, cancels the job."""
    return ["sh", "-c", FOLLOW, "sh", directory, stage, *scheduler.cancel_command, scheduler.check_job_id(job_id)]


def job_command(argv: Sequence[str]) -> list[str]:
    """The build's argument list as the job runs it: told it runs in a job (its stdin is no lifeline there)."""
    return ["env", f"{ENV_JOB}=1", *argv]


class JobWatch:
    """Called while the job's output is quiet: shows its queue state, and says (a message) when the job ended
    without its result; None otherwise. Asks the scheduler at most every POLL seconds."""

    def __init__(self, transport: Transport, scheduler: Scheduler, job_id: str, progress: Progress) -> None:
        self.transport, self.scheduler, self.job_id, self.progress = transport, scheduler, job_id, progress
        self.asked = 0
        self.next = time.monotonic() + POLL[0]
        self.shown = ""
        self.ended: float | None = None
        self.state = ""

    def __call__(self) -> str | None:
        now = time.monotonic()
        if self.ended is not None:
            return f"The build job {self.job_id} ended ({self.state}) without a result." if now >= self.ended else None
        if now < self.next:
            return None
        self.asked += 1
        try:
            status = self.scheduler.status(self.transport, self.job_id)
        except HpcjupError:  # the scheduler did not answer: ask again later, change nothing
            self.next = now + POLL[-1]
            return None
        state = status.state.value
        if status.state.active or state == "UNKNOWN":
            if state == "RUNNING":
                text = f"build job {self.job_id} running" + (f" on {status.nodes}" if status.nodes else "")
                self.next = now + RUNNING_POLL
            else:
                parts = [f"build job {self.job_id} {state.lower()}"]
                parts += [f"reason: {status.reason}"] if status.reason else []
                parts += [f"expected start: {status.expected_start}"] if status.expected_start else []
                text = ", ".join(parts)
                self.next = now + POLL[min(self.asked, len(POLL) - 1)]
            if text != self.shown:
                self.shown = text
                self.progress.phase(text)
            return None
        self.state = state + (f", exit {status.exit_code}" if status.exit_code else "")
        self.ended = now + GRACE
        return None

"""No batch system: the launcher runs as a detached process on this machine (`--local`).

The launcher leads its own session (setsid), so it outlives the command that started it, like a
batch job outlives `sbatch`. The "job id" is `PID.START`: the launcher's pid and its start time (clock
ticks since boot from /proc/PID/stat on Linux, else `ps -o lstart` in UTC, to the second). A pid alone
is not a process: after a reboot, or once the launcher is gone, the pid may name any other process,
and `stop` would signal that one. Every state query and every signal first checks that the pid still
runs a launcher (or its job script) and started at that moment. Ids of the old form (the pid only)
are checked by the command line alone.

When the launcher itself died (kill -9, the OOM killer), what it started may live on: Jupyter, its
kernels and Dask lead sessions of their own. `leftovers_snippet` finds them by the session directory in
their command lines (and everything below them and in their process groups) and ends them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from hpcjup import job
from hpcjup.errors import RemoteCommandError, SubmitError
from hpcjup.job import JOB_LOG, JOB_SCRIPT
from hpcjup.schedulers.base import (
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
)
from hpcjup.transport.base import Transport

KILL_WAIT = 5  # seconds the tree gets between TERM and KILL

# sh: `hpcjup_start PID` prints the process's start time as a word (nothing if there is no such process):
# on Linux the clock ticks since boot from /proc/PID/stat (its 22nd field; the command name before it may
# hold spaces and parentheses, hence everything up to the last ") " goes), which no change of the clock
# moves; elsewhere (macOS, the BSDs) `ps -o lstart` in UTC and the C locale, as YYYYMMDDhhmmss.
_START_TIME = r"""hpcjup_start() {
    if [ -r "/proc/$1/stat" ]; then
        hpcjup_s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
        set -- ${hpcjup_s##*) }
        [ "$#" -ge 20 ] && printf '%s\n' "${20}"
    else
        LC_ALL=C TZ=UTC0 ps -o lstart= -p "$1" 2>/dev/null | awk '{ m = index("JanFebMarAprMayJunJulAugSepOctNovDec", $2)
            t = $4; gsub(":", "", t); if (NF == 5 && m) printf "%s%02d%02d%s\n", $5, (m + 2) / 3, $3, t }'
    fi
    return 0
}"""

# sh: `hpcjup_ours ID` succeeds when the job id's process is a launcher (or its job script, before the exec)
# that started at the recorded moment; an id of the old form (a pid alone) by the command line only.
_OURS = (
    _START_TIME
    + r"""
hpcjup_ours() {
    hpcjup_a=$(ps -ww -o args= -p "${1%%.*}" 2>/dev/null) || return 1
    case $hpcjup_a in
        */launcher.py\ --session-dir\ *|"sh job.sh"|"sh job.sh "*) ;;
        *) return 1 ;;
    esac
    [ "${1%%.*}" = "$1" ] || [ "$(hpcjup_start "${1%%.*}")" = "${1#*.}" ]
}"""
)

# $1: seconds to wait, $2: a session directory or "", then job ids. What ends: the launchers of those ids that
# are ours (hpcjup_ours), and the processes whose command line names a file of the session directory (the
# launcher, Jupyter, the Dask scheduler and workers, the kernels by their connection files), each with
# everything below it and, where it leads a process group, the group's members (orphans reparented to
# init keep their group). Never this command or what runs it: their arguments name the directory too.
# The tree is read once, before any signal, from `ps` (Linux and macOS): once a parent dies, its children
# move to init and could no longer be told from other processes. TERM all, wait, then KILL what is left.
_KILL_TREE = (
    _OURS
    + r"""
wait=$1 dir=$2
shift 2
roots=
for id; do hpcjup_ours "$id" && roots="$roots ${id%%.*}"; done
[ -n "$roots$dir" ] || exit 0
tree=$(ps -ww -U "$(id -u)" -o pid=,ppid=,pgid=,args= | awk -v roots="$roots" -v dir="$dir" -v me="$$" '
    { pid = $1; par[pid] = $2; grp[pid] = $3
      kids[$2] = kids[$2] " " pid; members[$3] = members[$3] " " pid
      a = $0; sub(/^[ \t]*[0-9]+[ \t]+[0-9]+[ \t]+[0-9]+[ \t]*/, "", a); a = a " "
      if (dir != "" && (index(a, dir "/launcher.py ") || index(a, dir "/jupyterboot.py ") ||
                        index(a, dir "/dask/scheduler.json ") || index(a, dir "/runtime/kernel-")))
          found = found " " pid }
    END { p = me
          while (p > 1 && !(p in mine)) { mine[p] = 1; p = par[p] }
          todo = roots " " found; out = ""
          while (todo != "") { n = split(todo, now, " "); todo = ""
              for (i = 1; i <= n; i++) { p = now[i]
                  if ((p in seen) || (p in mine) || !(p in par)) continue
                  seen[p] = 1; out = out " " p
                  todo = todo " " kids[p] (grp[p] == p ? members[p] : "") } }
          print out }')
[ -n "$tree" ] || exit 0
kill -s TERM $tree 2>/dev/null
list=$(echo $tree | tr ' ' ,)
i=0
while :; do
    # Zombies count as gone: they only wait for a parent (or init) to reap them.
    left=$(ps -o pid=,stat= -p "$list" | awk '$2 !~ /^Z/ { print $1 }')
    [ -n "$left" ] || exit 0
    [ "$i" -lt "$((wait * 10))" ] || break
    sleep 0.1 2>/dev/null || sleep 1
    i=$((i + 1))
done
kill -s KILL $left 2>/dev/null
exit 0
"""
)


class LocalProcess(Scheduler):
    """Runs the job script in the background on the transport's machine."""

    name = "local"
    title = "this machine"
    shebang = "#!/bin/sh"
    runs_on = "this machine"
    bind_address = "127.0.0.1"  # a workstation's Jupyter needs no address but loopback
    job_id_pattern = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,20})?")  # PID.START, or PID (sessions of older versions)

    def job_environment(self, spec: JobSpec) -> list[str]:
        # The launcher's start time first, for its job id ($$: the script execs the launcher).
        return [_START_TIME, "hpcjup_t=$(hpcjup_start $$)", *super().job_environment(spec)]

    def environment(self, spec: JobSpec) -> Mapping[str, str]:
        # The "job" is this host and the launcher, named as the submission named it (pid and start time); no
        # per-node launch, no worker jobs; a --time is the launcher's own timer (no scheduler ends or warns the job).
        limit = spec.resources.time_seconds or 0
        return {
            job.ENV_SCHEDULER: self.name,
            job.ENV_JOB_ID: '"$$.${hpcjup_t:-0}"',
            job.ENV_NODE: '"$(hostname -s 2>/dev/null || hostname)"',
            job.ENV_NODELIST: f'"${job.ENV_NODE}"',
            job.ENV_CPUS: '"$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"',
            job.ENV_MEMORY_KB: '""',  # the machine's memory bounds it (MemAvailable)
            job.ENV_LAUNCH: "",
            job.ENV_TIME_LIMIT: str(limit),
            job.ENV_WARN_SIGNAL: "0",
            job.ENV_WARN_SECONDS: str(spec.warn_seconds or 0 if limit else 0),
            job.ENV_RESTARTS: "''",  # not given: the launcher counts runs from the state.json before
            **dict.fromkeys([job.ENV_PARTITION, job.ENV_ACCOUNT, job.ENV_JOBQUEUE, job.ENV_SUBMIT], ""),
            **dict.fromkeys([job.ENV_SCRUB, job.ENV_SCRUB_KEEP], ""),
        }

    # Backgrounded without job control, the child is no group leader, so setsid execs in place and $!
    # is the launcher's pid (its start time is the fork's, which exec keeps). A process already gone has
    # no start time: ".0" matches none, so such an id is never taken for a live process.
    submit_command = (
        f"{{ setsid sh {JOB_SCRIPT} </dev/null >{JOB_LOG} 2>&1 & hpcjup_p=$!\n{_START_TIME}\n"
        'hpcjup_t=$(hpcjup_start "$hpcjup_p"); echo "$hpcjup_p.${hpcjup_t:-0}"; }'
    )

    def parse_submission(self, stdout: str, stderr: str) -> str:
        job_id = stdout.strip()
        if not self.is_job_id(job_id):
            raise SubmitError(f"Could not start the launcher: {stderr.strip()[:200] or job_id[:200]}")
        return job_id

    def refusal(self, exc: RemoteCommandError) -> SubmitError:
        return SubmitError(f"Could not start the launcher: {exc.stderr.strip()[:200] or exc.stdout.strip()[:200]}")

    def status(self, transport: Transport, job_id: str) -> JobStatus:
        # No id check first: `statuses` checks each id in the remote command itself, and a pid that is not ours is GONE.
        return self.statuses(transport, [job_id])[job_id]

    def statuses(self, transport: Transport, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """All of them in one remote command; anything that is not a job id of ours never reaches it."""
        ids = self.ids(job_ids)
        alive: set[str] = set()
        if ids:
            script = f'{_OURS}\nfor id; do hpcjup_ours "$id" && echo "$id"; done; exit 0'
            alive = set(transport.run(["sh", "-c", script, "sh", *ids]).stdout.split())
        return {i: JobStatus(i, JobState.RUNNING if i in alive else JobState.GONE) for i in job_ids}

    def stop_snippet(self, running: Sequence[str], pending: Sequence[str]) -> str:
        ids = self.ids([*running, *pending])
        script = f'{_OURS}\nfor id; do hpcjup_ours "$id" && kill -s TERM "${{id%%.*}}"; done; exit 0'
        return shlex.join(["sh", "-c", script, "sh", *ids]) + " 2>/dev/null" if ids else ""

    def kill_snippet(self, job_ids: Sequence[str]) -> str:
        # The whole tree of each launcher, as cancel(graceful=False) does.
        ids = self.ids(job_ids)
        return shlex.join(["sh", "-c", _KILL_TREE, "sh", str(KILL_WAIT), "", *ids]) if ids else ""

    def leftovers_snippet(self, session_dir: str) -> str:
        """sh that ends what is left of the session in `session_dir` when its launcher is gone (or killed)."""
        return shlex.join(["sh", "-c", _KILL_TREE, "sh", str(KILL_WAIT), session_dir.rstrip("/")])

    def cancel(self, transport: Transport, job_id: str, *, graceful: bool = True) -> None:
        if self.status(transport, job_id).state is not JobState.RUNNING:
            return
        if graceful:
            # SIGTERM: the launcher shuts Jupyter and Dask down and escalates to SIGKILL itself after
            # its grace period. `kill -s` works in every sh.
            transport.run(["sh", "-c", self.stop_snippet([job_id], [])], check=False)
            return
        # Jupyter, its kernels and Dask lead their own sessions: killing the launcher alone leaves
        # them running. End the whole tree in one remote command.
        transport.run(["sh", "-c", self.kill_snippet([job_id])], timeout=KILL_WAIT + 30, check=False)

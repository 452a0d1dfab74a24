"""Create a session on the cluster: its private directory, the launcher, the job script, the job."""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import re
import secrets
import shlex
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpcjup import __version__
from hpcjup.config.environment import launcher_python, setup_lines
from hpcjup.config.resources import Resources, time_to_seconds
from hpcjup.errors import HpcjupError, RemoteCommandError, SubmitError, UnsafeSessionRoot, UsageError
from hpcjup.job import DASK_DIR, SETUP_FILE, job_files
from hpcjup.schedulers.base import JOB_SCRIPT, JobSpec, Scheduler
from hpcjup.session.layout import SESSIONS_DIR, SessionPaths, check_name, new_name
from hpcjup.session.record import SessionRecord, now_iso
from hpcjup.transport.base import Transport
from hpcjup.transport.batch import pack

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.session.envplan import Located

# Ask for the walltime warning this long before the limit (short jobs: a quarter of their time).
_WARN_SECONDS = 300


@dataclass(frozen=True)
class StartRequest:
    """What `hpcjup start` asks for, after validation."""

    resources: Resources = field(default_factory=Resources)
    name: str | None = None
    workdir: str | None = None
    python: str = "python3"
    idle_timeout: int = 0  # seconds; 0 = never
    ready_timeout: int = 300  # seconds Jupyter may take to answer once the job runs
    dask: DaskRequest | None = None  # None: no Dask cluster
    socket: bool = False  # Jupyter on a Unix socket on the node instead of TCP
    settings: Resolved | None = None  # the resolved profile: environment activation, containers
    envs: Located | None = None  # --env/--kernel (or a bare cluster): Jupyter from the server env, kernels
    check_jupyter: str | None = None  # a bare start: the upload checks this Python has JupyterLab


@dataclass(frozen=True)
class DaskRequest:
    """The Dask cluster in the allocation; None fields mean "fill the allocation"."""

    workers: int | None = None  # worker processes in all (default: one per node)
    worker_cores: int | None = None  # threads per worker (default: the job's CPUs per task)
    worker_memory: str | None = None  # memory limit per worker (default: Dask's "auto")

    def check_fits(self, resources: Resources) -> None:
        """Refuse, before submitting, more worker cores than the allocation has (when --cpus says)."""
        if resources.cpus is None or self.workers is None:
            return
        wanted = self.workers * (self.worker_cores or 1)
        have = resources.nodes * resources.cpus
        if wanted > have:
            raise UsageError(
                f"{self.workers} workers x {self.worker_cores or 1} cores = {wanted} cores, but the allocation has "
                f"{resources.nodes} node(s) x {resources.cpus} CPUs = {have}.",
                hint="Ask for fewer --workers or --worker-cores, or more --nodes or --cpus.",
            )


def submit(
    transport: Transport,
    scheduler: Scheduler,
    request: StartRequest,
    *,
    relearn: Callable[[], Scheduler] | None = None,
) -> tuple[SessionRecord, SessionPaths]:
    """Claim the session's name, upload every file and submit the job in one remote command, record it;
    on failure leave nothing.

    The directory is claimed with one atomic mkdir on the cluster, so of two starts racing for a
    name exactly one wins; the other gets "session name in use" and touches nothing of the winner's.
    Ctrl-C while the job is being submitted waits for the scheduler's answer, then cancels the job:
    no job is ever left without a record.

    The home directory and scheduler may be what the last start on the host learned (hostfacts): the
    upload's command checks both first, and if either changed, `relearn` asks the host (and the session
    is created with what it says; the record names the scheduler used).
    """
    asked = request
    created_at = now_iso()
    with deferred_interrupts() as interrupted:
        for attempt in range(2):
            request = dataclasses.replace(asked, workdir=resolve_workdir(asked.workdir, transport.home()))
            try:
                paths, job_id, recorded = _claim(transport, scheduler, request, interrupted, created_at)
                break
            except _HostChanged:
                if relearn is None or attempt:
                    need = f"`{scheduler.commands[0]}` is not on the PATH" if scheduler.commands else "it changed"
                    raise SubmitError(
                        f"{transport.destination or transport.name} is not as the last start found it: its home "
                        f"directory is not {transport.home()}, or {need}.",
                        hint="Run the command again; `hpcjup doctor` checks the host.",
                    ) from None
                scheduler = relearn()
                scheduler.check_request(asked.resources)
        try:
            record = _record(transport, scheduler, request, paths, created_at, job_id)
            if recorded != job_id:  # the claim could not read the id the way the adapter does: the laptop's word
                transport.write_file(paths.record, record.to_json(), 0o600)
            if interrupted.is_set():
                raise KeyboardInterrupt
        except BaseException:
            scheduler.cancel(transport, job_id, graceful=False)
            transport.rmtree(paths.dir)  # nothing runs for it any more: no trace left (Ctrl-C included)
            raise
    return record, paths


def _record(
    transport: Transport,
    scheduler: Scheduler,
    request: StartRequest,
    paths: SessionPaths,
    created_at: str,
    job_id: str,
) -> SessionRecord:
    """The session's session.json (with JOB_ID_SLOT for its job id, as the claim script completes it)."""
    return SessionRecord(
        name=paths.name,
        host=transport.destination or transport.name,
        scheduler=scheduler.name,
        job_id=job_id,
        created_at=created_at,
        resources=request.resources.to_dict(),
        workdir=request.workdir,
        idle_timeout=request.idle_timeout or None,
        python=_record_python(request),
        python_command=_python_command(request, paths),
        envs=list(request.envs.envs) if request.envs is not None else [],
        hpcjup_version=__version__,
    )


def _claim(
    transport: Transport,
    scheduler: Scheduler,
    request: StartRequest,
    interrupted: threading.Event,
    created_at: str,
) -> tuple[SessionPaths, str, str]:
    """Upload the session's files under a name that is free, or whose session has ended, and submit the job:
    (paths, job id, the job id the claim recorded in session.json, "" if it could not)."""
    home = transport.home()
    for _ in range(5 if request.name is None else 2):
        paths = SessionPaths(home, check_name(request.name) if request.name else new_name())
        files = _job_files(paths, scheduler, request)
        template = _record(transport, scheduler, request, paths, created_at, JOB_ID_SLOT)
        files[RECORD_TEMPLATE] = (template.to_json(), 0o600)
        replace = ""
        for attempt in range(2):
            if interrupted.is_set():
                raise KeyboardInterrupt  # nothing submitted yet: nothing to take back
            submitted = _upload_and_submit(transport, scheduler, paths, files, replace, _checks(request))
            if submitted is not None:
                return paths, *submitted
            if request.name is None:
                break
            if attempt == 0:
                replace = _replaceable(transport, scheduler, paths)
        if request.name is not None:
            raise UsageError(
                f"Session name {request.name!r} is in use on {transport.destination or transport.name}.",
                hint=f"Attach with `hpcjup attach {request.name}`, stop it with `hpcjup stop {request.name}`, "
                "or choose another --name (`hpcjup prune` removes ended and damaged sessions).",
            )
    raise HpcjupError("Could not find a free session name.", hint="Pass --name.")


_IN_USE = 73
_CHANGED = 77
_UNSAFE = 78
_CLAIMED = "hpcjup-claimed"
_RECORDED = "hpcjup-recorded"
#: session.json as uploaded, its job id still to come: the claim completes it right after the submission, in the
#: same remote command, so a connection lost in between leaves no job without a record.
RECORD_TEMPLATE = "session.json.in"
JOB_ID_SLOT = "@HPCJUP_JOB_ID@"


_NO_PREFIX = 75
_ENV_MISSING = 76
_NO_JUPYTER = 79


class _HostChanged(Exception):
    """The upload found another home directory, or no scheduler command, than the start assumed."""


class EnvMissing(Exception):
    """The upload found an environment the start needs not built (or the server env moved): build, then retry."""


class NoJupyter(Exception):
    """The upload found no JupyterLab in the Python of a start that set none (a bare cluster)."""


# Runs on the login node (POSIX sh, tar). First, ~/.hpcjup and its sessions directory must be the user's own
# and writable by no one else (exit 78): another user who can write there could swap a session's files.
# Then unpack the archive on stdin into a private staging
# directory, then claim the name with one mkdir (atomic: of two racing starts one wins) and move
# the files in. With a job id in $4, first move aside the ended session of that job, under a lock.
# Then, in the session directory, the scheduler's submit command ($5): after the line $8 (_CLAIMED) on
# stderr, the exit code and output are the scheduler's. Before anything, check that $6 is the home
# directory and $7 (the scheduler's command) is on the PATH, as the start assumed (exit 77 if not).
# Once the scheduler took the job, session.json is the uploaded template ($10) with the job id in its slot ($11):
# the id is the last line the submit command printed, cut at a ";" (Slurm's "id;cluster"), or the N of LSF's
# "Job <N> is submitted ...". The line "$9 ID" on stderr says it was recorded; the laptop still parses the
# output the adapter's way (parse_submission) and rewrites the record if the two differ.
# Before all that, the session's environments ($12...): `b:DIR` built (its marker; marked used), `c:ROOT:NAME` the
# server env `env upgrade-server` chose is still NAME (exit 76 if not), `p:DIR` an existing env's
# bin/python (exit 75, its path on stderr), `j:PYTHON` that Python has JupyterLab (exit 79).
_CLAIM = r"""
umask 077
root=$1 name=$2 tag=$3 old=$4 submit=$5 home=$6 need=$7 claimed=$8 recorded=$9 template=${10} slot=${11}
shift 11
[ "$(cd -P -- "$home" 2>/dev/null && pwd -P)" = "$(cd -P && pwd -P)" ] || exit 77
[ -z "$need" ] || command -v "$need" >/dev/null 2>&1 || exit 77
for e; do
    case $e in
        b:*) [ -f "${e#b:}/.hpcjup-env.json" ] || exit 76; : >"${e#b:}/.hpcjup-used" ;;
        c:*) r=${e#c:}; n=${r##*:}; r=${r%:*}
             [ "$(readlink -- "$r/server-current" 2>/dev/null)" = "$n" ] || { [ -z "$n" ] && [ ! -e "$r/server-current" ]; } || exit 76 ;;
        p:*) [ -x "${e#p:}/bin/python" ] || { printf '%s\n' "${e#p:}" >&2; exit 75; } ;;
        j:*) "${e#j:}" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("jupyterlab") is None)' \
                 >/dev/null 2>&1 || exit 79 ;;
    esac
done
final=$root/$name stage=$root/.stage-$tag lock=
mkdir -p -- "$root" || exit 70
for d in "${root%/*}" "$root"; do
    [ -O "$d" ] || exit 78
    case $(ls -ld -- "$d") in ?????w*|????????w*) exit 78 ;; esac
done
mkdir -- "$stage" || exit 70
trap 'rm -rf -- "$stage" "$root/.old-$tag"; [ -z "$lock" ] || rmdir -- "$lock"' EXIT
tar -xf - -C "$stage" || exit 72
if [ -n "$old" ]; then
    mkdir -- "$root/.lock-$name" 2>/dev/null || exit 73
    lock=$root/.lock-$name
    grep -q "\"job_id\": \"$old\"" "$final/session.json" 2>/dev/null || exit 73
    mv -- "$final" "$root/.old-$tag" || exit 73
fi
mkdir -- "$final" 2>/dev/null || exit 73
for f in "$stage"/*; do mv -- "$f" "$final/" || exit 74; done
rm -rf -- "$root/.old-$tag"
cd -- "$final" || exit 74
printf '%s\n' "$claimed" >&2
out=$(eval "$submit")
rc=$?
printf '%s\n' "$out"
[ "$rc" -eq 0 ] || exit "$rc"
id=$(printf '%s\n' "$out" | sed -n '$s/^Job <\([^>]*\)>.*/\1/;$s/;.*//;$p')
case $id in ''|*[!A-Za-z0-9_.+-]*) exit 0 ;; esac
sed "s/\"job_id\": \"$slot\"/\"job_id\": \"$id\"/" "$template" >.session.json.new &&
    mv -f -- .session.json.new session.json && rm -f -- "$template" && printf '%s %s\n' "$recorded" "$id" >&2
exit 0
"""


def _upload_and_submit(
    transport: Transport,
    scheduler: Scheduler,
    paths: SessionPaths,
    files: dict[str, tuple[bytes, int]],
    replace: str,
    checks: tuple[str, ...] = (),
) -> tuple[str, str] | None:
    """Run the claim script with the files as a tar archive on stdin, then the scheduler's submit command:
    (the job id, the id session.json was completed with or ""), or None if the name is in use. A refused
    submission leaves no directory behind."""
    tag = secrets.token_hex(4)
    need = scheduler.commands[0] if scheduler.commands else ""
    args = [paths.root, paths.name, tag, replace, scheduler.submit_command, paths.home, need, _CLAIMED, _RECORDED]
    args += [RECORD_TEMPLATE, JOB_ID_SLOT, *checks]
    argv = ["sh", "-c", _CLAIM, "sh", *args]
    rc, out, err = transport.run_raw(argv, input=pack(files), timeout=300)
    text = err.decode(errors="replace")
    before, claimed, after = text.partition(_CLAIMED + "\n")
    if not claimed:
        if rc == _IN_USE:
            return None
        if rc == _CHANGED:
            raise _HostChanged
        if rc == _ENV_MISSING:
            raise EnvMissing
        if rc == _NO_JUPYTER:
            raise NoJupyter
        if rc == _NO_PREFIX:
            where = before.strip().splitlines()[-1] if before.strip() else "an env"
            raise UsageError(
                f"{where} on {transport.destination or transport.name} has no bin/python: it is not an environment "
                "there. Nothing was submitted.",
                hint="Give --kernel cluster:PREFIX the prefix of a venv or conda env on the cluster.",
            )
        if rc == _UNSAFE:
            raise UnsafeSessionRoot(
                f"{paths.root} (or {posixpath.dirname(paths.root)}) on {transport.destination or transport.name} is "
                "not yours alone: it belongs to another user, or others may write to it. Nothing was created.",
                hint=f"On the cluster: `ls -ld {posixpath.dirname(paths.root)} {paths.root}`; make both yours with "
                f"`chmod go-w` (or move them away if another user owns them).",
            )
        if rc == 74:  # claimed, but a file could not be moved in: nothing was submitted, take it all back
            transport.rmtree(paths.dir)
        raise RemoteCommandError(["upload", paths.dir], rc, "", before)
    after, _, recorded = after.partition(_RECORDED + " ")
    try:
        stdout = out.decode(errors="replace")
        if rc != 0:
            raise scheduler.refusal(RemoteCommandError([scheduler.submit_command], rc, stdout, after))
        return scheduler.parse_submission(stdout, after), recorded.strip()
    except BaseException:
        transport.rmtree(paths.dir)  # the scheduler took no job (or printed no id): nothing to keep
        raise


def _checks(request: StartRequest) -> tuple[str, ...]:
    """What the upload's command checks of the session's environments before it claims anything."""
    checks = request.envs.checks if request.envs is not None else ()
    return (*checks, f"j:{request.check_jupyter}") if request.check_jupyter else checks


def _replaceable(transport: Transport, scheduler: Scheduler, paths: SessionPaths) -> str:
    """The job id of the session holding the name if its scheduler says its job has ended ("" if it has not,
    did not answer, or the session is damaged). Always asked: a state.json that says "ended" is not enough,
    a requeued job's says so while it waits to run again in that directory."""
    from hpcjup.session.catalog import find_session

    try:
        found = find_session(transport, paths.name)
    except HpcjupError:
        return ""
    record = found.record
    if record is None:
        return ""  # damaged or still being created: never removed here (`hpcjup prune` decides)
    return "" if scheduler.status(transport, record.job_id).state.active else record.job_id


def _job_files(paths: SessionPaths, scheduler: Scheduler, request: StartRequest) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (content, mode) of everything the job needs, rendered for this session."""
    files = {name: (code, 0o600) for name, code in job_files().items()}
    setup = setup_lines(request.settings) if request.settings else []
    files[SETUP_FILE] = (
        (
            "\n".join(["# hpcjup: the session's environment, sourced by the job and its workers", *setup]) + "\n"
        ).encode(),
        0o600,
    )
    if request.dask is not None:
        from hpcjup.session.dasktls import make_credentials

        limit = request.resources.time
        cert, key = make_credentials(paths.name, time_to_seconds(limit) if limit else None)
        files[f"{DASK_DIR}/cert.pem"] = (cert, 0o600)
        files[f"{DASK_DIR}/key.pem"] = (key, 0o600)
    files[JOB_SCRIPT] = (render_job(paths, scheduler, request).encode(), 0o700)
    return files


def render_job(paths: SessionPaths, scheduler: Scheduler, request: StartRequest) -> str:
    """The job script of the session at `paths` (what `start` uploads, what `start --dry-run` shows)."""
    spec = JobSpec(
        name=paths.name,
        session_dir=paths.dir,
        command=_launcher_command(request, paths, scheduler),
        resources=request.resources,
        warn_seconds=_warn_seconds(request.resources.time_min or request.resources.time),
        setup=(f". {shlex.quote(paths.file(SETUP_FILE))}",),
    )
    return scheduler.render(spec)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[threading.Event]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs (the event says one came), so that a
    submission is never cut between the scheduler's accepting the job and the job's being recorded."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield threading.Event()
        return
    from hpcjup.session.hold import detach_signals

    with detach_signals() as event:
        yield event


_HOME_VAR = re.compile(r"\$HOME\b|\$\{HOME\}")


def resolve_workdir(workdir: str | None, home: str) -> str | None:
    """Jupyter's root directory: relative to the home directory, never inside hpcjup's session tree
    (`hpcjup prune` deletes that tree, and with it any notebook kept there)."""
    if workdir is None:
        return None
    home = home.rstrip("/")
    # $HOME is the home this start found: expanded here, so that the check below sees where the path goes
    # ($HOME/.hpcjup/x slipped past it). Any other $VAR is the job's: the launcher expands it, after the setup.
    expanded = _HOME_VAR.sub(lambda _: home, workdir)
    expanded = home + expanded[1:] if expanded == "~" or expanded.startswith("~/") else expanded
    if expanded.startswith("$"):
        return expanded
    path = posixpath.normpath(posixpath.join(home, expanded))
    own = posixpath.join(home, SESSIONS_DIR.split("/")[0])  # ~/.hpcjup
    if path == own or path.startswith(own + "/"):
        raise UsageError(
            f"--workdir {workdir} is inside hpcjup's own directory {own}, whose sessions `hpcjup prune` deletes.",
            hint="Choose a directory of your own, e.g. --workdir ~/notebooks.",
        )
    return path


def _python_command(request: StartRequest, paths: SessionPaths) -> str:
    """The command that runs the session's Python, shell-quoted, when it is more than `python` (a container
    runtime's prefix): worker groups and the notebook's scale-out jobs run theirs the same way. "" otherwise."""
    python = _launcher_python(request, paths)
    return shlex.join(python) if len(python) > 1 else ""


def _record_python(request: StartRequest) -> str:
    """session.json's `python`: where Dask's workers run (worker groups too): the default kernel's Python with
    --env/--kernel, the server env's on a bare cluster, else the `python` setting."""
    if request.envs is not None:
        return request.envs.dask_python or request.envs.server_python
    return request.python


def _launcher_python(request: StartRequest, paths: SessionPaths) -> list[str]:
    """The argv prefix that runs the launcher: the server env's Python, else as the settings say."""
    if request.envs is not None:
        return [request.envs.server_python]
    return launcher_python(request.settings, paths.home) if request.settings else [request.python]


def _launcher_command(request: StartRequest, paths: SessionPaths, scheduler: Scheduler) -> list[str]:
    python = _launcher_python(request, paths)
    command = [*python, paths.launcher, "--session-dir", paths.dir, "--ready-timeout", str(request.ready_timeout)]
    if len(python) > 1:
        command += ["--python-command", shlex.join(python)]
    if request.envs is not None:
        for name, kernel in request.envs.kernels:  # the first is the default kernel
            command += ["--kernel", f"{name}={kernel}"]
        if request.envs.dask_python:
            command += ["--dask-python", request.envs.dask_python]
    if request.workdir:
        command += ["--workdir", request.workdir]
    if scheduler.bind_address:
        command += ["--bind", scheduler.bind_address]
    if request.socket:
        command += ["--socket"]
    if request.idle_timeout:
        command += ["--idle-timeout", str(request.idle_timeout)]
    dask = request.dask
    if dask is not None:
        command += ["--dask"]
        command += ["--workers", str(dask.workers)] if dask.workers is not None else []
        command += ["--worker-cores", str(dask.worker_cores)] if dask.worker_cores else []
        command += ["--worker-memory", dask.worker_memory] if dask.worker_memory else []
        if request.resources.time:  # workers retire cleanly a minute before the walltime warning
            lifetime = (
                time_to_seconds(request.resources.time)
                - (_warn_seconds(request.resources.time_min or request.resources.time) or 0)
                - 60
            )
            command += ["--lifetime", str(max(60, lifetime))]
    return command


def _warn_seconds(time_limit: str | None) -> int | None:
    """How long before the limit the job wants SIGUSR1 to shut down cleanly."""
    if time_limit is None:
        return _WARN_SECONDS
    return max(30, min(_WARN_SECONDS, time_to_seconds(time_limit) // 4))

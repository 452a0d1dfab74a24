"""Create a session on the cluster: its private directory, the launcher, the job script, the job.

This module decides (the name, a replaceable ended session, a changed host, Ctrl-C, the record); the files are
jobscript.py's, the remote command that claims the name and submits is claim.py's, the request request.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import re
import threading
from collections.abc import Callable, Iterator

from hpcjup import __version__
from hpcjup.errors import HpcjupError, SubmitError, UsageError
from hpcjup.schedulers.base import Scheduler
from hpcjup.session.claim import JOB_ID_SLOT, RECORD_TEMPLATE, HostChanged, upload_and_submit
from hpcjup.session.jobscript import python_command, record_python, session_files
from hpcjup.session.layout import SESSIONS_DIR, SessionPaths, check_name, new_name
from hpcjup.session.record import SessionRecord, now_iso
from hpcjup.session.request import StartRequest
from hpcjup.transport.base import Transport


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
            except HostChanged:
                if relearn is None or attempt:
                    need = f"`{scheduler.commands[0]}` is not on the PATH" if scheduler.commands else "it changed"
                    raise SubmitError(
                        f"{transport.host} is not as the last start found it: its home "
                        f"directory is not {transport.home()}, or {need}.",
                        hint="Run the command again; `hpcjup doctor` checks the host.",
                    ) from None
                scheduler = relearn()
                asked.check(scheduler)
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
        host=transport.host,
        scheduler=scheduler.name,
        job_id=job_id,
        created_at=created_at,
        resources=request.resources.to_dict(),
        workdir=request.workdir,
        idle_timeout=request.idle_timeout or None,
        python=record_python(request, paths),
        python_command=python_command(request, paths, scheduler),
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
        files = session_files(paths, scheduler, request)
        template = _record(transport, scheduler, request, paths, created_at, JOB_ID_SLOT)
        files[RECORD_TEMPLATE] = (template.to_json(), 0o600)
        replace = ""
        for attempt in range(2):
            if interrupted.is_set():
                raise KeyboardInterrupt  # nothing submitted yet: nothing to take back
            submitted = upload_and_submit(transport, scheduler, paths, files, replace, _checks(request))
            if submitted is not None:
                return paths, *submitted
            if request.name is None:
                break
            if attempt == 0:
                replace = _replaceable(transport, scheduler, paths)
        if request.name is not None:
            raise UsageError(
                f"Session name {request.name!r} is in use on {transport.host}.",
                hint=f"Attach with `hpcjup attach {request.name}`, stop it with `hpcjup stop {request.name}`, "
                "or choose another --name (`hpcjup prune` removes ended and damaged sessions).",
            )
    raise HpcjupError("Could not find a free session name.", hint="Pass --name.")


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


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[threading.Event]:
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs (the event says one came), so that a
    submission is never cut between the scheduler's accepting the job and the job's being recorded."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield threading.Event()
        return
    from hpcjup.session.holding import detach_signals

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

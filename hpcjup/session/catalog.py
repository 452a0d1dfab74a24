"""Find sessions on a host: the cluster's session directories are the source of truth.

Every session's session.json and state.json come back in one remote command (a tar stream), so
listing costs the same whatever the number of sessions. A directory whose files do not parse is
kept as a damaged session (with the reason) instead of breaking the listing of all the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hpcjup.errors import DamagedDocument, SessionNotFound
from hpcjup.job import STATE_FILE, USAGE_FILE
from hpcjup.job.contract import GROUPS_FILE
from hpcjup.session.groups import JOBS_FILE, ids_in
from hpcjup.session.groupstatus import ADAPTIVE_FILE, adaptive_status
from hpcjup.session.layout import NAME, RECORD_FILE, SESSIONS_DIR, SessionPaths, check_name
from hpcjup.session.record import JobReport, SessionRecord
from hpcjup.transport.base import Transport

#: A directory without session.json younger than this may be a `start` still uploading: leave it be.
STARTING_GRACE = 600.0


#: `prune`'s removal, on the cluster, in one command: after the root and the grace in minutes, triples NAME JOB
#: KIND. Each under the lock a `start` takes to reuse an ended session's name (claim.py's script), and only if
#: the directory is still what `prune` decided on: "ended", session.json still names JOB (a start may have
#: reused the name since); "new", still no session.json and older than the grace by the cluster's own clock
#: (the laptop's may be skewed); "damaged", as it was. Prints "removed NAME" for each directory removed.
REMOVE_SCRIPT = r"""
root=$1 grace=$2; shift 2
while [ $# -ge 3 ]; do
    name=$1 job=$2 kind=$3; shift 3
    dir=$root/$name lock=$root/.lock-$name
    mkdir -- "$lock" 2>/dev/null || continue
    case $kind in
    ended) grep -qF "\"job_id\": \"$job\"" "$dir/session.json" 2>/dev/null ;;
    new) [ ! -e "$dir/session.json" ] && [ -n "$(find "$dir" -maxdepth 0 -mmin "+$grace" 2>/dev/null)" ] ;;
    *) true ;;
    esac && rm -rf -- "$dir" && echo "removed $name"
    rmdir -- "$lock"
done
"""


@dataclass(frozen=True)
class SessionDir:
    """One session directory as read from the host: its record and report, or why they cannot be used.
    (Named `Found` before: what a scan found. The overview turns each into a SessionView or DamagedView.)"""

    paths: SessionPaths
    record: SessionRecord | None
    report: JobReport | None
    problem: str | None = None  # set when record is None: why the session is damaged
    mtime: float = 0.0  # the directory's modification time
    has_record_file: bool = True  # False: no session.json at all (yet)
    worker_ids: tuple[str, ...] = ()  # the worker jobs it recorded (groups.json, dask/jobs)
    usage: bytes | None = None  # usage.json as read (for `prune` to archive the figures it is about to delete)
    worker_groups: tuple[tuple[str, dict[str, object]], ...] = ()  # adaptive groups' figures (dask/adaptive.json)

    @property
    def damaged(self) -> bool:
        return self.record is None

    @property
    def maybe_starting(self) -> bool:
        """No session.json yet, and recent: perhaps another `start` is creating it right now (it writes
        session.json last, whole, so a broken one is never a start in progress)."""
        return not self.has_record_file and self.report is None and time.time() - self.mtime < STARTING_GRACE


def scan_sessions(transport: Transport, name: str | None = None) -> list[SessionDir]:
    """Every session directory on the host (or just `name`), oldest first, damaged ones included."""
    where = SESSIONS_DIR if name is None else f"{SESSIONS_DIR}/{check_name(name)}"
    wanted = [
        RECORD_FILE,
        STATE_FILE,
        USAGE_FILE,
        GROUPS_FILE,
        JOBS_FILE.rsplit("/", 1)[-1],
        ADAPTIVE_FILE.rsplit("/", 1)[-1],
    ]
    entries = transport.read_tree(where, wanted, depth=3 if name is None else 2)
    home = transport.home()
    dirs: dict[str, float] = {}
    files: dict[tuple[str, str], bytes] = {}
    for entry in entries:
        parts = entry.path.split("/") if name is None else [name, *entry.path.split("/")]
        if len(parts) == 1 and entry.data is None:
            dirs[parts[0]] = entry.mtime
        elif len(parts) in (2, 3) and entry.data is not None:
            files[(parts[0], "/".join(parts[1:]))] = entry.data
    if name is not None and entries:
        dirs.setdefault(name, 0.0)
    found = [_found(SessionPaths(home, d), files, mtime) for d, mtime in dirs.items() if NAME.fullmatch(d)]
    return sorted(found, key=lambda f: (f.record.created_at if f.record else "", f.paths.name))


def _found(paths: SessionPaths, files: dict[tuple[str, str], bytes], mtime: float) -> SessionDir:
    report: JobReport | None = None
    problem: str | None = None
    raw_state = files.get((paths.name, STATE_FILE))
    if raw_state is not None:
        try:
            report = JobReport.from_json(raw_state)
        except DamagedDocument as exc:
            problem = exc.message
    raw_record = files.get((paths.name, RECORD_FILE))
    if raw_record is None:
        return SessionDir(paths, None, report, "no session.json (an interrupted start?)", mtime, has_record_file=False)
    try:
        record = SessionRecord.from_json(raw_record)
    except DamagedDocument as exc:
        return SessionDir(paths, None, report, exc.message, mtime)
    if record.name != paths.name:
        return SessionDir(paths, None, report, f"session.json names another session ({record.name!r})", mtime)
    workers = ids_in(files.get((paths.name, GROUPS_FILE)), files.get((paths.name, JOBS_FILE)))
    usage = files.get((paths.name, USAGE_FILE))
    groups = tuple(adaptive_status(files.get((paths.name, ADAPTIVE_FILE))).items())
    return SessionDir(
        paths, record, report, problem, mtime, worker_ids=tuple(workers), usage=usage, worker_groups=groups
    )


def find_session(transport: Transport, name: str) -> SessionDir:
    """The session called `name` (perhaps damaged); SessionNotFound lists the known ones."""
    matches = scan_sessions(transport, name)
    if matches:
        return matches[0]
    known = [f.paths.name for f in scan_sessions(transport)]
    raise SessionNotFound(
        f"No session {name!r} on {transport.host}.",
        hint=("Known sessions: " + ", ".join(known))
        if known
        else "There are no sessions there; start one with `hpcjup start`.",
    )

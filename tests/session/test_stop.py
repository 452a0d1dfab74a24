"""`stop` of a session whose scheduler did not answer (UNKNOWN) changes nothing: no cancel, no secret removed."""

from __future__ import annotations

import os
from pathlib import Path

from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord
from hpcjup.session.stop import stop_sessions
from hpcjup.session.views import SessionView
from tests.schedulers.test_job_ids import ScriptedTransport

NO_CONTROLLER = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def _view(name: str, state: JobState, reason: str | None = None) -> SessionView:
    record = SessionRecord(name, "h", "slurm", "42", "2026-01-01T00:00:00+00:00")
    return SessionView(record, SessionPaths("/home/u", name), JobStatus("42", state, reason=reason), None, None)


class NoWatch(ScriptedTransport):
    def start_process(self, argv: object) -> object:  # type: ignore[override]
        raise AssertionError(f"a remote command was started: {argv}")


def test_an_unanswered_session_is_left_as_it_is() -> None:
    """It was: `scancel` of a "pending" job, its token, connection.json and Dask key removed, "shut down cleanly"."""
    transport = NoWatch()
    [outcome] = stop_sessions(transport, [_view("lab", JobState.UNKNOWN, NO_CONTROLLER)])
    assert transport.argvs == []
    assert (outcome.stopped, outcome.graceful, outcome.state, outcome.reason) == (
        False,
        False,
        "UNKNOWN",
        NO_CONTROLLER,
    )


def test_the_cleanup_outlives_a_dropped_connection_and_keeps_the_grace(tmp_path: Path) -> None:
    """As the watcher runs them (one sh: `eval "$before"`, the watcher, `eval "$after"`), with the laptop gone at
    once: stdout is a closed pipe (SIGPIPE at the first write) and stdin at its end. The cleanup waits for the
    launcher until the grace is over, then runs every line (it ran at once and died after its first line)."""
    import subprocess
    import time

    from hpcjup.session.stop import surviving

    state, marks = tmp_path / "state.json", tmp_path / "marks"
    state.write_text('{"state": "running"}')
    after = f"echo hpcjup-killed 42; echo first >> {marks}; echo hpcjup-cancelled 43; echo second >> {marks}"
    before, after = surviving("echo asked", after, [str(state)], grace=3)
    read, write = os.pipe()
    os.close(read)  # the laptop is gone: every write to stdout is SIGPIPE
    started = time.monotonic()
    argv = ["sh", "-c", 'eval "$1"; cat >/dev/null; eval "$2"', "sh", before, after]
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=write, timeout=30)
    os.close(write)
    assert time.monotonic() - started >= 2.5, "the grace period was kept"
    assert marks.read_text().split() == ["first", "second"]


def test_the_cleanup_goes_ahead_at_once_when_the_launcher_has_ended(tmp_path: Path) -> None:
    import subprocess
    import time

    from hpcjup.session.stop import surviving

    state, marks = tmp_path / "state.json", tmp_path / "marks"
    state.write_text('{"state": "ended", "reason": "stopped"}')
    before, after = surviving("", f"echo done >> {marks}", [str(state)], grace=30)
    started = time.monotonic()
    subprocess.run(["sh", "-c", 'eval "$1"; eval "$2"', "sh", before, after], stdin=subprocess.DEVNULL, timeout=30)
    assert time.monotonic() - started < 5 and marks.read_text() == "done\n"

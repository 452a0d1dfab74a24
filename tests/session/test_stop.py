"""`stop` of a session whose scheduler did not answer (UNKNOWN) changes nothing: no cancel, no secret removed."""

from __future__ import annotations

from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.session.layout import SessionPaths
from hpcjup.session.overview import SessionView
from hpcjup.session.record import SessionRecord
from hpcjup.session.stop import stop_sessions
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

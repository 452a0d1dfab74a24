"""Which sessions use an environment (session/envuse.py): the question `env ls`, `env rm` and `prune --envs` ask,
and the function envs/catalog.py's `remove` and `prune` receive (no cluster)."""

from __future__ import annotations

from hpcjup.schedulers.base import JobState, JobStatus
from hpcjup.session.envuse import in_use, users
from hpcjup.session.layout import SessionPaths
from hpcjup.session.record import SessionRecord
from hpcjup.session.views import SessionView, View

ROOT = "/home/u/.hpcjup/envs"


def _view(name: str, state: JobState, env: str) -> SessionView:
    record = SessionRecord(name, "h", "slurm", "7", "2026-12-01T00:00:00+00:00", envs=[f"{ROOT}/{env}"])
    return SessionView(record, SessionPaths("/home/u", name), JobStatus("7", state), None, None)


def test_only_running_or_pending_sessions_use_an_environment() -> None:
    views: list[View] = [
        _view("running", JobState.RUNNING, "env-a"),
        _view("pending", JobState.PENDING, "env-a"),
        _view("ended", JobState.COMPLETED, "env-a"),
        _view("other", JobState.RUNNING, "env-ab"),
    ]
    assert users(views, f"{ROOT}/env-a") == ["running", "pending"]
    assert users(views, f"{ROOT}/env-b") == []


def test_in_use_asks_the_same_question_of_a_path() -> None:
    views: list[View] = [_view("lab", JobState.RUNNING, "env-a")]
    check = in_use(views)
    assert check(f"{ROOT}/env-a") == users(views, f"{ROOT}/env-a") == ["lab"]
    assert check(f"{ROOT}/env-ab") == []

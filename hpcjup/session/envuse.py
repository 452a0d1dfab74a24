"""Whether a running session uses an environment: the one place that decides it.

`env ls`, `env rm` and `prune --envs` all ask `users`; the environment catalog (envs/catalog.py), a layer
below session/, receives the question as a plain function (`in_use`) and imports nothing of session/.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from hpcjup.session.views import SessionView, View


def users(views: list[View], path: str) -> list[str]:
    """The sessions, running or pending, that use the environment at `path` (SessionRecord.uses_env decides)."""
    return [
        view.paths.name
        for view in views
        if isinstance(view, SessionView) and view.active and view.record.uses_env(path)
    ]


def in_use(views: list[View]) -> Callable[[str], list[str]]:
    """`users` over these views, as envs.catalog's `remove` and `prune` take it: path -> the sessions using it."""
    return partial(users, views)

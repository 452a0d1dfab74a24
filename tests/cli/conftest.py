"""Fixtures for the CLI's end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.helpers import Foreground, run

HOST = ["--host", "minicluster"]


@pytest.fixture(scope="module")  # per module: `stop --all` in another module must not end it
def lab(minicluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One running session shared by the read-only checks (and the browser test)."""
    from tests.cluster.fixtures import make_laptop_env

    env = make_laptop_env(minicluster, tmp_path_factory.mktemp("laptop"))
    auths_before = minicluster.auth_count()
    fg = Foreground(["start", *HOST, "--partition", "booster", "--time", "30", "--no-browser", "--json"], env)
    assert "session" in fg.info, f"start failed: {fg.info}"
    try:
        yield {**fg.info, "env": env, "fg": fg, "auths": minicluster.auth_count() - auths_before}
    finally:
        run(["stop", fg.info["session"], *HOST], env)
        fg.kill()

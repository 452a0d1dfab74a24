"""`--workdir` with variables, on the real mini-cluster: they are the cluster's, expanded there, and the
guard against working inside hpcjup's own session tree sees the expanded path."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.cli.helpers import http_get, run

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]


@pytest.mark.parametrize("spelt", ["$HOME/{dir}", "${{HOME}}/{dir}", "/home/${{USER}}/{dir}", "/home/$LOGNAME/{dir}"])
def test_workdir_variables_are_the_clusters(minicluster: Any, laptop_env: dict[str, str], spelt: str) -> None:
    directory = f"wd-{uuid.uuid4().hex[:6]}"
    made = minicluster.run_as_user(["sh", "-c", f"mkdir -p ~/{directory} && touch ~/{directory}/marker.txt"])
    assert made.returncode == 0, made.stderr
    name = f"wd-{uuid.uuid4().hex[:6]}"
    workdir = spelt.format(dir=directory)  # as a user writes it in single quotes: the laptop's shell leaves it
    started = run(["start", *HOST, "-d", "--json", "--no-dask", "--name", name, "--workdir", workdir], laptop_env)
    try:
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        status, body = http_get(f"http://127.0.0.1:{info['local_port']}/api/contents/", info["token"])
        assert status == 200, body[:300]
        assert "marker.txt" in [
            item["name"] for item in json.loads(body)["content"]
        ]  # Jupyter's root is that directory
    finally:
        run(["stop", name, *HOST], laptop_env)
        minicluster.run_as_user(["rm", "-rf", f"/home/hpcuser/{directory}"])


@pytest.mark.parametrize("spelt", ["$HOME/.hpcjup/notebooks", "${HOME}/.hpcjup", "$HOME/x/../.hpcjup/sessions"])
def test_workdir_in_the_session_tree_is_refused_after_expansion(
    minicluster: Any, laptop_env: dict[str, str], spelt: str
) -> None:
    before = {job["id"] for job in minicluster.active_jobs()}
    result = run(["start", *HOST, "--json", "--no-dask", "--workdir", spelt], laptop_env)
    assert result.returncode == 2, result.stderr
    assert "inside hpcjup's own directory" in result.stderr
    assert {job["id"] for job in minicluster.active_jobs()} <= before  # nothing was submitted

"""`start --build job` on the mini-cluster: the spec's environment is built in a Slurm job on a compute node before
the session's job is submitted, and the session then runs that env as its kernel (real uv, PyPI, Slurm, Jupyter)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import http_get, run, session_jobs
from tests.cli.test_start_env import HOST, ROOT, SESSIONS, _spec, env_of, start

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]


def test_start_with_build_job_builds_on_a_compute_node_then_uses_the_env(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, tmp_path: Path
) -> None:
    env = env_of(laptop_env)
    spec = _spec(tmp_path)
    first = start(env, "--build", "job", "--env", str(spec), "-n", "bj-a")
    assert first.returncode == 0, first.stderr[-3000:]
    # The laptop showed the build job and where the build ran, before the session's job.
    shown = re.search(r"build job (\d+) submitted", first.stderr)
    assert shown and re.search(r"building on node[12]", first.stderr), first.stderr[-3000:]
    assert first.stderr.index("building on node") < first.stderr.index("Job ")
    record = json.loads((SESSIONS / "bj-a" / "session.json").read_text())
    built = next(p for p in record["envs"] if p.startswith(f"/home/hpcuser/{ROOT}/env-"))
    log = Path(f"{built}.log").read_text()
    assert re.search(rf"^hpcjup: building \S+ on node[12] in job {shown.group(1)}$", log, re.M), log[:300]
    info = json.loads(first.stdout)
    status, body = http_get(info["url"].split("/lab")[0].rstrip("/") + "/api/kernelspecs", info.get("token"))
    assert status == 200 and "analysis" in json.loads(body)["kernelspecs"], body[:500]
    assert not list(Path(f"/home/hpcuser/{ROOT}").glob(".job-*"))  # the build job's directory went
    assert session_jobs(minicluster, ("bj-a",))  # the session's job runs; the build job is gone
    assert not [j for j in minicluster.active_jobs() if j["name"].startswith("hpcjup-env-")]
    assert run(["stop", "bj-a", *HOST], env, timeout=120).returncode == 0

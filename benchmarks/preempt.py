"""The preempted-session benchmark (issue 22): time from a requeued session job running again to the laptop's
same local URL answering, with no command by the user.

    flock /tmp/hpcjup-cluster.lock python -m benchmarks.preempt [--runs 2]

Needs root on Debian (it brings the mini-cluster up itself, adds its preemption partitions and leaves it up,
see tests/cluster). Each run: `hpcjup start -d --preemptible -p preempt` from a fresh laptop; the neighbour's
urgent two-node job preempts it (GraceTime, SIGTERM, requeue) and is cancelled once the job pends again; Slurm
holds the requeued job cred_expire seconds (BeginTime; 120 by default, 10 in the mini-cluster), so a run
takes one to three and a half minutes. Measured: the moment
squeue first shows the job RUNNING again (polled every 0.1 s) to the first HTTP 200 with the token on the same
local URL (polled every 0.05 s), and its parts: JupyterLab's own start on the node (connection.json's started_at
to ready_at) and the detection (connection.json written to the URL answering). Prints a Markdown table; asserts
nothing. Sessions are named bench-pre-* and stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Report, add_save_option  # noqa: E402
from tests.cli.helpers import hpcjup_argv, http_get  # noqa: E402
from tests.cluster import neighbour  # noqa: E402
from tests.cluster.files import PREEMPTIBLE  # noqa: E402
from tests.cluster.fixtures import make_laptop_env  # noqa: E402
from tests.cluster.minicluster import MiniCluster, wait_until  # noqa: E402

HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
PREFIX = f"bench-pre-{secrets.token_hex(2)}"


def hpcjup(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*hpcjup_argv(), *args], env=env, capture_output=True, text=True, timeout=timeout)


def job_state(cluster: MiniCluster, job_id: str) -> str:
    return cluster.slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").stdout.strip()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def one_run(cluster: MiniCluster, env: dict[str, str], name: str) -> dict[str, float]:
    """Start, preempt, and time the way back of one preemptible session."""
    argv = ["start", *HOST, "-d", "--json", "--no-dask", "--idle-timeout", "0", "--name", name, "--preemptible"]
    started = hpcjup(env, *argv, "-p", PREEMPTIBLE, "--time", "30")
    if started.returncode != 0:
        raise RuntimeError(f"start failed: {started.stderr}")
    info = json.loads(started.stdout)
    url, job = f"http://127.0.0.1:{info['local_port']}/api/status", info["job_id"]
    state = SESSIONS / name / "state.json"
    with neighbour.urgent_job(cluster.conf):
        wait_until(lambda: json.loads(state.read_text())["state"] == "ended", 180, "the preempted run's end")
        wait_until(lambda: job_state(cluster, job) == "PENDING", 60, "the requeue")
    wait_until(lambda: job_state(cluster, job) == "RUNNING", 400, "the job to run again", interval=0.1)
    running = time.time()
    wait_until(lambda: http_get(url, info["token"], timeout=2)[0] == 200, 180, "the URL to answer", interval=0.05)
    answered = time.time()
    conn = json.loads((SESSIONS / name / "connection.json").read_text())
    return {
        "back": answered - running,
        "jupyter": epoch(conn["ready_at"]) - epoch(conn["started_at"]),
        "detection": answered - epoch(conn["ready_at"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    add_save_option(parser)
    args = parser.parse_args()
    cluster = MiniCluster()
    cluster.up()
    cluster.ensure_preemption()
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pre-") as tmp:
        env = make_laptop_env(cluster, Path(tmp) / "laptop")
        names = [f"{PREFIX}-{i}" for i in range(args.runs)]
        try:
            for name in names:
                results.append(one_run(cluster, env, name))
                print(f"{name}: {results[-1]}", file=sys.stderr)
        finally:
            for name in names:
                with contextlib.suppress(Exception):
                    hpcjup(env, "stop", name, *HOST)
    with Report("preempt", save=args.save) as out:
        out("A preempted `--preemptible` session (Slurm requeue), from its job running again to the same local URL:\n")
        out(table(results))
    return 0


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: median (min-max) of each figure over the runs."""

    def cell(key: str) -> str:
        values = [r[key] for r in results]
        return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"

    rows = [
        f"| figure (n = {len(results)}) | median (min-max) |",
        "| --- | --- |",
        f"| job runs again -> the same local URL answers (HTTP 200, same token) | {cell('back')} |",
        f"| of which JupyterLab's start on the node | {cell('jupyter')} |",
        f"| detection: connection.json written -> URL answers | {cell('detection')} |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark suite: figures for the targets in the design notes, printed as a table; asserts nothing.

    python -m benchmarks.run [--starts N] [--pending SECONDS] [--skip-tunnel]

Needs root on Debian (it brings the mini-cluster up itself, see tests/cluster). Measures:
time to URL broken down (submission, queue, Jupyter start on the node, detection), SSH
authentications per `start`, scheduler queries per minute while a job pends (the partition
is filled by a blocker job), 64 concurrent connections through one tunnel, CLI startup
against `python -c pass`, and (benchmarks/tunnel.py) tunnel throughput and round trip per
backend against `ssh -L`. The latency mode (figures at 0, 50 and 150 ms round trip, with
remote-command counts and jupyter-forward as the peer) is `python -m benchmarks.latency`.
The slow-filesystem mode (issue 21: an environment on a simulated parallel filesystem, in place, as a
SquashFS image in place, copied to node-local storage and mounted, and on local disk) is
`python -m benchmarks.slowfs`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.fixtures import make_laptop_env  # noqa: E402
from tests.cluster.minicluster import MiniCluster  # noqa: E402

HPCJUP = [sys.executable, "-m", "hpcjup"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")


def _iso(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def time_to_url(env: dict[str, str], cluster: MiniCluster, name: str) -> dict[str, float]:
    """One `start -d --json`, its phases from the CLI's stderr lines and the launcher's timestamps."""
    auths = cluster.auth_count()
    t0 = time.time()
    proc = subprocess.Popen(
        [*HPCJUP, "start", "--host", "minicluster", "--name", name, "--no-dask", "-d", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    submitted = None
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if line.startswith("Submitted job") and submitted is None:
            submitted = time.time()
    info = json.loads(proc.stdout.read())
    url_at = time.time()  # stdout is flushed when the URL answered; stderr closes right after (detach)
    proc.wait()
    state_doc = json.loads((SESSIONS / name / "connection.json").read_text())
    started, ready = _iso(state_doc["started_at"]), _iso(state_doc["ready_at"])
    subprocess.run([*HPCJUP, "stop", name, "--host", "minicluster"], env=env, capture_output=True)
    return {
        "submission": (submitted or url_at) - t0,
        "queue": started - (submitted or t0),
        "jupyter_start": ready - started,
        "detection_and_tunnel": url_at - ready,
        "total": url_at - t0,
        "auths": cluster.auth_count() - auths,
        "local_port": info["local_port"],
    }


def pending_queries(env: dict[str, str], cluster: MiniCluster, seconds: int) -> tuple[int, int]:
    """(queries in the first minute, queries per minute after it) while the partition is full."""
    blocker = cluster.run_as_user(
        ["sbatch", "--parsable", "-N", "2", "--exclusive", "-p", "batch", "--wrap", "sleep 3600"]
    ).stdout.strip()
    try:
        proc = subprocess.Popen(
            [
                *HPCJUP,
                "-v",
                "start",
                "--host",
                "minicluster",
                "--name",
                "benchpend",
                "--no-dask",
                "-p",
                "batch",
                "--timeout",
                f"{seconds}s",
                "--no-browser",
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        t0, times = time.time(), []
        assert proc.stderr is not None
        for line in proc.stderr:
            if "hpcjup.remote: squeue" in line or "hpcjup.remote: sacct" in line:
                times.append(time.time() - t0)
        proc.wait()
    finally:
        cluster.slurm("scancel", blocker)
    first = sum(1 for t in times if t < 60)
    later = [t for t in times if t >= 60]
    span = max(1e-9, (seconds - 60) / 60)
    return first, round(len(later) / span)


def concurrent(port: int, token: str, n: int = 64) -> tuple[int, float]:
    """(successes, seconds) for n simultaneous GET /api/status through one tunnel."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"})

    def one(_: int) -> bool:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status == 200

    t0 = time.time()
    with ThreadPoolExecutor(n) as pool:
        ok = sum(pool.map(one, range(n)))
    return ok, time.time() - t0


def startup(runs: int = 15) -> tuple[float, float, float]:
    """Median wall seconds of `hpcjup --help`, `hpcjup --version` and `python -c pass`."""

    def median(argv: list[str]) -> float:
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=True)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    return median([*HPCJUP, "--help"]), median([*HPCJUP, "--version"]), median([sys.executable, "-c", "pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--pending", type=int, default=150, help="seconds to keep a job pending")
    parser.add_argument("--skip-tunnel", action="store_true")
    args = parser.parse_args()
    cluster = MiniCluster()
    cluster.up()
    env = make_laptop_env(cluster, Path(tempfile.mkdtemp(prefix="hpcjup-bench-")))
    rows: list[tuple[str, str, str]] = []

    runs = [time_to_url(env, cluster, f"bench{i}") for i in range(args.starts)]
    for key, label, target in (
        ("submission", "submission: invoked -> job accepted", "<= 1 s"),
        ("queue", "queue (idle mini-cluster)", "-"),
        ("jupyter_start", "Jupyter start on the node", "-"),
        ("detection_and_tunnel", "detection: Jupyter ready -> URL answers", "<= 0.5 s"),
        ("total", "time to URL", "-"),
    ):
        values = [r[key] for r in runs]
        rows.append(
            (
                label,
                f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})",
                target,
            )
        )
    rows.append(("SSH authentications per start", ", ".join(str(r["auths"]) for r in runs), "exactly 1"))

    env2 = dict(env)
    info = json.loads(
        subprocess.run(
            [*HPCJUP, "start", "--host", "minicluster", "--name", "benchconc", "--no-dask", "-d", "--json"],
            env=env2,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    ok, secs = concurrent(info["local_port"], info["token"])
    subprocess.run([*HPCJUP, "stop", "benchconc", "--host", "minicluster"], env=env2, capture_output=True)
    rows.append(("64 concurrent GET /api/status, one tunnel", f"{ok}/64 ok in {secs:.2f} s", "64, none lost"))

    first, later = pending_queries(env, cluster, args.pending)
    rows.append(
        (
            "scheduler queries while pending",
            f"{first} in the first minute, {later}/min after",
            "<= 6/min after the first minute",
        )
    )

    helptime, version, bare = startup()
    rows.append(
        (
            "`hpcjup --help` / `--version`",
            f"{helptime * 1000:.0f} ms / {version * 1000:.0f} ms (python -c pass: {bare * 1000:.0f} ms, "
            f"ratio {version / bare:.1f}x)",
            "<= 150 ms",
        )
    )

    width = max(len(r[0]) for r in rows)
    print(f"\nhpcjup benchmarks on {os.uname().nodename} ({os.cpu_count()} cores), {datetime.date.today()}")
    for label, value, target in rows:
        print(f"  {label:<{width}}  {value}   [target {target}]")
    if not args.skip_tunnel and (ROOT / "benchmarks" / "tunnel.py").exists():
        print("\nTunnel throughput and round trip (benchmarks/tunnel.py):", flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tunnel.py")], check=False)


if __name__ == "__main__":
    main()

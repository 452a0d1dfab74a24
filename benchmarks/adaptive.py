"""The adaptive benchmark: a dask.array computation on an adaptive, preemptible worker group, with and without a
worker job cancelled every 30 s (the evaluation's preemptive-jobqueue scenario), same run.

    flock /tmp/hpcjup-cluster.lock python -m benchmarks.adaptive [--runs 1] [--chunks 600] [--task-seconds 0.3]

Needs root on Debian (it brings the mini-cluster up itself and leaves it up, see tests/cluster). One session with
`--worker-group batch:0-2x1:preemptible` (the session's own worker cannot run the group's tasks: they ask for the
group's resource). A notebook-like client (the cluster user, the session's Dask config) computes
`(x * 2 + 1).sum()` over `da.arange(N, chunks=N/chunks)`, each block held a little (--task-seconds), about
3.4 x chunks tasks (about 2,000 by default); its result must be N*N. With preemption a RUNNING worker job of the group is cancelled every
--every seconds (scancel: Slurm's preemption ends a job the same way once the grace time is over). Printed per
run: completion time, the result's correctness, tasks, tasks recomputed (a scheduler plugin sees a result
computed more than once: lost with its worker) and rescheduled (sent to a worker again: it was waiting or
running on one that left), jobs cancelled and jobs the loop saw lost.

With --bursts N, also the bursty notebook trace of issue 22 (2 minutes computing, 5 minutes thinking, N times),
time-scaled by --scale (default 0.15: 18 s computing, 45 s thinking) so that it fits one hold of the cluster lock:
a fixed group of the maximum (batch:2x1) against adaptive ones (batch:0-2x1), one per --idle value (adapt_idle in
real-trace time, scaled the same way). A computation is sized to take the scaled 2 minutes on the full group. The
group's RUNNING jobs are sampled every second; printed are the job-hours held, scaled back to the real trace (a
job is a node on a real cluster's group: node-hours) and their ratio to the fixed group's. With --save the
preemption runs go to benchmarks/results/adaptive.md and the trace to adaptive-trace.md. Asserts nothing;
sessions are named bench-adapt-* and stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Report, add_save_option  # noqa: E402
from tests.cluster.fixtures import make_laptop_env  # noqa: E402
from tests.cluster.minicluster import MiniCluster, wait_until  # noqa: E402

HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
NAME = f"bench-adapt-{secrets.token_hex(2)}"
REAL_COMPUTE, REAL_THINK = 120.0, 300.0  # issue 22's bursty notebook: 2 minutes computing, 5 minutes thinking
MAXIMUM = 2  # the group's maximum: jobs of one core (the mini-cluster has two nodes)

# Runs as the cluster user with the session's DASK_CONFIG: argv chunks, task seconds. Prints one JSON line.
NOTEBOOK = r"""
import json, sys, time
import dask, dask.array as da
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin

class Entries(SchedulerPlugin):
    name = "hpcjup-bench-entries"
    def __init__(self):
        self.entries, self.keys, self.computed = 0, set(), {}
    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            self.entries += 1
            self.keys.add(key)
        if start == "processing" and finish == "memory":  # a result computed (again, if counted before)
            self.computed[key] = self.computed.get(key, 0) + 1

chunks, hold = int(sys.argv[1]), float(sys.argv[2])
n = chunks * 2000
client = Client(timeout=60)
client.register_plugin(Entries())
def slow(block):
    time.sleep(hold)
    return block * 2 + 1
with dask.annotate(resources={"batch": 1}):
    x = da.arange(n, chunks=n // chunks, dtype="int64")
    total = x.map_blocks(slow).sum()
t0 = time.monotonic()
value = int(total.compute(optimize_graph=False))
seconds = time.monotonic() - t0
def figures(dask_scheduler):
    p = dask_scheduler.plugins["hpcjup-bench-entries"]
    return p.entries - len(p.keys), len(p.keys), sum(c - 1 for c in p.computed.values())
rescheduled, keys, recomputed = client.run_on_scheduler(figures)
client.unregister_scheduler_plugin("hpcjup-bench-entries")
print(json.dumps({"seconds": seconds, "correct": value == n * n, "tasks": keys, "recomputed": recomputed, "rescheduled": rescheduled}))
"""


def hpcjup(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpcjup", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def group_jobs(cluster: MiniCluster, state: str | None = None, session: str = NAME) -> list[str]:
    name = f"hpcjup+{session}+batch"
    return [j["id"] for j in cluster.active_jobs() if j["name"] == name and (state is None or j["state"] == state)]


def lost() -> int:
    try:
        return int(json.loads((SESSIONS / NAME / "dask/adaptive.json").read_text())["groups"]["batch"]["lost"])
    except (OSError, ValueError, KeyError):
        return 0


def notebook(session: str, chunks: int, hold: float) -> list[str]:
    config = SESSIONS / session / "dask/config"
    return ["env", f"DASK_CONFIG={config}", "python", "-c", NOTEBOOK, str(chunks), str(hold)]


def start(env: dict[str, str], session: str, group: str) -> None:
    options = ["--partition", "booster", "--workers", "1", "--time", "60", "--idle-timeout", "0", "-d"]
    started = hpcjup(env, "start", *HOST, "--name", session, *options, "--worker-group", group)
    if started.returncode != 0:
        sys.exit(f"start failed: {started.stderr.strip()}")


def trace(cluster: MiniCluster, env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """The bursty notebook, time-scaled: --bursts times a computation of the scaled 2 minutes, then the scaled 5
    minutes of nothing; the group's RUNNING jobs sampled every second (job-seconds held), for a fixed group of the
    maximum and an adaptive one per --idle value (its adapt_idle scaled too)."""
    think = REAL_THINK * args.scale
    chunks = max(2, round(REAL_COMPUTE * args.scale * MAXIMUM / args.task_seconds))
    figures: dict[str, Any] = {"scale": args.scale, "think": think, "chunks": chunks, "runs": {}}
    kinds = [("fixed", f"batch:{MAXIMUM}x1", None)]
    kinds += [(f"adaptive, adapt_idle {idle}", f"batch:0-{MAXIMUM}x1", idle) for idle in args.idle.split(",")]
    for number, (kind, group, idle) in enumerate(kinds):
        session = f"{NAME}-t{number}"
        kind_env = dict(env)
        if idle is not None:
            kind_env["HPCJUP_ADAPT_IDLE"] = f"{max(1, round(seconds_of(idle) * args.scale))}s"
        start(kind_env, session, group)
        held, stop = [0.0], threading.Event()
        sampler = threading.Thread(target=sample, args=(cluster, session, held, stop))
        sampler.start()
        computes = []
        t0 = time.monotonic()
        try:
            for _ in range(args.bursts):
                done = cluster.run_as_user(notebook(session, chunks, args.task_seconds), timeout=1800)
                computes.append(
                    json.loads(done.stdout.strip().splitlines()[-1])["seconds"] if done.returncode == 0 else None
                )
                time.sleep(think)
        finally:
            stop.set()
            sampler.join()
            hpcjup(env, "stop", session, *HOST)
        run = {"group": group, "job_seconds": held[0], "wall": time.monotonic() - t0, "computes": computes}
        figures["runs"][kind] = run
        print(f"trace, {kind}: {run}", file=sys.stderr, flush=True)
    return figures


def seconds_of(text: str) -> float:
    """'5m', '90s', '1h' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def sample(cluster: MiniCluster, session: str, held: list[float], stop: threading.Event) -> None:
    """Add the group's RUNNING jobs to held[0] every second until `stop`."""
    while not stop.wait(1.0):
        held[0] += len(group_jobs(cluster, "RUNNING", session))


def one_run(cluster: MiniCluster, args: argparse.Namespace, preempt: bool) -> dict[str, Any]:
    """One computation; with `preempt`, a running group job cancelled every args.every seconds meanwhile."""
    argv = notebook(NAME, args.chunks, args.task_seconds)
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(done=cluster.run_as_user(argv, timeout=1800)))
    lost_before, cancelled = lost(), 0
    thread.start()
    next_cut = time.monotonic() + args.every
    while thread.is_alive():
        thread.join(1)
        if preempt and time.monotonic() >= next_cut and thread.is_alive():
            running = group_jobs(cluster, "RUNNING")
            if running:
                cluster.run_as_user(["scancel", running[0]])
                cancelled += 1
            next_cut = time.monotonic() + args.every
    done = box["done"]
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-800:]}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "cancelled": cancelled, "lost": lost() - lost_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="runs of each kind (default 1)")
    parser.add_argument("--chunks", type=int, default=600, help="blocks of the array (~3.4 tasks each; default 600)")
    parser.add_argument("--task-seconds", type=float, default=0.3, help="each block's hold (default 0.3 s)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between cancellations (default 30)")
    parser.add_argument("--bursts", type=int, default=0, help="also the bursty trace: computations (default 0: none)")
    parser.add_argument("--scale", type=float, default=0.15, help="the trace's time scale (default 0.15)")
    parser.add_argument("--idle", default="5m", help="the adaptive groups' adapt_idle, real-trace time (5m; a,b,..)")
    parser.add_argument("--json-out", type=Path, help="also write every figure to this file")
    add_save_option(parser)
    args = parser.parse_args()

    cluster = MiniCluster()
    cluster.up()  # reuses a running cluster and never takes it down
    work = Path(tempfile.mkdtemp(prefix="hpcjup-bench-adaptive-"))
    env = {**make_laptop_env(cluster, work / "laptop"), "HPCJUP_ADAPT_IDLE": "30s"}
    results: dict[str, Any] = {"without": [], "with": [], "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        if args.runs:
            start(env, NAME, "batch:0-2x1:preemptible")
        for _ in range(args.runs):
            for kind, preempt in (("without", False), ("with", True)):
                results[kind].append(one_run(cluster, args, preempt))
                print(f"{kind} preemption: {results[kind][-1]}", file=sys.stderr, flush=True)
                wait_until(lambda: not group_jobs(cluster), 180, "the group to shrink to 0 between runs")
        if args.runs:
            hpcjup(env, "stop", NAME, *HOST)
        if args.bursts:
            results["trace"] = trace(cluster, env, args)
    finally:
        hpcjup(env, "stop", NAME, *HOST)
        shutil.rmtree(work, ignore_errors=True)
    if args.runs:  # the two kinds save apart: a run of one leaves the other's last figures on the site
        with Report("adaptive", save=args.save) as out:
            report(results, out)
    if args.bursts:
        with Report("adaptive-trace", save=args.save) as out:
            trace_report(results["trace"], out)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


def report(results: dict[str, Any], out: Callable[[str], None] = print) -> None:
    def median(kind: str, key: str) -> float | None:
        values = [float(r[key]) for r in results[kind] if key in r]
        return statistics.median(values) if values else None

    out("| run | completion (s) | correct | tasks | recomputed | rescheduled | jobs cancelled | jobs lost (loop) |")
    out("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("without", "with"):
        for r in results[kind]:
            if "error" in r:
                out(f"| {kind} preemption | failed: {r['error'][:120]} | | | | | | |")
                continue
            out(
                f"| {kind} preemption | {r['seconds']:.1f} | {r['correct']} | {r['tasks']} | {r['recomputed']} "
                f"| {r.get('rescheduled', '')} | {r['cancelled']} | {r['lost']} |"
            )
    a, b = median("without", "seconds"), median("with", "seconds")
    if a and b:
        out(f"\nCompletion with a worker job cancelled every 30 s: {b / a:.2f}x the time without (medians).")


def trace_report(trace: dict[str, Any], out: Callable[[str], None] = print) -> None:
    scale, runs = float(trace["scale"]), trace["runs"]
    out(
        f"Bursty trace at time scale {scale:g} ({REAL_COMPUTE * scale:.0f} s computing on the full group, "
        f"{trace['think']:.0f} s thinking, each repeated; adapt_idle scaled the same way); node-hours are the "
        "group's RUNNING job-seconds scaled back to the real trace (2 min / 5 min), one node per job."
    )
    out("\n| group | node-hours (real trace) | ratio to fixed | wall (s, scaled) | each computation (s, scaled) |")
    out("| --- | --- | --- | --- | --- |")
    fixed = next(iter(runs.values()))["job_seconds"]
    for kind, r in runs.items():
        times = ", ".join(f"{c:.1f}" if c is not None else "failed" for c in r["computes"])
        hours = r["job_seconds"] / scale / 3600
        ratio = f"{r['job_seconds'] / fixed:.2f}" if fixed else ""
        out(f"| {kind} ({r['group']}) | {hours:.3f} | {ratio} | {r['wall']:.0f} | {times} |")


if __name__ == "__main__":
    main()

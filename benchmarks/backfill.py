"""The backfill benchmark: time to a working URL on a busy cluster, with and without `--time-min`, same run.

    flock /tmp/hpcjup-cluster.lock python -m benchmarks.backfill [--runs 3] [--runs-without 1] [--wait 90] [--rev HEAD]

Needs root on Debian (it brings the mini-cluster up itself and leaves it up, see tests/cluster). The
scenario of issue 15: node1 busy with an exclusive job, a 2-node exclusive job queued behind it (it
reserves both nodes for when node1 frees up; the harness has one cluster user, so both are that
user's). Then `hpcjup start -d --json -p batch -t 30` is timed to a URL that answers over HTTP,
with `--time-min 5` (Slurm's backfill may start it on node2 now, with a shorter limit) and without
(it would wait for node1's job and then the 2-node job, about 20 minutes: hpcjup's own `--timeout`
caps that wait, and the figure is "did not start within N s", with Slurm's expected start). Prints
a Markdown table with medians, the limit granted (from start's "shortened" message and `ls --json`)
and the ratio; asserts nothing. Every job and session it makes is named bench-bf-* and removed at
the end, on failure or Ctrl-C too. It measures a commit (default HEAD) exported to a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import answers, cli, close_masters, snapshot  # noqa: E402
from benchmarks.report import Report, add_save_option  # noqa: E402
from hpcjup.ui.tables import duration  # noqa: E402
from tests.cluster import procs  # noqa: E402
from tests.cluster.fixtures import make_laptop_env  # noqa: E402
from tests.cluster.minicluster import MiniCluster, wait_until  # noqa: E402

HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
PREFIX = f"bench-bf-{secrets.token_hex(2)}"
QUICK = ["--no-dask", "--idle-timeout", "0", "--no-browser", "-p", "batch"]
SHORTENED = re.compile(r"shortened the time limit to (\S+)")
TIMEOUT_EXIT = 7  # hpcjup's ExitCode.TIMEOUT: still pending at --timeout (the job is cancelled)


# -- the busy cluster ---------------------------------------------------------------------------


def all_jobs(cluster: MiniCluster) -> list[dict[str, str]]:
    """Every user's jobs that have not ended: id, name, state, reason, time left."""
    out = cluster.slurm("squeue", "-h", "-o", "%i|%j|%T|%r|%L").stdout
    keys = ("id", "name", "state", "reason", "left")
    return [dict(zip(keys, line.split("|"), strict=False)) for line in out.splitlines() if line.strip()]


def wait_for_idle(cluster: MiniCluster, timeout: float = 60) -> None:
    """Both nodes free (jobs of earlier runs may still be completing); else say whose jobs are in the way."""
    try:
        wait_until(lambda: not all_jobs(cluster), timeout, "the cluster to be idle", interval=0.5)
    except RuntimeError:
        jobs = ", ".join(f"{j['id']} ({j['name']}, {j['state']})" for j in all_jobs(cluster))
        raise RuntimeError(
            f"The scenario needs an idle cluster, but these jobs are active: {jobs}. "
            "Cancel them (scancel ID) or wait for them, then run again."
        ) from None


def sbatch(cluster: MiniCluster, name: str, minutes: int, *extra: str) -> str:
    """An exclusive job of the cluster user that sleeps through its limit; its id."""
    argv = ["sbatch", "--parsable", "-p", "batch", "-t", str(minutes), "--exclusive", "-J", name, *extra]
    result = cluster.run_as_user([*argv, "--wrap", f"sleep {minutes * 60}"])
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]


def make_busy(cluster: MiniCluster, minutes: int) -> tuple[str, str]:
    """node1 busy, a 2-node job pending behind it: (busy id, queued id)."""
    busy = sbatch(cluster, f"{PREFIX}-busy", minutes, "-N1", "-w", "node1")
    wait_until(lambda: job(cluster, busy).get("state") == "RUNNING", 30, "the busy job to run", interval=0.3)
    queued = sbatch(cluster, f"{PREFIX}-queued", minutes, "-N2")
    wait_until(lambda: job(cluster, queued).get("state") == "PENDING", 30, "the 2-node job to pend", interval=0.3)
    return busy, queued


def scheduler_parameters(cluster: MiniCluster) -> str | None:
    """slurm.conf's SchedulerParameters (bf_interval decides how soon backfill starts a job), None if unset."""
    for line in cluster.slurm("scontrol", "show", "config").stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "SchedulerParameters":
            return None if value.strip() == "(null)" else value.strip()
    return None


def job(cluster: MiniCluster, job_id: str) -> dict[str, str]:
    """One active job's row ({} once it ended)."""
    return next((j for j in all_jobs(cluster) if j["id"] == job_id), {})


def scenario_holds(cluster: MiniCluster, busy: str, queued: str) -> str | None:
    """Why the busy cluster is not as it should be, or None."""
    if job(cluster, busy).get("state") != "RUNNING":
        return f"the busy job {busy} no longer runs"
    if job(cluster, queued).get("state") != "PENDING":
        return f"the 2-node job {queued} no longer pends"
    return None


# -- the measurements ---------------------------------------------------------------------------


def queue_wait(cluster: MiniCluster, job_id: str) -> float:
    """Seconds from submission to start, as Slurm recorded them (whole seconds); NaN if it cannot say."""
    out = cluster.slurm("squeue", "-h", "-j", job_id, "-o", "%V|%S").stdout.strip()
    try:
        submitted, started = (datetime.datetime.fromisoformat(t) for t in out.split("|"))
    except ValueError:
        return float("nan")
    return (started - submitted).total_seconds()


def with_time_min(env: dict[str, str], cluster: MiniCluster, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One `start --time-min`: seconds to an answering URL, Slurm's queue wait, the limit granted; stopped after."""
    argv = ["start", *HOST, *QUICK, "-t", str(args.time), "--time-min", str(args.time_min), "-d", "--json", "-n", name]
    run = cli(env, argv, timeout=args.wait + 120)
    if run.returncode != 0:
        raise RuntimeError(f"start --time-min failed ({run.returncode}):\n{run.stderr[-3000:]}")
    info = json.loads(run.stdout)
    if not answers(info["url"]):
        raise RuntimeError(f"start printed {info['url']}, which does not answer")
    queue = queue_wait(cluster, str(info["job_id"]))
    rows = json.loads(cli(env, ["ls", *HOST, "--json"]).stdout)["sessions"]
    row: dict[str, Any] = next((r for r in rows if r["session"] == name), {})
    said = SHORTENED.search(run.stderr)
    stop(env, cluster, name)
    return {
        "url": run.seconds,
        "queue": queue,
        "shortened": said.group(1) if said else None,
        "time_limit": row.get("time_limit"),
        "time_left": row.get("time_left"),
        "nodes": info.get("node") or row.get("node_list"),
    }


def without_time_min(env: dict[str, str], cluster: MiniCluster, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One `start -t 30` capped by `--timeout`: None seconds if it never started, and Slurm's expected start."""
    expected: dict[str, Any] = {}

    def ask_slurm() -> None:
        out = cluster.slurm("squeue", "-h", "--start", "-n", f"hpcjup-{name}", "-o", "%S|%r").stdout.strip()
        if out:
            expected["start"], expected["reason"] = [*out.splitlines()[0].split("|"), ""][:2]
            expected["asked_at"] = datetime.datetime.now().isoformat(timespec="seconds")
            expected["asked_after"] = time.monotonic() - t0

    t0 = time.monotonic()
    asker = threading.Timer(max(5.0, args.wait / 2), ask_slurm)  # after a backfill cycle has planned it
    asker.start()
    argv = ["start", *HOST, *QUICK, "-t", str(args.time), "--timeout", f"{args.wait}s", "-d", "--json", "-n", name]
    try:
        run = cli(env, argv, timeout=args.wait + 120)
    finally:
        asker.cancel()
    result: dict[str, Any] = {"url": None, "seconds": run.seconds, "expected": expected}
    if run.returncode == 0:  # the scenario did not hold: it started; say so in the table rather than hide it
        result["url"] = run.seconds
        stop(env, cluster, name)
    elif run.returncode != TIMEOUT_EXIT:
        raise RuntimeError(f"start without --time-min failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return result


def stop(env: dict[str, str], cluster: MiniCluster, name: str) -> None:
    """`hpcjup stop NAME`, then wait until its job is gone, so the next run finds node2 free."""
    run = cli(env, ["stop", name, *HOST])
    if run.returncode != 0:
        raise RuntimeError(f"stop {name} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    wait_until(
        lambda: not [j for j in all_jobs(cluster) if j["name"] == f"hpcjup-{name}"],
        60,
        f"the job of {name} to end",
        interval=0.3,
    )


def busy_minutes(args: argparse.Namespace) -> int:
    """The busy job's limit: it must outlast every run (about 50 s with --time-min, --wait without) plus
    --time-min, and stay shorter than --time, or backfill would start the run without --time-min too."""
    seconds = args.runs * 50 + args.runs_without * (args.wait + 20)
    minutes = max(10, math.ceil(seconds / 60) + int(args.time_min) + 2)
    if minutes >= args.time:
        raise SystemExit(
            f"These runs need a busy job of {minutes} min, not below -t {args.time}: use fewer runs or a shorter --wait"
        )
    return minutes


# -- the run ------------------------------------------------------------------------------------


def end_children() -> None:
    """Ctrl-C our hpcjup commands still running (a SIGTERM reaches only us): each cancels its own job."""
    mine = [pid for pid in procs.descendants(os.getpid()) if PREFIX in procs.cmdline(pid)]
    for pid in mine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    try:
        wait_until(lambda: not any(procs.alive(pid) for pid in mine), 30, "hpcjup to end after Ctrl-C")
    except RuntimeError:
        procs.stop(mine)


def cleanup(cluster: MiniCluster, env: dict[str, str], home: Path) -> None:
    """End our commands, stop this run's sessions, cancel every job named after it, remove its session directories."""
    end_children()
    for directory in SESSIONS.glob(f"{PREFIX}-*"):
        cli(env, ["stop", directory.name, *HOST], timeout=90)
    mine = [j["id"] for j in all_jobs(cluster) if PREFIX in j["name"]]
    if mine:
        cluster.slurm("scancel", *mine)
        wait_until(
            lambda: not [j for j in all_jobs(cluster) if PREFIX in j["name"]],
            60,
            "this run's jobs to end",
            interval=0.5,
        )
    for directory in SESSIONS.glob(f"{PREFIX}-*"):
        shutil.rmtree(directory, ignore_errors=True)
    close_masters(home)


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C, so the finally clause cleans up."""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="starts with --time-min (default 3)")
    parser.add_argument("--runs-without", type=int, default=1, help="starts without --time-min (default 1)")
    parser.add_argument("--wait", type=int, default=90, help="hpcjup's --timeout without --time-min, seconds (90)")
    parser.add_argument("--time", type=int, default=30, help="the session's -t, minutes (default 30)")
    parser.add_argument("--time-min", type=int, default=5, help="the session's --time-min, minutes (default 5)")
    parser.add_argument(
        "--rev",
        default="HEAD",
        help="measure this commit, exported to a temporary directory (default HEAD), or 'worktree' for the checkout",
    )
    parser.add_argument("--json-out", type=Path, help="also write every figure to this file")
    add_save_option(parser)
    args = parser.parse_args()
    minutes = busy_minutes(args)
    signal.signal(signal.SIGTERM, interrupt)
    cluster = MiniCluster()
    cluster.up()  # reuses a running cluster and never takes it down (HPCJUP_KEEP_CLUSTER=1 semantics)
    work = Path(tempfile.mkdtemp(prefix="hpcjup-bench-backfill-"))
    home = work / "laptop"
    env = make_laptop_env(cluster, home)
    results: dict[str, Any] = {
        "with": [],
        "without": [],
        "busy_minutes": minutes,
        "args": vars(args) | {"json_out": None},
    }
    t_begin = time.monotonic()
    try:
        source, results["commit"] = snapshot(args.rev, work / "src")
        env.update(source)
        wait_for_idle(cluster)
        busy, queued = make_busy(cluster, minutes)
        for i in range(args.runs):
            problem = scenario_holds(cluster, busy, queued)
            if problem:
                raise RuntimeError(f"before run {i + 1} with --time-min: {problem}")
            figure = with_time_min(env, cluster, f"{PREFIX}-with{i}", args)
            results["with"].append(figure)
            print(f"with --time-min {args.time_min}: {figure}", file=sys.stderr, flush=True)
        for i in range(args.runs_without):
            problem = scenario_holds(cluster, busy, queued)
            if problem:
                raise RuntimeError(f"before run {i + 1} without --time-min: {problem}")
            figure = without_time_min(env, cluster, f"{PREFIX}-without{i}", args)
            results["without"].append(figure)
            print(f"without --time-min: {figure}", file=sys.stderr, flush=True)
        results["scenario"] = scenario_holds(cluster, busy, queued)
        results["scheduler_parameters"] = scheduler_parameters(cluster)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cleanup(cluster, env, home)
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.monotonic() - t_begin
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    with Report("backfill", save=args.save) as out:
        report(results, args, out)


# -- the report ---------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    """`median s (min-max, n=N)`."""
    if not values:
        return "-"
    text = f"{statistics.median(values):.1f} s"
    return text + (f" ({min(values):.1f}-{max(values):.1f}, n={len(values)})" if len(values) > 1 else " (n=1)")


def _limits(runs: list[dict[str, Any]]) -> str:
    """The limits granted as start said them, and `ls --json`'s limit and time left."""
    said = sorted({r["shortened"] or "not said" for r in runs})
    listed = sorted({f"{r['time_limit'] // 60} min" for r in runs if r["time_limit"]})
    left = [r["time_left"] for r in runs if r["time_left"] is not None]
    text = f"start: shortened to {', '.join(said)}; ls: limit {', '.join(listed) or '-'}"
    if left:
        low, high = duration(min(left)), duration(max(left))
        text += f", {low if low == high else f'{low}-{high}'} left"
    return text


def _expected_seconds(run: dict[str, Any]) -> float | None:
    """Seconds from invoking start to Slurm's expected start of its job, or None."""
    expected = run["expected"]
    try:
        at = datetime.datetime.fromisoformat(expected["start"])
        asked = datetime.datetime.fromisoformat(expected["asked_at"])
    except (KeyError, ValueError):
        return None
    return (at - asked).total_seconds() + expected["asked_after"]


def _expected(run: dict[str, Any]) -> str:
    """Slurm's expected start of the pending job, relative to when it was asked."""
    expected = run["expected"]
    if not expected.get("start"):
        return "Slurm gave no expected start"
    try:
        at = datetime.datetime.fromisoformat(expected["start"])
        asked = datetime.datetime.fromisoformat(expected["asked_at"])
    except ValueError:
        return f"Slurm expected it at {expected['start']} ({expected.get('reason')})"
    return f"Slurm expected it in {(at - asked).total_seconds() / 60:.0f} min ({expected.get('reason')})"


def report(results: dict[str, Any], args: argparse.Namespace, out: Callable[[str], None] = print) -> None:
    """The Markdown table and the ratio."""
    with_runs, without_runs = results["with"], results["without"]
    out(
        f"\nBackfill benchmark of {results.get('commit')} on {os.uname().nodename} ({os.cpu_count()} cores), "
        f"{datetime.date.today()}: node1 busy with an exclusive {results['busy_minutes']}-minute job, a 2-node "
        f"exclusive job queued behind it; `hpcjup start -d --json -p batch -t {args.time}`; "
        f"{results['seconds']:.0f} s in all\n"
    )
    out("| start | time to a working URL | queue wait (Slurm's submit to start) | time limit granted |")
    out("| --- | --- | --- | --- |")
    with_urls = [r["url"] for r in with_runs]
    out(
        f"| `--time-min {args.time_min}` | {_spread(with_urls)} | {_spread([r['queue'] for r in with_runs])} "
        f"| {_limits(with_runs) if with_runs else '-'} |"
    )
    started = [r["url"] for r in without_runs if r["url"] is not None]
    for run in without_runs:
        figure = (
            f"{run['url']:.1f} s (the scenario did not hold)"
            if run["url"] is not None
            else (f"did not start within {args.wait} s (`--timeout`)")
        )
        out(f"| without | {figure} | pending, then cancelled by hpcjup | {_expected(run)} |")
    if with_urls and without_runs:
        median = statistics.median(with_urls)
        if started:
            out(f"\nRatio without / with: {statistics.median(started) / median:.1f}x")
        else:
            text = f"more than {args.wait / median:.0f}x (the wait was capped at {args.wait} s)"
            waits = [w for w in (_expected_seconds(r) for r in without_runs) if w is not None]
            if waits:
                text += f"; Slurm's expected start implies about {statistics.median(waits) / median:.0f}x"
            out(f"\nRatio without / with: {text}")
    out(
        f"\nSlurm's SchedulerParameters: {results.get('scheduler_parameters') or '(null)'}; backfill plans every "
        "bf_interval (default 30 s), so a --time-min start waits up to one cycle, then Jupyter starts."
    )
    if results.get("scenario"):
        out(f"\nThe busy cluster changed during the run: {results['scenario']}; the figures may not mean much.")


if __name__ == "__main__":
    main()

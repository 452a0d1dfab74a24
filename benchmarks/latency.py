"""The benchmark suite's latency mode: hpcjup's commands behind a delaying proxy, per round trip and SSH backend.

    flock /tmp/hpcjup-cluster.lock python -m benchmarks.latency [--rtt 0,50,150] [--runs 5] [--starts 3] [--rev HEAD]

Needs root on Debian (it brings the mini-cluster up itself, see tests/cluster). For each round
trip (RTT) a DelayProxy (tests/cluster/delay.py) sits in front of the mini-cluster's sshd and a
fresh laptop HOME per SSH backend has `Host minicluster` pointing at it. With the real CLI it
measures `start` to URL and before submission (the sbatch command, from the `-v` log), `ls` with
10 and 100 ended sessions (median of --runs), `stop NAME` and `attach NAME` (after killing the
detached holder), each with its remote commands as `-v` logs them; and jupyter-forward (PyPI, its
own venv, see --peer) to its first HTTP answer in the same run. Prints a Markdown table and checks
issue 13's targets; asserts nothing. Every session it makes is named bench-lat-* and removed.
It measures a commit (default HEAD) exported to a temporary directory, not the shared checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Report, add_save_option  # noqa: E402
from tests.cluster import files  # noqa: E402
from tests.cluster.delay import DelayProxy  # noqa: E402
from tests.cluster.fixtures import laptop_environ, make_laptop_home  # noqa: E402
from tests.cluster.minicluster import USER, MiniCluster  # noqa: E402

HPCJUP = [sys.executable, "-m", "hpcjup"]
HOST = ["--host", "minicluster"]
BACKENDS = ("openssh", "paramiko")
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
JF_LOGS = Path("/home/hpcuser/.jupyter_forward")
PREFIX = f"bench-lat-{secrets.token_hex(2)}"
QUICK = ["--no-dask", "--idle-timeout", "0", "--time", "10", "--no-browser"]
PEER_VENV = Path("/tmp/hpcjup-bench-jupyter-forward")


# -- running the CLI ----------------------------------------------------------------------------


@dataclass
class Run:
    """One CLI run: wall seconds, exit code, stdout, and each remote command with when `-v` logged it."""

    began: float  # wall clock (time.time()) when it was invoked
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    commands: list[tuple[float, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.commands)


def is_remote_command(line: str) -> bool:
    """A `-v` line for one remote command (a watcher start logs `-> started`)."""
    return line.startswith(("hpcjup.remote:", "hpcjup.ssh:")) and " -> " in line


def cli(env: dict[str, str], args: list[str], timeout: float = 180) -> Run:
    """Run `hpcjup -v ARGS`; stdout's end is the moment it is done (a detached holder keeps neither pipe)."""
    began, t0 = time.time(), time.monotonic()
    proc = subprocess.Popen(
        [*HPCJUP, "-v", *args],
        env=env,
        cwd=env.get("PYTHONPATH") or ROOT,  # `-m` puts the directory first on sys.path: the snapshot's, or the checkout
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    commands: list[tuple[float, str]] = []
    err: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            if is_remote_command(line):
                commands.append((time.monotonic() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        seconds = time.monotonic() - t0
        proc.wait()
        reader.join(timeout=10)
    finally:
        timer.cancel()
    return Run(began, seconds, proc.returncode, out, "".join(err), commands)


def checked(run: Run, what: str) -> Run:
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return run


def laptop(cluster: MiniCluster, home: Path, port: int, backend: str | None) -> dict[str, str]:
    """A fresh laptop HOME whose `Host minicluster` is the proxy on `port`; its environment."""
    make_laptop_home(home)
    kind_key = cluster.host_key_line().split(" ", 1)[1]
    files.write_laptop_ssh(home, "minicluster", port, USER, cluster.key_path, f"[127.0.0.1]:{port} {kind_key}")
    env = laptop_environ(home)
    env["BROWSER"] = "true"  # nothing opens a browser (jupyter-forward calls webbrowser)
    if backend:
        env["HPCJUP_SSH"] = backend
    return env


def close_masters(home: Path) -> None:
    """End this laptop's OpenSSH masters (`ssh -O exit`), so the next command connects afresh."""
    sockets = home / "run" / "hpcjup"
    if not sockets.is_dir():
        return
    for path in sockets.iterdir():
        if path.is_socket():
            subprocess.run(
                ["ssh", "-F", str(home / ".ssh" / "config"), "-S", str(path), "-O", "exit", "minicluster"],
                capture_output=True,
                timeout=15,
                check=False,
            )


def answers(url: str, timeout: float = 5) -> bool:
    """Whether an HTTP server answers at url (any status is an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"holder {pid} still alive {timeout:.0f} s after SIGKILL")


# -- the measurements ---------------------------------------------------------------------------


def other_sessions() -> dict[str, int]:
    """{scheduler: how many} of the sessions on the cluster that are not this run's (others' tests leave some)."""
    found: dict[str, int] = {}
    for directory in SESSIONS.iterdir() if SESSIONS.is_dir() else []:
        if directory.name.startswith(PREFIX):
            continue
        try:
            scheduler = str(json.loads((directory / "session.json").read_text()).get("scheduler", "?"))
        except (OSError, ValueError, AttributeError):
            scheduler = "damaged"
        found[scheduler] = found.get(scheduler, 0) + 1
    return found


def make_ended_sessions(names: list[str]) -> None:
    """Ended sessions' directories, written as the cluster user would have them (session.json, state.json)."""
    for parent in (SESSIONS.parent, SESSIONS):  # a fresh cluster has neither: the user's start must write there
        if not parent.is_dir():
            parent.mkdir(mode=0o700)
            shutil.chown(parent, USER, USER)
    for i, name in enumerate(names):
        directory = SESSIONS / name
        directory.mkdir(parents=True, exist_ok=True)
        record = {
            "name": name,
            "host": "minicluster",
            "scheduler": "slurm",
            "created_at": "2026-12-01T00:00:00+00:00",
            "job_id": str(910000 + i),
        }
        (directory / "session.json").write_text(json.dumps(record))
        (directory / "state.json").write_text(json.dumps({"state": "ended", "reason": "idle", "exit_code": 0}))
        for path in (directory, directory / "session.json", directory / "state.json"):
            shutil.chown(path, USER, USER)


def measure_ls(env: dict[str, str], home: Path, runs: int) -> dict[str, Any]:
    """One first `ls` on a new connection, then `runs` more (OpenSSH: on its master): median seconds, counts."""
    close_masters(home)
    first = checked(cli(env, ["ls", *HOST, "--json"]), "ls")
    samples = [checked(cli(env, ["ls", *HOST, "--json"]), "ls") for _ in range(runs)]
    rows = json.loads(samples[-1].stdout)["sessions"]
    return {
        "first": first.seconds,
        "median": statistics.median(r.seconds for r in samples),
        "max": max(r.seconds for r in samples),
        "count": max(r.count for r in samples),
        "sessions": len(rows),
        "n": runs,
    }


def measure_session(env: dict[str, str], home: Path, name: str) -> dict[str, Any]:
    """start (cold connection) -> URL and before submission; attach after killing the holder; stop."""
    close_masters(home)
    start = checked(cli(env, ["start", *HOST, "--name", name, "-d", "--json", *QUICK]), "start")
    info = json.loads(start.stdout)
    if not answers(info["url"]):
        raise RuntimeError(f"start printed {info['url']}, which does not answer")
    conn = json.loads((SESSIONS / name / "connection.json").read_text())
    ready, launched = (datetime.datetime.fromisoformat(conn[k]).timestamp() for k in ("ready_at", "started_at"))
    detect = start.began + start.seconds - ready
    # The submission travels in the upload's command (the claim script's "submit=$5"); older: its own sbatch.
    submitted = [i for i, (_, line) in enumerate(start.commands) if "submit=$5" in line or "sbatch" in line]
    at = submitted[0] if submitted else None
    # The submission's -v line comes when it returned (seconds after the invocation).
    submitted_at = start.commands[at][0] if at is not None else 0.0
    result: dict[str, Any] = {
        "start": start.seconds,
        "start_count": start.count,
        "detect": detect,
        "queue_and_jupyter": start.seconds - detect - submitted_at,
        # The launcher's started_at is just before Jupyter's start. The node's clock against the laptop's:
        # one machine here (a real cluster would need its clock offset).
        "to_launcher": launched - start.began - submitted_at,
        "jupyter": ready - launched,
        "submit": submitted_at if at is not None else float("nan"),
        "submit_count": at + 1 if at is not None else -1,
        "start_log": [line for _, line in start.commands],
    }
    url = json.loads(checked(cli(env, ["url", name, "--json"]), "url").stdout)
    pid = int(url["pid"])
    os.kill(pid, signal.SIGKILL)  # the laptop lost its holder (crash, reboot): attach rebuilds the tunnel
    wait_gone(pid)
    attach = checked(cli(env, ["attach", name, *HOST, "-d", "--json", "--no-browser"]), "attach")
    if not answers(json.loads(attach.stdout)["url"]):
        raise RuntimeError("attach printed a URL that does not answer")
    stop = checked(cli(env, ["stop", name, *HOST]), "stop")
    result.update(
        attach=attach.seconds,
        attach_count=attach.count,
        stop=stop.seconds,
        stop_count=stop.count,
        attach_log=[line for _, line in attach.commands],
        stop_log=[line for _, line in stop.commands],
    )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peer_jobs(cluster: MiniCluster) -> list[str]:
    """Ids of the cluster user's active jobs that jupyter-forward submitted (srun of its batch_job_script_*)."""
    return [j["id"] for j in cluster.active_jobs() if j["name"].startswith("batch_job_script")]


def measure_peer(peer: Path, env: dict[str, str], cluster: MiniCluster, timeout: float = 120) -> dict[str, Any]:
    """jupyter-forward's seconds to the first HTTP answer on its local port; stopped and its job cancelled after."""
    port = free_port()
    argv = [str(peer), "minicluster", "--port", str(port), "--conda-env", "base", "-c", "srun -p batch -t 10 -c 1"]
    log = tempfile.TemporaryFile()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            if answers(f"http://127.0.0.1:{port}/", timeout=2):
                return {"url": time.monotonic() - t0}
            time.sleep(0.02)
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"jupyter-forward gave no answer on {port} (exit {proc.poll()}):\n{tail}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        jobs = peer_jobs(cluster)
        if jobs:
            cluster.slurm("scancel", *jobs)
        log.close()


def install_peer() -> Path | None:
    """jupyter-forward in its own venv under /tmp (never hpcjup's .venv); None with the reason printed if it fails."""
    exe = PEER_VENV / "bin" / "jupyter-forward"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, capture_output=True)
        subprocess.run(
            [str(PEER_VENV / "bin" / "pip"), "install", "-q", "jupyter-forward"],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"jupyter-forward could not be installed: {exc}", file=sys.stderr)
        return None
    return exe


# -- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def proxies(cluster: MiniCluster, rtts: list[int]) -> Iterator[dict[int, DelayProxy]]:
    with contextlib.ExitStack() as stack:
        yield {rtt: stack.enter_context(DelayProxy(cluster.ssh_port, rtt, lifetime=1800)) for rtt in rtts}


def cleanup(cluster: MiniCluster, homes: list[Path]) -> None:
    """Remove every bench-lat session of this run, end its laptops' masters, cancel stray jobs."""
    for home in homes:
        close_masters(home)
    mine = [j["id"] for j in cluster.active_jobs() if PREFIX in j["name"]]
    if mine:
        cluster.slurm("scancel", *mine)
    for directory in SESSIONS.glob(f"{PREFIX}-*"):
        shutil.rmtree(directory, ignore_errors=True)


def snapshot(rev: str, directory: Path) -> tuple[dict[str, str], str]:
    """hpcjup as of `rev`, exported with `git archive` (others may be editing the checkout): (environment, label)."""
    if rev == "worktree":
        return {}, "the working tree of " + subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    directory.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "hpcjup"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    check = subprocess.run(
        [*HPCJUP[:1], "-c", "import hpcjup; print(hpcjup.__file__)"],
        env={**os.environ, "PYTHONPATH": str(directory)},
        cwd=directory,
        capture_output=True,
        text=True,
        check=True,
    )
    if not check.stdout.startswith(str(directory)):
        raise RuntimeError(f"PYTHONPATH={directory} did not take: hpcjup comes from {check.stdout.strip()}")
    return {"PYTHONPATH": str(directory)}, f"commit {commit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="0,50,150", help="round trips in ms, comma-separated (default 0,50,150)")
    parser.add_argument("--runs", type=int, default=5, help="ls runs per figure, after one first run (default 5)")
    parser.add_argument(
        "--starts", type=int, default=3, help="start/attach/stop rounds per RTT and backend (default 3)"
    )
    parser.add_argument(
        "--peer", default="auto", help="jupyter-forward executable, 'auto' (install under /tmp) or 'none'"
    )
    parser.add_argument(
        "--rev",
        default="HEAD",
        help="measure this commit, exported to a temporary directory (default HEAD), or 'worktree' for the checkout",
    )
    parser.add_argument("--json-out", type=Path, help="also write every figure (and the -v logs) to this file")
    add_save_option(parser)
    args = parser.parse_args()
    rtts = [int(x) for x in args.rtt.split(",")]
    cluster = MiniCluster()
    cluster.up()
    peer = None if args.peer == "none" else (install_peer() if args.peer == "auto" else Path(args.peer))
    work = Path(tempfile.mkdtemp(prefix="hpcjup-bench-latency-"))
    try:
        source, commit = snapshot(args.rev, work / "src")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    results: dict[str, Any] = {"rtts": rtts, "ls": {}, "session": {}, "peer": {}, "peer_error": None, "commit": commit}
    homes: list[Path] = []
    jf_before = set(JF_LOGS.iterdir()) if JF_LOGS.is_dir() else set()
    t_begin = time.monotonic()
    try:
        with proxies(cluster, rtts) as by_rtt:
            envs: dict[tuple[int, str], dict[str, str]] = {}
            for rtt in rtts:
                for backend in BACKENDS:
                    home = work / f"rtt{rtt}-{backend}"
                    homes.append(home)
                    envs[rtt, backend] = {**laptop(cluster, home, by_rtt[rtt].port, backend), **source}
                homes.append(work / f"rtt{rtt}-peer")
                envs[rtt, "peer"] = laptop(cluster, work / f"rtt{rtt}-peer", by_rtt[rtt].port, None)
            names = [f"{PREFIX}-ls-{i:03d}" for i in range(100)]
            results["others"] = other_sessions()
            for count in (10, 100):
                make_ended_sessions(names[:count])
                for rtt in rtts:
                    for backend in BACKENDS:
                        runs = args.runs if rtt < 150 else max(3, args.runs - 2)
                        figure = measure_ls(envs[rtt, backend], work / f"rtt{rtt}-{backend}", runs)
                        results["ls"][f"{count}/{rtt}/{backend}"] = figure
                        print(f"ls {count} sessions, {rtt} ms, {backend}: {figure}", file=sys.stderr, flush=True)
            for directory in names:
                shutil.rmtree(SESSIONS / directory, ignore_errors=True)
            for rtt in rtts:
                for i in range(args.starts):
                    # Alternate which backend goes first: a job right after another's stop may wait on the node.
                    for backend in BACKENDS if i % 2 == 0 else BACKENDS[::-1]:
                        name = f"{PREFIX}-{rtt}-{backend[0]}{i}"
                        figure = measure_session(envs[rtt, backend], work / f"rtt{rtt}-{backend}", name)
                        results["session"].setdefault(f"{rtt}/{backend}", []).append(figure)
                        brief = {k: v for k, v in figure.items() if not k.endswith("_log")}
                        print(f"session {rtt} ms, {backend}: {brief}", file=sys.stderr, flush=True)
                    if peer is not None and results["peer_error"] is None:
                        try:
                            figure = measure_peer(peer, envs[rtt, "peer"], cluster)
                            results["peer"].setdefault(str(rtt), []).append(figure)
                            print(f"jupyter-forward {rtt} ms: {figure}", file=sys.stderr, flush=True)
                        except RuntimeError as exc:
                            results["peer_error"] = str(exc)
                            print(f"jupyter-forward failed, reporting without it: {exc}", file=sys.stderr)
    finally:
        cleanup(cluster, homes)
        if JF_LOGS.is_dir():
            for path in set(JF_LOGS.iterdir()) - jf_before:
                path.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = time.monotonic() - t_begin
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    with Report("latency", save=args.save) as out:
        report(results, out)


# -- the report ---------------------------------------------------------------------------------


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _counts(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def report(results: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """The Markdown table (one column per RTT, cells `seconds, remote commands`) and the targets' check."""
    rtts: list[int] = results["rtts"]
    sessions, ls, peer = results["session"], results["ls"], results["peer"]

    def session_cell(rtt: int, backend: str, key: str, counted: str | None) -> str:
        runs = sessions.get(f"{rtt}/{backend}", [])
        if not runs:
            return "-"
        text = f"{_med([r[key] for r in runs]):.2f} s"
        if counted:
            text += f", {_counts([r[counted] for r in runs])} cmds"
        if key == "start" and peer.get(str(rtt)):
            text += f" ({_med([r[key] for r in runs]) / _med([p['url'] for p in peer[str(rtt)]]):.2f}x)"
        return text

    def ls_cell(count: int, rtt: int, backend: str) -> str:
        fig = ls.get(f"{count}/{rtt}/{backend}")
        if not fig:
            return "-"
        return f"{fig['median']:.2f} s, {fig['count']} cmds (first {fig['first']:.2f} s)"

    n_starts = max((len(v) for v in sessions.values()), default=0)
    sample = next(iter(ls.values()), {"n": 0})
    out(
        f"\nLatency benchmark of {results.get('commit')} on {os.uname().nodename} ({os.cpu_count()} cores), "
        f"{datetime.date.today()}: "
        f"medians; start/attach/stop n={n_starts} per cell, ls n={sample['n']} after a first run; "
        f"{results['seconds']:.0f} s in all\n"
    )
    out("| figure | backend | " + " | ".join(f"{r} ms" for r in rtts) + " |")
    out("| --- | --- |" + " --- |" * len(rtts))
    rows: list[tuple[str, str, Any]] = []
    for backend in BACKENDS:
        rows.append(
            (
                "`start` -> URL (vs jupyter-forward)",
                backend,
                lambda r, b=backend: session_cell(r, b, "start", "start_count"),
            )
        )
    rows.append(
        (
            "`start` -> URL",
            "jupyter-forward",
            lambda r: f"{_med([p['url'] for p in peer[str(r)]]):.2f} s" if peer.get(str(r)) else "-",
        )
    )
    for backend in BACKENDS:
        rows.append(
            ("detection: Jupyter ready -> URL", backend, lambda r, b=backend: session_cell(r, b, "detect", None))
        )
    for backend in BACKENDS:
        rows.append(
            (
                "submitted -> Jupyter ready (Slurm, Jupyter)",
                backend,
                lambda r, b=backend: session_cell(r, b, "queue_and_jupyter", None),
            )
        )
    for backend in BACKENDS:
        rows.append(
            (
                "of which: submitted -> launcher starts Jupyter",
                backend,
                lambda r, b=backend: session_cell(r, b, "to_launcher", None),
            )
        )
    for backend in BACKENDS:
        rows.append(
            ("of which: JupyterLab's own start", backend, lambda r, b=backend: session_cell(r, b, "jupyter", None))
        )
    for backend in BACKENDS:
        rows.append(
            ("`start` before submission", backend, lambda r, b=backend: session_cell(r, b, "submit", "submit_count"))
        )
    for count in (10, 100):
        for backend in BACKENDS:
            n_listed = ls.get(f"{count}/{rtts[0]}/{backend}", {}).get("sessions", count)
            rows.append((f"`ls`, {n_listed} sessions", backend, lambda r, b=backend, c=count: ls_cell(c, r, b)))
    for label, key in (("`stop NAME`", "stop"), ("`attach NAME` (holder killed)", "attach")):
        for backend in BACKENDS:
            rows.append((label, backend, lambda r, b=backend, k=key: session_cell(r, b, k, f"{k}_count")))
    for label, backend, cell in rows:
        out(f"| {label} | {backend} | " + " | ".join(cell(r) for r in rtts) + " |")
    others = results.get("others") or {}
    if others:
        out(
            f"\n`ls` also listed {sum(others.values())} sessions that were not this run's (schedulers: "
            + ", ".join(f"{k} {v}" for k, v in sorted(others.items()))
            + "); each scheduler among them adds its own queries."
        )
    if results["peer_error"]:
        out(f"\njupyter-forward: not measured ({results['peer_error'].splitlines()[0]})")
    implied_round_trips(results, out)
    check_targets(results, out)


def implied_round_trips(results: dict[str, Any], out: Callable[[str], None]) -> None:
    """(median at the largest RTT - median at 0 ms) / RTT: the round trips a command waits for, logged or not."""
    rtts: list[int] = results["rtts"]
    top = max(rtts)
    if 0 not in rtts or top == 0:
        return
    sessions, ls = results["session"], results["ls"]
    out(f"\nRound trips implied by the figures, (time at {top} ms - time at 0 ms) / {top} ms:")
    for backend in BACKENDS:
        parts = []
        for label, key in (("before submission", "submit"), ("stop", "stop"), ("attach", "attach")):
            low, high = sessions.get(f"0/{backend}"), sessions.get(f"{top}/{backend}")
            if low and high:
                extra = _med([r[key] for r in high]) - _med([r[key] for r in low])
                parts.append(f"{label} {extra / (top / 1000):.1f}")
        for count in (10, 100):
            low_ls, high_ls = ls.get(f"{count}/0/{backend}"), ls.get(f"{count}/{top}/{backend}")
            if low_ls and high_ls:
                parts.append(f"ls {count} {(high_ls['median'] - low_ls['median']) / (top / 1000):.1f}")
                parts.append(f"first ls {count} {(high_ls['first'] - low_ls['first']) / (top / 1000):.1f}")
        out(f"  {backend}: " + ", ".join(parts))


def check_targets(results: dict[str, Any], out: Callable[[str], None]) -> None:
    """Issue 13's targets: met or missed, with the figures."""
    sessions, ls, peer = results["session"], results["ls"], results["peer"]
    lines: list[tuple[bool, str]] = []
    for backend in BACKENDS:
        fig = ls.get(f"100/50/{backend}")
        if fig:
            lines.append((fig["median"] <= 1.0, f"ls 100 sessions at 50 ms, {backend}: {fig['median']:.2f} s (<= 1 s)"))
        runs = sessions.get(f"50/{backend}", [])
        if runs and peer.get("50"):
            ratio = _med([r["start"] for r in runs]) / _med([p["url"] for p in peer["50"]])
            lines.append((ratio <= 0.8, f"start -> URL at 50 ms, {backend}: {ratio:.2f}x jupyter-forward (<= 0.8x)"))
    counts = {"ls": 3, "submit": 3, "stop": 4, "attach": 4}
    for what, limit in counts.items():
        if what == "ls":
            seen = [f["count"] for f in ls.values()]
        else:
            seen = [r[f"{what}_count"] for runs in sessions.values() for r in runs]
        if seen:
            label = "start before submission" if what == "submit" else what
            lines.append((max(seen) <= limit, f"{label}: at most {max(seen)} remote commands (<= {limit})"))
    out("\nTargets:")
    for ok, text in lines:
        out(f"  {'met   ' if ok else 'MISSED'} {text}")


if __name__ == "__main__":
    main()

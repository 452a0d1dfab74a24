"""The host-side relay (job/relay.sh) for a launcher inside a container image, run for real by sh on this machine.

The launcher's side is relayed.py's `Relayed` (dasklaunch's launches): the tests ask through it, as the launcher does, and watch what
the relay runs: each launch's argv word for word, its exit code back, signals passed on, and nothing left running
when the launcher ends, however it ends.
"""

from __future__ import annotations

import importlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hpcjup.job
from hpcjup.job import RELAY_FILE, RELAY_VARIABLE
from tests.cluster.procs import wait_until

JOB_DIR = hpcjup.job.LAUNCHER_PATH.parent


@pytest.fixture(scope="module")
def dasklaunch() -> Any:
    sys.path.insert(0, str(JOB_DIR))  # the job files import each other from beside themselves
    try:
        yield importlib.import_module("dasklaunch")
    finally:
        sys.path.remove(str(JOB_DIR))


def start_relay(session: Path, *command: str) -> subprocess.Popen[str]:
    """`sh relay.sh -- COMMAND` in a session directory of its own, as the job script runs it."""
    session.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(JOB_DIR / RELAY_FILE, session / RELAY_FILE)
    relay = subprocess.Popen(
        ["sh", str(session / RELAY_FILE), "--", *command], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    return relay


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One relay whose 'launcher' sleeps: this test process asks it instead (its FIFO is at a known path)."""
    session = tmp_path_factory.mktemp("session")
    relay = start_relay(session, "sleep", "600")
    wait_until(lambda: (session / "relay" / "requests").exists(), 10, "the relay's channel")
    yield str(session / "relay" / "requests")
    os.killpg(relay.pid, signal.SIGKILL)
    relay.wait()


# Any argv the launcher could hand over: paths and options with spaces, quotes, $, `, \, newlines, non-ASCII.
_WORD = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(_WORD, max_size=6))
def test_a_launch_runs_the_launchers_argv_word_for_word(
    dasklaunch: Any, channel: str, tmp_path_factory: pytest.TempPathFactory, words: list[str]
) -> None:
    out = tmp_path_factory.mktemp("out") / "argv"
    dump = ["sh", "-c", 'for a in "$@"; do printf "%s\\0" "$a"; done >"$0"', str(out), *words]
    launch = dasklaunch.Relayed(channel, dump)
    assert launch.wait(10) == 0
    assert out.read_bytes().split(b"\0")[:-1] == [w.encode() for w in words]


def test_exit_codes_and_signals_come_back_through_the_relay(dasklaunch: Any, channel: str) -> None:
    failed = dasklaunch.Relayed(channel, ["sh", "-c", "exit 3"])
    assert failed.wait(10) == 3
    missing = dasklaunch.Relayed(channel, ["/nonexistent/srun", "-w", "node2"])
    assert missing.wait(10) == 127  # a launch command that is not there: the shell's 127, not a hang
    sleeper = dasklaunch.Relayed(channel, ["sleep", "300"])
    wait_until(lambda: Path(channel).with_name(f"{sleeper.number}.pid").exists(), 10, "the launch's pid")
    assert sleeper.poll() is None
    sleeper.signal(signal.SIGTERM)
    assert sleeper.wait(10) == 128 + signal.SIGTERM


def test_what_the_launcher_leaves_running_is_stopped_when_it_ends(tmp_path: Path) -> None:
    """A launcher killed outright (its stop never ran): the relay stops its launches and removes its channel."""
    child = (
        "import os, sys, time; sys.path.insert(0, sys.argv[1]); from relayed import Relayed\n"
        "r = Relayed(os.environ[sys.argv[2]], ['sh', '-c', 'echo $$ >' + sys.argv[3] + '; exec sleep 300'])\n"
        "while not os.path.exists(sys.argv[3]): time.sleep(0.05)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    pidfile = tmp_path / "launched.pid"
    relay = start_relay(tmp_path / "s", sys.executable, "-c", child, str(JOB_DIR), RELAY_VARIABLE, str(pidfile))
    _, err = relay.communicate(timeout=30)  # the server's end closes the log: it ends after the launcher
    assert relay.returncode == -signal.SIGKILL, err  # the job's main process is the launcher itself
    launched = int(pidfile.read_text())
    assert not alive(launched), "the launch outlived the session"
    assert "stopping what the launcher left running" in err
    assert not (tmp_path / "s" / "relay").exists()


def test_the_jobs_signals_reach_the_launcher(tmp_path: Path) -> None:
    """The launcher is the job's main process (the relay execs it): the scheduler's SIGTERM (hpcjup stop) and SIGUSR1
    (walltime) are its own, its exit code is the job's."""
    seen = tmp_path / "seen"
    child = (
        "import signal, sys, time\n"
        "def got(n, f): open(sys.argv[1], 'a').write(signal.Signals(n).name + '\\n'); n == signal.SIGTERM and sys.exit(7)\n"
        "signal.signal(signal.SIGUSR1, got); signal.signal(signal.SIGTERM, got)\n"
        "open(sys.argv[1], 'w').close()\n"
        "while True: time.sleep(0.1)\n"
    )
    relay = start_relay(tmp_path / "s", sys.executable, "-c", child, str(seen))
    wait_until(seen.exists, 10, "the launcher")
    relay.send_signal(signal.SIGUSR1)
    wait_until(lambda: "SIGUSR1" in seen.read_text(), 10, "SIGUSR1 passed on")
    relay.send_signal(signal.SIGTERM)
    _, err = relay.communicate(timeout=30)
    assert relay.returncode == 7, err
    assert seen.read_text().split() == ["SIGUSR1", "SIGTERM"]


def test_each_hosts_workers_are_launched_on_the_host_into_the_image(
    dasklaunch: Any, channel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launcher in an image hands the relay, per host: the scheduler's launch for that host, the session's Dask
    config, the runtime's prefix (--python-command) and the worker; it runs nothing itself."""
    seen = tmp_path / "seen"
    seen.mkdir()
    # The "scheduler's launch" records its host and CPUs; the "container runtime" records what it was to run there.
    launch = f"sh -c ': >{seen}/$0-{{cpus}}; exec \"$@\"' {{host}}"
    runtime = ["sh", "-c", f'printf "%s\\n" "$DASK_CONFIG" "$@" >{seen}/argv-$$', "ch-run", "/img", "--", "/env/py"]
    monkeypatch.setenv("HPCJUP_LAUNCH", launch)
    monkeypatch.setenv("HPCJUP_NODELIST", "node1 node2")
    monkeypatch.setenv(RELAY_VARIABLE, channel)
    cluster = dasklaunch.DaskCluster(str(tmp_path), "127.0.0.1", 3, 2, "auto", 0, str(tmp_path / "private"))
    cluster.python_command = " ".join(map(shlex.quote, runtime))
    cluster.start_workers()
    assert [type(p).__name__ for p in cluster.worker_procs] == ["Relayed", "Relayed"]
    assert [p.wait(10) for p in cluster.worker_procs] == [0, 0]
    assert (seen / "node1-4").exists() and (seen / "node2-2").exists()  # 2 of 3 workers x 2 cores on the first host
    runs = sorted(p.read_text().split("\n")[:-1] for p in seen.glob("argv-*"))
    config = str(tmp_path / "dask" / "config")  # TLS and the preloads: the relay's own environment has no DASK_CONFIG
    assert [run[:6] for run in runs] == [[config, "/img", "--", "/env/py", "-m", "distributed.cli.dask_worker"]] * 2
    assert sorted(run[-1] for run in runs) == ["1", "2"] and all(run[-2] == "--nworkers" for run in runs)


def test_a_relay_that_is_gone_fails_the_sessions_dask_with_a_reason(
    dasklaunch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not workers silently on one node: the session ends dask-failed, and says why."""
    fifo = tmp_path / "requests"
    os.mkfifo(fifo)  # nobody reads it
    monkeypatch.setenv("HPCJUP_LAUNCH", "srun -w {host}")
    monkeypatch.setenv("HPCJUP_NODELIST", "node1 node2")
    monkeypatch.setenv(RELAY_VARIABLE, str(fifo))
    cluster = dasklaunch.DaskCluster(str(tmp_path), "127.0.0.1", 2, 1, "auto", 0, str(tmp_path / "private"))
    cluster.start_workers()
    assert cluster.worker_procs == []
    assert cluster.failed().startswith(f"the host-side relay ({fifo}) could not launch Dask workers on node1")


def test_a_launch_command_that_is_not_there_fails_the_sessions_dask_with_a_reason(
    dasklaunch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launcher that sees the per-host launch where it cannot run it (no srun in its image): dask-failed, why."""
    monkeypatch.setenv("HPCJUP_LAUNCH", "/nonexistent/srun -w {host}")
    monkeypatch.setenv("HPCJUP_NODELIST", "node1 node2")
    monkeypatch.delenv(RELAY_VARIABLE, raising=False)
    cluster = dasklaunch.DaskCluster(str(tmp_path), "127.0.0.1", 2, 1, "auto", 0, str(tmp_path / "private"))
    cluster.start_workers()
    assert cluster.failed().startswith("`/nonexistent/srun` could not launch Dask workers on node1"), cluster.failed()


def test_the_launchers_stop_ends_its_relayed_launches_and_the_channel(dasklaunch: Any, tmp_path: Path) -> None:
    """The launcher's own stop (TERM, then KILL after its grace) reaches the launches through the relay; the one
    that ignores TERM is killed; once all ended the relay's directory goes."""
    session = tmp_path / "s"
    relay = start_relay(session, "sleep", "60")
    try:
        channel = str(wait_until(lambda: [p for p in [session / "relay" / "requests"] if p.exists()], 10, "it")[0])
        cluster = dasklaunch.DaskCluster(str(tmp_path), "127.0.0.1", 2, 1, "auto", 0, str(tmp_path / "private"))
        stubborn = "trap '' TERM; echo >$0; while :; do sleep 1; done"
        cluster.worker_procs = [
            dasklaunch.Relayed(channel, ["sleep", "300"]),
            dasklaunch.Relayed(channel, ["sh", "-c", stubborn, str(tmp_path / "armed")]),
        ]
        wait_until((tmp_path / "armed").exists, 10, "the launch that ignores SIGTERM")
        cluster.stop(grace=1)
        assert [proc.poll() for proc in cluster.worker_procs] == [128 + signal.SIGTERM, 128 + signal.SIGKILL]
        assert not (session / "relay").exists()
    finally:
        os.killpg(relay.pid, signal.SIGKILL)
        relay.wait()

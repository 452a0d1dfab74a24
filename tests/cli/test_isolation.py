"""Sessions never harm each other: racing starts, damaged files, exact destinations, the host found by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import run, session_jobs

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
QUICK = ["--no-dask", "--idle-timeout", "0", "--time", "10", "--no-browser"]


def write_as_user(path: Path, text: str) -> None:
    """A file in the cluster user's home, owned by that user (as a hand edit or a broken disk would leave it)."""
    path.write_text(text)
    shutil.chown(path, "hpcuser", "hpcuser")


def start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run(["start", "-d", "--json", *QUICK, *args], env, timeout=150)


def ls_rows(env: dict[str, str], *host: str) -> dict[str, dict[str, Any]]:
    result = run(["ls", *(host or HOST), "--json"], env)
    assert result.returncode == 0, result.stderr
    return {row["session"]: row for row in json.loads(result.stdout)["sessions"]}


def test_racing_starts_one_wins(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    """Two `start -d -n race` at the same moment: exactly one wins, the other is told; nothing orphaned."""
    results: list[subprocess.CompletedProcess[str]] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        results.append(start(laptop_env, *HOST, "-n", "race"))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes == [0, ExitCode.USAGE], [(r.returncode, r.stderr[-300:]) for r in results]
    loser = next(r for r in results if r.returncode)
    assert "in use" in loser.stderr
    winner = json.loads(next(r for r in results if r.returncode == 0).stdout)
    jobs = session_jobs(minicluster, ("race",))
    assert [j["id"] for j in jobs] == [winner["job_id"]]  # one job, the winner's: nothing orphaned
    record = json.loads((SESSIONS / "race" / "session.json").read_text())
    assert record["job_id"] == winner["job_id"]
    assert not [p for p in SESSIONS.iterdir() if p.name.startswith(".")]  # no staging or lock left
    assert run(["stop", "race", *HOST], laptop_env).returncode == 0


def test_damaged_sessions_do_not_break_the_others(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """Corrupt session.json/state.json: shown as DAMAGED with the reason; ls, stop --all and prune work."""
    good = json.loads(start(laptop_env, *HOST, "-n", "healthy").stdout)
    damaged = {
        "num-id": json.dumps({"name": "num-id", "host": "minicluster", "scheduler": "slurm", "job_id": 12}),
        "truncated": '{"name": "truncated", "host": "minic',
        "not-object": "[1, 2]",
    }
    for name, text in damaged.items():
        minicluster.run_as_user(["mkdir", "-p", str(SESSIONS / name)])
        write_as_user(SESSIONS / name / "session.json", text)
    minicluster.run_as_user(["mkdir", "-p", str(SESSIONS / "bad-state")])
    write_as_user(
        SESSIONS / "bad-state" / "session.json",
        (SESSIONS / "healthy" / "session.json").read_text().replace('"healthy"', '"bad-state"'),
    )
    write_as_user(SESSIONS / "bad-state" / "state.json", '{"state": "runn')
    rows = ls_rows(laptop_env)
    assert rows["healthy"]["state"] == "RUNNING"
    for name in damaged:
        assert rows[name]["state"] == "DAMAGED" and rows[name]["message"], rows[name]
    text = run(["ls", *HOST], laptop_env)
    assert text.returncode == 0 and "DAMAGED" in text.stdout
    attach = run(["attach", "num-id", *HOST, "--no-browser"], laptop_env)
    assert attach.returncode == ExitCode.REMOTE and "job_id" in attach.stderr
    # --grace 15: "bad-state" shares healthy's job but its state.json never says "ended", so stop waits out the whole
    # grace period (60 s by default) for it; healthy's launcher records its end within a few seconds either way.
    stop_all = run(["stop", "--all", *HOST, "--json", "--grace", "15"], laptop_env, timeout=180)
    assert stop_all.returncode == 0, stop_all.stderr
    assert {s["name"] for s in json.loads(stop_all.stdout)["stopped"]} >= {"healthy"}
    assert not session_jobs(minicluster, ("healthy",)), f"job {good['job_id']} still active"
    prune = run(["prune", *HOST, "--json"], laptop_env)
    assert prune.returncode == 0, prune.stderr
    removed = {r["name"] for r in json.loads(prune.stdout)["removed"]}
    assert set(damaged) | {"healthy"} <= removed
    for name in damaged:
        assert not (SESSIONS / name).exists()


def test_destination_recorded_as_given(
    minicluster: Any, laptop_env: dict[str, str], laptop_home: Path, clean_jobs: None
) -> None:
    """`--host hpcuser@127.0.0.1:PORT` is remembered with user and port: ls, hints and stop use it."""
    dest = f"{minicluster.user}@127.0.0.1:{minicluster.ssh_port}"
    with (laptop_home / ".ssh" / "config").open("a") as fh:
        fh.write(
            f"\nHost 127.0.0.1\n    IdentityFile {laptop_home / '.ssh' / 'id_minicluster'}\n    IdentitiesOnly yes\n"
        )
    result = start(laptop_env, "--host", dest, "-n", "exact")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["host"] == dest
    assert f"--host {dest}" in result.stderr or dest in result.stderr
    assert ls_rows(laptop_env, "--host", dest)["exact"]["host"] == dest
    # No --host: the cache knows on which destination "exact" lives, and stop closes its tunnel too.
    stop = run(["stop", "exact", "--json"], laptop_env, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert json.loads(stop.stdout)["host"] == dest
    url = run(["url", "exact"], laptop_env)
    assert url.returncode == ExitCode.NOT_FOUND


def test_stop_finds_the_host_by_session_name(
    minicluster: Any, laptop_env: dict[str, str], laptop_home: Path, clean_jobs: None
) -> None:
    """With sessions cached on two hosts, `stop NAME` (no --host) goes where NAME lives."""
    config = laptop_home / ".ssh" / "config"  # the same cluster under a second name
    config.write_text(config.read_text() + config.read_text().replace("Host minicluster", "Host othercluster"))
    first = start(laptop_env, "--host", "othercluster", "-n", "elsewhere")
    assert first.returncode == 0, first.stderr
    second = start(laptop_env, *HOST, "-n", "here")
    assert second.returncode == 0, second.stderr
    for name in ("here", "elsewhere"):
        stopped = run(["stop", name, "--json"], laptop_env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["stopped"][0]["name"] == name
    ambiguous = run(["ls"], laptop_env)
    assert ambiguous.returncode == ExitCode.USAGE and "Which cluster" in ambiguous.stderr


def test_workdir_inside_session_tree_refused(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    """`prune` deletes the session tree: a --workdir there would lose notebooks, so it is refused up front."""
    result = run(["start", *HOST, *QUICK, "-n", "wd", "--workdir", ".hpcjup/sessions/wd"], laptop_env)
    assert result.returncode == ExitCode.USAGE and "prune" in result.stderr
    assert not (SESSIONS / "wd").exists() and not session_jobs(minicluster, ("wd",))


def test_relative_workdir_is_relative_to_home(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    minicluster.run_as_user(["mkdir", "-p", "/home/hpcuser/notebooks"])
    info = json.loads(start(laptop_env, *HOST, "-n", "relwd", "--workdir", "notebooks").stdout)
    record = json.loads((SESSIONS / "relwd" / "session.json").read_text())
    assert record["workdir"] == "/home/hpcuser/notebooks"
    assert run(["stop", "relwd", *HOST], laptop_env).returncode == 0, info


def test_logs_are_bounded_and_masked(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    start(laptop_env, *HOST, "-n", "logged")
    log = SESSIONS / "logged" / "job.out"
    minicluster.run_as_user(["sh", "-c", f"echo 'http://node1:8888/lab?token=0123456789abcdef0123' >> {log}"])
    none = run(["logs", "logged", *HOST, "-n", "0"], laptop_env)
    assert none.returncode == 0 and none.stdout == ""
    last = run(["logs", "logged", *HOST, "-n", "1"], laptop_env)
    assert last.returncode == 0 and len(last.stdout.splitlines()) == 1  # Jupyter may have logged after our line
    recent = run(["logs", "logged", *HOST, "-n", "20"], laptop_env)
    assert "http://node1:8888/lab?token=…" in recent.stdout.splitlines()
    everything = run(["logs", "logged", *HOST], laptop_env)
    assert "0123456789abcdef0123" not in everything.stdout and "[hpcjup launcher]" in everything.stdout
    assert run(["stop", "logged", *HOST], laptop_env).returncode == 0


def remote_commands(stderr: str) -> list[str]:
    """The remote commands `-v` logged (one line each, whatever the backend)."""
    return [
        line for line in stderr.splitlines() if line.startswith(("hpcjup.remote:", "hpcjup.ssh:")) and " -> " in line
    ]


@pytest.mark.transport  # counts remote commands, which each backend issues its own way
def test_ls_costs_the_same_whatever_the_number_of_sessions(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """At most 3 remote commands for `ls` (all records in one read, one squeue, one sacct), with 40 ended sessions."""
    template = json.loads(
        json.dumps({"host": "minicluster", "scheduler": "slurm", "created_at": "2026-12-01T00:00:00+00:00"})
    )
    for i in range(40):
        name = f"many-{i}"
        minicluster.run_as_user(["mkdir", "-p", str(SESSIONS / name)])
        write_as_user(
            SESSIONS / name / "session.json", json.dumps({**template, "name": name, "job_id": str(900000 + i)})
        )
        write_as_user(SESSIONS / name / "state.json", json.dumps({"state": "ended", "reason": "idle", "exit_code": 0}))
    result = run(["-v", "ls", *HOST, "--json"], laptop_env)
    assert result.returncode == 0, result.stderr
    rows = {row["session"] for row in json.loads(result.stdout)["sessions"]}
    assert {f"many-{i}" for i in range(40)} <= rows
    commands = remote_commands(result.stderr)
    assert len(commands) <= 3, "\n".join(commands)
    prune = run(["-v", "prune", *HOST], laptop_env)
    assert prune.returncode == 0 and len(remote_commands(prune.stderr)) <= 4, prune.stderr


@pytest.mark.parametrize("flag", [["--timeout", "0"], ["--time", "0"], ["--time", "00:00:00"]])
def test_zero_limits_are_refused(laptop_env: dict[str, str], flag: list[str]) -> None:
    """`--timeout 0` and `--time 0` meant nothing useful and were accepted silently: now a usage error."""
    result = run(["start", "--local", "--no-browser", "--python", "/nonexistent", *flag], laptop_env)
    assert result.returncode == ExitCode.USAGE and flag[0] in result.stderr, result.stderr


@pytest.mark.transport  # counts remote commands, which each backend issues its own way
def test_round_trips_per_command(minicluster: Any, laptop_env: dict[str, str], clean_jobs: None) -> None:
    """Issue 13's budget, counted from `-v` (one line per remote command): start <= 2 up to and including
    the submission (detection; upload + submit), 1 on a later start from the same laptop, attach, logs and stop NAME <= 4, stop --all <= 3 whatever the number of sessions."""
    started = run(["-v", "start", *HOST, "-d", "--json", *QUICK, "-n", "rt-a"], laptop_env, timeout=150)
    assert started.returncode == 0, started.stderr
    commands = remote_commands(started.stderr)
    # The upload, the claim of the name and sbatch are one remote command (the claim script's "submit=$5").
    submitted = next(i for i, line in enumerate(commands) if "submit=$5" in line)
    assert submitted + 1 <= 2, "\n".join(commands[: submitted + 1])
    # A later start on this laptop: the home and scheduler it learned stand in for the probe (the upload checks them).
    second = run(["-v", "start", *HOST, "-d", "--json", *QUICK, "-n", "rt-b"], laptop_env, timeout=150)
    assert second.returncode == 0, second.stderr
    assert "submit=$5" in remote_commands(second.stderr)[0], "\n".join(remote_commands(second.stderr)[:3])
    assert run(["disconnect", "rt-a"], laptop_env).returncode == 0
    attached = run(["-v", "attach", "rt-a", *HOST, "-d", "--json", "--no-browser"], laptop_env, timeout=120)
    assert attached.returncode == 0, attached.stderr
    assert len(remote_commands(attached.stderr)) <= 4, "\n".join(remote_commands(attached.stderr))
    logs = run(["-v", "logs", "rt-a", *HOST, "-n", "5"], laptop_env)
    assert logs.returncode == 0 and len(remote_commands(logs.stderr)) <= 4, logs.stderr
    stopped = run(["-v", "stop", "rt-a", *HOST], laptop_env, timeout=120)
    assert stopped.returncode == 0 and len(remote_commands(stopped.stderr)) <= 4, stopped.stderr
    for name in ("rt-c", "rt-d"):
        assert start(laptop_env, *HOST, "-n", name).returncode == 0
    stop_all = run(["-v", "stop", "--all", *HOST, "--json"], laptop_env, timeout=180)
    assert stop_all.returncode == 0, stop_all.stderr
    assert {s["name"] for s in json.loads(stop_all.stdout)["stopped"]} >= {"rt-b", "rt-c", "rt-d"}
    assert len(remote_commands(stop_all.stderr)) <= 3, "\n".join(remote_commands(stop_all.stderr))
    assert not session_jobs(minicluster, ("rt-a", "rt-b", "rt-c", "rt-d"))


def test_a_remembered_home_that_is_wrong_is_relearned(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None
) -> None:
    """What the last start learned of the host is checked by the upload before it claims anything: a wrong
    home (the centre moved home directories) costs one probe more, and the start goes on and remembers anew."""
    facts = Path(laptop_env["XDG_STATE_HOME"]) / "hpcjup" / "hosts" / "minicluster.json"
    facts.parent.mkdir(parents=True, mode=0o700)
    facts.write_text(json.dumps({"home": "/home/moved/hpcuser", "scheduler": "slurm"}))
    started = run(["-v", "start", *HOST, "-d", "--json", *QUICK, "-n", "moved"], laptop_env, timeout=150)
    assert started.returncode == 0, started.stderr
    commands = remote_commands(started.stderr)
    assert "submit=$5" in commands[0] and "-> 77" in commands[0], "\n".join(commands[:3])  # the check refused
    assert (SESSIONS / "moved" / "session.json").exists() and not Path("/home/moved").exists()
    learned = json.loads(facts.read_text())
    assert {k: learned[k] for k in ("home", "scheduler")} == {"home": "/home/hpcuser", "scheduler": "slurm"}
    assert run(["stop", "moved", *HOST], laptop_env, timeout=120).returncode == 0

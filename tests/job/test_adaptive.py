"""The adaptive loop (hpcjup/job/adaptive.py) under the cluster's Python, against a real Dask scheduler and real
workers in one process; only the batch system is a stand-in (a submit command that prints an id, or refuses).
The loop on the real mini-cluster: tests/cli/test_adaptive.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

JOB_DIR = Path(__file__).resolve().parents[2] / "hpcjup" / "job"

# Ticks the loop by hand; workers "start" when the test starts Dask workers under the names the jobs would give.
DRIVER = r"""
import asyncio, json, os, sys, time
sys.path.insert(0, sys.argv[1])
import adaptive
import cloudpickle
cloudpickle.register_pickle_by_value(adaptive)
from distributed import Client, LocalCluster, Worker

session = sys.argv[2]
out = {}
adaptive.INTERVAL = 0.5

async def start_worker(address, name):
    return await Worker(address, name=name, resources={"g": 1}, nthreads=1)

def jobs_file():
    with open(os.path.join(session, "dask", "jobs")) as fh:
        return fh.read().split()

with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
    loop = adaptive.Loop(session, client)
    loop.tick()
    out["idle_start"] = loop.status["groups"]["g"]
    futs = client.map(lambda x: time.sleep(0.5) or x * 2, range(20), resources={"g": 1}, pure=False)
    time.sleep(0.5)
    for _ in range(3):
        loop.tick()
    group = loop.groups["g"]
    out["grown"] = loop.status["groups"]["g"]
    out["recorded"] = jobs_file()
    tokens = sorted(group.jobs)
    # The jobs start: their workers join under the names the group's script gives them.
    workers = [cluster.sync(start_worker, cluster.scheduler_address, group.worker_name(t)) for t in tokens]
    time.sleep(1)
    loop.tick()
    out["running"] = loop.status["groups"]["g"]
    # One job is lost (a preemption): its worker goes without being retired; the loop submits another.
    cluster.sync(workers[0].close)
    time.sleep(1)
    loop.tick()
    loop.tick()
    out["after_loss"] = loop.status["groups"]["g"]
    out["result"] = sum(client.gather(futs))
    del futs
    time.sleep(0.5)
    for _ in range(6):
        loop.tick()
        time.sleep(0.3)
    out["shrunk"] = loop.status["groups"]["g"]
    out["withdrawn"] = sorted(n for n in os.listdir(os.path.join(session, "dask", adaptive.ADAPTIVE_DIR, "g")) if n.endswith(".withdrawn"))
    out["workers_left"] = [w.name for w in client.scheduler_info()["workers"].values()]
    # A refusing partition: the scheduler's words are shown, and the loop backs off instead of retrying each tick.
    os.environ["HPCJUP_SUBMIT"] = sys.argv[3]
    futs = client.map(lambda x: x, range(5), resources={"g": 1}, pure=False)
    time.sleep(0.5)
    for _ in range(5):
        loop.tick()
    out["refused"] = loop.status["groups"]["g"]
    out["refusals"] = group.refusals
print(json.dumps(out))
"""


@pytest.fixture
def session(tmp_path: Path) -> Path:
    dask = tmp_path / "lab" / "dask"
    dask.mkdir(parents=True)
    (dask / "g.sh").write_text("#!/bin/sh\n# worker hpcjup+lab+g+@TOKEN@\n")
    entry = {"partition": "batch", "jobs": 0, "cores": 1, "min": 0, "max": 2, "adapt_idle": 1, "preemptible": True}
    (tmp_path / "lab" / "groups.json").write_text(json.dumps({"g": {**entry, "script": str(dask / "g.sh")}}))
    return tmp_path / "lab"


def stand_in(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_the_loop_grows_replaces_shrinks_and_backs_off(python: str, session: Path, tmp_path: Path) -> None:
    count = tmp_path / "count"
    submit = stand_in(
        tmp_path / "submit",
        f"n=$(($(cat {count} 2>/dev/null || echo 100) + 1)); echo $n > {count}; "
        'grep -q "+lab+g+[0-9a-f]\\{8\\}" "$1" || exit 3; echo "Submitted batch job $n"\n',
    )
    refuse = stand_in(tmp_path / "refuse", 'echo "sbatch: error: invalid partition specified: batch" >&2; exit 1\n')
    env = {"PATH": "/usr/bin:/bin", "HPCJUP_SUBMIT": submit, "HPCJUP_SCRUB": "SLURM_", "SLURM_JOB_ID": "1"}
    done = subprocess.run(
        [python, "-c", DRIVER, str(JOB_DIR), str(session), refuse],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["idle_start"]["target"] == 0 and out["idle_start"]["pending"] == 0, "nothing to do: no job"
    assert out["grown"]["pending"] == 2 and out["grown"]["target"] == 2, "grown to the maximum, not beyond"
    assert out["recorded"] == ["101", "102"], "each job recorded for `hpcjup stop` as it is submitted"
    assert out["running"]["running"] == 2 and out["running"]["pending"] == 0
    assert out["after_loss"]["lost"] == 1 and out["after_loss"]["pending"] == 1, "the lost job is replaced"
    assert out["result"] == sum(x * 2 for x in range(20))
    assert out["shrunk"]["running"] == 0 and out["shrunk"]["pending"] == 0, "idle workers retired, nodes given back"
    # The lost job (should the scheduler requeue it) and the replacement that never started end as they start.
    assert len(out["withdrawn"]) == 2
    assert out["workers_left"] == []
    assert "invalid partition" in out["refused"]["error"]
    assert out["refusals"] == 1, "one refusal in five ticks: the loop waits before it tries again"


# A worker-group job's worker (no nanny) gets SIGTERM, as a preemption's grace time begins: it retires, and the
# result it holds moves to a worker that stays (one that could not recompute it: it lacks the group's resource).
RETIRE = r"""
import json, os, signal, subprocess, sys, time
from distributed import Client, LocalCluster
retire = os.path.join(sys.argv[1], "daskretire.py")
with LocalCluster(n_workers=1, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None) as cluster, Client(cluster) as client:
    leaving = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
        "--no-nanny", "--no-dashboard", "--name", "leaving", "--resources", "g=1", "--preload", retire])
    client.wait_for_workers(2, timeout=60)
    future = client.submit(lambda: b"x" * 1000, resources={"g": 1}, pure=False)
    future.result(timeout=30)
    before = list(client.who_has(future).values())[0]
    os.kill(leaving.pid, signal.SIGTERM)
    code = leaving.wait(60)
    time.sleep(0.5)
    after = list(client.who_has(future).values())[0]
    staying = [w for w in client.scheduler_info()["workers"]]
    print(json.dumps({"code": code, "before": before, "after": after, "staying": staying}))
"""


def test_a_group_worker_retires_on_sigterm_and_its_data_moves(python: str) -> None:
    done = subprocess.run([python, "-c", RETIRE, str(JOB_DIR)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert len(out["staying"]) == 1, "the worker that got SIGTERM has gone"
    assert out["before"] != out["staying"]
    assert out["after"] == out["staying"], "its result moved to the worker that stays"


# The session's time limit draws near: the loop retires the group's workers, their data moving to the session's own
# worker, and says so in Dask's event log (what a notebook's client.get_events("hpcjup-adaptive") shows).
WIND_DOWN = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import adaptive
import cloudpickle
cloudpickle.register_pickle_by_value(adaptive)
from distributed import Client, LocalCluster, Worker
os.environ.update(HPCJUP_TIME_LIMIT="600", HPCJUP_WARN_SECONDS="120")
out = {"at": adaptive.wind_down_at(1000.0)}
async def start_worker(address, name):
    return await Worker(address, name=name, resources={"g": 1}, nthreads=1)
with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
    staying = list(client.scheduler_info()["workers"])
    cluster.sync(start_worker, cluster.scheduler_address, "hpcjup+lab+g+0123abcd")
    future = client.submit(lambda: 42, resources={"g": 1}, pure=False)
    future.result()
    groups = os.path.join(sys.argv[2], "groups.json")
    with open(groups) as fh:
        doc = json.load(fh)
    doc["g"]["adapt_idle"] = 600  # never idle long enough here: only the wind-down or the release retires it
    with open(groups, "w") as fh:
        json.dump(doc, fh)
    loop = adaptive.Loop(sys.argv[2], client)
    loop.tick()
    out["before"] = len(client.scheduler_info()["workers"])
    if sys.argv[3] == "wind-down":
        loop.wind_down()
    else:  # `hpcjup scale SESSION g 3`: the group is fixed from now on, the loop's jobs end
        del doc["g"]["max"]
        with open(groups, "w") as fh:
            json.dump(doc, fh)
    time.sleep(1)
    loop.tick()
    time.sleep(1)
    out["holders"] = list(client.who_has(future).values())[0]
    out["staying"] = staying
    out["workers"] = len(client.scheduler_info()["workers"])
    out["events"] = [msg for _, msg in client.get_events("hpcjup-adaptive")]
    out["status"] = loop.status["groups"].get("g")
print(json.dumps(out))
"""


def wind_down(python: str, session: Path, how: str) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", WIND_DOWN, str(JOB_DIR), str(session), how], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["before"] == 2, "the group's worker stays while nothing else retires it"
    assert out["holders"] == out["staying"], "the group worker's result moved to the session's worker"
    assert out["workers"] == 1
    return out


def test_before_the_time_limit_the_groups_retire_and_the_client_is_told(python: str, session: Path) -> None:
    out = wind_down(python, session, "wind-down")
    assert out["at"] == 1000.0 + 600 - 120 - 60, "a minute before the session's own warning"
    assert any("time limit is near" in event for event in out["events"])
    assert out["status"]["running"] == 0 and out["status"]["target"] == 0


def test_a_group_made_fixed_again_loses_the_loops_workers(python: str, session: Path) -> None:
    out = wind_down(python, session, "release")
    assert any("no longer adaptive" in event for event in out["events"])
    assert out["status"] is None


# `hpcjup scale GROUP 0-1` while two jobs wait: the loop withdraws the newest waiting one at its next look, not after
# the group's idle time (Dask's own scale-down waits that long: 300 s here).
LOWERED = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import adaptive
import cloudpickle
cloudpickle.register_pickle_by_value(adaptive)
from distributed import Client, LocalCluster

session = sys.argv[2]
groups = os.path.join(session, "groups.json")
with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
    loop = adaptive.Loop(session, client)
    futs = client.map(lambda x: time.sleep(0.5) or x, range(20), resources={"g": 1}, pure=False)
    time.sleep(0.5)
    for _ in range(3):
        loop.tick()
    out = {"grown": loop.status["groups"]["g"], "order": [j.job_id for j in loop.groups["g"].jobs.values()]}
    doc = json.load(open(groups))
    doc["g"]["max"] = 1
    json.dump(doc, open(groups, "w"))
    loop.tick()
    out["lowered"] = loop.status["groups"]["g"]
    print(json.dumps(out))
"""


def test_a_lowered_maximum_withdraws_waiting_jobs_at_once(python: str, session: Path, tmp_path: Path) -> None:
    doc = json.loads((session / "groups.json").read_text())
    doc["g"]["adapt_idle"] = 300
    (session / "groups.json").write_text(json.dumps(doc))
    count = tmp_path / "count"
    submit = stand_in(
        tmp_path / "submit",
        f'n=$(($(cat {count} 2>/dev/null || echo 100) + 1)); echo $n > {count}; echo "Submitted batch job $n"\n',
    )
    env = {"PATH": "/usr/bin:/bin", "HPCJUP_SUBMIT": submit, "HPCJUP_SCRUB": "SLURM_", "SLURM_JOB_ID": "1"}
    done = subprocess.run(
        [python, "-c", LOWERED, str(JOB_DIR), str(session)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["grown"]["pending"] == 2 and out["order"] == ["101", "102"]
    assert out["lowered"]["pending"] == 1 and out["lowered"]["max"] == 1
    assert out["lowered"]["jobs"] == {"101": "pending", "102": "withdrawn"}, "the newest waiting job goes"
    marks = sorted(p.name for p in (session / "dask" / "group-jobs" / "g").iterdir() if p.name.endswith(".withdrawn"))
    assert len(marks) == 1

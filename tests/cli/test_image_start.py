"""`start --env` runs the environments from node-local copies of their images, through Slurm on both nodes.

The real chain: the build packs the server env and the user's env (envs/pack.py), the job script runs the launcher
through job/envlocal.sh, the per-host launch runs Dask's workers through it on both nodes, a worker group's job runs
its worker through it; the kernel and all the workers run the env's Python from the node-local copy (auto: unpacked
into RAM); `stop` leaves no copy of it. A corrupt image is never
used (the env's tree was dropped: the job ends and says why) and the next start builds it again. `doctor` says what
the host supports.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import hpcjup_argv, http_get, run
from tests.cli.kernel import run_in_kernel
from tests.cli.test_start_env import ROOT, SESSIONS, env_of, start
from tests.cluster.procs import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
CODE = """
import sys
from distributed import Client
client = Client()
client.wait_for_workers(2, timeout=60)
print(sys.prefix)
print(sorted(set(client.run(lambda: sys.prefix).values())))
print(sorted(set(client.run(lambda: __import__("os").environ["SLURMD_NODENAME"]).values())))
print(client.submit(lambda: sys.prefix, resources={"batch": 1}, pure=False).result(timeout=120))  # the group's
from dask_jobqueue import SLURMCluster  # the notebook's own scale-out job
cluster = SLURMCluster()
cluster.scale(1)
with Client(cluster) as scaled:
    scaled.wait_for_workers(1, timeout=120)
    print(list(scaled.run(lambda: sys.prefix).values()))
cluster.close()
"""


def start_dask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`start` as test_start_env's, with Dask."""
    argv = [*hpcjup_argv(), "-v", "start", *HOST, "-d", "--json", "--idle-timeout", "0", "--time", "10", *args]
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)


def _spec(tmp_path: Path, *more: str) -> Path:
    spec = tmp_path / "analysis"
    spec.mkdir()
    (spec / "requirements.txt").write_text("\n".join([f"# {secrets.token_hex(6)}", "six", "distributed", *more, ""]))
    return spec


def _mounted(digest: str) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if f"/envs/{digest}/env " in line]


def _env_path(name: str) -> str:
    record = json.loads((SESSIONS / name / "session.json").read_text())
    return next(p for p in record["envs"] if "/env-" in p)


def _digest(env: str) -> str:
    return json.loads(Path(env, ".hpcjup-env.json").read_text())["image"]["sha256"][:16]


def test_kernel_and_workers_on_both_nodes_run_from_the_node_local_copy(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, tmp_path: Path
) -> None:
    env = env_of(laptop_env)  # auto: unpacked into RAM (/dev/shm) where it fits in a quarter of the job's memory
    name = f"img-{secrets.token_hex(3)}"
    # A worker group's job (its own batch job, rendered by dask-jobqueue in the env) beside the session's two nodes.
    started = start_dask(
        env, "--no-browser", "--env", str(_spec(tmp_path, "dask-jobqueue")), "-n", name, "--nodes", "2", "--cpus", "1",
        "--worker-group", "batch:1",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    # Rendered on the login node through the wrapper: the env's tree was dropped, its image is copied there.
    assert "Worker group batch: job(s) " in started.stderr, started.stderr[-3000:]
    try:
        info = json.loads(started.stdout)
        kernel_env = _env_path(name)
        digest = _digest(kernel_env)
        base = info["url"].split("/lab")[0].rstrip("/")
        status, _ = http_get(f"{base}/api/status", info.get("token"))
        assert status == 200
        lines = run_in_kernel(base, info["token"], CODE, timeout=180).splitlines()
        local = lines[0]
        assert local.endswith(f"/hpcjup-1001/envs/{digest}/env"), lines  # the kernel: from the copy
        assert lines[1] == str([local]), lines  # every worker, on both nodes: the same copy (one machine here)
        assert lines[2] == "['node1', 'node2']", lines
        assert lines[3] == local, lines  # the group's worker too
        # One copy (unpacked: no mount) for the kernel, the launcher's Dask, both nodes' and the group's workers.
        assert local.startswith("/dev/shm/") and not _mounted(digest), local
        log = (SESSIONS / name / "job.out").read_text(errors="replace")
        assert f"{kernel_env} from {local} (unpack)" in log, log[-3000:]
        # The notebook's scale-out job ran its worker through the env wrapper too (it ran the first node's copy's
        # path bare, which another node lacks): the wrapper's line is in its log.
        assert lines[4] == str([local]), lines
        [scale_job] = (SESSIONS / name / "dask/jobs").read_text().split()
        logs = list((SESSIONS / name / "dask/logs").glob("*"))
        scale_log = "".join(p.read_text(errors="replace") for p in logs if f"-{scale_job}." in p.name)
        assert f"hpcjup: {kernel_env} from {local} (unpack)" in scale_log, scale_log[-3000:]
        # The group's job copied only the env its worker runs (the server env's image stays where it is).
        group_log = "".join(p.read_text(errors="replace") for p in logs if f"-{scale_job}." not in p.name)
        [used] = [line for line in group_log.splitlines() if " from " in line and "(unpack)" in line]
        assert used.startswith(f"hpcjup: {kernel_env} from {local} (unpack)"), group_log[-3000:]
    finally:
        stopped = run(["stop", name, *HOST], env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    # The job's end (the last user of that copy) unmounts and removes it.
    wait_until(lambda: not _mounted(digest) and not Path(local).parent.exists(), 30, "the copy to go")


def test_a_corrupt_image_is_never_used_and_the_next_start_builds_the_env_again(
    minicluster: Any, laptop_env: dict[str, str], clean_jobs: None, tmp_path: Path
) -> None:
    """The env's tree was dropped after packing: a corrupt image leaves nothing to run. The job ends at once and the
    laptop says why and what to do; the next start builds the env again (from its lock) and runs it."""
    env = env_of(laptop_env)
    spec = _spec(tmp_path)
    first = f"bad-{secrets.token_hex(3)}"
    built = start(env, "--env", str(spec), "-n", first, "--no-dask", "--dry-run")  # names it; builds nothing
    assert built.returncode == 0, built.stderr[-2000:]
    assert run(["env", "build", str(spec), *HOST], env, timeout=600).returncode == 0
    row = next(r for r in json.loads(built.stdout)["envs"] if r["source"] == str(spec))
    kernel_env = f"/home/hpcuser/{ROOT}/{row['env']}"
    image = Path(f"{kernel_env}.sqsh")
    assert not Path(kernel_env, "bin").exists()  # dropped: the image is all there is
    sha = json.loads(Path(kernel_env, ".hpcjup-env.json").read_text())["image"]["sha256"]
    subprocess.run(["dd", "of=" + str(image), "bs=1", "seek=5000", "conv=notrunc"], input=b"X", check=True)

    result = start(env, "--env", str(spec), "-n", first)
    assert result.returncode != 0, result.stderr[-3000:]
    assert "is corrupt" in result.stderr and "the next start builds it again" in result.stderr, result.stderr[-3000:]
    log = (SESSIONS / first / "job.out").read_text(errors="replace")
    assert f"{image} is corrupt" in log and "never used" in log, log[-3000:]
    assert Path(f"{image}.bad").exists()
    run(["stop", first, *HOST], env, timeout=120)

    second = f"good-{secrets.token_hex(3)}"
    again = start(env, "--env", str(spec), "-n", second)  # the upload finds it bad: built again, then submitted
    assert again.returncode == 0, again.stderr[-3000:]
    run(["stop", second, *HOST], env, timeout=120)
    assert not Path(f"{image}.bad").exists()
    meta = json.loads(Path(kernel_env, ".hpcjup-env.json").read_text())
    assert meta["image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest() != sha
    log = (SESSIONS / second / "job.out").read_text(errors="replace")
    assert f"{kernel_env} from " in log and "(unpack)" in log and "corrupt" not in log, log[-3000:]


def test_doctor_says_how_jobs_use_images(minicluster: Any, laptop_env: dict[str, str]) -> None:
    def images(mode: str) -> dict[str, Any]:
        result = run(["doctor", *HOST, "--json"], {**laptop_env, "HPCJUP_ENV_MODE": mode}, timeout=120)
        return next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "env-images")

    auto = images("auto")
    assert auto["status"] == "pass" and auto["summary"].startswith("unpack in RAM: "), auto
    assert "larger ones mounted (squashfuse mounts work" in auto["summary"], auto
    assert images("image")["summary"].startswith("image: squashfuse mounts work")
    unpack = images("unpack")
    assert unpack["status"] == "pass" and unpack["summary"].startswith("unpack in RAM: "), unpack
    assert images("direct")["status"] == "skip"

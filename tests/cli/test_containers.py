"""`image = "docker://..."` for real: pulled once from a real registry, and the session runs inside it.

The registry (tests/cluster/registry.py) is distribution 2.8 on loopback with TLS; its image is a Debian
minbase with its own Python and a marker file only the image has. The mini-cluster's Jupyter env is bound into
the container (`binds`) and run by the image's /usr/bin/python3 (the env's bin/python links there): whatever
reads the marker runs inside the image. Charliecloud pulls and runs it (ch-image, ch-convert, ch-run): the pull
is ONE SquashFS file in the env root, which each job mounts on its node (job/envlocal.sh) before ch-run runs it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import ExitCode
from tests.cli.helpers import hpcjup_argv, http_get, local_env, run
from tests.cli.kernel import run_in_kernel
from tests.cli.test_start_env import ROOT as START_ROOT
from tests.cli.test_start_env import SESSIONS
from tests.cluster.procs import wait_until
from tests.cluster.registry import MARKER, MARKER_TEXT, Registry, missing

pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
HOST = ["--host", "minicluster"]
ENV = "/opt/hpcjup-cluster-env"
HOME = Path("/home/hpcuser")
# In the kernel: its own marker, the scheduler's workers' (the launcher's and a worker group's).
CODE = f"""
import sys
from distributed import Client
read = lambda: open({MARKER!r}).read().strip() + " " + sys.executable
client = Client()
client.wait_for_workers(2, timeout=120)
print(read())
print(sorted(set(client.run(read).values())))
"""


@pytest.fixture(scope="module")
def registry(minicluster: Any) -> Iterator[Registry]:
    why = missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    with Registry() as reg:
        yield reg


def _laptop(laptop_env: dict[str, str], image: str) -> tuple[dict[str, str], Path]:
    """The laptop's config: the image, the cluster env bound into it; a fresh env root (removed after)."""
    root = f".hpcjup/envs-ctest-{secrets.token_hex(3)}"
    config = Path(laptop_env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[defaults]\nimage = "{image}"\nbinds = ["{ENV}"]\npython = "{ENV}/bin/python"\n')
    return {**laptop_env, "HPCJUP_ENV_ROOT": root}, HOME / root


@pytest.fixture
def laptop(laptop_env: dict[str, str], registry: Registry) -> Iterator[tuple[dict[str, str], Path]]:
    env, root = _laptop(laptop_env, registry.ref)
    yield env, root
    shutil.rmtree(root, ignore_errors=True)


def start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`hpcjup -v start -d --json` as a script runs it (no terminal: the pull's progress as plain lines)."""
    argv = [*hpcjup_argv(), "-v", "start", *HOST, "-d", "--json", "--idle-timeout", "0", "--time", "10", *args]
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)


def _node_copies(image: Path) -> list[str]:
    """What of the image's node-local copy (envlocal.sh: <local>/hpcjup-UID/envs/KEY) is mounted or left on this
    machine, whose /proc/mounts, /tmp and /dev/shm are both Slurm nodes'."""
    key = image.name.removeprefix("sha256-")[:16]
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if f"/envs/{key}/" in line]
    return mounts + [str(p) for top in ("/tmp", "/dev/shm") for p in Path(top).glob(f"hpcjup-*/envs/{key}*")]


def _images(root: Path) -> list[str]:
    """The images and pointers cached under root (not the locks, nor each image's .info)."""
    return sorted(p.name for p in (root / "images").iterdir() if not p.name.startswith(".") and p.suffix != ".info")


def test_an_image_is_pulled_once_and_runs_the_server_kernels_and_workers(
    laptop: tuple[dict[str, str], Path], clean_jobs: None
) -> None:
    env, root = laptop
    name = f"ctr-{secrets.token_hex(3)}"
    first = start(env, "-n", name, "--no-browser", "--workers", "1", "--cpus", "2", "--worker-cores", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    try:
        [cached] = [n for n in _images(root) if n.startswith("sha256-")]
        image = root / "images" / cached
        assert cached.endswith(".sqfs") and image.is_file(), "one file on the shared filesystem, not a tree"
        assert "Pulled docker://localhost:" in first.stderr and "pulling" in first.stderr
        record = json.loads((SESSIONS / name / "session.json").read_text())
        wrap = f"sh {SESSIONS / name / 'envlocal.sh'} auto image:{image} -- env -u HPCJUP_LAUNCH ch-run "
        assert record["python_command"].startswith(wrap), record  # worker groups mount it on their node
        assert "docker://" not in (SESSIONS / name / "job.sh").read_text(), "the job runs the cached copy"
        log = (SESSIONS / name / "job.out").read_text()
        assert f"image:{image} from " in log, log[-3000:]  # the server: from this node's copy
        info = json.loads(first.stdout)
        base = info["url"].split("/lab")[0].rstrip("/")
        assert http_get(f"{base}/api/status", info["token"])[0] == 200  # the server: ch-run ... python launcher.py

        scaled = run(["scale", name, "batch", "1", *HOST, "--json"], env)  # a worker-group job, same image
        assert scaled.returncode == 0, scaled.stderr
        lines = run_in_kernel(base, info["token"], CODE, timeout=180).splitlines()
        assert lines[0] == f"{MARKER_TEXT} {ENV}/bin/python", lines  # the kernel
        assert lines[1] == str([f"{MARKER_TEXT} {ENV}/bin/python"]), lines  # the session's worker and the group's

        again = start(env, "-n", f"{name}-2", "--no-dask", "--no-browser")
        assert again.returncode == 0, again.stderr[-3000:]
        run(["stop", f"{name}-2", *HOST], env, timeout=120)
        assert "Pulled" not in again.stderr and "pulling" not in again.stderr, "the second start pulls nothing"
        assert _images(root) == sorted([cached, *(n for n in _images(root) if n.startswith("ref-"))])
    finally:
        run(["stop", name, *HOST], env, timeout=120)
    wait_until(lambda: not _node_copies(image), 30, "the image's node-local copy to be unmounted and removed")


def test_an_unreachable_registry_says_the_runtimes_words_submits_nothing_and_caches_nothing(
    laptop_env: dict[str, str], registry: Registry, clean_jobs: None
) -> None:
    env, root = _laptop(laptop_env, "docker://localhost:9/hpcjup/test:1")  # nothing listens on port 9
    try:
        name = f"ctr-{secrets.token_hex(3)}"
        result = start(env, "-n", name, "--no-dask", "--no-browser")
        assert result.returncode == ExitCode.ENV_BUILD, result.stderr[-3000:]
        assert "charliecloud could not pull docker://localhost:9/hpcjup/test:1" in result.stderr
        assert "error:" in result.stderr and "refused" in result.stderr.lower(), result.stderr[-2000:]  # ch-image's
        assert "nothing was cached" in result.stderr
        assert _images(root) == [], "no half-pulled image, no pointer"
        assert not (SESSIONS / name).exists(), "no job was submitted"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_local_runs_the_image_through_podman(laptop_env: dict[str, str], registry: Registry, tmp_path: Path) -> None:
    """--local: this machine's Podman pulls the image and runs the launcher, Jupyter and the kernel inside it."""
    env, _ = _laptop(local_env(laptop_env), registry.ref)
    # This machine's kernel refuses crun's rlimits and its cgroup mode: containers.conf is how a user tunes Podman
    # (runc, limits it may set); hpcjup's `podman run` stays the same.
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n'
    )
    env["CONTAINERS_CONF"] = str(conf)
    name = f"ctr-{secrets.token_hex(3)}"
    argv = [*hpcjup_argv(), "start", "--local", "-d", "--json", "--no-browser", "--no-dask", "--idle-timeout", "0"]
    started = subprocess.run([*argv, "-n", name], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        info = json.loads(started.stdout)
        base = info["url"].split("/lab")[0].rstrip("/")
        record = json.loads(Path(env["HOME"], ".hpcjup", "sessions", name, "session.json").read_text())
        assert record["python_command"].startswith("podman run --rm --network=host --env-host"), record
        code = f"import sys; print(open({MARKER!r}).read().strip(), sys.executable)"
        assert run_in_kernel(base, info["token"], code, timeout=120).strip() == f"{MARKER_TEXT} {ENV}/bin/python"
    finally:
        stopped = run(["stop", name, "--local"], env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    running = subprocess.run(["podman", "ps", "--format", "{{.Command}}"], capture_output=True, text=True, check=True)
    assert name not in running.stdout, "the container ended with the session"


def test_a_kernel_runs_inside_an_image(laptop_env: dict[str, str], registry: Registry, clean_jobs: None) -> None:
    """`--kernel NAME=image:REF#PYTHON`: JupyterLab runs from hpcjup's server environment, the kernel in the image."""
    env = {**laptop_env, "HPCJUP_ENV_ROOT": START_ROOT}  # test_start_env's root: its server env is built already
    config = Path(laptop_env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[defaults]\nbinds = ["{ENV}"]\n')
    for pointer in (HOME / START_ROOT / "images").glob("ref-*"):  # a directory this machine pulled before SquashFS
        if pointer.readlink().suffix == ".ch":
            pointer.unlink()
    name = f"ctr-{secrets.token_hex(3)}"
    started = start(
        env, "-n", name, "--no-dask", "--no-browser", "--kernel", f"boxed=image:{registry.ref}#{ENV}/bin/python"
    )
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        info = json.loads(started.stdout)
        base = info["url"].split("/lab")[0].rstrip("/")
        script = (SESSIONS / name / "job.sh").read_text()
        assert "boxed=env -u HPCJUP_LAUNCH ch-run" in script and "docker://" not in script, script[-2000:]
        [image] = {Path(w.removeprefix("image:")) for w in script.split() if w.startswith("image:")}
        assert image.suffix == ".sqfs" and image.is_file(), "the kernel's image: mounted on the node first"
        code = f"import sys; print(open({MARKER!r}).read().strip(), sys.executable)"
        assert run_in_kernel(base, info["token"], code, timeout=120).strip() == f"{MARKER_TEXT} {ENV}/bin/python"
    finally:
        run(["stop", name, *HOST], env, timeout=120)
    wait_until(lambda: not _node_copies(image), 30, "the kernel image's node-local copy to go")


def test_a_moved_tag_is_pulled_again_listed_and_pruned_and_an_unreachable_registry_keeps_the_cached_copy(
    laptop_env: dict[str, str], registry: Registry
) -> None:
    """`env pull` does what a start does before its job: the tag asked for its digest, pulled again once it moved."""
    ref = registry.push_tag("moving", secrets.token_hex(4))  # a fresh digest: this run's first pull is a real one
    env, root = _laptop(laptop_env, ref)
    try:
        first = run(["env", "pull", *HOST, "--json"], env, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]
        a = json.loads(first.stdout)
        assert a["pulled"] and a["runtime"] == "charliecloud" and a["moved"] is None and a["warning"] is None

        again = run(["env", "pull", *HOST, "--json"], env)
        assert again.returncode == 0 and json.loads(again.stdout)["pulled"] is False, again.stderr
        assert "pulling" not in again.stderr, "an unmoved tag costs one registry request, no pull"

        registry.push_tag("moving", secrets.token_hex(4))  # the tag moves
        moved = run(["env", "pull", *HOST, "--json"], env, timeout=300)
        assert moved.returncode == 0, moved.stderr[-3000:]
        b = json.loads(moved.stdout)
        assert b["pulled"] and b["path"] != a["path"] and b["moved"][1] == registry.digest("moving"), b
        assert f"{ref} moved from sha256:" in moved.stderr and Path(a["path"]).is_file(), "the old copy stays"

        registry.__exit__(None, None, None)  # the registry unreachable: the cached copy, with a warning
        try:
            offline = run(["env", "pull", *HOST, "--json"], env)
        finally:
            registry.__enter__()
        assert offline.returncode == 0, offline.stderr[-3000:]
        c = json.loads(offline.stdout)
        assert c["path"] == b["path"] and not c["pulled"] and "Connection refused" in c["warning"], c
        assert "warning: could not ask the registry whether" in offline.stderr

        listed = run(["env", "ls", *HOST, "--json"], env)
        assert listed.returncode == 0, listed.stderr
        images = {image["path"]: image for image in json.loads(listed.stdout)["images"]}
        new, old = images[b["path"]], images[a["path"]]
        assert (new["ref"], new["runtime"], new["current"], new["digest"]) == (ref, "charliecloud", True, b["moved"][1])
        assert old["current"] is False and new["files"] == 1 and new["kb"] > 10_000, "one file: one inode"
        text = run(["env", "ls", *HOST], env).stdout
        assert f"{ref} (old)" in text and "charliecloud" in text, text

        month_ago = time.time() - 30 * 86400
        os.utime(f"{a['path']}.info", (month_ago, month_ago))  # the old image's last use
        pruned = run(["prune", *HOST, "--envs", "7", "--json"], env)
        assert pruned.returncode == 0, pruned.stderr
        assert [e["path"] for e in json.loads(pruned.stdout)["envs"]] == [a["path"]]
        assert not Path(a["path"]).exists() and Path(b["path"]).is_file(), "the unused old image went, the new stayed"
    finally:
        shutil.rmtree(root, ignore_errors=True)

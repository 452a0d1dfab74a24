"""`start --image REF --nodes 2` with Dask, for real: the workers of both Slurm nodes run inside the image.

The launcher runs in the image (Charliecloud's ch-run), where srun is not; the host-side relay (job/relay.sh, the
job's main process) runs the per-host launches it asks for: `srun -w nodeN ... ch-run IMAGE -- python -m
distributed.cli.dask_worker`. Each worker reads the marker only the image has (test_containers' registry image)
and says which Slurm node it is on; after `stop` nothing of the session runs on either node. The image is one
SquashFS file: the job mounts it (squashfuse: env_mode image) on node1 before the relay and each launch on its own
node (job/envlocal.sh), and after `stop` nothing of it is mounted or left on either node.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.cli.helpers import run
from tests.cli.kernel import run_in_kernel
from tests.cli.test_containers import ENV, HOST, SESSIONS, _node_copies, laptop, registry, start
from tests.cluster.procs import wait_until
from tests.cluster.registry import MARKER, MARKER_TEXT

__all__ = ["laptop", "registry"]  # test_containers' fixtures: a fresh env root, the registry with the image
pytestmark = [pytest.mark.cluster, pytest.mark.one_backend]
CODE = f"""
import os, sys
from distributed import Client
client = Client()
client.wait_for_workers(2, timeout=120)
where = lambda: (open({MARKER!r}).read().strip(), sys.executable, os.environ.get("SLURMD_NODENAME"))
print(sorted(set(client.run(where).values())))
"""


def _session_processes(session: Path) -> list[str]:
    """The command lines of this machine's processes (both nodes' here) that name the session's directory."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(session).encode() in word for word in words):
            found.append(" ".join(w.decode(errors="replace") for w in words))
    return found


def test_workers_on_both_nodes_run_in_the_image_and_end_with_the_session(
    laptop: tuple[dict[str, str], Path], clean_jobs: None
) -> None:
    env, root = laptop
    config = Path(env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.write_text(config.read_text() + 'env_mode = "image"\n')  # mounted with squashfuse (auto: unpacked here)
    name = f"ctrn-{secrets.token_hex(3)}"
    started = start(env, "-n", name, "--no-browser", "--nodes", "2", "--cpus", "1")
    assert started.returncode == 0, started.stderr[-3000:]
    session = SESSIONS / name
    try:
        info = json.loads(started.stdout)
        base = info["url"].split("/lab")[0].rstrip("/")
        lines = run_in_kernel(base, info["token"], CODE, timeout=180).splitlines()
        inside = (MARKER_TEXT, f"{ENV}/bin/python")
        assert lines[-1] == str([(*inside, "node1"), (*inside, "node2")]), lines
        script = (session / "job.sh").read_text().replace(str(session) + "/", " ")
        assert " envlocal.sh image image:" in script and " relay.sh -- ch-run " in script, script[-2000:]
        log = (session / "job.out").read_text()
        assert log.count(" (image)") >= 3, log[-3000:]  # the launcher's node, then each launch's (envlocal.sh)
    finally:
        stopped = run(["stop", name, *HOST], env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not _session_processes(session), 30, "the session's processes on both nodes to end")
    assert not (session / "relay").exists()
    [image] = (root / "images").glob("sha256-*.sqfs")
    wait_until(lambda: not _node_copies(image), 30, "the image's copies on both nodes to be unmounted and removed")

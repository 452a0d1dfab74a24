"""The slow shared filesystem (slowfs.py): both sides see the same files, a lookup costs the delay, nothing is left."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cluster.minicluster import MiniCluster, wait_until
from tests.cluster.slowfs import (
    ROOT,
    SlowFS,
    make_image,
    missing_fuse,
    mounts_under,
    seconds_to_stat,
    squash_mount,
    venv_on_mount,
)

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fuse() -> None:
    reason = missing_fuse()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the slow filesystem is required when CI=true: {reason}", pytrace=False)
        pytest.skip(reason)


def test_both_sides_see_the_same_files(minicluster: MiniCluster) -> None:
    """A file put in the store is read through the mount by the cluster user; one it writes there lands in the store."""
    with SlowFS(minicluster, 0.1) as fs:
        (fs.store / "from-store.txt").write_text("written on local disk\n")
        read = minicluster.run_as_user(["cat", str(fs.mnt / "from-store.txt")])
        assert read.stdout == "written on local disk\n", read.stderr
        wrote = minicluster.run_as_user(["sh", "-c", f"echo written through sshfs > {fs.mnt}/from-mount.txt"])
        assert wrote.returncode == 0, wrote.stderr
        assert (fs.store / "from-mount.txt").read_text() == "written through sshfs\n"


def test_a_lookup_costs_at_least_the_round_trip(minicluster: MiniCluster) -> None:
    """Uncached stats through the mount each wait for the proxy's round trip (2 x 0.5 ms); in the store they do not."""
    n = 40
    with SlowFS(minicluster, 0.5) as fs:
        for i in range(n):
            (fs.store / f"f{i}").write_text("x")
        local = seconds_to_stat([fs.store / f"f{i}" for i in range(n)])
        fs.remount()
        slow = seconds_to_stat([fs.mnt / f"f{i}" for i in range(n)])
        cached = seconds_to_stat([fs.mnt / f"f{i}" for i in range(n)])
    assert slow >= n * 2 * 0.5e-3, f"{n} stats took {slow * 1000:.1f} ms: less than one 1 ms round trip each"
    assert local < slow / 10, f"local {local * 1000:.2f} ms against slow {slow * 1000:.1f} ms"
    assert cached < slow / 10, f"sshfs did not cache: {cached * 1000:.1f} ms the second time"


def test_an_image_on_it_mounts_and_runs(minicluster: MiniCluster) -> None:
    """A SquashFS image lying on the slow mount, squashfuse-mounted: the cluster user runs a program from it."""
    with SlowFS(minicluster, 0.1) as fs:
        tree = fs.store / "tree"
        (tree / "bin").mkdir(parents=True)
        (tree / "bin" / "hello").write_text("#!/bin/sh\necho hello from the image\n")
        (tree / "bin" / "hello").chmod(0o755)
        make_image(tree, fs.store / "tree.sqfs")
        with squash_mount(fs.mnt / "tree.sqfs", fs.mountpoint("image")) as image:
            ran = minicluster.run_as_user([str(image / "bin" / "hello")])
            assert ran.stdout == "hello from the image\n", ran.stderr
        assert not mounts_under(fs.root / "image")


def test_a_venv_on_it_imports_from_the_mount(minicluster: MiniCluster) -> None:
    """The shim venv runs the local base Python and imports the venv's modules through the slow mount."""
    with SlowFS(minicluster, 0.1) as fs:
        env = fs.store / "venv"
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(env)], check=True)
        site = next((env / "lib").glob("python3*/site-packages"))
        (site / "probe_slowfs.py").write_text("WHERE = 'the store'\n")
        python = venv_on_mount(env, fs.mnt / "venv", fs.root / "shim")
        code = "import probe_slowfs, os, sys; print(probe_slowfs.WHERE, sys.prefix, os.path.realpath(probe_slowfs.__file__), sep=chr(10))"
        ran = minicluster.run_as_user([str(python), "-c", code])
        assert ran.stdout.splitlines() == [
            "the store",
            str(fs.root / "shim"),
            str(fs.mnt / "venv" / site.relative_to(env) / "probe_slowfs.py"),
        ], ran.stderr


def test_close_and_sigterm_leave_nothing(minicluster: MiniCluster, tmp_path: Path) -> None:
    """A process holding mounts that gets SIGTERM unmounts them, ends sshfs and removes its tree."""
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from tests.cluster.minicluster import MiniCluster, wait_until
        from tests.cluster.slowfs import SlowFS, interruptible, make_image, squash_mount
        with interruptible(), SlowFS(MiniCluster(), 0.1, tag="test-sigterm-{os.getpid()}") as fs:
            (fs.store / "t").mkdir()
            make_image(fs.store / "t", fs.store / "t.sqfs")
            with squash_mount(fs.mnt / "t.sqfs", fs.mountpoint("image")):
                Path({str(ready)!r}).write_text(str(fs.sshfs.pid))
                time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    root = ROOT / f"test-sigterm-{os.getpid()}"

    def holding() -> bool:
        assert proc.poll() is None, f"the holder exited {proc.returncode} before mounting"
        return ready.exists() and bool(ready.read_text())

    try:
        wait_until(holding, 60, "the holder to mount", interval=0.1)
        sshfs_pid = int(ready.read_text())
        assert len(mounts_under(root)) == 2, mounts_under(root)
        proc.terminate()
        assert proc.wait(timeout=30) != 0  # the interrupt ends it with a traceback, after the `finally`s ran
    finally:
        if proc.poll() is None:
            proc.kill()
    assert mounts_under(root) == []
    assert not root.exists()
    assert not Path(f"/proc/{sshfs_pid}").exists(), "sshfs still runs"

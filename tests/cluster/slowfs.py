"""A slow shared filesystem for the mini-cluster: a local directory served over sshfs through a DelayProxy.

    with SlowFS(cluster, delay_ms=0.1) as fs:   # fs.store: the local directory, fs.mnt: its slow view
        fs.remount()                            # a fresh mount: no warm sshfs cache from the last run

A parallel filesystem (GPFS, Lustre) answers each metadata call after a round trip to its servers;
Python's start-up is thousands of such calls (stat, open, readdir). sshfs turns every one into an SFTP
request over SSH, and the DelayProxy (delay.py) in front of the mini-cluster's sshd holds each chunk
`delay_ms` in each direction, so a request costs at least 2 x delay_ms. sshfs keeps its default caches,
as a user's client would; `remount` starts cold.

Everything lives under /srv/hpcjup-slowfs/TAG (0755: the cluster user and the Slurm jobs, which run on
this machine, see it): `store/` (local disk, owned by the cluster user, the files the slow mount serves),
`mnt/` (the sshfs mount, allow_other so every user reads it), and more mount points made with
`mountpoint()` (squashfuse mounts of images, see `squash_mount`). The mounts run in the foreground as this
process's children (`-f`), so they end by pid; `close()` unmounts and removes the tree, also on SIGTERM
(turned into KeyboardInterrupt by `interruptible`).

Executing a program from the sshfs mount is refused here ("Operation not permitted"): a venv on it works
because its bin/python is a symlink to a base interpreter on local disk (as a user's venv on GPFS points at
a Python from a module on fast storage); only site-packages and the like are read from the slow mount.
Needs root, /dev/fuse, sshfs and squashfuse (tests/cluster/install.sh).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType

from tests.cluster.delay import DelayProxy
from tests.cluster.minicluster import USER, MiniCluster
from tests.cluster.procs import wait_until

__all__ = ["ROOT", "SlowFS", "interruptible", "is_mounted", "missing_fuse", "squash_mount", "unmount"]

ROOT = Path("/srv/hpcjup-slowfs")
SSH_OPTIONS = (
    "BatchMode=yes",
    "StrictHostKeyChecking=yes",
    "Compression=no",  # a parallel filesystem does not compress either; compression would add CPU time per request
)


def missing_fuse() -> str | None:
    """Why FUSE mounts cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "the slow filesystem needs root (allow_other mounts)"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    absent = [b for b in ("sshfs", "squashfuse", "mksquashfs", "fusermount3") if not shutil.which(b)]
    return f"missing {', '.join(absent)} (run tests/cluster/install.sh as root)" if absent else None


def is_mounted(path: Path) -> bool:
    """Whether `path` is a mount point in this mount namespace (from /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == target for line in fh)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`."""
    prefix = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def unmount(path: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15) -> None:
    """Unmount a FUSE mount (lazily if it is busy) and wait for its daemon `proc`, killing it by pid if need be."""
    if is_mounted(path):
        done = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, text=True, check=False)
        if done.returncode != 0:  # busy (a process still has a file open there): detach it now, free it later
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _mount(argv: list[str], path: Path, timeout: float = 30) -> subprocess.Popen[bytes]:
    """Start a FUSE daemon in the foreground (`-f` in argv) and wait until `path` is mounted."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ready() -> bool:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{argv[0]} exited {proc.returncode} before mounting {path}: {err.strip()}")
        return is_mounted(path)

    try:
        wait_until(ready, timeout, f"{argv[0]} to mount {path}", interval=0.02)
    except BaseException:
        unmount(path, proc)
        raise
    return proc


@contextlib.contextmanager
def squash_mount(image: Path, path: Path) -> Iterator[Path]:
    """Mount a SquashFS image read-only at `path` with squashfuse (every user reads it); unmounted on exit."""
    path.mkdir(parents=True, exist_ok=True)
    proc = _mount(["squashfuse", "-f", "-o", "allow_other", str(image), str(path)], path)
    try:
        yield path
    finally:
        unmount(path, proc)


def make_image(source: Path, image: Path) -> None:
    """mksquashfs `source` into `image` with a fast codec (lz4: the issue's 'SquashFS with a fast codec')."""
    subprocess.run(
        ["mksquashfs", str(source), str(image), "-comp", "lz4", "-noappend", "-quiet", "-no-progress"],
        check=True,
        capture_output=True,
    )


def venv_on_mount(env: Path, mounted: Path, shim: Path) -> Path:
    """A venv at `shim` (local disk) whose bin/python is the base interpreter of `env` (a venv in the store) and
    whose every other part is `mounted` (the same venv seen through the slow mount). Returns the shim's bin/python.

    Symlinks are not followed through this sshfs mount (readlink, and so exec of a venv's bin/python, fails with
    "Operation not permitted"), so the interpreter and pyvenv.cfg sit on local disk; lib/, share/ (JupyterLab's
    static files, kernel specs) and the rest are symlinks into the mount: sys.prefix is the shim, and every path
    under it resolves on the slow filesystem, as a user's venv on GPFS with a base Python from a module.
    """
    shim.mkdir(mode=0o755, parents=True)
    (shim / "bin").mkdir(mode=0o755)
    (shim / "bin" / "python").symlink_to(os.path.realpath(env / "bin" / "python"))
    shutil.copyfile(env / "pyvenv.cfg", shim / "pyvenv.cfg")
    for part in sorted(os.listdir(env)):
        if part in ("bin", "pyvenv.cfg"):
            continue
        if (env / part).is_symlink():  # lib64 -> lib: the same relative link, resolved inside the shim
            (shim / part).symlink_to(os.readlink(env / part))
        else:
            (shim / part).symlink_to(mounted / part)
    return shim / "bin" / "python"


class SlowFS:
    """/srv/hpcjup-slowfs/TAG: `store` (local disk) seen as `mnt` over sshfs with `delay_ms` added each way."""

    def __init__(self, cluster: MiniCluster, delay_ms: float, *, tag: str | None = None) -> None:
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        self.cluster, self.delay_ms = cluster, delay_ms
        self.root = ROOT / (tag or f"run-{secrets.token_hex(3)}")
        self.store, self.mnt = self.root / "store", self.root / "mnt"
        self.proxy: DelayProxy | None = None
        self.sshfs: subprocess.Popen[bytes] | None = None
        self.mounts = 0  # how many mounts this object made (each one starts with empty caches)

    # -- life cycle -----------------------------------------------------------------------------
    def __enter__(self) -> SlowFS:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Make the tree, start the proxy (round trip = 2 x delay_ms) and mount."""
        ROOT.mkdir(mode=0o755, exist_ok=True)
        self.root.mkdir(mode=0o755)
        self.store.mkdir(mode=0o755)
        self.mnt.mkdir(mode=0o755)
        shutil.chown(self.store, USER, USER)  # sshfs logs in as the cluster user: it reads and writes the store as it
        self.proxy = DelayProxy(self.cluster.ssh_port, 2 * self.delay_ms, lifetime=6 * 3600).__enter__()
        self.mount()

    def mount(self) -> None:
        """Mount `store` at `mnt` through the proxy (sshfs in the foreground, a child of this process)."""
        assert self.proxy is not None
        known = f"[127.0.0.1]:{self.proxy.port} " + self.cluster.host_key_line().split(" ", 1)[1]
        (self.root / "known_hosts").write_text(known + "\n")
        options = [
            f"IdentityFile={self.cluster.key_path}",
            f"UserKnownHostsFile={self.root / 'known_hosts'}",
            *SSH_OPTIONS,
            "allow_other",
        ]
        argv = ["sshfs", "-f", "-p", str(self.proxy.port), "-o", ",".join(options)]
        self.sshfs = _mount([*argv, f"{USER}@127.0.0.1:{self.store}", str(self.mnt)], self.mnt)
        self.mounts += 1

    def remount(self) -> None:
        """A fresh mount: sshfs's attribute, directory and data caches start empty (the kernel's are dropped too)."""
        unmount(self.mnt, self.sshfs)
        self.sshfs = None
        self.mount()

    def mountpoint(self, name: str) -> Path:
        """A directory under the tree for another mount (e.g. an image's), readable by every user."""
        path = self.root / name
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        """Unmount everything under the tree (deepest first), stop the proxy, remove the tree."""
        for point in sorted(mounts_under(self.root), key=len, reverse=True):
            unmount(Path(point), self.sshfs if Path(point) == self.mnt else None)
        if self.sshfs is not None and self.sshfs.poll() is None:
            unmount(self.mnt, self.sshfs)
        self.sshfs = None
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        if self.root.exists() and not mounts_under(self.root):  # never rm -r into a mount still there
            shutil.rmtree(self.root, ignore_errors=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt while inside, so `finally` blocks unmount (as Ctrl-C does)."""
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def seconds_to_stat(paths: list[Path]) -> float:
    """Wall seconds to os.stat each path once."""
    t0 = time.perf_counter()
    for path in paths:
        os.stat(path)
    return time.perf_counter() - t0

"""Inode quotas (issue 21, item 4): an environment's files on a slow shared filesystem, with its tree and without.

    flock /tmp/hpcjup-cluster.lock python -m benchmarks.envtree [--delay 0.1,0.5] [--image PATH] [--save]

Needs root on Debian with FUSE (tests/cluster/install.sh) and the mini-cluster up. The environment is a real one
hpcjup built and packed (default: the newest server environment image under the cluster user's env roots). For
each delay, the env root lies on tests/cluster/slowfs.py's slow filesystem (sshfs through the DelayProxy, DELAY ms
each way per request, a fresh mount before each figure), once as an env that kept its tree and once as hpcjup now
leaves it (its image, its log and a directory of a handful of files), and, as the cluster user:
- the files each costs on the shared filesystem (what an inode quota counts);
- `hpcjup env ls`'s listing of that root (envs/script.py `ls`: it counts and sizes every env's directory);
- what dropping the tree costs the build once (`rm -rf` of the tree there), and what bringing it back costs a
  start with `env_mode = "direct"` (unsquashfs of the image onto the slow filesystem).
One run per figure (the listing and the counts are deterministic in files; times are single samples). Asserts
nothing; removes everything it made.
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Report, add_save_option  # noqa: E402
from hpcjup.envs import script  # noqa: E402
from tests.cluster.minicluster import USER, MiniCluster  # noqa: E402
from tests.cluster.slowfs import SlowFS, interruptible, missing_fuse  # noqa: E402


def newest_server_image() -> Path:
    """The newest packed server environment whose directory hpcjup left without its tree."""
    found = [
        Path(p)
        for p in glob.glob(f"/home/{USER}/.hpcjup/envs*/server-*.sqsh")
        if not Path(p[: -len(".sqsh")], "bin").exists()
    ]
    if not found:
        raise SystemExit("no packed server environment without its tree: run `hpcjup env build --server` first")
    return max(found, key=lambda p: p.stat().st_mtime)


def as_user(command: str, *args: str) -> tuple[float, str]:
    """Seconds and stdout of a shell command run as the cluster user."""
    t0 = time.monotonic()
    out = subprocess.run(
        ["runuser", "-u", USER, "--", "sh", "-c", command, "sh", *args], capture_output=True, text=True, check=True
    ).stdout
    return time.monotonic() - t0, out


def measure(cluster: MiniCluster, delay: float, image: Path) -> dict[str, float]:
    env = image.with_suffix("")
    name = env.name
    figures: dict[str, float] = {}
    with SlowFS(cluster, delay, tag=f"bench-envtree-{delay}") as fs:
        kept, slim = fs.store / "kept", fs.store / "slim"
        for root in (kept, slim):
            root.mkdir()
            shutil.copy2(image, root / image.name)
            shutil.copy2(f"{env}.log", root / f"{name}.log")
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(kept / name), str(image)], check=True)
        shutil.copy2(env / ".hpcjup-env.json", kept / name / ".hpcjup-env.json")
        shutil.copytree(env, slim / name)
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(kept), str(slim)], check=True)
        count = 'find "$1" | wc -l'
        figures["files_kept"] = int(as_user(count, str(kept))[1])
        figures["files_slim"] = int(as_user(count, str(slim))[1])
        for which in ("kept", "slim"):
            fs.remount()
            seconds, out = as_user(script.SCRIPT, "ls", str(fs.mnt / which))
            assert f"@@env {name} " in out, out
            figures[f"ls_{which}"] = seconds
        fs.remount()
        figures["drop"] = as_user('rm -rf "$1"', str(fs.mnt / "kept" / name))[0]
        fs.remount()
        restore = 'unsquashfs -q -n -d "$1" "$2" >/dev/null'
        figures["restore"] = as_user(restore, str(fs.mnt / "slim" / "restored"), str(fs.mnt / "slim" / image.name))[0]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", default="0.1,0.5", help="ms added each way per request, comma-separated")
    parser.add_argument("--image", type=Path, help="a packed env's image (its directory beside it, tree dropped)")
    add_save_option(parser)
    args = parser.parse_args()
    reason = missing_fuse()
    cluster = MiniCluster()
    if reason or cluster.problems():
        raise SystemExit(f"cannot run: {reason or cluster.problems()} (mini-cluster: python -m tests.cluster up)")
    image = args.image or newest_server_image()
    meta = json.loads((image.with_suffix("") / ".hpcjup-env.json").read_text())
    results = {}
    with interruptible():
        for delay in (float(x) for x in args.delay.split(",")):
            results[delay] = measure(cluster, delay, image)
    with Report("envtree", save=args.save) as out:
        out("## Inode quotas: an environment on the shared filesystem with its tree and without")
        out()
        out(
            f"Environment: hpcjup's server environment ({meta['image'].get('tree_files', '?')} files, "
            f"{meta['image'].get('tree_kb', 0) / 1024:.0f} MB unpacked; image {image.stat().st_size / 1e6:.0f} MB, "
            f"{meta['image'].get('codec', '?')}). Slow filesystem: sshfs through the latency proxy, a fresh mount "
            "before each figure; one sample each."
        )
        out()
        out(
            "| delay each way | files: tree kept | files: tree dropped | `env ls`: kept | `env ls`: dropped | drop (once, at build) | restore (once, env_mode direct) |"
        )
        out("| --- | --- | --- | --- | --- | --- | --- |")
        for delay, f in results.items():
            out(
                f"| {delay} ms | {f['files_kept']:.0f} | {f['files_slim']:.0f} | {f['ls_kept']:.2f} s | "
                f"{f['ls_slim']:.2f} s | {f['drop']:.1f} s | {f['restore']:.1f} s |"
            )
        out()
        out("Files: the env's directory, its image and its log, as an inode quota counts them.")


if __name__ == "__main__":
    main()

"""The slow-filesystem mode: JupyterLab and a kernel's imports from an environment on a simulated parallel filesystem.

    flock /tmp/hpcjup-cluster.lock python -m benchmarks.slowfs [--delay 0.1,0.5] [--runs 3]

Needs root on Debian with FUSE (tests/cluster/install.sh) and the mini-cluster up (it is not brought up here).
Issue 21: one environment (uv-built, bytecode compiled: jupyterlab, distributed, xarray, ipykernel) lies on a slow
shared filesystem (tests/cluster/slowfs.py: sshfs through the DelayProxy, DELAY ms each way per request, default
caches, a fresh mount before every start so nothing is warm). For each delay and each row, a real
`hpcjup start -d --json` on the Slurm nodes with `python` pointing at the row's environment, then
- on the node: the job's start -> JupyterLab answers (usage.json's started_at -> connection.json's ready_at);
- in a kernel through Jupyter's API: `import xarray, dask.distributed` (timed inside the kernel), and the
  kernel's start plus that import as the laptop sees it.
Rows:
  (a) the environment in place on the slow filesystem (its base Python on local disk, as a module's would be);
  (b) its SquashFS image (lz4) used in place: squashfuse-mounted from the slow filesystem;
  (c) the chosen mode: the image copied to node-local storage and mounted there, the copy + mount on its own
      line. With hpcjup's `env_mode` (issue 21) the launcher does it; without it, this benchmark does it by
      hand in the job's `setup` lines (the output says which);
  (c') the same, unpacked (unsquashfs) instead of mounted: issue 21's fallback where FUSE is missing;
  (d) local disk.
Prints a Markdown table, the issue's ratios ((c)/(d) <= 1.3x; (a)/(c) >= 5x where (a)/(d) >= 5x) and, as a
check that the mount is slow at all, `import jupyter_server, distributed` on the login node. Asserts nothing.
Every session (bench-slowfs-*), mount and file it makes is removed, also when interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Report, add_save_option  # noqa: E402
from tests.cli.kernel import run_in_kernel  # noqa: E402
from tests.cluster.fixtures import make_laptop_env  # noqa: E402
from tests.cluster.minicluster import USER, MiniCluster  # noqa: E402
from tests.cluster.slowfs import (  # noqa: E402
    SlowFS,
    interruptible,
    make_image,
    missing_fuse,
    squash_mount,
    unmount,
    venv_on_mount,
)

HPCJUP = [sys.executable, "-m", "hpcjup"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
PREFIX = f"bench-slowfs-{secrets.token_hex(2)}"
PACKAGES = ("jupyterlab", "distributed", "xarray", "ipykernel")
BASE_PYTHON = "/usr/bin/python3"
COMMON = ["--host", "minicluster", "-d", "--json", "--no-browser", "--no-dask", "--idle-timeout", "0", "--time", "10"]
IMPORT = "import time as _t\n_s = _t.perf_counter()\nimport xarray, dask.distributed\nprint(_t.perf_counter() - _s)\n"
ROWS = {
    "a": "(a) environment in place on the slow fs",
    "b": "(b) its SquashFS image in place (squashfuse from the slow fs)",
    "c": "(c) chosen mode: image copied to node-local storage and mounted",
    "u": "(c') the other chosen mode: image copied to node-local storage and unpacked",
    "d": "(d) local disk",
}


@dataclass
class Figure:
    """One start of one row: seconds on the node, in the kernel, and (row c) the first use's copy + mount."""

    node: float  # the job's start -> JupyterLab answers, without the copy + mount
    kernel_import: float  # `import xarray, dask.distributed` inside the kernel
    kernel_total: float  # POST /api/kernels -> the import's answer, as the laptop sees it
    url: float  # `hpcjup start` invoked -> the URL answers
    first_use: float | None = None  # rows c, c': copy of the image to node-local storage + its mount or unpacking


# -- the environment -------------------------------------------------------------------------------


def build_env(store: Path) -> Path:
    """uv-build the venv in the store (local disk), pack it into env.sqfs beside it; both the cluster user's."""
    # Bytecode compiled before packing: a read-only image cannot take the __pycache__ a first import writes, so
    # without it every import from the image compiles its source again (seen: the image rows 2.5-3x local disk).
    uv = Path(sys.executable).with_name("uv")
    env = store / "env"
    subprocess.run(
        [str(uv), "venv", "-q", "--relocatable", "--python", BASE_PYTHON, str(env)], check=True, capture_output=True
    )
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--link-mode", "copy", "--compile-bytecode", *PACKAGES],
        env={**os.environ, "VIRTUAL_ENV": str(env)},
        check=True,
        capture_output=True,
        timeout=900,
    )
    make_image(env, store / "env.sqfs")
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(store)], check=True)
    return env


def supports_env_mode() -> bool:
    """Whether this hpcjup has issue 21's `env_mode` setting (the images branch)."""
    from hpcjup.config.schema import KEYS

    return "env_mode" in KEYS


def login_import(cluster: MiniCluster, python: Path) -> float:
    """Seconds for the cluster user's `python -c "import jupyter_server, distributed"` on the login node."""
    t0 = time.perf_counter()
    done = cluster.run_as_user([str(python), "-c", "import jupyter_server, distributed"], timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{python} cannot import jupyter_server, distributed: {done.stderr[-2000:]}")
    return time.perf_counter() - t0


# -- one start -------------------------------------------------------------------------------------


def write_profile(env: dict[str, str], name: str, python: Path, setup: list[str] | None = None, **extra: str) -> None:
    """[profiles.NAME] in the laptop's config.toml: the row's python (and setup lines, other settings)."""
    config = Path(env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"[profiles.{name}]", f"python = {json.dumps(str(python))}"]
    if setup:
        lines.append(f"setup = {json.dumps(setup)}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    with config.open("a") as fh:
        fh.write("\n".join(lines) + "\n\n")


def _iso(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def one_start(env: dict[str, str], profile: str, name: str) -> tuple[Figure, dict[str, str]]:
    """Start, time the node and a kernel's imports, stop. The figure and the session's directory name."""
    t0 = time.monotonic()
    done = subprocess.run(
        [*HPCJUP, "start", *COMMON, "--profile", profile, "--name", name],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    url = time.monotonic() - t0
    try:
        if done.returncode != 0:
            raise RuntimeError(f"start {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        info = json.loads(done.stdout.splitlines()[0])
        directory = SESSIONS / name
        conn = json.loads((directory / "connection.json").read_text())
        usage = json.loads((directory / "usage.json").read_text())
        node = _iso(conn["ready_at"]) - _iso(usage["started_at"])
        base = f"http://127.0.0.1:{info['local_port']}"
        k0 = time.monotonic()
        printed = run_in_kernel(base, info["token"], IMPORT, timeout=600)
        kernel_total = time.monotonic() - k0
        return Figure(node, float(printed.strip().splitlines()[-1]), kernel_total, url), conn
    finally:
        subprocess.run(
            [*HPCJUP, "stop", "--host", "minicluster", name, "--grace", "10"], env=env, capture_output=True, timeout=300
        )


# -- the rows --------------------------------------------------------------------------------------


class Rows:
    """Each row's profile and the per-start preparation (fresh mounts) and clean-up for one SlowFS."""

    def __init__(self, fs: SlowFS, env: dict[str, str], env_mode: bool) -> None:
        self.fs, self.env, self.env_mode = fs, env, env_mode
        self.tag = f"d{str(fs.delay_ms).replace('.', '')}"
        self.shim = venv_on_mount(fs.store / "env", fs.mnt / "env", fs.root / "shim")
        self.inplace = fs.mountpoint("inplace")
        self.node_dir = fs.mountpoint("node")  # "node-local storage": local disk, as the nodes here have
        self.node_mount = self.node_dir / "env"
        self.node_mount.mkdir()
        shutil.chown(self.node_dir, USER, USER)  # the job's user copies and mounts there (unprivileged FUSE)
        shutil.chown(self.node_mount, USER, USER)
        self.how: dict[str, str] = {
            "a": "venv on the slow mount, base Python local",
            "b": "squashfuse by this benchmark, before each start",
            "d": "the same venv in the store (local disk)",
        }
        write_profile(env, f"{self.tag}a", self.shim)
        write_profile(env, f"{self.tag}b", self.inplace / "bin" / "python")
        write_profile(env, f"{self.tag}d", fs.store / "env" / "bin" / "python")
        self.unpacked = self.node_dir / "unpacked"
        image = self.node_dir / "env.sqfs"
        by_hand = {  # row: (what the setup line does after the copy, the python it gives)
            "c": (f"squashfuse {image} {self.node_mount}", self.node_mount / "bin" / "python"),
            "u": (
                f"unsquashfs -q -n -d {self.unpacked} {image} >/dev/null && rm {image}",
                self.unpacked / "bin/python",
            ),
        }
        for row, (then, python) in by_hand.items():
            mode = "image" if row == "c" else "unpack"
            if env_mode:  # the launcher copies and mounts or unpacks; python names the env as the user knows it
                write_profile(env, f"{self.tag}{row}", fs.mnt / "env" / "bin" / "python", env_mode=mode)
                self.how[row] = f"hpcjup env_mode = {mode} (copy + {mode} by the launcher)"
                continue
            setup = [
                f"_slowfs_t0=$(date +%s.%N); cp {fs.mnt}/env.sqfs {image} && {then}"
                f' && echo "$_slowfs_t0 $(date +%s.%N)" > {self.node_dir / "first-use"}'
            ]
            write_profile(env, f"{self.tag}{row}", python, setup)
            self.how[row] = f"by hand: cp + `{then.split()[0]}` in the job's setup lines (this hpcjup has no env_mode)"

    @contextmanager
    def prepared(self, row: str) -> Iterator[None]:
        """Fresh mounts for one start of `row`, removed after it."""
        if row != "d":
            self.fs.remount()  # nothing warm from the last start
        with ExitStack() as stack:
            if row == "b":
                stack.enter_context(squash_mount(self.fs.mnt / "env.sqfs", self.inplace))
            try:
                yield
            finally:
                if row in ("c", "u") and not self.env_mode:
                    unmount(self.node_mount)
                    shutil.rmtree(self.unpacked, ignore_errors=True)
                    for leftover in ("env.sqfs", "first-use"):
                        (self.node_dir / leftover).unlink(missing_ok=True)

    def first_use(self) -> float | None:
        """Rows c, c' by hand: the seconds the job's setup line spent on cp + squashfuse or unsquashfs."""
        stamps = self.node_dir / "first-use"
        if self.env_mode or not stamps.exists():
            return None
        began, ended = (float(x) for x in stamps.read_text().split())
        return ended - began


def measure(cluster: MiniCluster, env: dict[str, str], delay: float, runs: int, env_mode: bool) -> dict[str, object]:
    """All rows at one delay, `runs` starts each, rows alternating within each round."""
    figures: dict[str, list[Figure]] = {row: [] for row in ROWS}
    with SlowFS(cluster, delay, tag=f"{PREFIX}-{delay}") as fs:
        t0 = time.monotonic()
        build_env(fs.store)
        print(f"[{delay} ms] env built and packed in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        rows = Rows(fs, env, env_mode)
        fs.remount()
        check = {"slow": login_import(cluster, rows.shim), "local": login_import(cluster, fs.store / "env/bin/python")}
        print(f"[{delay} ms] login-node import: {check}", file=sys.stderr, flush=True)
        for i in range(runs):
            for row in ROWS if i % 2 == 0 else reversed(ROWS):
                with rows.prepared(row):
                    figure, _ = one_start(env, f"{rows.tag}{row}", f"{PREFIX}-{rows.tag}{row}-{i}")
                    figure.first_use = rows.first_use() if row in ("c", "u") else None
                if figure.first_use is not None:
                    figure.node -= figure.first_use
                figures[row].append(figure)
                print(f"[{delay} ms] {row}: {figure}", file=sys.stderr, flush=True)
        return {"figures": figures, "check": check, "how": rows.how, "image_mib": image_mib(fs)}


def image_mib(fs: SlowFS) -> float:
    return (fs.store / "env.sqfs").stat().st_size / 2**20


# -- the report ------------------------------------------------------------------------------------


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return f"{_med(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def report(
    results: dict[float, dict[str, object]], runs: int, seconds: float, out: Callable[[str], None] = print
) -> None:
    """The Markdown table (one column pair per delay), how each row was made, and the issue's ratios."""
    delays = sorted(results)
    out(
        f"\nSlow-filesystem benchmark on {os.uname().nodename} ({os.cpu_count()} cores), {datetime.date.today()}: "
        f"medians (min-max) of {runs} starts per cell on Slurm, a fresh sshfs mount before each; "
        f"{seconds:.0f} s in all\n"
    )
    head = " | ".join(f"{d} ms: on the node | {d} ms: kernel import" for d in delays)
    out(f"| row | {head} |")
    out("| --- |" + " ---: | ---: |" * len(delays))
    figures = {d: results[d]["figures"] for d in delays}
    for row, label in ROWS.items():
        cells = []
        for d in delays:
            runs_ = figures[d][row]  # type: ignore[index]
            cells += [_cell([f.node for f in runs_]), _cell([f.kernel_import for f in runs_])]
        out(f"| {label} | " + " | ".join(cells) + " |")
        if row in ("c", "u"):
            first = []
            for d in delays:
                copies = [f.first_use for f in figures[d][row] if f.first_use is not None]  # type: ignore[index]
                first += [_cell(copies), "-"]
            what = "copy + mount" if row == "c" else "copy + unpack"
            out(f"| {label[:4].strip()} first use on a node: {what} | " + " | ".join(first) + " |")
    out("\nKernel start plus that import, as the laptop sees it; `start` -> URL:")
    for row, label in ROWS.items():
        parts = []
        for d in delays:
            runs_ = figures[d][row]  # type: ignore[index]
            parts.append(f"{d} ms: {_cell([f.kernel_total for f in runs_])}, URL {_cell([f.url for f in runs_])}")
        out(f"- {label}: " + "; ".join(parts))
    out("\nHow each row was made:")
    for row, label in ROWS.items():
        out(f"- {label.split()[0]} {results[delays[0]]['how'][row]}")  # type: ignore[index]
    out("\nIs the mount slow? `import jupyter_server, distributed` on the login node, fresh mount:")
    for d in delays:
        check = results[d]["check"]
        out(
            f"- {d} ms: {check['slow']:.2f} s on the slow fs against {check['local']:.2f} s on local disk "  # type: ignore[index]
            f"({check['slow'] / check['local']:.1f}x); image {results[d]['image_mib']:.0f} MiB"  # type: ignore[index]
        )
    out("\nRatios (issue 21's targets):")
    for d in delays:
        med = {
            row: (_med([f.node for f in figures[d][row]]), _med([f.kernel_import for f in figures[d][row]]))
            for row in ROWS
        }  # type: ignore[index]
        for i, what in enumerate(("on the node", "kernel import")):
            a, dd = med["a"][i], med["d"][i]
            out(f"  {d} ms, {what}: (a)/(d) = {a / dd:.2f}x")
            for row, name in (("c", "(c)"), ("u", "(c')")):
                c = med[row][i]
                line = f"    {name}/(d) = {c / dd:.2f}x [target <= 1.3x: {'met' if c / dd <= 1.3 else 'MISSED'}]"
                line += f"; (a)/{name} = {a / c:.2f}x"
                if a / dd >= 5:
                    line += f" [target >= 5x: {'met' if a / c >= 5 else 'MISSED'}]"
                else:
                    line += " [(a) is under 5x local disk: the 5x target does not apply]"
                out(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", default="0.1,0.5", help="ms added each way per request, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="starts per row and delay")
    parser.add_argument("--json-out", type=Path, help="also write every figure to this file")
    add_save_option(parser)
    args = parser.parse_args()
    reason = missing_fuse()
    cluster = MiniCluster()
    if reason or cluster.problems():
        raise SystemExit(f"cannot run: {reason or cluster.problems()} (mini-cluster: python -m tests.cluster up)")
    env_mode = supports_env_mode()
    results: dict[float, dict[str, object]] = {}
    t0 = time.monotonic()
    with interruptible(), tempfile.TemporaryDirectory() as tmp:
        env = make_laptop_env(cluster, Path(tmp) / "laptop")
        try:
            for delay in (float(x) for x in args.delay.split(",")):
                results[delay] = measure(cluster, env, delay, args.runs, env_mode)
        finally:
            mine = [j["id"] for j in cluster.active_jobs() if j["name"].startswith(PREFIX)]
            if mine:
                cluster.slurm("scancel", *mine)
            for directory in SESSIONS.glob(f"{PREFIX}-*"):
                shutil.rmtree(directory, ignore_errors=True)
    if args.json_out:
        plain = {
            str(d): {**r, "figures": {k: [vars(f) for f in v] for k, v in r["figures"].items()}}  # type: ignore[attr-defined]
            for d, r in results.items()
        }
        args.json_out.write_text(json.dumps(plain, indent=1))
    with Report("slowfs", save=args.save) as out:
        report(results, args.runs, time.monotonic() - t0, out)


if __name__ == "__main__":
    main()

"""The slow-filesystem mode: JupyterLab and a kernel's imports from an environment on a simulated parallel filesystem.

    flock /tmp/hpcjup-cluster.lock python -m benchmarks.slowfs [--delay 0.1,0.5] [--runs 3] [--save]
    python -m benchmarks.slowfs --delay 0.1 --json-out a.json   # one delay per lock hold, then:
    python -m benchmarks.slowfs --report-from a.json,b.json --save

Needs root on Debian with FUSE (tests/cluster/install.sh) and the mini-cluster up (it is not brought up here).
Issue 21: the environments lie on a slow shared filesystem (tests/cluster/slowfs.py: sshfs through the DelayProxy,
DELAY ms each way per request, default caches, a fresh mount before every start so nothing is warm). For each
delay and each row, a real `hpcjup start -d --json` on the Slurm nodes, then
- on the node: the launcher's start -> JupyterLab answers (usage.json's started_at -> connection.json's ready_at;
  the launcher starts after envlocal.sh made its copies, so a copy's cost is not in it);
- in a kernel through Jupyter's API: `import xarray, dask.distributed` (timed inside the kernel), and the
  kernel's start plus that import as the laptop sees it.
Rows:
  (a) one environment (uv-built, bytecode compiled: jupyterlab, distributed, xarray, ipykernel) in place on the
      slow filesystem (`python` points at it; its base Python on local disk, as a module's would be);
  (b) its SquashFS image used in place: squashfuse-mounted from the slow filesystem by this benchmark;
  (c) hpcjup's chosen mode: `start --env SPEC` with `env_root` on the slow filesystem and `env_mode = "auto"`:
      the server env and the kernel's env (SPEC: xarray, distributed), which hpcjup built and packed, copied by
      the job to node-local storage and unpacked into RAM where they fit in a quarter of the job's memory, else
      mounted (job/envlocal.sh; its first use on the node, copy plus unpack or mount and where, on its own line,
      as the job's log says it);
  (c') the same with `env_mode = "image"`: mounted with squashfuse_ll (a cheap first use, slower imports);
  (d') the same envs with `env_root` on local disk, `env_mode = "direct"`: (c)'s own baseline;
  (d) (a)'s environment on local disk.
Then, per delay, one (c) start on two nodes with four Dask workers: each worker's node and sys.prefix, and the
copies and mounts of the envs' images on the machine while it runs (both Slurm nodes of the mini-cluster are this
one machine: one copy per machine is what it can show).
Prints a Markdown table, the issue's ratios ((c)/(d') <= 1.3x; (a)/(c) >= 5x where (a)/(d) >= 5x) and, as a
check that the mount is slow at all, `import jupyter_server, distributed` on the login node. Asserts nothing.
Every session (bench-slowfs-*), mount and file it makes is removed, also when interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
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
from tests.cluster.slowfs import ROOT as ROOT_DIR  # noqa: E402
from tests.cluster.slowfs import (  # noqa: E402
    SlowFS,
    interruptible,
    make_image,
    missing_fuse,
    squash_mount,
    venv_on_mount,
)

HPCJUP = [sys.executable, "-m", "hpcjup"]
SESSIONS = Path("/home/hpcuser/.hpcjup/sessions")
PREFIX = f"bench-slowfs-{secrets.token_hex(2)}"
PACKAGES = ("jupyterlab", "distributed", "xarray", "ipykernel")
BASE_PYTHON = "/usr/bin/python3"
COMMON = ["--host", "minicluster", "-d", "--json", "--no-browser", "--no-dask", "--idle-timeout", "0", "--time", "10"]
IMPORT = "import time as _t\n_s = _t.perf_counter()\nimport xarray, dask.distributed\nprint(_t.perf_counter() - _s)\n"
SPEC = ("xarray", "distributed")  # (c)'s kernel env; hpcjup adds ipykernel, its server env has JupyterLab
ROWS = {
    "a": "(a) environment in place on the slow fs",
    "b": "(b) its SquashFS image in place (squashfuse from the slow fs)",
    "c": "(c) chosen mode, env_mode = auto: hpcjup's images copied to node-local storage, unpacked into RAM (tmpfs)",
    "u": "(c') env_mode = image: hpcjup's images copied to node-local storage and mounted (squashfuse_ll)",
    "e": "(d') hpcjup's envs on local disk (env_mode = direct)",
    "d": "(d) (a)'s environment on local disk",
}
HPCJUP_ROWS = {"c": "auto", "u": "image", "e": "direct"}  # rows started with --env SPEC, and their env_mode
FIRST_USE = re.compile(r"hpcjup: (\S+) from (\S+) \((\w+)\), first use on this node: copy \+ \w+ in ([0-9.]+) s")
COPIES_CODE = """
import json, os, sys
from distributed import Client
client = Client()
client.wait_for_workers(4, timeout=180)
print(json.dumps(sorted(client.run(lambda: [os.environ.get("SLURMD_NODENAME", "?"), sys.prefix]).values())))
"""


@dataclass
class Figure:
    """One start of one row: seconds on the node, in the kernel, and (row c) the first use's copy + mount."""

    node: float  # the job's start -> JupyterLab answers, without the copy + mount
    kernel_import: float  # `import xarray, dask.distributed` inside the kernel
    kernel_total: float  # POST /api/kernels -> the import's answer, as the laptop sees it
    url: float  # `hpcjup start` invoked -> the URL answers
    first_use: float | None = None  # rows c, c': copies of the images to node-local storage + mount or unpack
    how: str = ""  # rows c, c': what envlocal.sh did (image: mounted, unpack), as the job's log says


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


def build_hpcjup_envs(env: dict[str, str], root: Path, spec: Path) -> None:
    """hpcjup builds and packs the server env and SPEC's env in `root` (local disk) through one real start
    (not measured), as the cluster user."""
    root.mkdir(mode=0o755)
    shutil.chown(root, USER, USER)
    write_profile(env, "build", None, env_root=str(root), env_mode="direct")
    figure, _ = one_start(env, "build", f"{PREFIX}-build", "--env", str(spec))
    print(f"hpcjup's envs built in {root} ({figure})", file=sys.stderr, flush=True)


def image_digests(root: Path) -> set[str]:
    """The first 16 hex digits of every image's sha256 in `root` (the names of their node-local copies)."""
    found = set()
    for meta in root.glob("*/.hpcjup-env.json"):
        sha = json.loads(meta.read_text()).get("image", {}).get("sha256")
        if sha:
            found.add(sha[:16])
    return found


def login_import(cluster: MiniCluster, python: Path) -> float:
    """Seconds for the cluster user's `python -c "import jupyter_server, distributed"` on the login node."""
    t0 = time.perf_counter()
    done = cluster.run_as_user([str(python), "-c", "import jupyter_server, distributed"], timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{python} cannot import jupyter_server, distributed: {done.stderr[-2000:]}")
    return time.perf_counter() - t0


# -- one start -------------------------------------------------------------------------------------


def write_profile(env: dict[str, str], name: str, python: Path | None, **extra: str) -> None:
    """[profiles.NAME] in the laptop's config.toml: the row's python (if any) and other settings."""
    config = Path(env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"[profiles.{name}]"] + ([f"python = {json.dumps(str(python))}"] if python else [])
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    with config.open("a") as fh:
        fh.write("\n".join(lines) + "\n\n")


def _iso(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def first_use(name: str) -> tuple[float | None, str]:
    """The seconds the session's job spent on first uses of images on its node (envlocal.sh's lines in the job's
    log, summed over the envs), and how it used them; (None, "") when it made no copy."""
    log = (SESSIONS / name / "job.out").read_text(errors="replace")
    found = FIRST_USE.findall(log)
    if not found:
        return None, ""
    # What and where: "unpack in /dev/shm", "image in /tmp" (the local file system the copy is on).
    hows = {f"{f[2]} in {f[1].split('/hpcjup-')[0] or '/'}" for f in found}
    return sum(float(f[3]) for f in found), "+".join(sorted(hows))


def one_start(
    env: dict[str, str],
    profile: str,
    name: str,
    *more: str,
    code: str = IMPORT,
    during: Callable[[], str] | None = None,
) -> tuple[Figure, dict[str, str]]:
    """Start, time the node and a kernel's imports (or run `code`: its output, and what `during` says while the
    session still runs, in the figure's `how`), stop."""
    t0 = time.monotonic()
    common = [c for c in COMMON if c != "--no-dask"] if code != IMPORT else COMMON
    done = subprocess.run(
        [*HPCJUP, "start", *common, "--profile", profile, "--name", name, *more],
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
        printed = run_in_kernel(base, info["token"], code, timeout=600)
        kernel_total = time.monotonic() - k0
        if code != IMPORT:
            seen = printed.strip().splitlines()[-1] + (f"; {during()}" if during else "")
            return Figure(node, float("nan"), kernel_total, url, how=seen), conn
        first, how = first_use(name)
        return Figure(node, float(printed.strip().splitlines()[-1]), kernel_total, url, first, how), conn
    finally:
        subprocess.run(
            [*HPCJUP, "stop", "--host", "minicluster", name, "--grace", "10"], env=env, capture_output=True, timeout=300
        )


# -- the rows --------------------------------------------------------------------------------------


class Rows:
    """Each row's profile and the per-start preparation (fresh mounts) for one SlowFS."""

    def __init__(self, fs: SlowFS, env: dict[str, str], local_root: Path) -> None:
        self.fs, self.env = fs, env
        self.tag = f"d{str(fs.delay_ms).replace('.', '')}"
        self.shim = venv_on_mount(fs.store / "env", fs.mnt / "env", fs.root / "shim")
        self.inplace = fs.mountpoint("inplace")
        self.how: dict[str, str] = {
            "a": "venv on the slow mount, base Python local",
            "b": "squashfuse by this benchmark, before each start",
            "d": "the same venv in the store (local disk)",
        }
        write_profile(env, f"{self.tag}a", self.shim)
        write_profile(env, f"{self.tag}b", self.inplace / "bin" / "python")
        write_profile(env, f"{self.tag}d", fs.store / "env" / "bin" / "python")
        # hpcjup's envs, built once on local disk, copied whole into the store: the slow mount serves them. The
        # server-current link stays out (symlinks are not read through this sshfs): sessions use the server env
        # its name gives, the one they would use anyway.
        subprocess.run(["cp", "-a", str(local_root), str(fs.store / "envs")], check=True)
        (fs.store / "envs" / "server-current").unlink(missing_ok=True)
        for row, mode in HPCJUP_ROWS.items():
            root = local_root if mode == "direct" else fs.mnt / "envs"
            write_profile(env, f"{self.tag}{row}", None, env_root=str(root), env_mode=mode)
            self.how[row] = f"hpcjup start --env, env_root {'local disk' if mode == 'direct' else 'on the slow fs'}"

    @contextmanager
    def prepared(self, row: str) -> Iterator[None]:
        """Fresh mounts for one start of `row`, removed after it."""
        if row not in ("d", "e"):
            self.fs.remount()  # nothing warm from the last start
        with ExitStack() as stack:
            if row == "b":
                stack.enter_context(squash_mount(self.fs.mnt / "env.sqfs", self.inplace))
            yield


def copies_on_the_machine(digests: set[str]) -> str:
    """The node-local copies of these images on this machine now: mounts and copy directories, by digest."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    mounted = [m for m in mounts if any(m.endswith(f"/hpcjup-1001/envs/{d}/env") for d in digests)]
    dirs = [str(p) for base in ("/dev/shm", "/tmp") for d in digests for p in Path(base).glob(f"hpcjup-1001/envs/{d}")]
    return f"{len(mounted)} mounts, {len(dirs)} copies ({', '.join(sorted(dirs))})"


def measure(cluster: MiniCluster, env: dict[str, str], delay: float, runs: int, local_root: Path) -> dict[str, object]:
    """All rows at one delay, `runs` starts each, rows alternating within each round; then the copies check."""
    figures: dict[str, list[Figure]] = {row: [] for row in ROWS}
    spec = local_root.parent / "spec"
    with SlowFS(cluster, delay, tag=f"{PREFIX}-{delay}") as fs:
        t0 = time.monotonic()
        build_env(fs.store)
        print(f"[{delay} ms] env built and packed in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        rows = Rows(fs, env, local_root)
        fs.remount()
        check = {"slow": login_import(cluster, rows.shim), "local": login_import(cluster, fs.store / "env/bin/python")}
        print(f"[{delay} ms] login-node import: {check}", file=sys.stderr, flush=True)
        for i in range(runs):
            for row in ROWS if i % 2 == 0 else reversed(ROWS):
                more = ("--env", str(spec)) if row in HPCJUP_ROWS else ()
                with rows.prepared(row):
                    figure, _ = one_start(env, f"{rows.tag}{row}", f"{PREFIX}-{rows.tag}{row}-{i}", *more)
                figures[row].append(figure)
                print(f"[{delay} ms] {row}: {figure}", file=sys.stderr, flush=True)
        digests = image_digests(local_root)
        with rows.prepared("c"):
            copies, _ = one_start(
                env, f"{rows.tag}c", f"{PREFIX}-{rows.tag}copies", "--env", str(spec), "--nodes", "2",
                "--cpus", "2", "--workers", "4", "--worker-cores", "1", code=COPIES_CODE,
                during=lambda: copies_on_the_machine(digests),
            )  # fmt: skip
        print(f"[{delay} ms] copies: {copies.how}", file=sys.stderr, flush=True)
        return {"figures": figures, "check": check, "how": rows.how, "image_mib": image_mib(fs), "copies": copies.how}


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
            first, hows = [], set()
            for d in delays:
                copies = [f.first_use for f in figures[d][row] if f.first_use is not None]  # type: ignore[index]
                hows |= {f.how for f in figures[d][row] if f.how}  # type: ignore[index]
                first += [_cell(copies), "-"]
            what = " or ".join(sorted(hows)) or "none made"
            out(f"| {label.split()[0]} first use on a node (both envs): copy + {what} | " + " | ".join(first) + " |")
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
    out("\nTwo nodes, four Dask workers, env_mode = auto: each worker's [node, sys.prefix]; the copies on the machine:")
    for d in delays:
        out(f"- {d} ms: {results[d].get('copies', '-')}")
    out("\nIs the mount slow? `import jupyter_server, distributed` on the login node, fresh mount:")
    for d in delays:
        check = results[d]["check"]
        out(
            f"- {d} ms: {check['slow']:.2f} s on the slow fs against {check['local']:.2f} s on local disk "  # type: ignore[index]
            f"({check['slow'] / check['local']:.1f}x); image {results[d]['image_mib']:.0f} MiB"  # type: ignore[index]
        )
    out("\nRatios (issue 21's targets):")
    for d in delays:
        figs: dict[str, list[Figure]] = figures[d]  # type: ignore[assignment]
        med = {row: (_med([f.node for f in figs[row]]), _med([f.kernel_import for f in figs[row]])) for row in ROWS}
        for i, what in enumerate(("on the node", "kernel import")):
            a, dd, base = med["a"][i], med["d"][i], med["e"][i]
            out(f"  {d} ms, {what}: (a)/(d) = {a / dd:.2f}x")
            for row, name in (("c", "(c)"), ("u", "(c')")):
                c = med[row][i]
                line = f"    {name}/(d') = {c / base:.2f}x [target <= 1.3x: {'met' if c / base <= 1.3 else 'MISSED'}]"
                line += f"; {name}/(d) = {c / dd:.2f}x; (a)/{name} = {a / c:.2f}x"
                if a / dd >= 5:
                    line += f" [target >= 5x: {'met' if a / c >= 5 else 'MISSED'}]"
                else:
                    line += " [(a) is under 5x local disk: the 5x target does not apply]"
                out(line)


def load(paths: str) -> dict[float, dict[str, object]]:
    """Results written by --json-out (one file per lock hold), merged by delay."""
    results: dict[float, dict[str, object]] = {}
    for path in paths.split(","):
        for delay, r in json.loads(Path(path).read_text()).items():
            results[float(delay)] = {**r, "figures": {k: [Figure(**f) for f in v] for k, v in r["figures"].items()}}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", default="0.1,0.5", help="ms added each way per request, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="starts per row and delay")
    parser.add_argument("--json-out", type=Path, help="also write every figure to this file")
    parser.add_argument("--report-from", help="measure nothing: report the --json-out files given (comma-separated)")
    add_save_option(parser)
    args = parser.parse_args()
    if args.report_from:
        results = load(args.report_from)
        with Report("slowfs", save=args.save) as out:
            report(results, args.runs, float(sum(r.get("seconds", 0) for r in results.values())), out)  # type: ignore[misc]
        return
    reason = missing_fuse()
    cluster = MiniCluster()
    if reason or cluster.problems():
        raise SystemExit(f"cannot run: {reason or cluster.problems()} (mini-cluster: python -m tests.cluster up)")
    results = {}
    t0 = time.monotonic()
    top = ROOT_DIR / f"{PREFIX}-hpcjup"  # hpcjup's envs on local disk (row d'), copied into each slow store
    with interruptible(), tempfile.TemporaryDirectory() as tmp:
        env = make_laptop_env(cluster, Path(tmp) / "laptop")
        try:
            top.mkdir(mode=0o755, parents=True)
            (top / "spec").mkdir()
            (top / "spec" / "requirements.txt").write_text("\n".join(SPEC) + "\n")
            build_hpcjup_envs(env, top / "envs", top / "spec")
            for delay in (float(x) for x in args.delay.split(",")):
                d0 = time.monotonic()
                results[delay] = measure(cluster, env, delay, args.runs, top / "envs")
                results[delay]["seconds"] = time.monotonic() - d0
        finally:
            mine = [j["id"] for j in cluster.active_jobs() if j["name"].startswith(PREFIX)]
            if mine:
                cluster.slurm("scancel", *mine)
            for directory in SESSIONS.glob(f"{PREFIX}-*"):
                shutil.rmtree(directory, ignore_errors=True)
            shutil.rmtree(top, ignore_errors=True)
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

"""The environment-build benchmark: hpcjup's first build of a spec against uv by hand and the README's venv + pip.

    python -m benchmarks.envs [--packages "numpy xarray netCDF4 dask distributed"] [--runs 1]

Needs the mini-cluster up (tests/cluster; it is not brought up here) and PyPI. All three legs run
on the same host (the mini-cluster's login node, as its user hpcuser), in the same run, each
from a cold cache: `hpcjup env build DIR --host minicluster` through real SSH (a fresh env root,
so uv's cache under it is empty), `uv venv && uv pip install` with the same uv binary and an empty
UV_CACHE_DIR, and `python3 -m venv && pip install --no-cache-dir`. Then the same two uv legs once
more with their caches warm (a new env: the spec gets a new comment line). Prints a Markdown table
with the ratios to uv's own time (target: hpcjup <= 2x). Everything it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import Report, add_save_option  # noqa: E402
from tests.cluster.fixtures import make_laptop_env  # noqa: E402
from tests.cluster.minicluster import USER, MiniCluster  # noqa: E402

ANALYSIS = "numpy xarray netCDF4 dask distributed"


def as_user(cluster: MiniCluster, script: str, timeout: float = 1800) -> float:
    """Run a shell script as the cluster user in its home; its wall time (it must succeed)."""
    started = time.monotonic()
    done = cluster.run_as_user(["sh", "-c", f'cd "$HOME" && {script}'], timeout=timeout)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"failed: {script}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def hpcjup_build(env: dict[str, str], spec: Path, root: str) -> float:
    argv = [
        sys.executable,
        "-m",
        "hpcjup",
        "env",
        "build",
        str(spec),
        "--host",
        "minicluster",
        "--root",
        root,
        "--json",
    ]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    if done.returncode != 0 or not json.loads(done.stdout).get("built"):
        raise SystemExit(f"hpcjup env build failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", default=ANALYSIS)
    parser.add_argument("--runs", type=int, default=3, help="rounds; each leg once per round, in turn")
    add_save_option(parser)
    args = parser.parse_args()
    cluster = MiniCluster()
    if cluster.problems():
        raise SystemExit(f"the mini-cluster is not up: {cluster.problems()} (python -m tests.cluster up)")
    tag = secrets.token_hex(3)
    work = f".hpcjup/bench-envs-{tag}"  # under the cluster user's home; removed at the end
    packages = args.packages.split()
    pkgs = " ".join(packages)
    figures: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = make_laptop_env(cluster, Path(tmp) / "laptop")
        spec = Path(tmp) / "spec"
        spec.mkdir()
        try:
            for n in range(args.runs):
                # Every leg from an empty cache of its own, in the same round: the index's speed varies.
                (spec / "requirements.txt").write_text(f"# bench {tag} {n} cold\n" + "\n".join(packages) + "\n")
                legs = {
                    "hpcjup env build (cold cache)": lambda n=n: hpcjup_build(env, spec, f"{work}/hpcjup{n}"),
                    "uv venv + uv pip install (cold cache)": lambda n=n: as_user(cluster, _uv(work, f"uv{n}", pkgs)),
                    "python -m venv + pip install (no cache)": lambda n=n: as_user(
                        cluster,
                        f"python3 -m venv {work}/pip{n} && PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 "
                        f"{work}/pip{n}/bin/pip install -q --disable-pip-version-check {pkgs}",
                    ),
                }
                for name, leg in legs.items():
                    figures.setdefault(name, []).append(leg())
                (spec / "requirements.txt").write_text(f"# bench {tag} {n} warm\n" + "\n".join(packages) + "\n")
                figures.setdefault("hpcjup env build (warm cache)", []).append(
                    hpcjup_build(env, spec, f"{work}/hpcjup{n}")
                )
                figures.setdefault("uv venv + uv pip install (warm cache)", []).append(
                    as_user(cluster, _uv(work, f"uv{n}", pkgs, again=True))
                )
        finally:
            cluster.run_as_user(["sh", "-c", f'cd "$HOME" && rm -rf {work}'])
    medians = {name: statistics.median(values) for name, values in figures.items()}
    cold = medians["uv venv + uv pip install (cold cache)"]
    warm = medians["uv venv + uv pip install (warm cache)"]
    with Report("envs", save=args.save) as out:
        out(f"\nFirst build of `{pkgs}` on the mini-cluster's login node as {USER}, median of {args.runs}:\n")
        out("| route | seconds (median) | runs | vs uv (same cache state) |")
        out("| --- | ---: | --- | ---: |")
        for name, seconds in medians.items():
            base = warm if "warm" in name else cold
            runs = ", ".join(f"{v:.1f}" for v in figures[name])
            out(f"| {name} | {seconds:.1f} | {runs} | {seconds / base:.2f}x |")
        ratio = medians["hpcjup env build (cold cache)"] / cold
        out(f"\nhpcjup cold / uv cold = {ratio:.2f}x (target <= 2x): {'met' if ratio <= 2 else 'NOT met'}")


def _uv(work: str, name: str, pkgs: str, again: bool = False) -> str:
    """uv venv + uv pip install by hand, with the uv hpcjup brought, into WORK/NAME (a cache per round)."""
    cache = f"UV_CACHE_DIR={work}/{name}-cache UV_SYSTEM_CERTS=1"
    target = f"{work}/{name}{'-again' if again else ''}"
    uv = "$(ls -1 $HOME/.hpcjup/bin/uv-* | tail -1)"
    return f"{cache} {uv} venv -q {target} && {cache} {uv} pip install -q --python {target}/bin/python {pkgs}"


if __name__ == "__main__":
    main()

"""A start whose environments are built, against today's start: time to URL and remote commands.

    python -m benchmarks.envstart [--starts 5] [--packages "distributed"]

Needs the mini-cluster up (tests/cluster; it is not brought up here). Two legs, alternating, each a real
`hpcjup -v start -d --json` on Slurm through real SSH, timed from invocation to the JSON line (printed once
the URL answers), then stopped:
- "python": JupyterLab in the user's own env (`--python /opt/hpcjup-cluster-env/bin/python`), as before;
- "env": `--env SPEC` (a requirements.txt of `--packages`), JupyterLab from hpcjup's server env and the spec's
  env as the default kernel; both envs are built once before timing (not timed: `benchmarks.envs` times builds).
The issue's target: with built environments, no extra remote command, and the time to URL within noise of
today's. Prints a Markdown table (median, runs, remote commands before the submission) and the ratio.
Everything it makes (sessions, the env root) is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import re
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

CLUSTER_PYTHON = "/opt/hpcjup-cluster-env/bin/python"
COMMON = ["--host", "minicluster", "-d", "--json", "--no-browser", "--idle-timeout", "0", "--time", "10"]
REMOTE = re.compile(r"hpcjup\.remote: (.*) -> -?\d+ \(")


def hpcjup(env: dict[str, str], *args: str, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hpcjup", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return time.monotonic() - started, done


def before_submission(stderr: str) -> int:
    """Remote commands up to and including the one that submits (the claim script's `submit=$5`)."""
    commands = REMOTE.findall(stderr)
    for n, command in enumerate(commands, 1):
        if "submit=$5" in command:
            return n
    return len(commands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5, help="starts per leg, alternating")
    parser.add_argument("--packages", default="distributed", help="the spec's requirements (ipykernel is added)")
    add_save_option(parser)
    args = parser.parse_args()
    cluster = MiniCluster()
    if cluster.problems():
        raise SystemExit(f"the mini-cluster is not up: {cluster.problems()} (python -m tests.cluster up)")
    tag = secrets.token_hex(3)
    root = f".hpcjup/bench-envstart-{tag}"
    seconds: dict[str, list[float]] = {"python": [], "env": []}
    commands: dict[str, list[int]] = {"python": [], "env": []}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**make_laptop_env(cluster, Path(tmp) / "laptop"), "HPCJUP_ENV_ROOT": root}
        spec = Path(tmp) / "spec"
        spec.mkdir()
        (spec / "requirements.txt").write_text("\n".join(args.packages.split()) + "\n")
        legs = {"python": ["--python", CLUSTER_PYTHON], "env": ["--env", str(spec), "--python", CLUSTER_PYTHON]}
        names: list[str] = []
        try:
            took, done = hpcjup(env, "start", *COMMON, *legs["env"], "-n", f"bench-{tag}-warmup", "--yes")
            if done.returncode != 0:
                raise SystemExit(f"the warm-up start failed:\n{done.stderr[-3000:]}")
            names.append(f"bench-{tag}-warmup")
            print(f"warm-up (builds the server env and the spec's env): {took:.1f} s", file=sys.stderr)
            for n in range(args.starts):
                for leg, extra in legs.items():
                    name = f"bench-{tag}-{leg}-{n}"
                    took, done = hpcjup(env, "-v", "start", *COMMON, *extra, "-n", name)
                    if done.returncode != 0:
                        raise SystemExit(f"{leg} start failed:\n{done.stderr[-3000:]}")
                    json.loads(done.stdout.splitlines()[0])  # the URL answered
                    names.append(name)
                    seconds[leg].append(took)
                    commands[leg].append(before_submission(done.stderr))
                    hpcjup(env, "stop", "--host", "minicluster", name, "--grace", "10")
        finally:
            for name in names:
                hpcjup(env, "stop", "--host", "minicluster", name, "--grace", "5")
            hpcjup(env, "prune", "--host", "minicluster")
            cluster.run_as_user(["sh", "-c", f'cd "$HOME" && rm -rf {root}'])
    with Report("envstart", save=args.save) as out:
        out(f"\nStart -> URL on the mini-cluster (Slurm, loopback SSH) as {USER}, {args.starts} starts per leg:\n")
        out("| leg | seconds (median) | runs | remote commands to the submission |")
        out("| --- | ---: | --- | --- |")
        for leg, values in seconds.items():
            runs = ", ".join(f"{v:.1f}" for v in values)
            out(f"| {leg} | {statistics.median(values):.2f} | {runs} | {sorted(set(commands[leg]))} |")
        ratio = statistics.median(seconds["env"]) / statistics.median(seconds["python"])
        out(
            f"\nenv / python = {ratio:.2f}x; spread of the python leg: {min(seconds['python']):.1f}-"
            f"{max(seconds['python']):.1f} s"
        )


if __name__ == "__main__":
    main()

"""A benchmark's report: printed, and with `--save` written where the documentation site includes it from.

    with Report("latency", save=args.save) as out:
        out("| figure | ... |")

Each benchmark prints its tables and ratios through `Report`. With `--save` the same lines go to
benchmarks/results/NAME.md followed by where they were measured (the command, the commit and whether the
tree had changes, the date, the machine's name and cores), and docs/benchmarks.md includes that file
(pymdownx.snippets): the page shows what a run printed, never a table retyped by hand. A run that fails
before its report saves nothing, so the last good figures stay.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def add_save_option(parser: argparse.ArgumentParser) -> None:
    """`--save` on a benchmark's argparse parser (one wording for every benchmark)."""
    parser.add_argument(
        "--save",
        action="store_true",
        help="also write the report to benchmarks/results/NAME.md, which the docs site includes",
    )


def provenance() -> str:
    """Where and when: the command, the commit (with `+changes` when the tree was not clean), date, machine."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    command = shlex.join(["python", "-m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    return (
        f"Measured with `{command}` at commit {commit}, {datetime.date.today().isoformat()}, "
        f"on {os.uname().nodename} ({os.cpu_count()} cores)."
    )


class Report:
    """Lines of one benchmark's report: each printed at once, all saved together at the end when asked."""

    def __init__(self, name: str, *, save: bool) -> None:
        self.path = RESULTS / f"{name}.md"
        self.save = save
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def __enter__(self) -> Report:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is not None or not self.save:
            return
        body = "\n".join(self.lines).strip("\n")
        text = (
            f"<!-- written by the benchmark with --save; rerun it rather than editing -->\n{body}\n\n{provenance()}\n"
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(self.path)
        print(f"\nsaved to {self.path}", file=sys.stderr)

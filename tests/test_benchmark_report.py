"""benchmarks/report.py: what a benchmark prints is what it saves for the docs site, with where it was measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import report as report_module
from benchmarks.report import Report


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(report_module, "RESULTS", tmp_path / "results")
    return tmp_path / "results"


def test_saved_report_is_the_printed_lines_and_their_provenance(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Report("demo", save=True) as out:
        out("| figure | measured |")
        out("| --- | --- |")
        out("| start | 1.20 s |")
    printed = capsys.readouterr().out
    saved = (results / "demo.md").read_text()
    assert printed.startswith("| figure | measured |\n| --- | --- |\n| start | 1.20 s |\n")
    assert "| figure | measured |\n| --- | --- |\n| start | 1.20 s |\n\nMeasured with `python -m benchmarks." in saved
    assert " at commit " in saved and " cores)." in saved
    assert not list(results.glob("*.tmp"))


def test_a_run_that_fails_or_is_not_saved_leaves_the_last_figures(results: Path) -> None:
    results.mkdir()
    (results / "demo.md").write_text("the last good figures\n")
    with pytest.raises(RuntimeError), Report("demo", save=True) as out:
        out("| half | a table |")
        raise RuntimeError("the cluster went away")
    with Report("demo", save=False) as out:
        out("| not | saved |")
    assert (results / "demo.md").read_text() == "the last good figures\n"


@pytest.mark.parametrize("name", ["latency", "backfill", "envs", "envstart", "slowfs", "adaptive", "preempt"])
def test_every_table_benchmark_offers_save(name: str) -> None:
    source = (Path(report_module.__file__).parent / f"{name}.py").read_text()
    assert "add_save_option(parser)" in source and f'Report("{name}", save=args.save)' in source

"""What the UI prints is the text it was given: cluster strings are never read as rich markup or terminal codes."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from hpcjup.errors import JobFailedError
from hpcjup.ui import UI, escape, visible
from hpcjup.ui.tables import sessions_table

# A pending reason, node name or job log line as the cluster (or anyone who can edit the session's files) sends it.
HOSTILE = [
    "[link=http://evil.example/]click here[/link]",
    "[/bold]",  # a closing tag with nothing open: rich raised MarkupError
    "node[a-b]",
    "[bold red]fake error[/bold red]",
    ":thumbs_up:",
    "\\[x]",
]


@pytest.fixture(params=[False, True], ids=["plain", "terminal"])
def ui(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> UI:
    """The real UI, as in a pipe and as in front of a person (spinner, colour markup of its own)."""
    if request.param:
        monkeypatch.setattr(UI, "interactive", property(lambda self: True))
    return UI()


@pytest.mark.parametrize("text", HOSTILE)
def test_info_and_warn_print_text_literally(ui: UI, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    ui.info(f"Job pending, reason: {text}")
    ui.warn(f"node {text} is slow")
    err = capsys.readouterr().err
    assert f"Job pending, reason: {text}" in err
    assert f"warning: node {text} is slow" in err


@pytest.mark.parametrize("text", HOSTILE)
def test_status_line_prints_text_literally(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with UI().status() as line:
        line.update(f"Job pending, reason: {text}")
    assert f"Job pending, reason: {text}" in capsys.readouterr().err


@pytest.mark.parametrize("text", HOSTILE)
def test_spinner_shows_text_literally(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(UI, "interactive", property(lambda self: True))
    terminal = Console(file=io.StringIO(), force_terminal=True, width=200, record=True)
    with UI(err=terminal).status() as line:
        line.update(f"Job pending, reason: {text}")
        terminal.print("done")  # a print while the spinner runs renders it (rich's MarkupError came from here)
    assert f"Job pending, reason: {text}" in terminal.export_text()


@pytest.mark.parametrize("text", HOSTILE)
def test_errors_print_message_details_and_hint_literally(ui: UI, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    ui.error(JobFailedError(f"Session lab ended: {text}.", details=f"job.out: {text}", hint=f"try {text}"))
    err = capsys.readouterr().err
    for part in (f"error: Session lab ended: {text}.", f"job.out: {text}", f"hint: try {text}"):
        assert part in err


def test_terminal_control_characters_are_shown_not_sent(capsys: pytest.CaptureFixture[str]) -> None:
    UI().info("reason: \x1b]8;;http://evil.example/\x1b\\Resources\x1b]8;;\x1b\\\r\x07")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "\x07" not in err
    assert "reason: \\x1b]8;;http://evil.example/\\x1b\\Resources" in err


@pytest.mark.parametrize("text", HOSTILE)
def test_hpcjups_own_markup_with_escaped_values(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    UI().info(f"Session [bold]lab[/bold] on {escape(text)}", markup=True)
    assert f"Session lab on {text}" in capsys.readouterr().err


def test_quiet_info_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    UI(quiet=True).info("[/bold]")
    assert capsys.readouterr().err == ""


ROW = {
    "session": "lab",
    "job_id": "42",
    "state": "PENDING",
    "partition": "batch",
    "node_list": None,
    "nodes": 1,
    "time_left": None,
    "local_url": None,
    "ended_because": None,
    "exit_code": None,
    "expected_start": None,
}


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("color", [False, True])
def test_ls_table_cells_are_literal(text: str, color: bool) -> None:
    rows = [
        {**ROW, "pending_reason": text, "node_list": text},
        {
            **ROW,
            "session": "lab-2",
            "state": "FAILED",
            "pending_reason": None,
            "ended_because": text,
            "partition": text,
        },
    ]
    table = sessions_table(rows, "juwels", color=color)
    assert f"pending: {text}" in table and text in table.splitlines()[2]


@given(st.text())
def test_visible_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    shown = visible(text)
    assert not any(
        (ord(c) < 0x20 and c not in "\n\t")
        or 0x7F <= ord(c) <= 0x9F
        or 0x202A <= ord(c) <= 0x202E
        or 0x2066 <= ord(c) <= 0x2069
        for c in shown
    )
    assert shown.count("\n") == text.count("\n")  # lines stay lines


@given(st.text(st.characters(blacklist_categories=("Cc", "Cf"))))
def test_visible_keeps_printable_text_as_it_is(text: str) -> None:
    assert visible(text) == text

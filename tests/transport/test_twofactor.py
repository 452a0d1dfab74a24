"""Real TOTP two-factor logins: exactly one prompt per connection, answered by HPCJUP_ASKPASS or a Prompter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import AuthError
from hpcjup.transport import Transport
from tests.cluster import twofactor
from tests.cluster.twofactor import TwoFactorSshd

pytestmark = pytest.mark.cluster
HOST = "minicluster-2fa"


@pytest.fixture(scope="module")
def sshd2fa(minicluster: Any) -> Iterator[TwoFactorSshd]:
    reason = twofactor.missing_requirements()
    if reason:
        pytest.skip(reason)
    server = TwoFactorSshd(minicluster).start()
    yield server
    server.stop()


@pytest.fixture
def askpass(sshd2fa: TwoFactorSshd, laptop: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HPCJUP_ASKPASS set to a program answering with the current code; returns the file logging its prompts."""
    sshd2fa.add_to_laptop(laptop, HOST)
    asked = laptop / "asked"
    asked.write_text("")
    monkeypatch.setenv("HPCJUP_ASKPASS", str(sshd2fa.write_askpass(laptop / "askpass", asked)))
    return asked


def test_one_prompt_per_connect_through_hpcjup_askpass(
    sshd2fa: TwoFactorSshd, askpass: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    logins = sshd2fa.logins()
    transport = connect_to(HOST, backend)
    for _ in range(3):
        assert transport.run(["whoami"]).stdout.strip() == sshd2fa.cluster.user
    with pytest.raises(FileNotFoundError):  # file access too (paramiko: an SFTP channel), with no new prompt
        transport.read_file(f"{transport.home()}/no-such-file")
    prompts = askpass.read_text().splitlines()
    assert len(prompts) == 1 and twofactor.PROMPT in prompts[0]
    assert sshd2fa.logins() - logins == 1


def test_openssh_asks_nothing_within_the_reuse_window(
    sshd2fa: TwoFactorSshd, askpass: Path, connect_to: Callable[..., Transport]
) -> None:
    first = connect_to(HOST, "openssh")
    first.run(["true"])
    first.close()
    second = connect_to(HOST, "openssh")  # the next hpcjup command, seconds later
    second.run(["true"])
    assert len(askpass.read_text().splitlines()) == 1


def test_a_prompter_answers_openssh_through_the_bridge(
    sshd2fa: TwoFactorSshd, laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    sshd2fa.add_to_laptop(laptop, HOST)
    asked: list[tuple[str, bool]] = []

    def prompt(question: str, echo: bool) -> str:
        asked.append((question, echo))
        return sshd2fa.code()

    transport = connect_to(HOST, backend, prompt=prompt)
    transport.run(["true"])
    assert len(asked) == 1 and twofactor.PROMPT in asked[0][0]


def test_no_answer_is_a_clear_auth_error(
    sshd2fa: TwoFactorSshd, laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    sshd2fa.add_to_laptop(laptop, HOST)

    def refuse(question: str, echo: bool) -> str:
        raise AuthError(f"The server asks {question.strip()!r}, but there is no terminal to answer it.")

    with pytest.raises(AuthError, match="no terminal"):
        connect_to(HOST, backend, prompt=refuse)


def test_key_passphrase_through_hpcjup_askpass(
    minicluster: Any,
    laptop: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    connect_to: Callable[..., Transport],
    backend: str,
) -> None:
    import subprocess

    from tests.cluster import files

    key = laptop / ".ssh/id_locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-C", "hpcjup-test-locked", "-f", str(key)],
        check=True,
    )
    files.authorize_key(minicluster.user, key.with_suffix(".pub").read_text())
    config = laptop / ".ssh/config"
    config.write_text(config.read_text().replace(str(laptop / ".ssh/id_minicluster"), str(key)))
    asked = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    askpass.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {asked}\necho "open sesame"\n')
    askpass.chmod(0o700)
    monkeypatch.setenv("HPCJUP_ASKPASS", str(askpass))
    before = minicluster.auth_count()
    transport = connect_to("minicluster", backend)
    transport.run(["true"])
    prompts = asked.read_text().splitlines()
    assert len(prompts) == 1 and "id_locked" in prompts[0]
    assert minicluster.auth_count() - before == 1

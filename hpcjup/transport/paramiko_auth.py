"""Logging a paramiko Transport in the way OpenSSH would: agent keys, key files, then keyboard-interactive."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hpcjup.errors import AuthError
from hpcjup.text import visible
from hpcjup.transport.base import Prompter
from hpcjup.transport.destination import Destination

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger("hpcjup.ssh")


def no_prompt(question: str, echo: bool) -> str:
    """The prompter where nobody can answer: an AuthError that says how to log in without questions."""
    raise AuthError(
        f"The server asks {question.strip()!r}, but there is no terminal to answer it.",
        hint="Run hpcjup in a terminal, load the key into ssh-agent first, or set HPCJUP_ASKPASS to a program that answers.",
    )


class Authenticator:
    """Authenticates the Transports of one login (the login node, its jump hosts, its compute nodes).

    Shared by all of them, so a key's passphrase is asked once and 2FA questions go to one prompter.
    """

    def __init__(self, prompt: Prompter) -> None:
        self.prompt = prompt
        self._keys: dict[Path, paramiko.PKey | None] = {}

    def authenticate(self, t: paramiko.Transport, dest: Destination) -> None:
        """Try agent keys, then key files, then keyboard-interactive; one pass, as OpenSSH does."""
        import paramiko

        user = dest.user
        allowed: list[str] = []
        for key in self._candidate_keys(dest):
            try:
                allowed = t.auth_publickey(user, key)
            except paramiko.AuthenticationException:
                continue
            except paramiko.SSHException as exc:
                log.debug("public key rejected: %s", exc)
                continue
            if t.is_authenticated():
                return
            break  # partial success: the server wants a second factor
        if not t.is_authenticated():
            try:
                t.auth_interactive(user, self._interactive_handler)
            except paramiko.BadAuthenticationType as exc:
                allowed = list(exc.allowed_types)
            except paramiko.AuthenticationException:
                pass
        if not t.is_authenticated():
            raise AuthError(
                f"Authentication as {user}@{dest.hostname} failed"
                + (f" (server allows: {', '.join(allowed)})" if allowed else "")
                + ".",
                hint="Check that `ssh` logs in with the same key (IdentityFile in ~/.ssh/config, or ssh-add).",
            )

    def _candidate_keys(self, dest: Destination) -> Iterator[paramiko.PKey]:
        import paramiko

        files = [p for p in dest.identity_files if p.is_file()]
        if not dest.identities_only or not files:
            try:
                yield from paramiko.Agent().get_keys()
            except paramiko.SSHException:
                pass
        for path in files:
            key = self._load_key(path)
            if key is not None:
                yield key

    def _load_key(self, path: Path) -> paramiko.PKey | None:
        if path not in self._keys:
            self._keys[path] = self._read_key(path)
        return self._keys[path]

    def _read_key(self, path: Path) -> paramiko.PKey | None:
        import paramiko

        try:
            return paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError) as exc:  # cryptography >= 42 raises TypeError here
            if isinstance(exc, TypeError) and "password" not in str(exc).lower():
                raise
            passphrase = self.prompt(f"Enter passphrase for key '{path}': ", False)
            try:
                return paramiko.PKey.from_path(path, password=passphrase.encode())
            except (paramiko.SSHException, ValueError) as exc:
                raise AuthError(f"Cannot decrypt {path}: wrong passphrase?") from exc
        except (paramiko.SSHException, OSError, ValueError) as exc:
            log.debug("skipping key %s: %s", path, exc)
            return None

    def _interactive_handler(self, title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        # All of it is the server's text: control characters are shown, never sent to the terminal. The
        # name and instructions (e.g. "Use your token") go before the first question, as OpenSSH shows them.
        header = "".join(f"{visible(line)}\n" for line in (title, instructions) if line.strip())
        return [self.prompt((header if i == 0 else "") + visible(text), echo) for i, (text, echo) in enumerate(prompts)]

"""Answering SSH prompts (passphrases, 2FA codes) without a terminal, for both backends.

`HPCJUP_ASKPASS=/path/to/program` is the documented hook: the program gets the prompt text as
argv[1] and prints the answer on stdout, exactly like OpenSSH's SSH_ASKPASS (so existing askpass
programs work). An `SSH_ASKPASS` with `SSH_ASKPASS_REQUIRE=force` is honoured the same way.

For the OpenSSH backend, prompts can also be routed to a Python `Prompter` (the CLI's terminal
prompt) through `AskpassBridge`: ssh runs a tiny helper as its SSH_ASKPASS, the helper asks this
process over a Unix socket in a 0700 directory, and the answer never appears in argv or a log.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from hpcjup.errors import AuthError, HpcjupError
from hpcjup.text import CONTROL, visible
from hpcjup.transport.base import Prompter

log = logging.getLogger("hpcjup.ssh")

ASKPASS_ENV = "HPCJUP_ASKPASS"
_SOCKET_ENV = "HPCJUP_ASKPASS_SOCKET"
_SSH_ASKPASS_VARS = ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY")

# Runs as SSH_ASKPASS: sends the prompt to the waiting hpcjup, prints the answer (stdlib only, so it
# works whether or not hpcjup is importable from ssh's working directory). A notice it shows itself
# goes through hpcjup.text's CONTROL pattern (substituted in as CONTROL_PATTERN): no escape reaches the tty.
_HELPER = r"""
import json, os, re, socket, sys
kind = os.environ.get("SSH_ASKPASS_PROMPT", "")
if kind == "none":  # a notice ("confirm user presence": touch your security key), not a question
    notice = re.sub(CONTROL_PATTERN, lambda m: "\\x%02x" % ord(m.group()), sys.argv[1] if len(sys.argv) > 1 else "")
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(notice + "\n")
    except OSError:
        pass
    sys.exit(0)
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["HPCJUP_ASKPASS_SOCKET"])
s.sendall(json.dumps({"prompt": sys.argv[1] if len(sys.argv) > 1 else "", "kind": kind}).encode() + b"\n")
reply = json.loads(s.makefile("rb").readline() or b"{}")
if "answer" not in reply:
    sys.exit(1)
sys.stdout.write(reply["answer"] + "\n")
"""


def askpass_program() -> str | None:
    """The user's askpass program: $HPCJUP_ASKPASS, or $SSH_ASKPASS when SSH_ASKPASS_REQUIRE=force."""
    program = os.environ.get(ASKPASS_ENV, "").strip()
    if program:
        return program
    if os.environ.get("SSH_ASKPASS_REQUIRE") == "force" and os.environ.get("SSH_ASKPASS"):
        return os.environ["SSH_ASKPASS"]
    return None


def askpass_prompter(program: str) -> Prompter:
    """A Prompter that runs `program PROMPT` and takes its stdout (minus the newline) as the answer."""

    def ask(question: str, echo: bool) -> str:
        try:
            proc = subprocess.run([program, question], stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        except OSError as exc:
            raise AuthError(f"Cannot run the askpass program {program}: {exc}", hint=f"Check ${ASKPASS_ENV}.") from exc
        except subprocess.TimeoutExpired as exc:
            raise AuthError(f"The askpass program {program} did not answer {question.strip()!r}.") from exc
        if proc.returncode != 0:
            raise AuthError(
                f"The askpass program {program} declined to answer {question.strip()!r} (exit {proc.returncode}).",
                hint=f"It gets the prompt as its first argument and prints the answer; check ${ASKPASS_ENV}.",
            )
        answer = proc.stdout.decode(errors="replace")
        return answer.removesuffix("\n")

    return ask


def effective_prompter(prompt: Prompter | None) -> Prompter | None:
    """The user's askpass program if one is configured (it wins: scripts set it on purpose), else `prompt`."""
    program = askpass_program()
    return askpass_prompter(program) if program else prompt


def ssh_askpass_env(program: str) -> dict[str, str]:
    """Environment that makes ssh ask `program` instead of the terminal (for the master only)."""
    # DISPLAY only matters to OpenSSH < 8.4, which ignores SSH_ASKPASS_REQUIRE and wants an X display.
    return {"SSH_ASKPASS": program, "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": os.environ.get("DISPLAY") or ":0"}


def without_askpass(env: dict[str, str]) -> dict[str, str]:
    """`env` without any askpass settings (so ssh cannot ask anyone)."""
    return {k: v for k, v in env.items() if k not in (*_SSH_ASKPASS_VARS, _SOCKET_ENV)}


class AskpassBridge:
    """Serves ssh's askpass requests from a Python Prompter while the master authenticates."""

    def __init__(self, directory: Path, prompt: Prompter) -> None:
        self.prompt = prompt
        self.asked = 0
        self.error: HpcjupError | None = None  # what the prompter raised (e.g. no terminal), re-raised by the caller
        token = uuid.uuid4().hex[:12]
        self._socket_path = directory / f"ask-{token}.sock"
        self._helper = directory / f"ask-{token}"
        self._server = socket.socket(socket.AF_UNIX)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        """The environment additions for the ssh that authenticates."""
        return {**ssh_askpass_env(str(self._helper)), _SOCKET_ENV: str(self._socket_path)}

    def __enter__(self) -> AskpassBridge:
        old = os.umask(0o077)
        try:
            self._server.bind(str(self._socket_path))
        finally:
            os.umask(old)
        self._server.listen(4)
        self._server.settimeout(0.2)
        helper = _HELPER.replace("CONTROL_PATTERN", repr(CONTROL.pattern))
        script = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(helper)} "$@"\n'
        fd = os.open(self._helper, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w") as fh:
            fh.write(script)
        self._thread = threading.Thread(target=self._serve, name="askpass-bridge", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._server.close()
        for path in (self._socket_path, self._helper):
            path.unlink(missing_ok=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(None)  # a person may take a while to type
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        try:
            request: dict[str, Any] = json.loads(conn.makefile("rb").readline() or b"{}")
        except ValueError:
            return
        reply: dict[str, str] = {}
        if self.error is None:  # after one refusal, refuse the rest instead of asking again
            try:
                self.asked += 1
                # ssh passes on the server's keyboard-interactive text: its control characters are shown, not sent.
                question = visible(str(request.get("prompt", "")))
                reply["answer"] = self.prompt(question, request.get("kind") == "confirm")
            except HpcjupError as exc:
                self.error = exc
            except (EOFError, KeyboardInterrupt) as exc:
                self.error = AuthError(
                    f"No answer to {str(request.get('prompt', '')).strip()!r}: {type(exc).__name__}."
                )
        try:
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:
            log.debug("askpass helper went away: %s", exc)

"""Where a session lives on the cluster, and what its name may be."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from hpcjup.errors import UsageError
from hpcjup.job import (
    CONNECTION_FILE,
    JOB_LOG,
    JOB_SCRIPT,
    LAUNCHER_FILE,
    RUNTIME_DIR,
    STATE_FILE,
    TOKEN_FILE,
)

SESSIONS_DIR = ".hpcjup/sessions"  # relative to the remote home
RECORD_FILE = "session.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # whole names only: use fullmatch


def check_name(name: str) -> str:
    """A valid session name, or a UsageError saying what is allowed."""
    # fullmatch: with match(...$), "lab\n" passed, and its newline ended the job script's directives.
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(
            f"Session name {name!r} is not valid.",
            hint="Use up to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    return name


def new_name() -> str:
    """A fresh session name such as lab-3f9a."""
    return f"lab-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class SessionPaths:
    """The files of one session on the cluster (all under a 0700 directory)."""

    home: str
    name: str

    @property
    def root(self) -> str:
        """The directory holding every session of this user."""
        return f"{self.home.rstrip('/')}/{SESSIONS_DIR}"

    @property
    def dir(self) -> str:
        return f"{self.root}/{self.name}"

    def file(self, name: str) -> str:
        """A file of this session by its bare name."""
        return f"{self.dir}/{name}"

    @property
    def script(self) -> str:
        return self.file(JOB_SCRIPT)

    @property
    def launcher(self) -> str:
        return self.file(LAUNCHER_FILE)

    @property
    def record(self) -> str:
        return self.file(RECORD_FILE)

    @property
    def log(self) -> str:
        return self.file(JOB_LOG)

    @property
    def state(self) -> str:
        return self.file(STATE_FILE)

    @property
    def connection(self) -> str:
        return self.file(CONNECTION_FILE)

    @property
    def token(self) -> str:
        return self.file(TOKEN_FILE)

    @property
    def runtime(self) -> str:
        return self.file(RUNTIME_DIR)

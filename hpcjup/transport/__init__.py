"""Transports: how hpcjup reaches the cluster (SSH) or this machine (`--local`).

Two SSH backends behind one interface: "openssh" (the system `ssh` with a ControlMaster socket:
all of ~/.ssh/config, certificates, FIDO keys, Kerberos, one authentication reused across
commands) and "paramiko" (pure Python: Windows, or no `ssh` binary). "auto" picks OpenSSH where
it can work and paramiko elsewhere; $HPCJUP_SSH overrides what "auto" picks.
"""

from __future__ import annotations

import logging
import os
import shutil

from hpcjup.errors import UsageError
from hpcjup.job.lazy import install
from hpcjup.transport.base import CommandResult, Prompter, Stream, Transport

__all__ = ["BACKENDS", "CommandResult", "Prompter", "Stream", "Transport", "choose_backend", "connect"]

LOCAL_HOST = "local"
BACKENDS = ("auto", "openssh", "paramiko")
BACKEND_ENV = "HPCJUP_SSH"
log = logging.getLogger("hpcjup.ssh")


# paramiko >= 3 imports `invoke` at once, for ssh_config's `Match exec` only (which calls invoke.run):
# 0.1 s of every command on the paramiko backend (it brings unittest.mock and asyncio), usually for
# nothing. A stand-in imports it if `Match exec` is ever evaluated. Before anything here imports paramiko.
install({"invoke": ("run",)})


def choose_backend(backend: str = "auto") -> str:
    """The backend to use: an explicit choice, else $HPCJUP_SSH, else OpenSSH where an `ssh` binary exists (not on Windows)."""
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if backend not in BACKENDS:
        raise UsageError(
            f"Unknown SSH backend {backend!r}.", hint=f"Use one of {', '.join(BACKENDS)} (--ssh or ${BACKEND_ENV})."
        )
    if backend == "auto":
        return "openssh" if os.name != "nt" and shutil.which("ssh") else "paramiko"
    return backend


def connect(host: str, prompt: Prompter | None = None, *, backend: str = "auto", accept_new: bool = False) -> Transport:
    """Open the one connection a command uses: SSH to `host`, or this machine for "local".

    `prompt` answers passphrase and 2FA questions (unless $HPCJUP_ASKPASS names a program that
    does); `accept_new` adds an unknown host key to ~/.ssh/known_hosts (a changed one is still refused).
    The transport remembers `host` exactly as given (`destination`): sessions record that.
    """
    transport = _open(host, prompt, backend=backend, accept_new=accept_new)
    transport.destination = host
    return transport


def _open(host: str, prompt: Prompter | None = None, *, backend: str = "auto", accept_new: bool = False) -> Transport:
    """The transport for `host` by the chosen backend."""
    if host == LOCAL_HOST:
        from hpcjup.transport.local import LocalTransport

        return LocalTransport()
    chosen = choose_backend(backend)
    if chosen == "openssh":
        from hpcjup.transport.openssh import MuxUnavailable, OpenSSHTransport

        try:
            return OpenSSHTransport(host, prompt, accept_new=accept_new)
        except MuxUnavailable as exc:
            if backend == "openssh" or os.environ.get(BACKEND_ENV, "").strip().lower() == "openssh":
                raise
            log.info("OpenSSH cannot multiplex here (%s); using paramiko", exc.message)
    from hpcjup.transport.destination import parse_destination
    from hpcjup.transport.paramiko_ssh import ParamikoTransport

    return ParamikoTransport(parse_destination(host), prompt, accept_new=accept_new)

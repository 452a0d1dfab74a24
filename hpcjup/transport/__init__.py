"""Transports: how hpcjup reaches the cluster (SSH) or this machine (`--local`)."""

from __future__ import annotations

from hpcjup.transport.base import CommandResult, FileInfo, Prompter, Stream, Transport

__all__ = ["CommandResult", "FileInfo", "Prompter", "Stream", "Transport", "connect"]

LOCAL_HOST = "local"


def connect(host: str, prompt: Prompter | None = None) -> Transport:
    """Open the one connection a command uses: SSH to `host`, or this machine for "local"."""
    if host == LOCAL_HOST:
        from hpcjup.transport.local import LocalTransport

        return LocalTransport()
    from hpcjup.transport.destination import parse_destination
    from hpcjup.transport.paramiko_ssh import ParamikoTransport

    dest = parse_destination(host)
    return ParamikoTransport(dest, prompt) if prompt else ParamikoTransport(dest)

"""Where to connect: an ssh destination resolved through `~/.ssh/config`."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hpcjup.errors import UsageError

_DEST = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@:\s\[\]]+)(?::(?P<port>\d{1,5}))?$")
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclass(frozen=True)
class Destination:
    """An ssh destination after `~/.ssh/config` was applied."""

    alias: str  # what the user typed (host part), used to name the host in sessions
    hostname: str
    port: int = 22
    user: str = field(default_factory=getpass.getuser)
    identity_files: tuple[Path, ...] = ()
    identities_only: bool = False
    known_hosts_files: tuple[Path, ...] = ()
    proxy_jump: str | None = None
    server_alive_interval: int = 30
    connect_timeout: float = 15.0

    @property
    def known_hosts_name(self) -> str:
        """The name a known_hosts file uses for this host (OpenSSH's `[host]:port` form off port 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def ssh_config_path() -> Path:
    """The user's OpenSSH client configuration file."""
    return Path.home() / ".ssh" / "config"


def parse_destination(text: str, config_path: Path | None = None) -> Destination:
    """Parse `[user@]host[:port]` and apply the matching `Host` blocks of `~/.ssh/config`.

    Precedence follows OpenSSH: what is written in the destination beats the config file.
    """
    import paramiko  # heavy import: only when we really connect

    m = _DEST.match(text.strip())
    if not m:
        raise UsageError(f"Not an ssh destination: {text!r}", hint="Use a Host alias from ~/.ssh/config or user@host[:port].")
    host = m["host"].strip("[]")
    config_path = config_path or ssh_config_path()
    config = paramiko.SSHConfig.from_path(str(config_path)) if config_path.exists() else paramiko.SSHConfig()
    try:
        opts = config.lookup(host)
    except Exception as exc:  # paramiko raises several types for a bad config (tokens, Match exec)
        raise UsageError(f"Cannot use {config_path}: {exc}", hint="Check that `ssh -G HOST` accepts the file.") from exc

    port = int(m["port"] or opts.get("port", 22))
    if not 0 < port < 65536:
        raise UsageError(f"Port out of range in {text!r}")
    identity = tuple(Path(os.path.expanduser(p)) for p in opts.get("identityfile", []))
    if not identity:
        identity = tuple(Path.home() / ".ssh" / name for name in _DEFAULT_KEYS)
    known = tuple(Path(os.path.expanduser(p)) for p in str(opts.get("userknownhostsfile", "~/.ssh/known_hosts")).split())
    known += (Path("/etc/ssh/ssh_known_hosts"),)
    return Destination(
        alias=host,
        hostname=opts.get("hostname", host),
        port=port,
        user=m["user"] or opts.get("user") or getpass.getuser(),
        identity_files=identity,
        identities_only=str(opts.get("identitiesonly", "no")).lower() == "yes",
        known_hosts_files=known,
        proxy_jump=opts.get("proxyjump") if str(opts.get("proxyjump", "none")).lower() != "none" else None,
        server_alive_interval=int(opts.get("serveraliveinterval", 30) or 30),
        connect_timeout=float(opts.get("connecttimeout", 15)),
    )

"""Where to connect: ssh destinations resolved through `~/.ssh/config`, and the OpenSSH backend's local files."""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from hpcjup.errors import UsageError
from hpcjup.files import write_private

# Whole strings of ASCII (checked beside the pattern): a NUL, a newline or an escape in a destination would
# reach ssh's argv, the cache's file names and every hint printed; with `$`, "host\n" matched.
_DEST = re.compile(
    r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@:\s\[\]]+)(?::(?P<port>[0-9]{1,5}))?", re.ASCII
)
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
_MAX_HOPS = 8
_MAX_CONTROL_DIR = 70  # sun_path holds 104-108 bytes; ssh adds "/" + 16 hex + a 17-byte temporary suffix


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
    proxy_command: str | None = None
    hash_known_hosts: bool = False
    server_alive_interval: int = 30
    connect_timeout: float = 15.0

    @property
    def known_hosts_name(self) -> str:
        """The name a known_hosts file uses for this host (OpenSSH's `[host]:port` form off port 22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def ssh_config_path() -> Path:
    """The user's OpenSSH client configuration file."""
    return Path.home() / ".ssh" / "config"


def split_destination(text: str) -> tuple[str | None, str, int | None]:
    """(user, host, port) of `[ssh://][user@]host[:port]`; UsageError if it is not one."""
    text = text.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://") :].rstrip("/")
    m = _DEST.fullmatch(text) if text.isascii() and text.isprintable() else None
    # A leading dash would be read as an ssh option (and no user name starts with one).
    if not m or m["host"].startswith("-") or (m["user"] or "").startswith("-"):
        raise UsageError(
            f"Not an ssh destination: {text!r}", hint="Use a Host alias from ~/.ssh/config or user@host[:port]."
        )
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"Port out of range in {text!r}")
    return m["user"], m["host"].strip("[]"), port


def check_node_name(name: str) -> str:
    """A compute node's name as the job reported it: a plain host name, never a user, port, option or shell word."""
    if not _NODE.fullmatch(name):
        raise UsageError(
            f"Not a compute node name: {name!r}",
            hint="The job's connection.json is damaged; `hpcjup stop` the session.",
        )
    return name


def _lookup(host: str, config_path: Path) -> dict[str, object]:
    """The options for `host`: the user's file first, the system-wide file for what it leaves unset (as OpenSSH does)."""
    import paramiko  # heavy import: only when we really connect

    merged: dict[str, object] = {}
    for path in (SYSTEM_CONFIG, config_path):  # later wins here, so the user's file goes last
        if not path.is_file():
            continue
        try:
            merged.update(paramiko.SSHConfig.from_path(str(path)).lookup(host))
        except Exception as exc:  # paramiko raises several types for a bad config (tokens, Match exec)
            raise UsageError(f"Cannot use {path}: {exc}", hint="Check that `ssh -G HOST` accepts the file.") from exc
    return merged


def parse_destination(text: str, config_path: Path | None = None) -> Destination:
    """Parse `[user@]host[:port]` and apply the matching `Host` blocks of `~/.ssh/config`.

    Precedence follows OpenSSH: what is written in the destination beats the config file.
    """
    user, host, port = split_destination(text)
    opts = _lookup(host, config_path or ssh_config_path())
    identity = tuple(Path(os.path.expanduser(str(p))) for p in cast("list[str]", opts.get("identityfile", [])))
    if not identity:
        identity = tuple(Path.home() / ".ssh" / name for name in _DEFAULT_KEYS)
    known = tuple(
        Path(os.path.expanduser(p)) for p in str(opts.get("userknownhostsfile", "~/.ssh/known_hosts")).split()
    )
    known += (Path("/etc/ssh/ssh_known_hosts"),)
    jump = str(opts.get("proxyjump", "none"))
    command = str(opts.get("proxycommand", "none"))
    return Destination(
        alias=host,
        hostname=str(opts.get("hostname", host)),
        port=port or int(str(opts.get("port", 22))),
        user=user or str(opts.get("user") or getpass.getuser()),
        identity_files=identity,
        identities_only=str(opts.get("identitiesonly", "no")).lower() == "yes",
        known_hosts_files=known,
        proxy_jump=jump if jump.lower() != "none" else None,
        proxy_command=command if command.lower() != "none" and jump.lower() == "none" else None,
        hash_known_hosts=str(opts.get("hashknownhosts", "no")).lower() == "yes",
        server_alive_interval=int(str(opts.get("serveraliveinterval", 30))) or 30,
        connect_timeout=float(str(opts.get("connecttimeout", 15))),
    )


def jump_chain(dest: Destination, config_path: Path | None = None, _depth: int = 0) -> list[Destination]:
    """The hops in front of `dest`, first hop first, each resolved through `~/.ssh/config`.

    As in OpenSSH, `ProxyJump a,b` reaches b through a, and only the first hop's own ProxyJump
    (from its config block) is followed further.
    """
    if not dest.proxy_jump:
        return []
    if _depth >= _MAX_HOPS:
        raise UsageError(f"ProxyJump chain of {dest.alias} is longer than {_MAX_HOPS} hops (a loop in ~/.ssh/config?).")
    hops = [parse_destination(hop, config_path) for hop in dest.proxy_jump.split(",") if hop.strip()]
    if not hops:
        return []
    later = [dataclasses.replace(hop, proxy_jump=None, proxy_command=None) for hop in hops[1:]]
    return [*jump_chain(hops[0], config_path, _depth + 1), dataclasses.replace(hops[0], proxy_jump=None), *later]


def wrapper_config(directory: Path, accept_new: bool) -> Path:
    """An ssh_config that checks host keys (at every ProxyJump hop too) and includes the user's own files."""
    home = Path.home()
    lines = [
        "# Written by hpcjup for the ssh it runs; your own configuration is included below.",
        f"StrictHostKeyChecking {'accept-new' if accept_new else 'yes'}",
        f'Include "{home}/.ssh/config"',
        "Host *",
    ]
    if home_overridden():  # OpenSSH reads ~ from the password database; hpcjup honours $HOME like other programs
        lines.append(f'  UserKnownHostsFile "{home}/.ssh/known_hosts" "{home}/.ssh/known_hosts2"')
    lines.append("Include /etc/ssh/ssh_config\n")
    key = hashlib.sha256(f"{home}\0{accept_new}".encode()).hexdigest()[:12]
    path = directory / f"config-{key}"
    write_private(path, "\n".join(lines).encode())
    return path


def home_overridden() -> bool:
    """Whether $HOME differs from the home the password database gives (which is what ssh expands ~ to)."""
    import pwd

    return Path.home().resolve() != Path(pwd.getpwuid(os.getuid()).pw_dir).resolve()


def control_dir() -> Path | None:
    """A private (0700) directory for ssh control sockets, short enough for Unix socket paths; None if there is none."""
    import warnings

    import platformdirs

    with warnings.catch_warnings():  # without XDG_RUNTIME_DIR platformdirs warns; the temp dir below serves
        warnings.simplefilter("ignore")
        candidates = [Path(os.environ.get("XDG_RUNTIME_DIR") or platformdirs.user_runtime_dir()) / "hpcjup"]
    candidates.append(Path(tempfile.gettempdir()) / f"hpcjup-{os.getuid()}")
    for path in candidates:
        if len(str(path)) > _MAX_CONTROL_DIR:
            continue
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():  # never use a directory someone else made
            if st.st_mode & 0o077:
                os.chmod(path, 0o700)
            return path
    return None


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so two hpcjup processes do not both start a master for one host."""
    import fcntl  # POSIX only, like the OpenSSH backend that uses it

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

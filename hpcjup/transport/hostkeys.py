"""Host-key checking against known_hosts: unknown and changed keys are refused, never accepted silently.

Shared by both backends: the paramiko backend checks keys here; the OpenSSH backend lets ssh
check them (StrictHostKeyChecking) and `ssh_error` builds the same errors, and those for every
other refusal, from what ssh reports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcjup.errors import AuthError, ConnectError, HpcjupError, UsageError

if TYPE_CHECKING:
    import paramiko

    from hpcjup.transport.destination import Destination

log = logging.getLogger("hpcjup.ssh")


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    return blob_fingerprint(key.asbytes())


def blob_fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_known_hosts(files: tuple[Path, ...]) -> tuple[paramiko.HostKeys, set[bytes]]:
    """All known_hosts entries (hashed and `[host]:port` included) and the @revoked key blobs."""
    import paramiko
    from paramiko.hostkeys import HostKeyEntry

    keys, revoked = paramiko.HostKeys(), set()
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if line.startswith("@revoked"):
                revoked.add(_blob(line.split()[-1]))
                continue
            if not line or line.startswith(("#", "@")):  # @cert-authority: paramiko does no host certificates
                continue
            try:
                entry = HostKeyEntry.from_line(line, lineno)
            except (paramiko.SSHException, ValueError, binascii.Error):
                entry = None
            if entry is not None and entry.key is not None:
                for name in entry.hostnames:
                    keys.add(name, entry.key.get_name(), entry.key)
    return keys, revoked


def _blob(b64: str) -> bytes:
    try:
        return base64.b64decode(b64)
    except (binascii.Error, ValueError):
        return b""


#: known_hosts names a key by its type; negotiation names the signature algorithms. An RSA key ("ssh-rsa")
#: signs with SHA-2 (RFC 8332); paramiko >= 4 no longer offers SHA-1 "ssh-rsa" at all.
_SIGNATURES = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def known_key_types(dest: Destination, supported: Sequence[str]) -> list[str]:
    """The host key algorithms, of those `supported`, that verify a key known_hosts holds for this destination,
    so negotiation prefers them (a server with several keys then shows the one we can check)."""
    entry = load_known_hosts(dest.known_hosts_files)[0].lookup(dest.known_hosts_name)
    wanted = [algorithm for kind in (entry or {}) for algorithm in _SIGNATURES.get(kind, (kind,))]
    return [algorithm for algorithm in dict.fromkeys(wanted) if algorithm in supported]


def verify_host_key(dest: Destination, key: paramiko.PKey, accept_new: bool = False) -> None:
    """Raise AuthError unless `key` is the one known_hosts holds for `dest` (or, with accept_new, add an unknown one)."""
    name = dest.known_hosts_name
    known, revoked = load_known_hosts(dest.known_hosts_files)
    entry = known.lookup(name)
    offered = fingerprint(key)
    if key.asbytes() in revoked:
        raise AuthError(
            f"The host key of {name} ({offered}) is marked @revoked in known_hosts.",
            hint="Ask your centre for the current key.",
        )
    if entry and key.get_name() in entry:
        if entry[key.get_name()] == key:
            return
        raise changed_key_error(name, fingerprint(entry[key.get_name()]), offered)
    if accept_new and not entry:
        add_known_host(dest.known_hosts_files[0], name, key, dest.hash_known_hosts)
        log.warning("Added the host key of %s (%s %s) to %s.", name, key.get_name(), offered, dest.known_hosts_files[0])
        return
    if entry:  # known by another key type: a server that suddenly offers a different type is suspicious
        raise changed_key_error(name, ", ".join(fingerprint(k) for k in entry.values()), f"{key.get_name()} {offered}")
    raise unknown_key_error(name, f"{key.get_name()} {offered}", accept_command(dest))


def accept_command(dest: Destination) -> str:
    """The ssh command that shows the fingerprint and adds the key once the user says yes."""
    jump = f"-J {dest.proxy_jump} " if dest.proxy_jump else ""
    return f"ssh {jump}-p {dest.port} {dest.user}@{dest.hostname}"


def unknown_key_error(name: str, offered: str | None, command: str) -> AuthError:
    """The error for a host whose key known_hosts does not hold."""
    shown = f" ({offered})" if offered else ""
    return AuthError(
        f"Unknown host key for {name}{shown}.",
        hint=(
            "Check this fingerprint against the one your centre publishes, then accept it once with "
            f"`{command}` (answer yes) or with --accept-new-host-key, and run hpcjup again."
        ),
    )


def changed_key_error(name: str, known: str, offered: str) -> AuthError:
    """The error for a host whose key differs from the one known_hosts holds."""
    return AuthError(
        f"HOST KEY CHANGED for {name}: known_hosts has {known}, the server offered {offered}.",
        hint=(
            "This can mean someone is intercepting the connection. Ask your centre whether the key changed; "
            f"only then remove the old entry with `ssh-keygen -R '{name}'`."
        ),
    )


def fingerprint_at(path: Path, lineno: int) -> str | None:
    """The fingerprint of the key on line `lineno` (1-based) of a known_hosts file."""
    try:
        fields = path.read_text(errors="replace").splitlines()[lineno - 1].split()
    except (OSError, IndexError):
        return None
    if fields and fields[0].startswith("@"):
        fields = fields[1:]
    blob = _blob(fields[2]) if len(fields) >= 3 else b""
    return f"{fields[1]} {blob_fingerprint(blob)}" if blob else None


def add_known_host(path: Path, name: str, key: paramiko.PKey, hashed: bool = False) -> None:
    """Append `name key` to a known_hosts file, creating it (and ~/.ssh) private if needed."""
    import paramiko

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shown = paramiko.HostKeys.hash_host(name) if hashed else name
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        if fh.tell() > 0 and not path.read_bytes().endswith(b"\n"):
            fh.write("\n")
        fh.write(f"{shown} {key.get_name()} {key.get_base64()}\n")


def ssh_error(
    text: str, user: str, where: str, alias: str, accept: str, probe: Callable[[], str]
) -> HpcjupError | None:
    """The hpcjup error for what a failed OpenSSH `ssh` printed (None: its control socket failed).

    `probe()` gives a verbose ssh's output, for the fingerprint ssh does not print for an unknown key.
    """
    low, host = text.lower(), where.rsplit(":", 1)[0]
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith(("debug", "Warning: Permanently", "OpenSSH_"))
    ]
    last = lines[-1].removeprefix("ssh: ") if lines else "no message"
    if "host key verification failed" in low:
        changed = re.search(r"Host key for (\S+) has changed", text)
        if changed or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            offending = re.search(r"Offending \S+ key in (.+):(\d+)", text)
            offered = re.search(r"remote host is\s+(SHA256:[A-Za-z0-9+/]+)", text)
            known = fingerprint_at(Path(offending[1]), int(offending[2])) if offending else None
            return changed_key_error(
                changed[1] if changed else where, known or "another key", offered[1] if offered else "a different key"
            )
        unknown = re.search(r"host key is known for (\S+) and", text)
        shown = re.findall(r"Server host key: (\S+) (SHA256:[A-Za-z0-9+/]+)", text) or re.findall(
            r"Server host key: (\S+) (SHA256:[A-Za-z0-9+/]+)", probe()
        )  # ssh shows no fingerprint when it refuses an unknown key; a verbose ssh does
        return unknown_key_error(unknown[1] if unknown else where, " ".join(shown[-1]) if shown else None, accept)
    if "permission denied" in low or "too many authentication failures" in low:
        methods = re.search(r"Permission denied \(([^)]*)\)", text)
        return AuthError(
            f"Authentication as {user}@{host} failed" + (f" (server allows: {methods[1]})" if methods else "") + ".",
            hint="Check that `ssh` logs in with the same key (IdentityFile in ~/.ssh/config, or ssh-add); "
            "without a terminal, set HPCJUP_ASKPASS to a program that answers passphrase and 2FA prompts.",
        )
    if "could not resolve hostname" in low:
        return ConnectError(f"Cannot resolve {host}: {last}", hint="Check the host name (and your VPN).")
    if any(
        s in low for s in ("bad configuration option", "bad owner or permissions", "garbage at end", "terminating,")
    ):
        return UsageError(f"ssh refuses its configuration: {last}", hint=f"Run `ssh -G {alias}` to see the problem.")
    if any(s in low for s in ("unix_listener", "controlsocket", "control socket", "too long for unix domain socket")):
        return None
    return ConnectError(
        f"Cannot reach {where}: {last}",
        hint="Check the host and port, your network or VPN, and whether `ssh` reaches it.",
        details=text.strip()[-2000:] or None,
    )

"""Host-key checking against known_hosts: unknown and changed keys are refused, never accepted silently."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from hpcjup.errors import AuthError

if TYPE_CHECKING:
    import paramiko

    from hpcjup.transport.destination import Destination


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_known_hosts(files: tuple[Path, ...]) -> paramiko.HostKeys:
    """All known_hosts entries from the given files (hashed entries and `[host]:port` included)."""
    import paramiko

    keys = paramiko.HostKeys()
    for path in files:
        if path.is_file():
            keys.load(str(path))
    return keys


def known_key_types(dest: Destination) -> list[str]:
    """The key types known_hosts holds for this destination, so negotiation prefers them."""
    entry = load_known_hosts(dest.known_hosts_files).lookup(dest.known_hosts_name)
    return list(entry.keys()) if entry else []


def verify_host_key(dest: Destination, key: paramiko.PKey) -> None:
    """Raise AuthError unless `key` is the one known_hosts holds for `dest`."""
    name = dest.known_hosts_name
    entry = load_known_hosts(dest.known_hosts_files).lookup(name)
    offered = fingerprint(key)
    if entry and key.get_name() in entry:
        known = entry[key.get_name()]
        if known == key:
            return
        raise AuthError(
            f"HOST KEY CHANGED for {name}: known_hosts has {fingerprint(known)}, the server offered {offered}.",
            hint=(
                "This can mean someone is intercepting the connection. Ask your centre whether the key changed; "
                f"only then remove the old entry with `ssh-keygen -R '{name}'`."
            ),
        )
    raise AuthError(
        f"Unknown host key for {name} ({key.get_name()} {offered}).",
        hint=(
            "Check this fingerprint against the one your centre publishes, then accept it once with "
            f"`ssh -p {dest.port} {dest.user}@{dest.hostname}` (answer yes) and run hpcjup again."
        ),
    )

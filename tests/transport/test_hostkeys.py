"""Host keys, both backends: unknown and changed keys refused with fingerprints, accept-new, hashed entries."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpcjup.errors import AuthError, ExitCode
from hpcjup.transport import Transport

pytestmark = pytest.mark.cluster


def _fingerprint(known_hosts_line: str) -> str:
    blob = base64.b64decode(known_hosts_line.split()[2])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _other_key_line(minicluster: Any, tmp_path: Path) -> str:
    key = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return f"[127.0.0.1]:{minicluster.ssh_port} " + " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_unknown_host_key_is_refused_with_its_fingerprint(
    minicluster: Any, laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    (laptop / ".ssh/known_hosts").write_text("")
    with pytest.raises(AuthError) as err:
        connect_to("minicluster", backend)
    assert err.value.exit_code == ExitCode.AUTH
    assert "Unknown host key" in err.value.message and _fingerprint(minicluster.host_key_line()) in err.value.message
    assert "accept" in (err.value.hint or "") and f"ssh -p {minicluster.ssh_port}" in (err.value.hint or "")
    assert (laptop / ".ssh/known_hosts").read_text() == ""  # nothing accepted silently


def test_changed_host_key_is_refused_showing_both_fingerprints(
    minicluster: Any, laptop: Path, tmp_path: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    impostor = _other_key_line(minicluster, tmp_path)
    (laptop / ".ssh/known_hosts").write_text(impostor + "\n")
    for accept_new in (False, True):  # accept-new never replaces a key
        with pytest.raises(AuthError) as err:
            connect_to("minicluster", backend, accept_new=accept_new)
        assert "HOST KEY CHANGED" in err.value.message
        assert (
            _fingerprint(impostor) in err.value.message
            and _fingerprint(minicluster.host_key_line()) in err.value.message
        )
    assert (laptop / ".ssh/known_hosts").read_text() == impostor + "\n"


def test_accept_new_adds_an_unknown_key_once(
    minicluster: Any, laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    known_hosts = laptop / ".ssh/known_hosts"
    known_hosts.unlink()
    transport = connect_to("minicluster", backend, accept_new=True)
    assert transport.run(["true"]).returncode == 0
    lines = known_hosts.read_text().splitlines()
    assert len(lines) == 1 and lines[0].split()[-1] == minicluster.host_key_line().split()[-1]
    assert stat.S_IMODE(known_hosts.stat().st_mode) & 0o077 == 0
    transport.close()
    if backend == "openssh":
        transport.terminate()  # type: ignore[attr-defined]  # a new master has to check the key again
    connect_to("minicluster", backend).run(["true"])  # strict checking now passes
    assert len(known_hosts.read_text().splitlines()) == 1


def test_hashed_known_hosts_entries_work(laptop: Path, connect_to: Callable[..., Transport], backend: str) -> None:
    known_hosts = laptop / ".ssh/known_hosts"
    subprocess.run(["ssh-keygen", "-H", "-f", str(known_hosts)], check=True, capture_output=True)
    assert known_hosts.read_text().startswith("|1|")
    connect_to("minicluster", backend).run(["true"])


def test_revoked_host_key_is_refused(
    minicluster: Any, laptop: Path, connect_to: Callable[..., Transport], backend: str
) -> None:
    known_hosts = laptop / ".ssh/known_hosts"
    line = minicluster.host_key_line()
    known_hosts.write_text(f"{line}\n@revoked * {' '.join(line.split()[1:])}\n")
    with pytest.raises(AuthError):
        connect_to("minicluster", backend)
    os.chmod(known_hosts, 0o600)

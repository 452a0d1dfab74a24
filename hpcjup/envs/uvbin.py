"""uv on both sides: the laptop's own (the `uv` package), and the Linux binary hpcjup brings to a host without one.

uv is one static executable. A host that has none gets the binary of the laptop's uv version for
its machine (x86_64, aarch64), taken from that version's manylinux wheel on PyPI (`pip download
--platform ... --only-binary=:all: --no-deps`), cached on the laptop, uploaded once to
`~/.hpcjup/bin/uv-VERSION` and checked by its sha256 before each reuse.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hpcjup.envs.errors import EnvBuildError
from hpcjup.files import private_dirs

# The host's `uname -m` -> the manylinux platform tag of uv's wheel for it.
PLATFORMS = {"x86_64": "manylinux_2_17_x86_64", "aarch64": "manylinux_2_17_aarch64", "arm64": "manylinux_2_17_aarch64"}


@dataclass(frozen=True)
class UvBinary:
    """A uv executable for a host's machine: its version, bytes' sha256 and where the laptop keeps it."""

    version: str
    sha256: str
    path: Path


def laptop_uv() -> str | None:
    """The laptop's uv executable (the `uv` package hpcjup depends on, else one on PATH), or None."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def uv_version(uv: str) -> str:
    """`0.13.9` for a uv executable."""
    out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def cache_dir() -> Path:
    """Where the laptop keeps uv binaries for other machines."""
    from platformdirs import user_cache_path

    return user_cache_path("hpcjup", appauthor=False) / "uv"


def binary_for(machine: str, version: str | None = None) -> UvBinary:
    """The uv binary for a Linux host of `machine`: the laptop's own if it is one, else fetched from PyPI once."""
    own = laptop_uv()
    if own is None and version is None:
        raise EnvBuildError(
            "No uv on this laptop to match the host's with.", hint="Install hpcjup's dependency: pip install uv."
        )
    version = version or uv_version(own)  # type: ignore[arg-type]
    if own and sys.platform.startswith("linux") and platform.machine() == machine and uv_version(own) == version:
        return UvBinary(version, _sha256(Path(own)), Path(own))
    if machine not in PLATFORMS:
        raise EnvBuildError(
            f"hpcjup has no uv for a {machine} host.",
            hint="Install uv on the host (it is then used), or build with python -m venv and pip.",
        )
    target = cache_dir() / version / machine / "uv"
    if not target.exists():
        _fetch(version, PLATFORMS[machine], target)
    return UvBinary(version, _sha256(target), target)


def _fetch(version: str, platform_tag: str, target: Path) -> None:
    """Download uv's wheel for the platform and take its `uv` executable out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "pip", "download", "-q", f"uv=={version}", "--platform", platform_tag]
        argv += ["--only-binary=:all:", "--no-deps", "--disable-pip-version-check", "-d", tmp]
        done = subprocess.run(argv, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("uv-*.whl"))
        if done.returncode != 0 or not wheels:
            raise EnvBuildError(
                f"Could not download uv {version} for {platform_tag} from PyPI.",
                hint="Check this laptop's network (pip's proxy settings apply), or install uv on the host.",
                details=(done.stderr or done.stdout).strip()[-2000:],
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(".data/scripts/uv"))
            data = wheel.read(member)
    private_dirs(target.parent)
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    os.chmod(partial, 0o755)
    os.replace(partial, target)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

"""Builds for a login node that reaches no package index: the laptop resolves and fetches, the host installs.

The laptop resolves the spec for the host's platform and Python with its own uv (`uv pip compile
--python-platform ... --python-version X.Y --generate-hashes`, the same command and options the online
build's lock comes from, so both give the same lock), downloads exactly those wheels for that platform
with pip (`pip download --only-binary=:all: --platform ... --no-deps`, hashes checked), and sends the
lock and the wheels as one tar on a command's stdin into the build's stage (`.wheels/`). The host then
installs `--no-index` from there. Packages that publish only source distributions cannot be built for
another platform on the laptop: they are refused by name.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcjup.envs.errors import EnvBuildError, disk_full, said_full
from hpcjup.envs.spec import LOCK_FILE, EnvSpec
from hpcjup.transport.batch import pack

if TYPE_CHECKING:
    from hpcjup.envs.probe import Probe
    from hpcjup.transport.base import Transport

# uv's --python-platform knows these manylinux glibc minors (x86_64 and aarch64), newest last.
UV_MANYLINUX = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
WHEELS = ".wheels"  # under the stage: what the build installs from on an offline host
_NO_WHEELS = re.compile(r"(?:all versions of|versions? of) ([A-Za-z0-9_.-]+)(?: [^ ]+)? (?:has|have) no usable wheels")
_REQUIRED = re.compile(r"Wheels are required for `([A-Za-z0-9_.-]+)`")


def platforms(machine: str, libc: str) -> tuple[str, list[str]]:
    """uv's --python-platform and pip's --platform tags for a host (`uname -m`, `glibc2.36` / `musl1.2`)."""
    match = re.fullmatch(r"(glibc|musl)([0-9]+)\.([0-9]+)", libc)
    if machine not in ("x86_64", "aarch64") or match is None:
        raise EnvBuildError(
            f"hpcjup cannot fetch packages for a {machine} host with {libc} (the login node reaches no index).",
            hint="Build the environment where an index is reachable, or ask the site for a package mirror.",
        )
    kind, major, minor = match.group(1), int(match.group(2)), int(match.group(3))
    if kind == "musl":
        return f"{machine}-unknown-linux-musl", [f"musllinux_{major}_{m}_{machine}" for m in range(minor, -1, -1)]
    if (major, minor) < (2, 17):
        raise EnvBuildError(
            f"The host's glibc {major}.{minor} is older than any wheel hpcjup can fetch for it (2.17).",
            hint="Build the environment where an index is reachable.",
        )
    uv_minor = max(m for m in UV_MANYLINUX if m <= minor)
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 16, -1)]
    tags += [f"manylinux2014_{machine}", f"manylinux_2_12_{machine}", f"manylinux_2_5_{machine}"]
    return f"{machine}-manylinux_2_{uv_minor}", tags


def resolve(
    spec: EnvSpec, machine: str, libc: str, python: str, extra: Sequence[str] = (), *, uv: str | None = None
) -> bytes:
    """The lock (requirements format, exact versions and hashes) of the spec and `extra` for the host's platform.

    A spec that carries hpcjup.lock is that lock. The options are write_lock's on the host (no header,
    no annotations, hashes): an offline build's lock is the one an online build writes.
    """
    from hpcjup.envs import uvbin

    if LOCK_FILE in spec.files:
        return spec.files[LOCK_FILE]
    if "pylock.toml" in spec.files:
        raise EnvBuildError(
            f"{spec.source}: a pylock.toml spec cannot be built for an offline host yet.",
            hint="Write hpcjup.lock on a host that reaches an index (`hpcjup env lock`), then build with it.",
        )
    uv = uv or uvbin.laptop_uv()
    if uv is None:
        raise EnvBuildError("No uv on this laptop to resolve the spec with.", hint="pip install uv")
    platform, _ = platforms(machine, libc)
    with tempfile.TemporaryDirectory(prefix="hpcjup-offline-") as tmp:
        where = Path(tmp)
        for name, data in spec.files.items():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            (where / name).write_bytes(data)
        sources: list[str] = [name for name in ("requirements.txt", "pyproject.toml") if name in spec.files]
        if "uv.lock" in spec.files:  # exactly what the project's lock says, then pinned for this platform
            _uv(uv, ["export", "--frozen", "--no-emit-project", "--format", "requirements-txt", "-o", "uv.req"], where)
            sources = ["uv.req"]
        if extra:
            (where / "hpcjup-extra.in").write_text("".join(f"{name}\n" for name in extra))
            sources.append("hpcjup-extra.in")
        options = ["--no-header", "--no-annotate", "--generate-hashes", "--only-binary", ":all:"]
        target = ["--python-platform", platform, "--python-version", python]
        _uv(uv, ["pip", "compile", "-q", *options, *target, *sources, "-o", "lock.txt"], where)
        return (where / "lock.txt").read_bytes()


def _uv(uv: str, args: list[str], cwd: Path) -> None:
    env = {**os.environ, "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}
    done = subprocess.run([uv, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode == 0:
        return
    words = (done.stderr or done.stdout).strip()
    sdists = sorted(set(_NO_WHEELS.findall(words)) | set(_REQUIRED.findall(words)))
    if sdists:
        raise EnvBuildError(
            f"{', '.join(sdists)} publish{'es' if len(sdists) == 1 else ''} no wheel for the host's platform: the "
            "login node reaches no index and the laptop cannot build source packages for another platform.",
            hint="Build the environment where an index is reachable, or replace it with a package that has wheels.",
            details=words[-2000:],
        )
    raise EnvBuildError(
        "The spec did not resolve on this laptop for the host's platform.",
        hint="Fix the spec and run again; nothing was sent to the host.",
        details=words[-2000:],
    )


def download(lock: bytes, machine: str, libc: str, python: str, into: Path) -> list[Path]:
    """Fetch the lock's wheels for the host's platform into `into` (pip checks every hash); the files."""
    _, tags = platforms(machine, libc)
    into.mkdir(parents=True, exist_ok=True)
    (into / LOCK_FILE).write_bytes(lock)
    argv = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps"]
    argv += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python, "-d", str(into)]
    argv += [f"--platform={tag}" for tag in tags]
    argv += ["--index-url", _index(), "-r", str(into / LOCK_FILE)]
    # The laptop's pip configuration is left out (its constraints, find-links and extra indexes are not what
    # uv resolved from); proxy and certificate variables still apply.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        env.pop(name, None)
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        words = (done.stderr or done.stdout).strip()
        missing = re.findall(r"No matching distribution found for ([A-Za-z0-9_.-]+)", words)
        raise EnvBuildError(
            f"Could not download {', '.join(missing) or 'the packages'} for the host's platform on this laptop.",
            hint="Check this laptop's network (pip's proxy settings apply).",
            details=words[-2000:],
        )
    return sorted(into.glob("*.whl"))


def _index() -> str:
    """The index uv resolved from (its own settings), for pip to fetch the same files from."""
    return os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple/"


def bundle(directory: Path) -> bytes:
    """The lock and wheels of `directory` as one tar (names without directories) for the stage's `.wheels/`."""
    files = {path.name: (path.read_bytes(), 0o600) for path in sorted(directory.iterdir()) if path.is_file()}
    return pack(files)


def upload_argv(stage: str, into: str = WHEELS) -> list[str]:
    """Unpack the tar on stdin into STAGE/INTO (a stage the probe made: .stage-NAME-PID under the root)."""
    script = 'case ${1##*/} in .stage-*) ;; *) exit 2 ;; esac; mkdir -p "$1/$2" && cd "$1/$2" && tar -xf -'
    return ["sh", "-c", script, "sh", stage, into]


def remove_stage_argv(stage: str) -> list[str]:
    """Remove a stage whose build will not start (the laptop could not fetch its packages)."""
    return ["sh", "-c", 'case ${1##*/} in .stage-*) rm -rf "$1" ;; esac', "sh", stage]


def upload_packages(transport: Transport, probe: Probe, argv: list[str], data: bytes, what: str) -> None:
    """An offline host's packages (a tar) into the build's stage in one command; a full disk or quota said so."""
    done = transport.run(argv, input=data, timeout=3600, check=False)
    if done.returncode != 0 and said_full(done.stderr):
        raise disk_full(transport.name, probe.root, f"the {len(data) / 1e6:.0f} MB of {what}", [], done.stderr)
    if done.returncode != 0:
        raise EnvBuildError(
            f"Could not upload the packages to {probe.stage} on {transport.name}.",
            hint="Check the free space under the env root (`hpcjup doctor`).",
            details=done.stderr.strip() or None,
        )

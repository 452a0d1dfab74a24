"""Conda specs for a host that reaches no channel: the laptop solves and downloads, the host installs the upload.

The build's probe asks whether the host reaches the spec's first channel (`index_url`, the check the pip
route makes against its index), and names the host's conda tool and kernel (`@@hpcjup conda`). Offline,
`send_packages` runs hpcjup.envs.conda_solve's `fetch` on the laptop with py-rattler: the spec solved for
the host's conda platform and virtual packages (or its conda-PLATFORM.lock taken as it is), every package
downloaded and checked against the channel's sha256 and md5, laid out as local channels with their
records. The pip section is resolved and downloaded the offline pip way (hpcjup.envs.offline) for the
conda env's own Python; where the host has no conda tool and no py-rattler yet, py-rattler's wheel for
the host comes too. All of it goes up as one tar on one command's stdin into the stage's
`.conda-offline/`, and the build installs from those files only (conda.SH: `conda_build`).

py-rattler on the laptop: a tool venv made once by the laptop's uv (hpcjup's own dependency) in hpcjup's
cache, `tools/rattler-VERSION`, the same pinned version the host uses. Not an extra of hpcjup's own
install: the same solver version on both sides gives the same solution as an online build; an 80 MB
native module stays out of the CLI's environment for users who never build a conda spec, and out of its
process (the solver runs as a subprocess, as on the host, where rattler's threads can crash the
interpreter's shutdown).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hpcjup.envs import conda, conda_solve
from hpcjup.envs.errors import EnvBuildError
from hpcjup.envs.spec import EnvSpec
from hpcjup.transport.batch import pack

if TYPE_CHECKING:
    from hpcjup.envs.probe import Probe, Progress
    from hpcjup.transport.base import Transport

UPLOAD = ".conda-offline"  # under the stage: what the build installs from on an offline host
TAIL = 40  # lines of the laptop solver's output an error shows


def index_url(spec: EnvSpec) -> str:
    """The URL whose answer says the host reaches the spec's channels: its first channel's."""
    try:
        channels = conda_solve.channel_urls(conda_solve.parse(spec.files["environment.yml"].decode())["channels"])
    except (KeyError, UnicodeDecodeError, conda_solve.SpecError):
        return ""  # the build itself reports the file's fault
    first = channels[0] if channels else conda_solve.DEFAULT_CHANNELS[0]
    return first if "://" in first else f"https://conda.anaconda.org/{first}/"


def tool_dir() -> Path:
    """Where the laptop keeps its py-rattler (a venv per version)."""
    from platformdirs import user_cache_path

    return user_cache_path("hpcjup", appauthor=False) / "tools" / f"rattler-{conda.RATTLER_VERSION}"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def laptop_rattler() -> Path:
    """The Python of the laptop's py-rattler tool venv, made now with the laptop's uv if it is not there."""
    from hpcjup.envs import uvbin

    venv = tool_dir()
    if (venv / ".complete").exists():
        return _venv_python(venv)
    uv = uvbin.laptop_uv()
    if uv is None:
        raise EnvBuildError(
            "No uv on this laptop to install the conda solver (py-rattler) with.", hint="pip install uv"
        )
    venv.parent.mkdir(parents=True, exist_ok=True)
    part = venv.with_name(f"{venv.name}.part-{os.getpid()}")
    # py-rattler needs Python 3.10 or newer: this one when it is, else one uv finds.
    python = sys.executable if sys.version_info >= (3, 10) else ">=3.10"
    env = {**os.environ, "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}
    for argv in (
        [uv, "venv", "-q", "--python", python, str(part)],
        [uv, "pip", "install", "-q", "--python", str(_venv_python(part)), f"py-rattler=={conda.RATTLER_VERSION}"],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            subprocess.run(["rm", "-rf", str(part)], check=False)
            raise EnvBuildError(
                f"Could not install the conda solver (py-rattler {conda.RATTLER_VERSION}) on this laptop.",
                hint="Check this laptop's network (uv's proxy settings apply).",
                details=(done.stderr or done.stdout).strip()[-2000:] or None,
            )
    (part / ".complete").touch()
    try:
        part.rename(venv)
    except OSError:  # another build was first: its copy is the same
        subprocess.run(["rm", "-rf", str(part)], check=False)
    return _venv_python(venv)


def fetch(
    spec: EnvSpec,
    platform: str,
    libc: str,
    machine: str,
    kernel: str,
    extra: Sequence[str],
    into: Path,
    progress: Progress,
) -> None:
    """conda_solve's `fetch` on the laptop into `into` (its lines reach `progress`); EnvBuildError with the
    solver's words when the spec does not resolve or a package cannot be had."""
    python = laptop_rattler()
    lock = f"conda-{platform}.lock"
    source = into.parent / (lock if lock in spec.files else "environment.yml")
    source.write_bytes(spec.files[source.name])
    argv = [str(python), "-c", conda.solver_text(), "fetch", str(source), platform, libc, machine, kernel, str(into)]
    argv += extra
    tail: collections.deque[str] = collections.deque(maxlen=TAIL)
    env = {**os.environ, "NO_COLOR": "1"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            progress.line(line.rstrip("\n"))
    if proc.returncode != 0:
        words = "\n".join(tail)
        download = "Could not download" in words or "do not match" in words
        raise EnvBuildError(
            f"{spec.source}: the packages could not be downloaded on this laptop for {platform}."
            if download
            else f"{spec.source} did not resolve on this laptop for the host's platform ({platform}).",
            hint="Check this laptop's network; nothing was sent to the host."
            if download
            else "Fix the spec and run again; nothing was sent to the host.",
            details=words or None,
        )


def send_packages(transport: Transport, spec: EnvSpec, probe: Probe, extra: Sequence[str], progress: Progress) -> None:
    """For a host that reaches no channel: solve and download on the laptop, upload everything in one command."""
    from hpcjup.envs import offline

    assert probe.stage is not None
    machine, libc, host_python = probe.machine or "", probe.libc or "", probe.python_version or ""
    tool, _, kernel = (probe.conda or "none").partition(" ")
    platform = conda.PLATFORMS.get(machine)
    if platform is None:
        raise EnvBuildError(
            f"hpcjup knows no conda platform for a {machine} host.", hint="Build where a channel is reachable."
        )
    progress.phase(f"resolving on this laptop ({transport.name} reaches no channel: {probe.index})")
    with tempfile.TemporaryDirectory(prefix="hpcjup-conda-") as tmp:
        into = Path(tmp) / "upload"
        fetch(spec, platform, libc, machine, kernel, extra, into, progress)
        pip = (into / "pip.txt").read_text()
        python = (into / "python.txt").read_text().strip()
        if pip.strip():
            if not python:
                raise EnvBuildError(
                    f"{spec.source}: a pip section needs python among the conda packages.",
                    hint="Add python to its dependencies.",
                )
            progress.phase("downloading the pip section's wheels for the host")
            pins = offline.resolve(
                EnvSpec("pip", spec.source, {"requirements.txt": pip.encode()}), machine, libc, python
            )
            offline.download(pins, machine, libc, python, into / "wheels")
        if tool == "none" and _at_least_310(host_python):  # the host's build needs py-rattler, not there yet
            progress.phase(f"downloading the conda solver (py-rattler {conda.RATTLER_VERSION}) for the host")
            wanted = f"py-rattler=={conda.RATTLER_VERSION}\n".encode()
            pins = offline.resolve(
                EnvSpec("pip", "py-rattler", {"requirements.txt": wanted}), machine, libc, host_python
            )
            offline.download(pins, machine, libc, host_python, into / "tool")
        files = {
            p.relative_to(into).as_posix(): (p.read_bytes(), 0o600) for p in sorted(into.rglob("*")) if p.is_file()
        }
        data = pack(files)
    count = sum(1 for name in files if name.endswith((".conda", ".tar.bz2")))
    progress.phase(f"uploading {count} conda packages ({len(data) / 1e6:.1f} MB)")
    offline.upload_packages(transport, probe, offline.upload_argv(probe.stage, UPLOAD), data, "its conda packages")


def _at_least_310(version: str) -> bool:
    """Whether the host's Python (X.Y) can run py-rattler (below 3.10 the host's build says what to do)."""
    major, _, minor = (version or "0.0").partition(".")
    return major.isdigit() and minor.isdigit() and (int(major), int(minor)) >= (3, 10)

"""Checking and building an environment on a host through one Transport.

`probe_argv` + `parse_probe` are the check a start folds into a command it runs anyway (is env
NAME built? it also marks it used); `ensure` is the whole thing: one probe that also stages the
spec (a tar on stdin), uv brought when the host has none, then one long-lived build command whose
phase lines and tool output reach `progress` as they come.
"""

from __future__ import annotations

import collections
import json
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hpcjup.envs import script
from hpcjup.envs.errors import EnvBuildError, EnvSpecError
from hpcjup.envs.identity import USER_PREFIX
from hpcjup.envs.spec import POSTBUILD, EnvSpec
from hpcjup.errors import Interrupted
from hpcjup.transport.base import Transport
from hpcjup.transport.batch import pack

BUILD_DEADLINE = 4 * 3600.0  # a build that runs longer than this is stopped (its lock then frees)
TAIL = 40  # lines of the tools' output an error shows


class Progress(Protocol):
    """What a build shows while it runs (hpcjup.envs.progress renders it on the UI)."""

    def phase(self, name: str) -> None: ...
    def line(self, text: str) -> None: ...


class _Silent:
    def phase(self, name: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Probe:
    """What the host said about an environment: its name and root, whether it is built, its Python, uv."""

    root: str
    home: str
    name: str | None
    built: bool
    python_version: str | None  # X.Y of the interpreter found
    machine: str | None
    libc: str | None
    interpreter: str | None  # its path on the host
    stage: str | None  # where the spec was staged for a build
    uv: str | None
    uv_sha: str | None  # "host" for the host's own uv

    @property
    def path(self) -> str:
        """The environment's directory on the host."""
        return f"{self.root}/{self.name}"


@dataclass(frozen=True)
class BuiltEnv:
    """A built environment on a host: where it is, its python, and whether this call built it."""

    name: str
    path: str
    built_now: bool
    seconds: float

    @property
    def python(self) -> str:
        return f"{self.path}/bin/python"


def probe_argv(
    spec: EnvSpec,
    root: str,
    python: str = "python3",
    *,
    prefix: str = USER_PREFIX,
    uv_version: str = "",
    stage: bool = False,
) -> list[str]:
    """The check as an argument list: `sh -c SCRIPT hpcjup-env probe ...` (stdin read only with `stage`)."""
    argv = ["sh", "-c", script.SCRIPT, "hpcjup-env", "probe", root, prefix, spec.digest, spec.python or python]
    return [*argv, uv_version, "stage" if stage else ""]


def parse_probe(stdout: str) -> Probe:
    """The probe's `@@hpcjup` lines as a Probe (other output is ignored: it may ride in another command)."""
    found: dict[str, list[str]] = {}
    whole: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("@@hpcjup "):
            key, _, rest = line[len("@@hpcjup ") :].partition(" ")
            found[key] = rest.split(" ")
            whole[key] = rest
    if "root" not in whole:
        raise EnvBuildError("The environment check printed nothing it should.", details=stdout[-2000:])
    python = found.get("python", ["none"])
    env = found.get("env", [])
    uv = found.get("uv", ["none"])
    return Probe(
        root=whole["root"],
        home=whole.get("home", ""),
        name=env[0] if env else None,
        built=env[1:2] == ["built"],
        python_version=None if python[0] == "none" else python[0],
        machine=python[1] if len(python) > 3 else None,
        libc=python[2] if len(python) > 3 else None,
        interpreter=" ".join(python[3:]) if len(python) > 3 else None,
        stage=whole.get("stage"),
        uv=None if uv[0] == "none" else uv[0],
        uv_sha=uv[1] if len(uv) > 1 else None,
    )


def spec_archive(spec: EnvSpec) -> bytes:
    """The spec's files and its description (spec.json) as one tar, for the probe's stdin."""
    files = {name: (data, 0o700 if name == POSTBUILD else 0o600) for name, data in spec.files.items()}
    meta = {"source": spec.source, "kind": spec.kind, "digest": spec.digest, "files": sorted(spec.files)}
    files["spec.json"] = (json.dumps(meta).encode(), 0o600)
    return pack(files)


def check(transport: Transport, spec: EnvSpec, root: str, python: str = "python3", prefix: str = USER_PREFIX) -> Probe:
    """Whether the spec's environment is built on the host (one remote command, nothing uploaded)."""
    result = transport.run(probe_argv(spec, root, python, prefix=prefix), check=False)
    return _checked(parse_probe(result.stdout), spec, python, transport)


def ensure(
    transport: Transport,
    spec: EnvSpec,
    root: str,
    python: str = "python3",
    *,
    prefix: str = USER_PREFIX,
    progress: Progress | None = None,
) -> BuiltEnv:
    """The spec's environment on the host, built now if it is not (two remote commands; three the first time uv comes)."""
    from hpcjup.envs import uvbin

    if spec.kind == "conda":
        raise EnvSpecError(
            f"{spec.source} is a conda spec (environment.yml); hpcjup does not build conda environments yet.",
            hint="Use requirements.txt for now, or an existing conda env (`conda` setting).",
        )
    progress = progress or _Silent()
    started = time.monotonic()
    laptop_uv = uvbin.laptop_uv()
    version = uvbin.uv_version(laptop_uv) if laptop_uv else ""
    result = transport.run(
        probe_argv(spec, root, python, prefix=prefix, uv_version=version, stage=True),
        input=spec_archive(spec),
        check=False,
    )
    probe = _checked(parse_probe(result.stdout), spec, python, transport)
    assert probe.name is not None and probe.interpreter is not None
    if probe.built:
        return BuiltEnv(probe.name, probe.path, False, time.monotonic() - started)
    if probe.stage is None:
        raise EnvBuildError(f"Could not stage the spec under {probe.root} on {transport.name}.", details=result.stderr)
    uv = _uv_for(transport, probe, version, progress)
    argv = ["sh", "-c", script.SCRIPT, "hpcjup-env", "build", probe.root, probe.name, probe.stage]
    how = _stream(transport, [*argv, probe.interpreter, uv], progress)
    return BuiltEnv(probe.name, probe.path, how == "built", time.monotonic() - started)


def _checked(probe: Probe, spec: EnvSpec, python: str, transport: Transport) -> Probe:
    """The probe, or the error of a host that has no Python the spec can use."""
    if probe.python_version is None:
        wanted = spec.python or python
        source = "runtime.txt asks for" if spec.python else "the `python` setting is"
        raise EnvBuildError(
            f"No Python {wanted} on {transport.name} ({source} {wanted}).",
            hint="Load a module that provides it (`modules` setting), set `python` to one the host has, "
            "or change runtime.txt.",
        )
    return probe


def _uv_for(transport: Transport, probe: Probe, version: str, progress: Progress) -> str:
    """The uv the build uses on the host: its own, the one brought before (same sha256), or upload it now.
    "" when none can be had (the build then uses python -m venv and pip)."""
    from hpcjup.envs import uvbin

    if probe.uv and probe.uv_sha == "host":
        return probe.uv
    if transport.name == "local" and uvbin.laptop_uv():  # --local: the laptop's own uv is the host's
        return str(uvbin.laptop_uv())
    try:
        binary = uvbin.binary_for(probe.machine or "", version or None)
    except EnvBuildError as exc:
        progress.line(f"no uv for the host ({exc.message}): building with python -m venv and pip")
        return probe.uv or ""
    if probe.uv and probe.uv_sha == binary.sha256:
        return probe.uv
    target = f"{probe.home}/.hpcjup/bin/uv-{binary.version}"
    progress.phase("uploading uv")
    upload = 'mkdir -p "${1%/*}" && cat >"$1.part" && chmod 700 "$1.part" && mv -f "$1.part" "$1"'
    transport.run(["sh", "-c", upload, "sh", target], input=binary.path.read_bytes(), timeout=600)
    return target


def _stream(transport: Transport, argv: Sequence[str], progress: Progress) -> str:
    """Run the build, passing its lines on: "built", or "reused" (another builder was first); else
    EnvBuildError with the tools' last words."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL)
    proc = transport.start_process(argv)
    buffer = b""
    deadline = time.monotonic() + BUILD_DEADLINE
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc], [], [], 1.0)
            if not ready:
                progress.line("")  # lets the display tick its clock
                continue
            chunk = proc.read_some()
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                done = _line(line, tail, progress, transport)
                if done is not None:
                    return done
        raise EnvBuildError(f"The build on {transport.name} ended without a result.", details="\n".join(tail) or None)
    except KeyboardInterrupt:
        # Closing our end is what stops the build: its watchdog sees stdin end and removes the half-built env.
        raise Interrupted("Interrupted: the build stopped and left nothing behind.") from None
    finally:
        proc.close()


def _line(line: str, tail: collections.deque[str], progress: Progress, transport: Transport) -> str | None:
    """Handle one line of the build: a phase, the result, or the tools' own words."""
    if not line.startswith("@@hpcjup "):
        tail.append(line)
        progress.line(line)
        return None
    word, _, rest = line[len("@@hpcjup ") :].partition(" ")
    if word == "phase":
        progress.phase(rest)
    elif word == "done":
        return rest.rsplit(" ", 1)[-1]
    elif word == "failed":
        phase, _, log = rest.partition(" ")
        what = {"resolving": "the packages did not resolve or install", "postBuild": "postBuild failed"}.get(
            phase, f"{phase} failed"
        )
        raise EnvBuildError(
            f"The environment did not build on {transport.name}: {what}.",
            hint=f"Its whole log is {log} on the host. Fix the spec and run again; nothing was left half-built."
            if log
            else "Nothing was left half-built.",
            details="\n".join(tail) or None,
        )
    return None

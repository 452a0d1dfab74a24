"""Checking and building an environment on a host through one Transport.

`probe_argv` + `parse_probe` are the check a start folds into a command it runs anyway (is env
NAME built? it also marks it used); `ensure` is the whole thing: one probe that also stages the
spec (a tar on stdin) and, for a build, asks whether the host reaches a package index; uv brought
when the host has none; for an offline host the laptop's lock and wheels (hpcjup.envs.offline) in one
more command; then one long-lived build command whose phase lines and tool output reach `progress`
as they come. A user's environment gets ipykernel when its spec lacks it: each becomes a kernel.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcjup.envs import script
from hpcjup.envs.errors import EnvBuildError, disk_full, said_full
from hpcjup.envs.identity import USER_PREFIX
from hpcjup.envs.probe import Probe, Progress
from hpcjup.envs.remote import remote_lines, script_line
from hpcjup.envs.spec import POSTBUILD, EnvSpec
from hpcjup.errors import Interrupted
from hpcjup.transport.base import Transport
from hpcjup.transport.batch import pack

if TYPE_CHECKING:
    from hpcjup.envs.buildjob import JobPlace

BUILD_DEADLINE = 4 * 3600.0  # a build that runs longer than this is stopped (its lock then frees)
TAIL = 40  # lines of the tools' output an error shows
#: What every user environment gets when its spec lacks it (in the same resolution, so nothing else changes).
KERNEL_PACKAGES = ("ipykernel",)


class _Silent:
    def phase(self, name: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass


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
    offline: bool | None = None,
    index_url: str = "",
    keep_tree: bool = False,
) -> list[str]:
    """The check as an argument list: `sh -c SCRIPT hpcjup-env probe ...` (stdin read only with `stage`).
    With `stage`, `offline` None asks whether the host reaches an index (`index_url`, else pip's); True/False
    say it (a setting). `keep_tree`: the env runs in place (tree_env)."""
    argv = ["sh", "-c", script.SCRIPT, "hpcjup-env", "probe", root, prefix, spec.digest, spec.base_python(python)]
    index = "" if not stage else "auto" if offline is None else "offline" if offline else "online"
    return [*tree_env(keep_tree), *argv, uv_version, "stage" if stage else "", index, index_url]


def keeps_tree(env_mode: object, transport: Transport) -> bool:
    """Whether builds keep an env's tree on the shared filesystem (envs/pack.py): where envs run in place, with
    `env_mode = "direct"` or on this machine (--local, whose envs are on the laptop's own disk)."""
    return env_mode == "direct" or transport.name == "local"


def tree_env(keep: bool) -> list[str]:
    """The argv prefix that tells the scripts to keep an env's tree on the shared filesystem (and unpack a dropped
    one back): for env_mode direct and --local, which run envs in place (envs/pack.py). Default: dropped."""
    return ["env", "HPCJUP_ENV_TREE=keep"] if keep else []


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
    index = found.get("index", [])
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
        offline=index[:1] == ["offline"],
        index=index[1] if len(index) > 1 else None,
        conda=whole.get("conda"),
    )


def spec_archive(spec: EnvSpec) -> bytes:
    """The spec's files and its description (spec.json) as one tar, for the probe's stdin."""
    files = {name: (data, 0o700 if name == POSTBUILD else 0o600) for name, data in spec.files.items()}
    meta = {"source": spec.source, "kind": spec.kind, "digest": spec.digest, "files": sorted(spec.files)}
    files["spec.json"] = (json.dumps(meta).encode(), 0o600)
    return pack(files)


def check(
    transport: Transport,
    spec: EnvSpec,
    root: str,
    python: str = "python3",
    prefix: str = USER_PREFIX,
    keep_tree: bool = False,
) -> Probe:
    """Whether the spec's environment is built on the host (one remote command, nothing uploaded)."""
    result = transport.run(probe_argv(spec, root, python, prefix=prefix, keep_tree=keep_tree), check=False)
    return _checked(parse_probe(result.stdout), spec, python, transport)


def ensure(
    transport: Transport,
    spec: EnvSpec,
    root: str,
    python: str = "python3",
    *,
    prefix: str = USER_PREFIX,
    progress: Progress | None = None,
    offline: bool | None = None,
    job: JobPlace | None = None,
    keep_tree: bool = False,
) -> BuiltEnv:
    """The spec's environment on the host, built now if it is not (two remote commands; three the first time uv
    comes; one more for an offline host's packages). `offline`: None finds out (only when it builds), True
    for a site known to reach no index (the laptop fetches), False never asks. `job`: the build runs in a batch
    job there (envs/buildjob.py; one more remote command, its submission), not on the login node. `keep_tree`: the
    env runs in place, so its tree stays (or comes back) on the shared filesystem (tree_env)."""
    from hpcjup.envs import uvbin

    progress = progress or _Silent()
    started = time.monotonic()
    url = ""
    if spec.kind == "conda":  # its channels, not PyPI, say whether the host is offline
        from hpcjup.envs.conda_offline import index_url

        url = index_url(spec)
    laptop_uv = uvbin.laptop_uv()
    version = uvbin.uv_version(laptop_uv) if laptop_uv else ""
    result = transport.run(
        probe_argv(
            spec,
            root,
            python,
            prefix=prefix,
            uv_version=version,
            stage=True,
            offline=offline,
            index_url=url,
            keep_tree=keep_tree,
        ),
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
    extra = KERNEL_PACKAGES if prefix == USER_PREFIX else ()
    if probe.offline:
        from hpcjup.envs.offline import remove_stage_argv

        try:
            if spec.kind == "conda":
                from hpcjup.envs.conda_offline import send_packages

                send_packages(transport, spec, probe, extra, progress)
            else:
                _send_packages(transport, spec, probe, extra, progress)
        except BaseException:
            # The build never starts: its stage goes now (the next build's sweep would take a day).
            transport.run(remove_stage_argv(probe.stage), check=False)
            raise
    argv = [*tree_env(keep_tree), "sh", "-c", script.SCRIPT, "hpcjup-env", "build", probe.root, probe.name, probe.stage]
    argv += [probe.interpreter, uv, " ".join(extra)]
    if spec.kind == "conda":
        from hpcjup.envs.conda import solver_text

        argv.append(solver_text())
    if job is None:
        how = stream(transport, argv, progress)
    else:
        how = _in_job(transport, job, argv, probe, progress)
    return BuiltEnv(probe.name, probe.path, how == "built", time.monotonic() - started)


def _in_job(transport: Transport, job: JobPlace, argv: Sequence[str], probe: Probe, progress: Progress) -> str:
    """The build in a batch job: submitted, then its output streamed as a login build's (buildjob.FOLLOW)."""
    from hpcjup.envs import buildjob
    from hpcjup.envs.offline import remove_stage_argv

    assert probe.name is not None and probe.stage is not None
    directory = buildjob.job_directory(probe.root, probe.name)
    progress.phase("submitting the build job")
    try:
        job_id = buildjob.submit(transport, job, directory, f"env-{probe.name}", buildjob.job_command(argv))
    except BaseException:
        transport.run(remove_stage_argv(probe.stage), check=False)  # no build will take the stage
        raise
    progress.phase(f"build job {job_id} submitted")
    watch = buildjob.JobWatch(transport, job.scheduler, job_id, progress)
    follow = buildjob.follow_argv(directory, probe.stage, job.scheduler, job_id)
    return stream(transport, follow, progress, tick=watch, interrupted=f"its job {job_id} was cancelled")


def _send_packages(transport: Transport, spec: EnvSpec, probe: Probe, extra: Sequence[str], progress: Progress) -> None:
    """For a host that reaches no index: resolve and download on the laptop, upload lock and wheels in one command."""
    import tempfile
    from pathlib import Path

    from hpcjup.envs import offline

    assert probe.stage is not None and probe.python_version is not None
    machine, libc = probe.machine or "", probe.libc or ""
    progress.phase(f"resolving on this laptop ({transport.name} reaches no index: {probe.index})")
    lock = offline.resolve(spec, machine, libc, probe.python_version, extra)
    with tempfile.TemporaryDirectory(prefix="hpcjup-wheels-") as tmp:
        progress.phase("downloading wheels for the host")
        wheels = offline.download(lock, machine, libc, probe.python_version, Path(tmp))
        data = offline.bundle(Path(tmp))
    progress.phase(f"uploading {len(wheels)} wheels ({len(data) / 1e6:.1f} MB)")
    offline.upload_packages(transport, probe, offline.upload_argv(probe.stage), data, "its packages' wheels")


def _checked(probe: Probe, spec: EnvSpec, python: str, transport: Transport) -> Probe:
    """The probe, or the error of a host that has no Python the spec can use."""
    if probe.python_version is None:
        wanted = spec.base_python(python)
        source = "runtime.txt asks for" if spec.python and spec.kind != "conda" else "the `python` setting is"
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


def stream(
    transport: Transport,
    argv: Sequence[str],
    progress: Progress,
    *,
    tick: Callable[[], str | None] | None = None,
    interrupted: str = "the build stopped",
) -> str:
    """Run the build (or follow its job's output), passing its lines on: "built", or "reused" (another builder
    was first); else EnvBuildError with the tools' last words. `tick`, called while the output is quiet, may end
    the wait with a message (a build job that ended without a result)."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL)
    space: list[str] = []  # the failed build's `space` line: ROOT KB FILES AVAILKB FREEINODES

    def quiet() -> None:
        ended = tick() if tick is not None else None
        if ended is not None:
            raise EnvBuildError(ended, hint=_ENDED_HINT, details="\n".join(tail) or None)

    try:
        for line in remote_lines(transport, argv, progress, BUILD_DEADLINE, on_quiet=quiet):
            done = _line(line, tail, space, progress, transport)
            if done is not None:
                return done
        raise EnvBuildError(f"The build on {transport.name} ended without a result.", details="\n".join(tail) or None)
    except KeyboardInterrupt:
        # Closing our end is what stops the build: its watchdog sees stdin end and removes the half-built env.
        raise Interrupted(f"Interrupted: {interrupted} and left nothing behind.") from None


_ENDED_HINT = (
    "Its output is above. A time limit or a node failure ends a job so: build again (`hpcjup env build`), or on the "
    "login node with --build login where the site allows it."
)


def _line(
    line: str, tail: collections.deque[str], space: list[str], progress: Progress, transport: Transport
) -> str | None:
    """Handle one line of the build: a phase, the result, or the tools' own words."""
    said = script_line(line, tail, progress)
    if said is None:
        return None
    word, rest = said
    if word == "host":
        progress.line(f"building on {rest}")
    elif word == "done":
        return rest.rsplit(" ", 1)[-1]
    elif word == "image":  # packed (PATH SHA256 BYTES CODEC), or `none WHY`: the env is then used in place
        what, _, why = rest.partition(" ")
        progress.line(f"no image: {why}" if what == "none" else f"image {what} ({int(why.split()[1]) / 1e6:.0f} MB)")
    elif word == "tree":  # dropped FILES (only the image, lock and log stay on the shared filesystem), kept WHY
        what, _, why = rest.partition(" ")
        progress.line(
            f"tree of {why} files removed: the image is what nodes use"
            if what == "dropped"
            else f"tree {what} {why}".strip()
        )
    elif word == "rebuild":  # its tree dropped and its image corrupt or gone
        progress.line(
            f"{rest.split(' ', 1)[0]} is corrupt or gone and the tree was dropped: building the environment again{' from its lock' if 'from its lock' in rest else ''}"
        )
    elif word == "space":
        space[:] = rest.rsplit(" ", 4)
    elif word == "failed":
        phase, _, log = rest.partition(" ")
        words = "\n".join(tail)
        if len(space) == 5 and said_full(words):
            root, kb, files = space[:3]
            needs = f"the {int(kb) / 1024:.0f} MB in {files} files it had written when it stopped"
            raise disk_full(transport.name, root, needs, space[3:], words)
        what = {
            "resolving": "the packages did not resolve or install",
            "postBuild": "postBuild failed",
            "interrupted": "it was stopped by a signal (its job cancelled, or the login node ended it)",
        }.get(phase, f"{phase} failed")
        raise EnvBuildError(
            f"The environment did not build on {transport.name}: {what}.",
            hint=f"Its whole log is {log} on the host. Fix the spec and run again; nothing was left half-built."
            if log
            else "Nothing was left half-built.",
            details="\n".join(tail) or None,
        )
    return None

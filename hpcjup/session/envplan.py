"""The environments a session runs in (`start --env/--kernel`, and a bare cluster's first start).

`plan()` reads the settings into the specs a start needs: hpcjup's server environment (JupyterLab)
and the user's kernels, each a spec read on the laptop or an existing env on the cluster
(`cluster:/path`), or a module set (`module:A,B`, its Python run through a wrapper the session uploads).
`locate()` names them from what hostfacts remembers of the host (no remote
command), `learn()` asks the host once and builds what is missing (before any job is queued),
and `Located.checks` is what the upload's command checks so a warm start costs nothing extra.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from hpcjup.envs import server as server_env
from hpcjup.envs.container import ImageKernel, image_kernel
from hpcjup.envs.identity import SERVER_PREFIX, USER_PREFIX, env_name, env_root
from hpcjup.envs.spec import EnvSpec, read_spec
from hpcjup.errors import UsageError

if TYPE_CHECKING:
    from hpcjup.config.environment import Settings
    from hpcjup.config.profiles import Resolved
    from hpcjup.config.resources import Resources
    from hpcjup.envs.buildjob import JobPlace
    from hpcjup.envs.probe import Probe
    from hpcjup.session.hostfacts import HostFacts
    from hpcjup.session.store import LocalStore
    from hpcjup.transport.base import Transport
    from hpcjup.ui import UI

#: A kernel's name (the launcher's rule): it names the session-private kernel spec.
KERNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
CLUSTER = "cluster:"  # `--kernel cluster:/path/to/venv`: an env that exists on the cluster
MODULE = "module:"  # `--kernel module:Python/3.11,SciPy-bundle`: a module set's Python
#: A module-set kernel's Python: a wrapper in the session directory (Located.at makes it absolute) that loads the
#: set and runs its python3; a prefix-like place, so the launcher treats it as any environment's bin/python.
WRAPPER = "kernels/{name}/bin/python"
IMAGE = "image:"  # `--kernel image:REF[#PYTHON]`: a container image's Python (envs/container.py)
_SETTINGS_WITH_JUPYTER = ("venv", "conda", "modules", "image", "setup")


@dataclass(frozen=True)
class Kernel:
    """One kernel asked for: its name, and a spec to build or an existing env's prefix on the cluster."""

    name: str
    spec: EnvSpec | None = None
    prefix: str | None = None  # absolute, or ~/...
    modules: tuple[str, ...] = ()  # a module set: loaded by `setup`, its python3 the kernel's
    setup: tuple[str, ...] = ()  # the shell lines that load it (config.environment.module_lines: the one way)
    image: ImageKernel | None = None  # a container image's Python

    @property
    def what(self) -> str:
        if self.image is not None:
            return f"{IMAGE}{self.image.image}"
        if self.modules:
            return MODULE + ",".join(self.modules)
        return self.spec.source if self.spec is not None else f"{CLUSTER}{self.prefix}"

    def wrapper(self) -> str:
        """A module set's python: sh (whatever the user's login shell) loads the set, then runs its python3."""
        said = "hpcjup: the module set " + " ".join(self.modules) + " puts no python3 on PATH"
        return "\n".join(
            [
                "#!/bin/sh",
                f"# hpcjup: the Python of kernel {self.name}: the module set {' '.join(self.modules)}",
                *self.setup,
                f"command -v python3 >/dev/null 2>&1 || {{ echo {shlex.quote(said)} >&2; exit 1; }}",
                'exec python3 "$@"',
                "",
            ]
        )


@dataclass(frozen=True)
class Plan:
    """What a start needs built: the server env, the kernels (empty: the server's own python3 kernel)."""

    root: str  # the env_root setting (relative to home, ~/..., $VAR/... or absolute)
    python: str  # the base Python the envs are built from
    kernels: tuple[Kernel, ...] = ()
    server: EnvSpec = field(default_factory=server_env.server_spec)
    offline: bool | None = None  # the `offline` setting: None finds out when something is built
    build: BuildWhere | None = None  # `build = "job"`: where its build job runs; None: on the login node

    def specs(self) -> list[tuple[str, EnvSpec]]:
        """(prefix, spec) of every env to build: the server first."""
        return [(SERVER_PREFIX, self.server)] + [(USER_PREFIX, k.spec) for k in self.kernels if k.spec is not None]


@dataclass(frozen=True)
class BuildWhere:
    """`build = "job"`: the batch system named in the settings (auto: asked of the host, only when something is
    built) and the session's request, which the build job's place is made from (envs/buildjob.py)."""

    scheduler: str
    resources: Resources

    @staticmethod
    def of(settings: Settings) -> BuildWhere | None:
        """From the `build` setting: None for `login` (the default)."""
        if settings.value("build") != "job":
            return None
        resolved = cast("Resolved", settings)  # the start's settings: the resolver's, which know the request
        return BuildWhere(settings.value("scheduler") or "auto", resolved.resources())

    def place(self, transport: Transport, ui: UI) -> JobPlace | None:
        """The build job's place on this host; None (a login build, said) where there is no batch system."""
        from hpcjup.envs.buildjob import place
        from hpcjup.schedulers import AUTO, detect, get_scheduler

        scheduler = get_scheduler(detect(transport) if self.scheduler == AUTO else self.scheduler)
        if not scheduler.commands or not scheduler.submit_command:
            ui.info(f"note: build = job, but {transport.name} has no batch system: building on the host itself")
            return None
        return place(scheduler, self.resources)


@dataclass(frozen=True)
class Located:
    """The plan with paths on the host: the server's Python, each kernel's, and the upload's checks."""

    server_python: str
    kernels: tuple[tuple[str, str], ...]  # (name, python); a module set's: its WRAPPER, relative until `at`
    checks: tuple[str, ...]  # `b:PATH` built env, `p:PATH` existing prefix, `c:ROOT:NAME` server-current,
    # `m:NAME=module:A,B WRAPPER` a module set's python3 has ipykernel (claim.py)
    envs: tuple[str, ...]  # the env directories the session uses (session.json; `env rm` refuses them)
    wrappers: tuple[tuple[str, str], ...] = ()  # (WRAPPER path in the session directory, its text)

    def at(self, session_dir: str) -> Located:
        """The kernels' Pythons with the module sets' wrappers in `session_dir` (other Pythons stay: absolute paths,
        a container's command)."""
        wrappers = {path for path, _ in self.wrappers}
        kernels = tuple((n, f"{session_dir.rstrip('/')}/{p}" if p in wrappers else p) for n, p in self.kernels)
        return replace(self, kernels=kernels)

    def files(self) -> dict[str, tuple[bytes, int]]:
        """The module sets' wrappers, as the session's files (executable: Jupyter runs them as a kernel's argv[0])."""
        return {path: (text.encode(), 0o700) for path, text in self.wrappers}

    @property
    def dask_python(self) -> str | None:
        """The default kernel's Python (Dask runs there), or None without kernels or when it is a container's."""
        return self.kernels[0][1] if self.kernels and self.kernels[0][1].startswith("/") else None


def parse_kernel(text: str) -> tuple[str | None, str]:
    """`[NAME=]SPEC` -> (NAME or None, SPEC). NAME only when the part before `=` is a kernel name."""
    head, eq, rest = text.partition("=")
    if eq and KERNEL_NAME.fullmatch(head) and rest:
        return head, rest
    if not text.strip():
        raise UsageError("An empty --kernel.", hint="Give a spec directory or file, or cluster:/path/to/env.")
    return None, text


def _existing_env(text: str, rest: str, settings: Settings) -> Kernel:
    """`cluster:PREFIX`: an env that exists on the cluster (its bin/python is checked by the upload)."""
    prefix = rest.rstrip("/")
    if not (prefix.startswith("/") or prefix.startswith("~/")) or any(c.isspace() for c in prefix):
        raise UsageError(
            f"--kernel {text}: {prefix!r} is not an absolute path on the cluster.",
            hint="Write cluster:/path/to/venv (or cluster:~/path), the env's prefix holding bin/python.",
        )
    return Kernel(kernel_name(CLUSTER + rest), prefix=prefix)


#: A module's name as `module load` takes it (Lmod's Python/3.11.3-GCCcore-12.3.0, Environment Modules' python/3.11).
_MODULE_NAME = re.compile(r"[A-Za-z0-9_.+@%][A-Za-z0-9_.+@%/:-]*")


def _module_set(text: str, rest: str, settings: Settings) -> Kernel:
    """`module:A,B`: the modules loaded as the `modules` setting loads them (with `module_use`, `module_purge`)."""
    from hpcjup.config.environment import module_lines

    modules = tuple(m.strip() for m in rest.split(","))
    bad = [m for m in modules if not _MODULE_NAME.fullmatch(m)]
    if not modules or bad:
        raise UsageError(
            f"--kernel {text}: {', '.join(repr(m) for m in bad)} is not a module name.",
            hint="Write module:NAME[,NAME...], the modules to load, e.g. module:Python/3.11,SciPy-bundle.",
        )
    setup = module_lines(modules, settings.value("module_use") or (), bool(settings.value("module_purge")))
    return Kernel(_slug("-".join(modules)), modules=modules, setup=tuple(setup))


def _image(text: str, rest: str, settings: Settings) -> Kernel:
    """`image:REF[#PYTHON]`: that Python inside a container image (a docker:// one is pulled first), with `binds`."""
    image = image_kernel(rest, settings.value("binds") or ())
    return Kernel(image.name, image=image)


#: The kinds of `--kernel SPEC` by their prefix; anything else is a spec directory or file read on the laptop.
KINDS: dict[str, Callable[[str, str, Settings], Kernel]] = {
    CLUSTER: _existing_env,
    MODULE: _module_set,
    IMAGE: _image,
}


def read_kernel(text: str, settings: Settings) -> Kernel:
    """One `--kernel [NAME=]SPEC` as a Kernel (its name from NAME, else from SPEC); UsageError for a bad one."""
    name, spec = parse_kernel(text)
    kind = next((prefix for prefix in KINDS if spec.startswith(prefix)), None)
    if kind is not None:
        kernel = KINDS[kind](text, spec[len(kind) :], settings)
    else:
        kernel = Kernel(kernel_name(spec), spec=read_spec(spec))
    return replace(kernel, name=name) if name else kernel


def _slug(word: str) -> str:
    """A kernel name from any word: lowercased, other characters as `-`, 64 at most."""
    return re.sub(r"[^a-z0-9_.-]+", "-", word.lower()).lstrip("_.-")[:64] or "env"


def kernel_name(source: str) -> str:
    """A kernel name from where it came from: the spec directory's name (a file's: its directory's, or its
    stem), an env prefix's last part; lowercased, other characters as `-`."""
    path = source[len(CLUSTER) :] if source.startswith(CLUSTER) else source
    p = Path(path.rstrip("/") or "/")
    if not source.startswith(CLUSTER) and p.suffix and p.name not in ("requirements.txt",):
        word = p.stem
    elif not source.startswith(CLUSTER) and p.suffix:
        word = p.resolve().parent.name
    else:
        word = (p.resolve() if not source.startswith(CLUSTER) else p).name
    if word in ("binder", ".binder"):
        word = Path(path).resolve().parent.name
    return _slug(word)


def plan(settings: Settings) -> Plan | None:
    """The environments a start needs from its settings, or None (no `env`/`kernels`: today's way)."""
    given = ([settings.value("env")] if settings.value("env") else []) + list(settings.value("kernels") or ())
    if not given:
        return None
    if settings.value("image"):
        raise UsageError(
            "--env/--kernel and `image` both say where Jupyter runs: a container, or hpcjup's server environment.",
            hint="Choose one: remove `image` (or --env/--kernel) from the command line or profile.",
        )
    kernels: list[Kernel] = []
    for text in given:
        kernel = read_kernel(text, settings)
        taken = {k.name for k in kernels}
        unique, n = kernel.name, 2
        while unique in taken:
            unique, n = f"{kernel.name[:60]}-{n}", n + 1
        kernels.append(replace(kernel, name=unique))
    return Plan(
        env_root(settings.value("env_root")),
        settings.value("python") or "python3",
        tuple(kernels),
        offline=settings.value("offline"),
        build=BuildWhere.of(settings),
    )


def bare(settings: Settings) -> bool:
    """A start that sets nothing but (perhaps) `python`: that Python must have JupyterLab, or hpcjup's server
    environment is built from it (a bare cluster's first start)."""
    return not any(settings.value(key) for key in (*_SETTINGS_WITH_JUPYTER, "env", "kernels"))


def server_plan(settings: Settings) -> Plan:
    """A bare start's plan: the server env alone (its own python3 kernel), built from the `python` setting."""
    return Plan(
        env_root(settings.value("env_root")),
        settings.value("python") or "python3",
        offline=settings.value("offline"),
        build=BuildWhere.of(settings),
    )


def locate(p: Plan, facts: HostFacts | None, home: str) -> Located | None:
    """Name every env from what is remembered of the host; None when something is not remembered yet."""
    if facts is None or p.root not in facts.roots:
        return None
    root = facts.roots[p.root]
    paths: dict[int, str] = {}
    for prefix, spec in p.specs():
        known = facts.pythons.get(spec.base_python(p.python))
        if known is None:
            return None
        paths[id(spec)] = f"{root}/{env_name(prefix, spec.digest, *known)}"
    server = paths[id(p.server)]
    if p.root not in facts.current:
        return None
    pointer = facts.current[p.root]  # the server env `env upgrade-server` chose, if any
    if pointer:
        server = f"{root}/{pointer}"
    kernels: list[tuple[str, str]] = []
    checks = [f"c:{root}:{pointer}", f"b:{server}"]
    envs = [server]
    wrappers: list[tuple[str, str]] = []
    for k in p.kernels:
        if k.image is not None:
            kernels.append((k.name, k.image.command(home)))
            envs.append(k.image.image)  # recorded: `prune --envs` never removes an image a running kernel uses
            continue
        if k.modules:  # the upload runs its wrapper once (its python3 has ipykernel?); the launcher asks it again
            wrapper = WRAPPER.format(name=k.name)
            wrappers.append((wrapper, k.wrapper()))
            checks.append(f"m:{k.name}={k.what} {k.wrapper()}")
            kernels.append((k.name, wrapper))
            continue
        if k.spec is not None:
            path = paths[id(k.spec)]
            checks.append(f"b:{path}")
        else:
            assert k.prefix is not None
            path = home.rstrip("/") + k.prefix[1:] if k.prefix.startswith("~/") else k.prefix
            checks.append(f"p:{path}")
        kernels.append((k.name, f"{path}/bin/python"))
        envs.append(path)
    return Located(f"{server}/bin/python", tuple(kernels), tuple(checks), tuple(dict.fromkeys(envs)), tuple(wrappers))


def probe(transport: Transport, spec: EnvSpec, root: str, python: str, prefix: str) -> Probe:
    """The host's answer for one spec (one remote command): its root, Python, and whether it is built."""
    from hpcjup.envs.build import parse_probe, probe_argv
    from hpcjup.envs.errors import EnvBuildError

    result = transport.run(probe_argv(spec, root, python, prefix=prefix), check=False)
    missing = re.search(r"no \$([A-Za-z_][A-Za-z0-9_]*) here", result.stderr)
    if missing:
        var = missing.group(1)
        hint = f"Set ${var} in your login environment on the cluster, or set env_root to a directory of yours."
        if var == "PROJECT":
            hint = "On JSC systems run `jutil env activate -p PROJECT` (in your ~/.bashrc), or set env_root."
        raise UsageError(f"env_root {root} needs ${var}, which is not set on {transport.name}.", hint=hint)
    found = parse_probe(result.stdout)
    if found.python_version is None:
        raise EnvBuildError(
            f"No Python {spec.base_python(python)} on {transport.name} to build {spec.source} with.",
            hint="Load a module that provides it (`modules`), set `python` to one the host has, or change runtime.txt.",
        )
    return found


def learn(transport: Transport, p: Plan, ui: UI) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Ask the host about every env of the plan and build the missing ones (before any job is queued),
    showing a build's progress on `ui`. What was learned, for hostfacts: roots, pythons, and the server
    env `hpcjup env upgrade-server` chose (ROOT/server-current; "" when none)."""
    from hpcjup.envs.build import ensure
    from hpcjup.envs.progress import BuildDisplay

    roots: dict[str, str] = {}
    pythons: dict[str, list[str]] = {}
    places: list[JobPlace | None] = []  # the build job's place, found once, when the first build needs it
    for prefix, spec in p.specs():
        request = spec.base_python(p.python)
        found = probe(transport, spec, p.root, p.python, prefix)
        roots[p.root] = found.root
        pythons[request] = [found.python_version or "", found.machine or "unknown", found.libc or "unknown"]
        if not found.built:
            what = "server environment (JupyterLab)" if prefix == SERVER_PREFIX else f"environment {spec.source}"
            for note in spec.notes:
                ui.info(f"note: {note}")
            if p.build is not None and not places:
                places.append(p.build.place(transport, ui))
            job = places[0] if places else None
            with BuildDisplay(ui, what) as shown:
                ensure(transport, spec, p.root, p.python, prefix=prefix, progress=shown, offline=p.offline, job=job)
    pointer = transport.run(["readlink", f"{roots[p.root]}/{server_env.POINTER}"], check=False).stdout.strip()
    return roots, pythons, {p.root: pointer.rsplit("/", 1)[-1]}


def prepare(store: LocalStore, key: str, transport: Transport, p: Plan, ui: UI, *, fresh: bool = False) -> Located:
    """The plan located on the host: from what is remembered (no remote command), or, when something is not
    remembered or `fresh` (the upload found an env missing), asked of the host and built now."""
    from hpcjup.session import hostfacts

    home = transport.home()
    located = None if fresh else locate(p, hostfacts.load(store, key), home)
    if located is not None:
        return located
    roots, pythons, current = learn(transport, p, ui)
    facts = hostfacts.learn(store, key, roots=roots, pythons=pythons, current=current)
    located = locate(p, facts or hostfacts.HostFacts(home, None, roots, pythons, current), home)
    assert located is not None
    return located


def survey(transport: Transport, p: Plan) -> tuple[Located, list[dict[str, str]]]:
    """--dry-run: where each env of the plan is, and whether it is built (nothing is built or staged)."""
    from hpcjup.session.hostfacts import HostFacts

    rows: list[dict[str, str]] = []
    roots: dict[str, str] = {}
    pythons: dict[str, list[str]] = {}
    for prefix, spec in p.specs():
        found = probe(transport, spec, p.root, p.python, prefix)
        roots[p.root] = found.root
        pythons[spec.base_python(p.python)] = [found.python_version or "", found.machine or "", found.libc or ""]
        rows.append({"env": found.name or "", "source": spec.source, "state": "built" if found.built else "missing"})
    pointer = transport.run(["readlink", f"{roots[p.root]}/{server_env.POINTER}"], check=False).stdout.strip()
    home = transport.home()
    located = locate(p, HostFacts(home, None, roots, pythons, {p.root: pointer.rsplit("/", 1)[-1]}), home)
    assert located is not None
    rows += [{"env": k.prefix or "", "source": k.what, "state": "existing"} for k in p.kernels if k.prefix]
    rows += [{"env": "", "source": k.what, "state": "loaded by the job"} for k in p.kernels if k.modules]
    rows += [{"env": k.image.image, "source": k.what, "state": "image"} for k in p.kernels if k.image]
    return located, rows

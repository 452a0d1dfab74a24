"""The environments a session runs in (`start --env/--kernel`, and a bare cluster's first start).

`plan()` reads the settings into the specs a start needs: hpcjup's server environment (JupyterLab)
and the user's kernels (their kinds: session/kernelkinds.py).
`locate()` names them from what hostfacts remembers of the host (no remote
command), `learn()` asks the host once and builds what is missing (before any job is queued),
and `Located.checks` is what the upload's command checks so a warm start costs nothing extra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, cast

from hpcjup.envs import server as server_env
from hpcjup.envs.identity import SERVER_PREFIX, USER_PREFIX, env_name, env_root
from hpcjup.envs.spec import EnvSpec
from hpcjup.errors import UsageError
from hpcjup.session.kernelkinds import WRAPPER, Kernel, read_kernel

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

_SETTINGS_WITH_JUPYTER = ("venv", "conda", "modules", "image", "setup")


@dataclass(frozen=True)
class Plan:
    """What a start needs built: the server env, the kernels (empty: the server's own python3 kernel)."""

    root: str  # the env_root setting (relative to home, ~/..., $VAR/... or absolute)
    python: str  # the base Python the envs are built from
    kernels: tuple[Kernel, ...] = ()
    server: EnvSpec = field(default_factory=server_env.server_spec)
    offline: bool | None = None  # the `offline` setting: None finds out when something is built
    build: BuildWhere | None = None  # `build = "job"`: where its build job runs; None: on the login node
    env_mode: str = "auto"  # the `env_mode` setting: direct runs envs in place, so their trees stay

    @property
    def keep_tree(self) -> bool:
        """Whether the upload asks for each env's tree (`t:` checks): env_mode direct."""
        return self.env_mode == "direct"

    def keeps_tree(self, transport: Transport) -> bool:
        """Whether builds keep the envs' trees (envs.build.keeps_tree): env_mode direct, or --local."""
        from hpcjup.envs.build import keeps_tree

        return keeps_tree(self.env_mode, transport)

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
    # `b:PATH` built env (`t:PATH` with its tree), `p:PATH` existing prefix, `c:ROOT:NAME` server-current,
    checks: tuple[str, ...]
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
        env_mode=settings.value("env_mode") or "auto",
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
        env_mode=settings.value("env_mode") or "auto",
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
    built = "t" if p.keep_tree else "b"  # t: built with its tree (env_mode direct runs it in place)
    checks = [f"c:{root}:{pointer}", f"{built}:{server}"]
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
            checks.append(f"{built}:{path}")
        else:
            assert k.prefix is not None
            path = home.rstrip("/") + k.prefix[1:] if k.prefix.startswith("~/") else k.prefix
            checks.append(f"p:{path}")
        kernels.append((k.name, f"{path}/bin/python"))
        envs.append(path)
    return Located(f"{server}/bin/python", tuple(kernels), tuple(checks), tuple(dict.fromkeys(envs)), tuple(wrappers))


def probe(transport: Transport, spec: EnvSpec, root: str, python: str, prefix: str, keep_tree: bool = False) -> Probe:
    """The host's answer for one spec (one remote command): its root, Python, and whether it is built."""
    from hpcjup.envs.build import parse_probe, probe_argv
    from hpcjup.envs.errors import EnvBuildError

    result = transport.run(probe_argv(spec, root, python, prefix=prefix, keep_tree=keep_tree), check=False)
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
        found = probe(transport, spec, p.root, p.python, prefix, p.keeps_tree(transport))
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
                ensure(
                    transport,
                    spec,
                    p.root,
                    p.python,
                    prefix=prefix,
                    progress=shown,
                    offline=p.offline,
                    job=job,
                    keep_tree=p.keeps_tree(transport),
                )
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
        found = probe(transport, spec, p.root, p.python, prefix, p.keeps_tree(transport))
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

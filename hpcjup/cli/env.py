"""`hpcjup env ls | build | pull | rm | lock | upgrade-server`: environments built from spec files on a host, and
the container images pulled there."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hpcjup.cli.app import App, Reach, host_options, json_option

if TYPE_CHECKING:
    from collections.abc import Callable

    from hpcjup.envs.build import BuiltEnv
    from hpcjup.envs.buildjob import JobPlace
    from hpcjup.envs.catalog import ImageInfo
    from hpcjup.envs.spec import EnvSpec
    from hpcjup.transport.base import Transport

F = TypeVar("F", bound="Callable[..., Any]")


def root_option(func: F) -> F:
    """--root: the env root on the host (default $HPCJUP_ENV_ROOT, else ~/.hpcjup/envs)."""
    return click.option(
        "--root",
        metavar="DIR",
        help="Where environments live on the host (default: $HPCJUP_ENV_ROOT, else ~/.hpcjup/envs; $VAR/... is "
        "expanded there).",
    )(func)


@click.group()
def command() -> None:
    """Environments built from your spec files (requirements.txt, environment.yml, pyproject.toml, Binder's
    binder/ directory), once per host, reused by every session."""


@command.command("ls")
@host_options
@root_option
@json_option
@click.pass_obj
def ls_command(app: App, host: str | None, local: bool, root: str | None, reach: Reach) -> None:
    """List a host's environments: name, spec, Python, size, its image (one file a job copies to its nodes), the
    files inside it and all its files on the shared file system, last used, and the running sessions using it.
    Then the container images pulled there (`image = "docker://..."`): ref, registry digest, runtime, size, files,
    last used, sessions."""
    from hpcjup.envs.catalog import list_all
    from hpcjup.envs.identity import env_root
    from hpcjup.session.envuse import users
    from hpcjup.session.overview import overview

    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        absolute, envs, images = list_all(transport, env_root(root))
        views = overview(transport, app.store) if envs or images else []
    using = {env.name: users(views, env.path) for env in envs}
    image_using = {image.name: users(views, image.path) for image in images}
    rows = [{**env.to_dict(), "sessions": using[env.name]} for env in envs]
    image_rows = [{**image.to_dict(), "sessions": image_using[image.name]} for image in images]
    app.ui.result(
        {"host": host, "root": absolute, "envs": rows, "images": image_rows},
        text=lambda: "\n\n".join(
            filter(
                None, [_table(envs, host, absolute, using) if envs or not images else "", _images(images, image_using)]
            )
        ),
    )


def offline_setting(given: bool | None = None) -> bool | None:
    """--offline/--online when given, else the `offline` setting ($HPCJUP_OFFLINE, the $HPCJUP_PROFILE profile,
    [defaults]); None (unset) lets the build find out whether the host reaches a package index."""
    from hpcjup.config.profiles import resolve

    if given is not None:
        return given
    value: bool | None = resolve({}, profile=None).value("offline")
    return value


def keep_tree(transport: Transport) -> bool:
    """Whether this build keeps the env's tree (envs.build.keeps_tree), from the `env_mode` setting."""
    from hpcjup.config.profiles import resolve
    from hpcjup.envs.build import keeps_tree

    return keeps_tree(resolve({}, profile=None).value("env_mode"), transport)


def build_where(app: App, transport: Transport, build: str | None) -> JobPlace | None:
    """Where `env build` builds: --build when given, else the `build` setting; for `job`, the place of its
    batch job (the profile's partition, account and directives; the host's batch system)."""
    from hpcjup.config.profiles import resolve
    from hpcjup.session.envplan import BuildWhere

    where = BuildWhere.of(resolve({"build": build} if build else {}, profile=None))
    return where.place(transport, app.ui) if where is not None else None


def build_option(func: F) -> F:
    """--build login|job (the `build` setting's schema text)."""
    from hpcjup.cli.settingopts import setting_option

    return setting_option("build", "--build")(func)


@command.command("build")
@click.argument("spec", metavar="DIR|FILE", required=False)
@click.option("--server", is_flag=True, help="Build hpcjup's server environment (JupyterLab) instead of a spec.")
@click.option("--python", metavar="CMD|X.Y", default="python3", show_default=True, help="The host's base Python.")
@click.option(
    "--offline/--online",
    default=None,
    help="The host reaches no package index: the laptop fetches the packages and uploads them (--online: it does). "
    "Default: the `offline` setting, else found out.",
)
@build_option
@host_options
@root_option
@json_option
@click.pass_obj
def build_command(
    app: App,
    spec: str | None,
    server: bool,
    python: str,
    offline: bool | None,
    build: str | None,
    host: str | None,
    local: bool,
    root: str | None,
    reach: Reach,
) -> None:
    """Build a spec's environment on the host ahead of time (nothing to do if it is built)."""
    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        job = build_where(app, transport, build)
        built, env_spec = _ensure(app, transport, spec, server, python, root, offline_setting(offline), job)
    verb = "Built" if built.built_now else "Already built:"
    app.ui.result(
        {"host": host, "name": built.name, "path": built.path, "built": built.built_now, "seconds": built.seconds},
        text=f"{verb} {built.name} at {built.path} ({env_spec.source}, {built.seconds:.1f} s)",
    )


@command.command("pull")
@click.argument("image", metavar="docker://REF", required=False)
@host_options
@root_option
@json_option
@click.pass_obj
def pull_command(app: App, image: str | None, host: str | None, local: bool, root: str | None, reach: Reach) -> None:
    """Pull a container image into the host's env root now (default: the `image` setting), as a start does before
    its job: a tag is asked for its current digest (even if the registry did not answer a moment ago), and pulled
    again if it moved."""
    from hpcjup.config.profiles import resolve
    from hpcjup.envs.container import is_remote, parse_ref, pull_image
    from hpcjup.envs.identity import env_root
    from hpcjup.errors import UsageError

    settings = resolve({}, profile=None)
    image = image or settings.value("image")
    if not image or not is_remote(image):
        raise UsageError(
            f"{image or 'No image'}: only a registry image (docker://REF) is pulled.",
            hint="Give one, e.g. hpcjup env pull docker://python:3.12, or set `image` to one.",
        )
    ref = parse_ref(image)
    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        runtime = settings.value("container_runtime") or "auto"
        pulled = pull_image(transport, env_root(root), runtime, ref, app.ui, always=True)
    app.ui.result(
        {
            "host": host,
            "ref": str(ref),
            "path": pulled.path,
            "runtime": pulled.runtime,
            "pulled": pulled.pulled_now,
            "moved": list(pulled.moved) if pulled.moved else None,
            "warning": pulled.warning,
        },
        text=None if pulled.pulled_now else f"{ref} is cached at {pulled.path}.",
    )


@command.command("lock")
@click.argument("spec", metavar="DIR")
@click.option("--python", metavar="CMD|X.Y", default="python3", show_default=True, help="The host's base Python.")
@host_options
@root_option
@json_option
@click.pass_obj
def lock_command(
    app: App, spec: str, python: str, host: str | None, local: bool, root: str | None, reach: Reach
) -> None:
    """Write the exact result of a spec's build (versions and hashes) beside the spec as hpcjup.lock (an
    environment.yml's: conda-PLATFORM.lock, conda's explicit format), to commit. A spec directory with the lock
    builds exactly that."""
    from hpcjup.envs.spec import LOCK_FILE
    from hpcjup.errors import UsageError

    if not Path(spec).is_dir():
        raise UsageError(f"{spec} is not a directory.", hint="`env lock` writes hpcjup.lock into the spec's directory.")
    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        built, env_spec = _ensure(app, transport, spec, False, python, root, offline_setting())
        lock = transport.read_file(f"{built.path}/.hpcjup-lock.txt")
    where = Path(spec) / ("binder" if (Path(spec) / "binder").is_dir() else "")
    where = Path(spec) / ".binder" if (Path(spec) / ".binder").is_dir() else where
    if env_spec.kind == "conda":
        from hpcjup.envs import conda

        target, count = where / conda.lock_file_name(lock), conda.package_count(lock)
    else:
        target, count = where / LOCK_FILE, _count(lock)
    target.write_bytes(lock)
    app.ui.result(
        {"host": host, "name": built.name, "lock": str(target), "packages": count},
        text=f"Wrote {target} ({count} packages, from {built.name} on {host}).",
    )


@command.command("rm")
@click.argument("names", nargs=-1, required=True)
@host_options
@root_option
@json_option
@click.pass_obj
def rm_command(app: App, names: tuple[str, ...], host: str | None, local: bool, root: str | None, reach: Reach) -> None:
    """Remove environments by name (refused while a running session uses one)."""
    from hpcjup.envs.catalog import remove
    from hpcjup.envs.identity import env_root
    from hpcjup.session.envuse import in_use
    from hpcjup.session.overview import overview

    host = app.resolve_host(host, local)
    with app.connect(host, reach) as transport:
        absolute = remove(transport, env_root(root), list(names), in_use(overview(transport, app.store)))
    app.ui.result(
        {"host": host, "root": absolute, "removed": list(names)}, text=f"Removed {', '.join(names)} from {absolute}."
    )


@command.command("upgrade-server")
@click.option("--python", metavar="CMD|X.Y", default="python3", show_default=True, help="The host's base Python.")
@host_options
@root_option
@json_option
@click.pass_obj
def upgrade_server_command(
    app: App, python: str, host: str | None, local: bool, root: str | None, reach: Reach
) -> None:
    """Build the newest JupyterLab server environment and make new sessions use it (running ones keep theirs)."""
    from hpcjup.envs import server
    from hpcjup.envs.build import ensure
    from hpcjup.envs.identity import SERVER_PREFIX, env_root
    from hpcjup.envs.progress import BuildDisplay

    host = app.resolve_host(host, local)
    spec = server.upgraded_spec()
    with app.connect(host, reach) as transport, BuildDisplay(app.ui, "server environment") as display:
        built = ensure(
            transport,
            spec,
            env_root(root),
            python,
            prefix=SERVER_PREFIX,
            progress=display,
            offline=offline_setting(),
            keep_tree=keep_tree(transport),
        )
        transport.run(server.point_argv(built.path.rsplit("/", 1)[0], built.name))
    app.ui.result(
        {"host": host, "name": built.name, "path": built.path, "built": built.built_now},
        text=f"New sessions on {host} run JupyterLab from {built.name}.",
    )


def _ensure(
    app: App,
    transport: Transport,
    spec: str | None,
    server: bool,
    python: str,
    root: str | None,
    offline: bool | None = None,
    job: JobPlace | None = None,
) -> tuple[BuiltEnv, EnvSpec]:
    """Read the spec (or take the server's), say what differs from Binder, build it with progress shown."""
    from hpcjup.envs import server as server_env
    from hpcjup.envs.build import ensure
    from hpcjup.envs.identity import SERVER_PREFIX, USER_PREFIX, env_root
    from hpcjup.envs.progress import BuildDisplay
    from hpcjup.envs.spec import read_spec
    from hpcjup.errors import UsageError

    if server == (spec is not None):
        raise UsageError("Give a spec (a directory or a file) or --server.", hint="e.g. hpcjup env build ./binder")
    env_spec = server_env.server_spec() if server else read_spec(str(spec))
    for note in env_spec.notes:
        app.ui.info(f"note: {note}")
    prefix = SERVER_PREFIX if server else USER_PREFIX
    with BuildDisplay(app.ui, "environment" if not server else "server environment") as display:
        built = ensure(
            transport,
            env_spec,
            env_root(root),
            python,
            prefix=prefix,
            progress=display,
            offline=offline,
            job=job,
            keep_tree=keep_tree(transport),
        )
    return built, env_spec


def _count(lock: bytes) -> int:
    return sum(1 for line in lock.decode(errors="replace").splitlines() if "==" in line and not line.startswith(" "))


def _images(images: list[ImageInfo], using: dict[str, list[str]]) -> str:
    """`env ls`'s container images as text: one line per image ("old": a tag that moved left it behind)."""
    import time

    from hpcjup.ui.tables import duration

    if not images:
        return ""
    head = f"{'IMAGE':<24} {'RUNTIME':<12} {'SIZE':>9} {'FILES':>7}  {'LAST USED':<12} {'SESSIONS':<16} {'DIGEST':<19}"
    lines = [f"{head} REF"]
    for image in images:
        ago = duration(int(time.time()) - image.last_used) + " ago"
        digest = (image.digest or "-")[:19]
        ref = (image.ref or "?") + ("" if image.current else " (old)")
        sessions = ",".join(using.get(image.name, [])) or "-"
        lines.append(
            f"{image.name[:24]:<24} {image.runtime or '?':<12} {image.kb / 1024:>6.1f} MB {image.files:>7}  "
            f"{ago:<12} {sessions:<16} {digest:<19} {ref}"
        )
    return "\n".join(lines)


def _table(envs: list[Any], host: str, root: str, using: dict[str, list[str]]) -> str:
    """`env ls` as text: one line per environment."""
    import time

    from hpcjup.ui.tables import duration

    if not envs:
        return f"No environments under {root} on {host}."
    head = f"{'NAME':<24} {'PYTHON':<8} {'SIZE':>9} {'IMAGE':>9} {'FILES':>7} {'SHARED':>7}  {'LAST USED':<12}"
    lines = [f"{head} {'SESSIONS':<16} SPEC"]
    for env in envs:
        ago = duration(int(time.time()) - env.last_used) + " ago"
        size = f"{env.size_kb / 1024:.1f} MB"
        python = str(env.meta.get("python", "?"))
        sessions = ",".join(using.get(env.name, [])) or "-"
        # The image jobs copy to their nodes (envs/pack.py); "bad": a job found its hash wrong, the next build packs
        # it again; "-": none (no mksquashfs on the host, or built with pip: the env is used in place).
        image = "-" if env.image is None else "bad" if env.image.bad else f"{env.image.bytes / 1e6:.1f} MB"
        lines.append(
            f"{env.name:<24} {python:<8} {size:>9} {image:>9} {env.inside_files:>7} {env.shared_files:>7}  {ago:<12} "
            f"{sessions:<16} {env.meta.get('source', '?')}"
        )
    return "\n".join(lines)

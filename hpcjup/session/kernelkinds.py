"""The kinds of `start --kernel [NAME=]SPEC`, read on the laptop: a spec directory or file, an existing env on the
cluster (`cluster:/path`), a module set (`module:A,B`: its Python run through a wrapper the session uploads), a
container image's Python (`image:REF[#PYTHON]`). `read_kernel` turns one into a Kernel; the plan of a start
(session/envplan.py) builds and locates them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hpcjup.envs.container import ImageKernel, image_kernel
from hpcjup.envs.spec import EnvSpec, read_spec
from hpcjup.errors import UsageError

if TYPE_CHECKING:
    from hpcjup.config.environment import Settings

#: A kernel's name (the launcher's rule): it names the session-private kernel spec.
KERNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
CLUSTER = "cluster:"  # `--kernel cluster:/path/to/venv`: an env that exists on the cluster
MODULE = "module:"  # `--kernel module:Python/3.11,SciPy-bundle`: a module set's Python
#: A module-set kernel's Python: a wrapper in the session directory (Located.at makes it absolute) that loads the
#: set and runs its python3; a prefix-like place, so the launcher treats it as any environment's bin/python.
WRAPPER = "kernels/{name}/bin/python"
IMAGE = "image:"  # `--kernel image:REF[#PYTHON]`: a container image's Python (envs/container.py)


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

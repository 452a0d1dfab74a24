"""Container images from a registry: `image = "docker://REF"` pulled once into the env root, cached by digest.

`parse_ref` reads a `docker://` reference (the user's text: checked on the laptop before anything runs);
`ensure_image` runs container_script.SCRIPT on the login node in one remote command: a tag is first asked for its
current digest (one registry request, in that same command): unchanged, it answers at once with the cached copy;
moved, the new image is pulled (the old one stays until `prune --envs`); the registry not answering, the cached
copy is used with a warning. No cached copy: the runtime pulls it (its lines shown as an env build's are,
envs/progress.py). The cached local file or directory is what the job runs, never the remote ref. A ref pinned by
`@sha256:` is never asked again. Local images (.sif files, SquashFS files, Charliecloud directories) need nothing:
the runtime reads them where they are, except a Charliecloud SquashFS file (what a Charliecloud pull makes): each
job mounts it on its node first (envs/chsquash.py).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hpcjup.envs.container_script import SCRIPT
from hpcjup.envs.errors import EnvBuildError
from hpcjup.envs.identity import env_root
from hpcjup.errors import Interrupted, UsageError
from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.envs.probe import Progress
    from hpcjup.envs.progress import BuildDisplay
    from hpcjup.ui import UI

DOCKER = "docker://"
PULL_DEADLINE = 3600.0  # a pull running longer than this is given up (the remote side then removes its temp)
TAIL = 30  # lines of the runtime's output an error shows

# The reference grammar of the distribution spec (docker/distribution reference.go), in its parts:
# [HOST[:PORT]/]PATH[:TAG][@ALGO:HEX]. A host part has a dot or a port, or is `localhost`.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9A-Fa-f:]+\]|[A-Za-z0-9-]+(?=:[0-9]))(?::[0-9]{1,5})?"
_REF = re.compile(
    rf"(?:(?P<host>{_HOST})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)


@dataclasses.dataclass(frozen=True)
class ImageRef:
    """A parsed `docker://` reference: registry host (None: Docker Hub), repository path, tag, digest."""

    host: str | None
    path: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        host = f"{self.host}/" if self.host else ""
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{DOCKER}{host}{self.path}{tag}{digest}"


def is_remote(image: str) -> bool:
    """Whether `image` names a registry image hpcjup pulls (`docker://...`), not a file or directory."""
    return image.startswith(DOCKER)


def parse_ref(text: str) -> ImageRef:
    """`docker://[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]` as an ImageRef; UsageError naming what is wrong."""
    body = text[len(DOCKER) :] if text.startswith(DOCKER) else text
    found = _REF.fullmatch(body)
    if not found:
        raise UsageError(
            f"{text!r} is not a container image reference.",
            hint="Write docker://[REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST] (lowercase names), "
            "or give a .sif file, a SquashFS file or a Charliecloud image directory.",
        )
    return ImageRef(found.group("host"), found.group("path"), found.group("tag"), found.group("digest"))


def manifest_url(ref: ImageRef) -> str | None:
    """The registry URL whose HEAD answers a tag's current manifest digest (Docker Hub's names as Docker reads them:
    no host is registry-1.docker.io, a one-part name is library/NAME); None for a ref pinned by digest."""
    if ref.digest:
        return None
    hub = ref.host in (None, "docker.io", "index.docker.io")
    host = "registry-1.docker.io" if hub else ref.host
    path = f"library/{ref.path}" if hub and "/" not in ref.path else ref.path
    return f"https://{host}/v2/{path}/manifests/{ref.tag or 'latest'}"


def cache_key(runtime: str, ref: ImageRef) -> str:
    """The name of a ref's cache pointer and lock: one per runtime (a .sif and a Charliecloud directory differ)."""
    return hashlib.sha256(f"{runtime}\n{ref}".encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Pulled:
    """A ref's local copy on the host: its path, its digest (when pulled now), whether this call pulled it, and what
    the tag check said (`moved`: the tag's old and new registry digests; `warning`: why the registry was not asked)."""

    runtime: str  # the runtime that runs it (`auto` resolved by the host)
    path: str
    digest: str | None
    pulled_now: bool
    moved: tuple[str, str] | None = None
    warning: str | None = None


class ImagePullError(EnvBuildError):
    """The runtime could not pull an image (refused, unreachable, unknown): its own words are in `details`."""


def pull_argv(root: str, runtime: str, ref: ImageRef, always: bool = False) -> list[str]:
    """The remote command that makes sure the ref is cached (container_script.SCRIPT); `always`: the registry is
    asked even if it did not answer a moment ago."""
    return [
        "sh",
        "-c",
        SCRIPT,
        "hpcjup-image",
        root,
        runtime,
        cache_key(runtime, ref),
        str(ref),
        manifest_url(ref) or "",
        *(["always"] if always else []),
    ]


def ensure_image(
    transport: Transport, root: str, runtime: str, ref: ImageRef, progress: Progress, always: bool = False
) -> Pulled:
    """The ref's cached copy on the host, pulled now if it is not there or its tag moved (one remote command either
    way); `always` asks the registry even if it did not answer a moment ago."""
    from hpcjup.envs.remote import remote_lines

    tail: collections.deque[str] = collections.deque(maxlen=TAIL)
    said: dict[str, Any] = {}
    try:
        for line in remote_lines(transport, pull_argv(root, runtime, ref, always), progress, PULL_DEADLINE):
            try:
                done = read_line(line, tail, progress, said)
            except _ImageFailed as exc:
                phase, _, used = str(exc).partition(" ")
                raise _failed(transport, used or runtime, ref, phase, tail) from None
            if done is not None:
                return dataclasses.replace(done, **said)
        raise _failed(transport, runtime, ref, "pulling", tail)
    except KeyboardInterrupt:
        raise Interrupted("Interrupted: the pull stopped; nothing was cached.") from None


def read_line(
    line: str, tail: collections.deque[str], progress: Progress, said: dict[str, Any] | None = None
) -> Pulled | None:
    """One line of the pull: a phase, the result (a Pulled), a failure (raised), the runtime's own words, or what
    the tag check found (kept in `said` as Pulled's `moved` and `warning`)."""
    from hpcjup.envs.remote import script_line

    found = script_line(line, tail, progress)
    if found is None:
        return None
    word, rest = found
    said = {} if said is None else said
    if word == "warn":
        said["warning"] = rest
    elif word == "moved":  # REF OLD NEW (OLD `-`: cached before hpcjup recorded digests)
        _, old, new = rest.rsplit(" ", 2)
        said["moved"] = (old, new)
        progress.line(f"the tag now names {new}: pulling it")
    elif word == "image":
        how, _, rest = rest.partition(" ")
        runtime, _, rest = rest.partition(" ")
        if how == "cached":
            return Pulled(runtime, rest, None, False)
        path, _, digest = rest.rpartition(" ")
        return Pulled(runtime, path, digest, True)
    elif word == "failed":
        raise _ImageFailed(rest)
    return None


class _ImageFailed(Exception):
    """The script's `failed PHASE RUNTIME` line (turned into ImagePullError where the transport is known)."""


def runtime_words(tail: collections.deque[str] | list[str]) -> str:
    """The runtime's own error line: its last line that says FATAL or error, else its last line."""
    said = [line.strip() for line in tail if line.strip()]
    return next(
        (line for line in reversed(said) if re.search(r"\b(FATAL|[Ee]rror)\b", line)), said[-1] if said else "no output"
    )


def _failed(transport: Transport, runtime: str, ref: ImageRef, phase: str, tail: collections.deque[str]) -> Exception:
    return ImagePullError(
        f"{runtime} could not pull {ref} on {transport.name} ({phase}): {runtime_words(tail)}",
        hint="Check the reference and that the login node reaches the registry (a site may need a proxy or "
        "a mirror); nothing was cached, the next start tries again.",
        details="\n".join(tail) or None,
    )


def with_local_image(transport: Transport, settings: Resolved, ui: UI) -> Resolved:
    """The settings with a `docker://` image replaced by its cached copy on the host (pulled now if need be) and
    the runtime that pulled it; other settings unchanged. The job, its kernels and its worker groups then run
    the local copy, never the remote ref."""
    from hpcjup.config.profiles import Setting

    image = settings.value("image")
    if not image or not is_remote(image):
        return settings
    ref = parse_ref(image)
    runtime = settings.value("container_runtime") or "auto"
    pulled = pull_image(transport, env_root(settings.value("env_root")), runtime, ref, ui)
    where = f"{settings.source('image')}, pulled on the host"
    values = dict(settings.settings)
    values["image"] = Setting(pulled.path, where)
    values["container_runtime"] = Setting(pulled.runtime, where)
    return dataclasses.replace(settings, settings=values)


def pull_image(transport: Transport, root: str, runtime: str, ref: ImageRef, ui: UI, always: bool = False) -> Pulled:
    """`ensure_image` with its progress shown only when it pulls, and what it did said (`report`)."""
    shown = _WhenNeeded(ui, f"container image {ref}")
    try:
        pulled = ensure_image(transport, root, runtime, ref, shown, always)
    finally:
        shown.close()
    report(ui, ref, pulled)
    return pulled


def report(ui: UI, ref: ImageRef, pulled: Pulled) -> None:
    """Say what the pull did: pulled (the tag moved, or first use), or the cached copy used unchecked (why)."""
    if pulled.warning:
        ui.warn(f"{pulled.warning}.")
    if pulled.moved is not None:
        old, new = pulled.moved
        was = "a digest hpcjup did not record" if old == "-" else old
        ui.info(f"{ref} moved from {was} to {new}: pulled the new image (the old copy stays until `prune --envs`).")
    if pulled.pulled_now:
        ui.info(f"Pulled {ref} into {pulled.path} (sha256:{pulled.digest}).")


class _WhenNeeded:
    """A Progress that shows nothing until the pull has something to say (a cached image shows no display)."""

    def __init__(self, ui: UI, what: str) -> None:
        self.ui, self.what = ui, what
        self.display: BuildDisplay | None = None

    def phase(self, name: str) -> None:
        if self.display is None:
            from hpcjup.envs.progress import BuildDisplay

            self.display = BuildDisplay(self.ui, self.what).__enter__()
        self.display.phase(name)

    def line(self, text: str) -> None:
        if self.display is not None:
            self.display.line(text)

    def close(self) -> None:
        if self.display is not None:
            self.display.__exit__(None, None, None)


def checked_image(settings: Resolved) -> ImageRef | None:
    """The `image` setting's registry reference, read (UsageError when malformed); None for a local image or none."""
    image = settings.value("image")
    return parse_ref(image) if image and is_remote(image) else None


def with_local_engine(settings: Resolved) -> Resolved:
    """--local with a `docker://` image: the settings with this machine's Podman as the container runtime (it pulls
    and caches the image itself, by digest). UsageError where the laptop has none (Docker: not yet supported)."""
    import shutil

    from hpcjup.config.profiles import Setting

    if shutil.which("podman"):
        values = dict(settings.settings)
        values["container_runtime"] = Setting("podman", "--local: this machine's Podman")
        return dataclasses.replace(settings, settings=values)
    docker = " (Docker is there: hpcjup cannot pass the job's environment into `docker run` yet)"
    raise UsageError(
        f"--local with image {settings.value('image')}: no Podman on this machine{docker if shutil.which('docker') else ''}.",
        hint="Install Podman (Debian/Ubuntu: apt install podman; macOS: brew install podman), "
        "or start it on a cluster (without --local).",
    )


@dataclasses.dataclass(frozen=True)
class ImageKernel:
    """`--kernel image:REF[#PYTHON]`: a kernel run by PYTHON (default python3) inside a container image, with the
    `binds` setting; `image` is the cached local copy once pulled (`runtime` then says which runtime pulled it)."""

    image: str
    python: str = "python3"
    binds: tuple[str, ...] = ()
    runtime: str | None = None

    @property
    def name(self) -> str:
        """A kernel name from the image: its repository's or file's last part."""
        last = re.split(r"[/:@]", self.image.removeprefix(DOCKER).split("@")[0].rstrip("/"))
        word = next((w for w in reversed(last) if w and not w.isdigit()), "image")
        word = re.sub(r"\.(sif|sqfs|squashfs|ch)$", "", word)
        return re.sub(r"[^a-z0-9_.-]+", "-", word.lower()).lstrip("_.-")[:64] or "image"

    def command(self, home: str) -> str:
        """The kernel's Python as the launcher takes it: the container runtime's command, shell-quoted."""
        import shlex

        from hpcjup.config.environment import launcher_python

        values = {"image": self.image, "python": self.python, "binds": self.binds, "container_runtime": self.runtime}
        return shlex.join(launcher_python(_Values(values), home))


class _Values:
    """The few settings launcher_python reads, for one kernel."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def value(self, key: str) -> Any:
        return self.values.get(key)


def image_kernel(text: str, binds: tuple[str, ...] | list[str] = ()) -> ImageKernel:
    """`REF[#PYTHON]` (after `image:`) as an ImageKernel; UsageError for a bad reference or Python."""
    image, _, python = text.partition("#")
    if not image:
        raise UsageError("--kernel image: names no image.", hint="Write image:docker://REF[#PYTHON] or image:PATH.")
    if is_remote(image):
        parse_ref(image)
    python = python or "python3"
    if any(c.isspace() for c in python) or not (python.startswith("/") or "/" not in python):
        raise UsageError(
            f"--kernel image:{text}: {python!r} is no Python command inside the image.",
            hint="After # give an absolute path inside the image, or a command name on its PATH (python3).",
        )
    return ImageKernel(image, python, tuple(binds))


class _HasImage(Protocol):
    @property
    def image(self) -> ImageKernel | None: ...


K = TypeVar("K", bound=_HasImage)


def pull_kernel_images(transport: Transport, kernels: tuple[K, ...], settings: Resolved, ui: UI) -> tuple[K, ...]:
    """The kernels (session/kernelkinds.py's) with each `docker://` image pulled, as `with_local_image` does the
    session's: the kernel then runs the cached copy with the runtime that pulled it."""
    pulled_kernels = []
    root = env_root(settings.value("env_root"))
    for kernel in kernels:
        image = kernel.image
        if image is not None and is_remote(image.image):
            ref = parse_ref(image.image)
            pulled = pull_image(transport, root, settings.value("container_runtime") or "auto", ref, ui)
            local = dataclasses.replace(image, image=pulled.path, runtime=pulled.runtime)
            kernel = dataclasses.replace(kernel, image=local)  # type: ignore[type-var]
        pulled_kernels.append(kernel)
    return tuple(pulled_kernels)

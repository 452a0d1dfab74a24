"""Reading `--env DIR|FILE` into an `EnvSpec`, with repo2docker's rules for which file wins.

What repo2docker 2026.4.0 does, seen with `repo2docker --no-build --debug DIR` (recorded in
tests/envs/test_spec.py): a `binder/` or `.binder/` directory replaces the root (both: it
refuses); its buildpacks are tried in the order Dockerfile, Julia, Nix, R, conda
(`environment.yml`, which then leaves `requirements.txt` alone), Pipfile, Python
(`requirements.txt`, and `pip install .` for a root `pyproject.toml` with [project] and
[build-system]). `runtime.txt` reads `python-3.12` (a date may follow); `postBuild` runs last.
hpcjup builds the same files without root: the ones that need root or another language are
refused by name, with what to do instead.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hpcjup.envs.errors import EnvSpecError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: The lock `hpcjup env lock` writes beside the spec: requirements format, exact versions and hashes.
LOCK_FILE = "hpcjup.lock"
POSTBUILD = "postBuild"
RUNTIME = "runtime.txt"

# Binder files hpcjup cannot build without root or another language's tools: name -> what to do instead.
REFUSED = {
    "Dockerfile": "A Dockerfile needs a container build: use a container kernel, or move its pip/conda steps "
    "into requirements.txt or environment.yml.",
    "apt.txt": "System packages need root: ask for the site's module, or take the conda-forge package "
    "in environment.yml.",
    "install.R": "R packages are not built by hpcjup yet: put r-base and r-* packages in environment.yml.",
    "DESCRIPTION": "An R package repository builds with R's tools: use environment.yml with r-base.",
    "default.nix": "Nix environments are not built by hpcjup: use requirements.txt or environment.yml.",
    "Project.toml": "Julia environments are not built by hpcjup yet: use the site's Julia module.",
    "JuliaProject.toml": "Julia environments are not built by hpcjup yet: use the site's Julia module.",
    "REQUIRE": "Julia environments are not built by hpcjup yet: use the site's Julia module.",
    "Pipfile": "Pipfiles are not read: `pipenv requirements > requirements.txt` gives the same packages.",
    "Pipfile.lock": "Pipfiles are not read: `pipenv requirements > requirements.txt` gives the same packages.",
    "start": "A `start` script wraps the server on Binder; hpcjup starts Jupyter itself: remove it, or set "
    "what it exports in postBuild.",
}
ROOT_ONLY = {"DESCRIPTION"}  # repo2docker reads these only outside a binder directory
_RUNTIME_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class EnvSpec:
    """What to build: its kind, the files that define it (name -> bytes), the Python it asks for."""

    kind: str  # "pip" | "pyproject" | "conda"
    source: str  # the laptop path it was read from, for messages and `env ls`
    files: dict[str, bytes] = field(default_factory=dict)
    python: str | None = None  # "3.12" from runtime.txt (or environment.yml), else the host's python
    notes: tuple[str, ...] = ()  # what is read differently from Binder, said once to the user

    @property
    def postbuild(self) -> bool:
        return POSTBUILD in self.files

    @property
    def locked(self) -> bool:
        return LOCK_FILE in self.files or "uv.lock" in self.files or "pylock.toml" in self.files

    def base_python(self, default: str) -> str:
        """The host Python a build runs with: runtime.txt's for a pip spec, else `default` (the `python` setting).
        A conda spec's own `python=X.Y` comes from its channels; the host's Python only runs the tools."""
        return default if self.kind == "conda" else self.python or default

    @property
    def digest(self) -> str:
        """sha256 of the kind, the asked Python and every file's name and bytes: the spec's identity."""
        h = hashlib.sha256(f"hpcjup-env 1\n{self.kind}\n{self.python or ''}\n".encode())
        for name in sorted(self.files):
            data = self.files[name]
            h.update(f"{name}\n{len(data)}\n".encode())
            h.update(data)
        return h.hexdigest()


def parse_runtime(text: str) -> str:
    """The X.Y Python version of a runtime.txt (`python-3.12`, `python-3.12.1`, `python-3.12-2024-01-31`).

    The forms are repo2docker's: name-version, name-version-date, name-date. A runtime for
    another language (r-4.3, julia-...) or a date without a version is refused.
    """
    line = text.strip()
    parts = line.split("-")
    if len(parts) not in (2, 4, 5) or not all(parts):
        raise EnvSpecError(f"runtime.txt says {line!r}, which is not `python-X.Y`.", hint="Write e.g. python-3.12.")
    name = parts[0]
    version = parts[1] if len(parts) in (2, 5) else None
    if len(parts) in (4, 5) and not _DATE.fullmatch("-".join(parts[-3:])):
        raise EnvSpecError(f"runtime.txt has a bad date in {line!r}.", hint="Write e.g. python-3.12.")
    if name != "python":
        raise EnvSpecError(
            f"runtime.txt asks for {name!r} ({line!r}); hpcjup builds Python environments.",
            hint=REFUSED["install.R"] if name == "r" else "Write e.g. python-3.12, or remove runtime.txt.",
        )
    if version is None or not _RUNTIME_VERSION.fullmatch(version):
        raise EnvSpecError(f"runtime.txt names no Python version: {line!r}.", hint="Write e.g. python-3.12.")
    return ".".join(version.split(".")[:2])


def requirement_refs(text: str) -> tuple[list[str], list[str]]:
    """The files a requirements.txt includes (`-r F`, `-c F`) and its local references.

    Local references (`-e .`, `./pkg`, `name @ file:///...`, `--find-links ./wheels`) name things
    outside the spec that the cluster never sees; the caller refuses them. Other options
    (`--index-url`, `--pre`, hashes) are the installer's business and pass through.
    """
    includes: list[str] = []
    local: list[str] = []
    for raw in text.splitlines():
        line = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].strip()
        if not line:
            continue
        option, value = _option(line)
        if option in ("-r", "--requirement", "-c", "--constraint"):
            if value:
                includes.append(value)
        elif option in ("-e", "--editable", "-f", "--find-links"):
            if value and _is_local(value):
                local.append(value)
        elif option is None and _is_local(line):
            local.append(line)
    return includes, local


def _option(line: str) -> tuple[str | None, str]:
    """(`-r`, `file.txt`) for `-r file.txt`, `-rfile.txt` or `--requirement=file.txt`; (None, line) for a requirement."""
    if not line.startswith("-"):
        return None, line
    if line.startswith("--"):
        name, _, value = line.partition("=") if "=" in line.split(" ", 1)[0] else line.partition(" ")
        return name, value.strip()
    return line[:2], line[2:].lstrip(" =").strip()


def _is_local(target: str) -> bool:
    """Whether a requirement or option value names a path on this laptop rather than an index or a URL."""
    head = target.split(";", 1)[0].strip()
    if "@" in head and "://" in head:  # `name @ URL`: local only as a file: URL
        return head.split("@", 1)[1].strip().startswith("file:")
    if head.startswith((".", "/", "~", "file:")):
        return True
    return "://" not in head and "/" in head


def read_spec(path: str | Path) -> EnvSpec:
    """The spec a directory or a single file defines (repo2docker's precedence), or EnvSpecError."""
    given = Path(path).expanduser()
    if given.is_file():
        return _single_file(given)
    if not given.is_dir():
        raise EnvSpecError(f"No environment spec at {given}.", hint="Pass a directory or a requirements.txt.")
    return _directory(given)


def _single_file(path: Path) -> EnvSpec:
    """`--env FILE`: that file alone, its kind from its name."""
    name = path.name
    if name in REFUSED:
        raise EnvSpecError(f"{path} cannot be built by hpcjup.", hint=REFUSED[name])
    data = path.read_bytes()
    if name.endswith((".yml", ".yaml")):
        return EnvSpec("conda", str(path), {"environment.yml": data}, _conda_python(data))
    if name == "pyproject.toml":
        _check_pyproject(path, data)
        return EnvSpec("pyproject", str(path), {"pyproject.toml": data})
    if name.endswith(".txt") or name == LOCK_FILE:
        files = {"requirements.txt": data}
        _add_includes(path.parent, "requirements.txt", data, files)
        return EnvSpec("pip", str(path), files)
    raise EnvSpecError(
        f"{path}: not a spec file hpcjup knows.",
        hint="Use requirements.txt, environment.yml or pyproject.toml, or a directory holding them.",
    )


def _directory(root: Path) -> EnvSpec:
    """A repository: its binder/ or .binder/ directory if it has one, else its root."""
    binder = [root / n for n in ("binder", ".binder") if (root / n).is_dir()]
    if len(binder) == 2:
        raise EnvSpecError(f"{root} has both binder/ and .binder/; Binder refuses that too.", hint="Keep one of them.")
    where = binder[0] if binder else root
    at_root = not binder
    for name, hint in REFUSED.items():
        if (where / name).exists() and (at_root or name not in ROOT_ONLY):
            raise EnvSpecError(f"{where / name} cannot be built by hpcjup.", hint=hint)
    files: dict[str, bytes] = {}
    notes: list[str] = []
    python = parse_runtime((where / RUNTIME).read_text()) if (where / RUNTIME).is_file() else None
    if python:
        files[RUNTIME] = (where / RUNTIME).read_bytes()
    if (where / POSTBUILD).is_file():
        files[POSTBUILD] = (where / POSTBUILD).read_bytes()
    for lock in (LOCK_FILE,):
        if (where / lock).is_file():
            files[lock] = (where / lock).read_bytes()
    environment = next((where / n for n in ("environment.yml", "environment.yaml") if (where / n).is_file()), None)
    if environment is not None:
        data = environment.read_bytes()
        files["environment.yml"] = data
        if (where / "requirements.txt").is_file():
            notes.append("requirements.txt is not installed: environment.yml wins (as on Binder).")
        files.pop(LOCK_FILE, None)  # a conda spec's lock is conda-PLATFORM.lock (hpcjup.envs.conda)
        files.update({p.name: p.read_bytes() for p in sorted(where.glob("conda-*.lock")) if p.is_file()})
        return EnvSpec("conda", str(root), files, python or _conda_python(data), tuple(notes))
    kind = None
    if (where / "requirements.txt").is_file():
        data = (where / "requirements.txt").read_bytes()
        files["requirements.txt"] = data
        _add_includes(where, "requirements.txt", data, files)
        kind = "pip"
    pyproject = where / "pyproject.toml"
    if at_root and pyproject.is_file() and _is_package(pyproject):
        files["pyproject.toml"] = pyproject.read_bytes()
        for lock in ("uv.lock", "pylock.toml"):
            if (where / lock).is_file():
                files[lock] = (where / lock).read_bytes()
                break
        notes.append("pyproject.toml: its dependencies are installed, not the project itself (Binder: pip install .).")
        kind = kind or "pyproject"
    if (where / "setup.py").is_file() and at_root:
        notes.append("setup.py is not run: the project itself is not installed (Binder: pip install .).")
    if kind is None:
        raise EnvSpecError(
            f"{where} holds no environment spec.",
            hint="Add requirements.txt, environment.yml or pyproject.toml (the files Binder reads).",
        )
    return EnvSpec(kind, str(root), files, python, tuple(notes))


def _add_includes(where: Path, name: str, data: bytes, files: dict[str, bytes]) -> None:
    """Add the files `name` includes (-r/-c) to `files`; refuse local packages and paths outside `where`."""
    includes, local = requirement_refs(data.decode(errors="replace"))
    if local:
        raise EnvSpecError(
            f"{where / name} installs local packages ({', '.join(local[:3])}), which are not on the cluster.",
            hint="Install them from an index or a git URL, or in postBuild from a path on the cluster.",
        )
    for include in includes:
        target = (where / include).resolve()
        if not target.is_relative_to(where.resolve()) or not target.is_file():
            raise EnvSpecError(
                f"{where / name} includes {include!r}, which is not a file beside it.",
                hint="Keep included requirement files in the same directory.",
            )
        relative = target.relative_to(where.resolve()).as_posix()
        if relative not in files:
            files[relative] = target.read_bytes()
            _add_includes(target.parent, relative, files[relative], files)


def _is_package(pyproject: Path) -> bool:
    """repo2docker's test: a pyproject.toml with [project] and [build-system] is a package it installs."""
    try:
        document = tomllib.loads(pyproject.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EnvSpecError(f"{pyproject} is not valid TOML: {exc}", hint="Fix the file.") from exc
    return "project" in document and "build-system" in document


def _check_pyproject(path: Path, data: bytes) -> None:
    try:
        document = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EnvSpecError(f"{path} is not valid TOML: {exc}", hint="Fix the file.") from exc
    if "project" not in document:
        raise EnvSpecError(f"{path} has no [project] table.", hint="List the packages under [project] dependencies.")


def _conda_python(data: bytes) -> str | None:
    """The X.Y of a `python=3.11` (or `python==3.11.*`) line in environment.yml's dependencies, if any."""
    match = re.search(rb"^\s*-\s*python\s*=+\s*([0-9]+\.[0-9]+)", data, re.MULTILINE)
    return match.group(1).decode() if match else None

"""A conda channel made in the test: tiny packages in the documented `.tar.bz2` format.

conda's channels cannot be reached from these machines, so the conda route is tested against this
channel. Each package is a bzip2 tar holding `info/index.json` (name, version, build, depends,
subdir, noarch), `info/paths.json` (every file with its type, sha256 and size), `info/files`, and,
for `noarch: python` packages, `info/link.json`; the files themselves follow (a noarch python
package's under `site-packages/`, which the installer moves to the env's `lib/pythonX.Y/`).
Each subdir's `repodata.json` is written here in the documented format, as `conda index` writes it.

The `python` package here is a STAND-IN, and says so in its own files: no CPython is built. It is a
prefix in the shape of a venv: `bin/python` a symlink to the machine's real interpreter, and a
`pyvenv.cfg` naming that interpreter's directory, so the real Python runs with the conda prefix as
its `sys.prefix` and imports what noarch packages put in `lib/pythonX.Y/site-packages`. The
`ipykernel` package is a stand-in too: one `.pth` file that adds the cluster's Jupyter env
(/opt/hpcjup-cluster-env) to the path, so the env's kernel runs for real.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import os
import secrets
import tarfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcjup.envs.spec import EnvSpec, read_spec

#: The cluster's Python (the stand-in python package's interpreter) and its Jupyter env's site-packages.
CLUSTER_PYTHON = "/usr/bin/python3"
CLUSTER_SITE = "/opt/hpcjup-cluster-env/lib/python3.11/site-packages"
#: Every file's time: a package written again is the same bytes (a lock's hashes still match it).
STAMP = 1_700_000_000


@dataclass(frozen=True)
class Package:
    """One package: its name, version, dependencies and files (path -> bytes; `->` in a value: a symlink)."""

    name: str
    version: str
    depends: Sequence[str] = ()
    files: dict[str, bytes] = field(default_factory=dict)
    noarch: str | None = "python"  # "python", "generic" or None (an arch package, for `subdir`)
    subdir: str = "noarch"
    links: dict[str, str] = field(default_factory=dict)  # path -> symlink target
    build: str = "0"

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}-{self.build}.tar.bz2"


def module(name: str, version: str, depends: Sequence[str] = (), text: str = "") -> Package:
    """A noarch python package holding one importable module `name` that knows its version."""
    body = f"VERSION = {version!r}\n{text}"
    return Package(name, version, depends, {f"site-packages/{name}/__init__.py": body.encode()})


def python_stand_in(version: str = "3.11.2", interpreter: str = CLUSTER_PYTHON, subdir: str = "linux-64") -> Package:
    """The stand-in `python` package (see the module docstring): the real interpreter, this prefix as its venv."""
    xy = ".".join(version.split(".")[:2])
    home = str(Path(interpreter).parent)
    cfg = f"home = {home}\ninclude-system-site-packages = false\nversion = {version}\n"
    note = b"hpcjup test channel: a stand-in python package (a venv-shaped prefix around the machine's Python).\n"
    files = {"pyvenv.cfg": cfg.encode(), f"lib/python{xy}/site-packages/HPCJUP-STAND-IN.txt": note}
    links = {"bin/python": interpreter, "bin/python3": "python", f"bin/python{xy}": "python"}
    return Package("python", version, (), files, None, subdir, links)


def ipykernel_stand_in(site: str = CLUSTER_SITE) -> Package:
    """The stand-in `ipykernel` package: a .pth adding the cluster's Jupyter env (where the real one is)."""
    return Package(
        "ipykernel", "6.99.0", ("python >=3.9",), {"site-packages/hpcjup-stand-in-ipykernel.pth": f"{site}\n".encode()}
    )


def _member(tar: tarfile.TarFile, path: str, data: bytes | None = None, link: str | None = None) -> None:
    info = tarfile.TarInfo(path)
    info.mtime = STAMP
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
        return
    assert data is not None
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_package(package: Package, channel: Path) -> Path:
    """The package as `.tar.bz2` under channel/SUBDIR/, per the documented package format."""
    subdir = channel / package.subdir
    subdir.mkdir(parents=True, exist_ok=True)
    index = {
        "name": package.name,
        "version": package.version,
        "build": package.build,
        "build_number": 0,
        "depends": list(package.depends),
        "subdir": package.subdir,
        "license": "MIT",
        "timestamp": STAMP * 1000,
    }
    if package.noarch:
        index["noarch"] = package.noarch
    else:
        index["platform"], index["arch"] = package.subdir.split("-", 1)[0], "x86_64"
    paths = [
        {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(), "size_in_bytes": len(d)}
        for p, d in sorted(package.files.items())
    ]
    paths += [{"_path": p, "path_type": "softlink"} for p in sorted(package.links)]
    target = subdir / package.file_name
    with tarfile.open(target, "w:bz2") as tar:
        _member(tar, "info/index.json", json.dumps(index, indent=1).encode())
        _member(tar, "info/paths.json", json.dumps({"paths": paths, "paths_version": 1}, indent=1).encode())
        _member(tar, "info/files", "".join(f"{p['_path']}\n" for p in paths).encode())
        if package.noarch == "python":
            link = {"noarch": {"type": "python"}, "package_metadata_version": 1}
            _member(tar, "info/link.json", json.dumps(link).encode())
        for path, data in sorted(package.files.items()):
            _member(tar, path, data)
        for path, target_name in sorted(package.links.items()):
            _member(tar, path, link=target_name)
    return target


def make_channel(channel: Path, packages: Sequence[Package], platform: str = "linux-64") -> Path:
    """A channel directory of these packages with each subdir's repodata.json (the documented format that
    `conda index` writes: per file its index.json fields plus md5, sha256 and size)."""
    records: dict[str, dict[str, dict[str, object]]] = {"noarch": {}, platform: {}}
    for package in packages:
        path = write_package(package, channel)
        data = path.read_bytes()
        with tarfile.open(path, "r:bz2") as tar:
            member = tar.extractfile("info/index.json")
            assert member is not None
            record = json.load(member)
        record.update(md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        records.setdefault(package.subdir, {})[package.file_name] = record
    for subdir, files in records.items():
        (channel / subdir).mkdir(parents=True, exist_ok=True)
        repodata = {"info": {"subdir": subdir}, "packages": files, "packages.conda": {}, "repodata_version": 1}
        path, text = channel / subdir / "repodata.json", json.dumps(repodata, indent=1, sort_keys=True)
        before = path.stat().st_mtime if path.exists() and path.read_text() != text else None
        path.write_text(text)
        if before is not None:
            # Changed within the second it was first written: its Last-Modified (whole seconds) would not change,
            # and a solver's cached copy would be answered 304 Not Modified.
            stamp = max(time.time(), before + 1)
            os.utime(path, (stamp, stamp))
    return channel


def standard_packages() -> list[Package]:
    """The test's packages: python and ipykernel stand-ins, and a chain `tinyapp` -> `tinylib >=2,<3` -> `tinybase`.

    tinylib exists as 1.0, 2.0, 2.5 and 3.0: a solver that honours the constraint picks 2.5.
    """
    return [
        python_stand_in(),
        ipykernel_stand_in(),
        module("tinybase", "1.0"),
        module("tinybase", "1.1"),
        module("tinylib", "1.0", ("python", "tinybase")),
        module("tinylib", "2.0", ("python", "tinybase >=1.1")),
        module("tinylib", "2.5", ("python", "tinybase >=1.1")),
        module("tinylib", "3.0", ("python", "tinybase >=1.1")),
        module("tinyapp", "0.1", ("python", "tinylib >=2,<3"), "from tinylib import VERSION as LIB\n"),
        module("needsmissing", "1.0", ("python", "nosuchpackage >=9")),
        distribution("six", "1.16.0"),
    ]


def distribution(name: str, version: str) -> Package:
    """A noarch python package that is also a Python distribution (its .dist-info), as conda-forge's are: pip and
    uv see it installed."""
    package = module(name, version)
    info = f"site-packages/{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files = {**package.files, f"{info}/METADATA": metadata, f"{info}/INSTALLER": b"conda\n", f"{info}/RECORD": b""}
    return Package(name, version, package.depends, files)


@contextlib.contextmanager
def served(channel: Path) -> Iterator[str]:
    """The channel over HTTP on 127.0.0.1 (the mini-cluster's login node is this machine), as conda's are; its URL."""
    handler = functools.partial(_Quiet, directory=str(channel))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the test's output stays readable
        pass


def conda_spec(where: Path, url: str, deps: Sequence[str], pip: Sequence[str] = ()) -> EnvSpec:
    """An environment.yml directory naming this channel, unique by a comment (each test builds its own env)."""
    where.mkdir(parents=True, exist_ok=True)
    lines = [f"# {secrets.token_hex(8)}", "channels:", f"  - {url}", "dependencies:", *(f"  - {d}" for d in deps)]
    if pip:
        lines += ["  - pip:", *(f"    - {p}" for p in pip)]
    (where / "environment.yml").write_text("\n".join(lines) + "\n")
    return read_spec(where)


class Seen:
    """A build's progress as the laptop gets it: its phases and its non-empty lines."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.lines: list[str] = []

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def line(self, text: str) -> None:
        if text:
            self.lines.append(text)

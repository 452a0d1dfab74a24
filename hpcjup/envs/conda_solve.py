"""The conda side of a build, run on the host: environment.yml read, solved and installed, and the lock written.

Shipped as text (hpcjup.envs.conda.SOLVER) and run as `PYTHON -c SOLVER COMMAND ARGS...` by the build's sh.
The commands that only read and write files use the standard library and run on the host's own Python
(3.7 or newer); `solve` and `locked` import py-rattler (the conda solver and installer pixi is built on),
which hpcjup installs once into a tool venv on the host when the host has no conda tool of its own:

- `augment ENVFILE OUT [EXTRA...]`: the environment.yml with EXTRA's packages added where it lacks them (for
  the host's micromamba, mamba or conda: one solve, as the pip route adds ipykernel to its resolution).
- `solve ENVFILE PREFIX PLATFORM CACHE PIPOUT [EXTRA...]`: solve the file's dependencies (and EXTRA) against its
  channels for PLATFORM and noarch, install them into PREFIX; its `pip:` lines go to PIPOUT.
- `locked LOCKFILE PREFIX PLATFORM CACHE PIPOUT`: install exactly the lock's packages (each one's URL, md5
  and sha256 checked against its channel); its pip pins go to PIPOUT.
- `pins LOCKFILE PIPOUT`: the lock's pip pins (after the host's conda tool installed its packages).
- `lock PREFIX PLATFORM FREEZE OUT`: the lock of a built prefix, from its conda-meta records (which conda,
  mamba, micromamba and rattler all write), and the pip-installed packages of FREEZE (`pip freeze` output)
  that conda did not install.

For a host that reaches no channel (hpcjup.envs.conda_offline), the laptop and the host split the work:

- `fetch ENVFILE|LOCKFILE PLATFORM LIBC MACHINE KERNEL OUTDIR [EXTRA...]` (on the laptop, py-rattler): solve
  the file for the host's PLATFORM with the host's virtual packages (`__glibc` from LIBC, `__linux` KERNEL,
  `__archspec` MACHINE), or take a lock's exact packages; download each package, its sha256 and md5 checked
  against the channel's record, into OUTDIR as one local channel per channel (`c0/SUBDIR/FILE` and the
  records' `repodata.json`), with `channels.json` (each local channel's original), the lock
  (`conda-PLATFORM.lock`, the URLs the packages came from), `pip.txt` (the pip section) and `python.txt`.
- `offline DIR PREFIX PLATFORM CACHE PIPOUT` (on the host, py-rattler): install the lock of DIR from DIR's
  local channels only, then `relabel`.
- `pipfilter PIPLOCK PREFIX OUT`: the laptop's lock of the pip section without the packages the prefix has.
- `explicit DIR OUT` / `relabel PREFIX DIR`: for the host's own conda tool, the lock with the uploaded
  files' `file://` URLs; after the install, the prefix's conda-meta records given back the URLs and
  channels the packages came from (the env's records, and so its lock, are the online build's).

The lock is conda's explicit format (`@EXPLICIT`, then `URL#MD5` lines): micromamba, mamba and conda
install it as it is. hpcjup adds comment lines those tools skip: `# sha256 FILE HEX` per package and
`# pip NAME==VERSION` for the pip section.
"""

from __future__ import annotations

import json
import os
import re
import sys

#: Channels named in conda's own shorthand: `defaults` is Anaconda's main channel set.
DEFAULTS = ("https://repo.anaconda.com/pkgs/main", "https://repo.anaconda.com/pkgs/r")
#: What a file that names no channel is solved against (as micromamba and pixi do).
DEFAULT_CHANNELS = ("conda-forge",)
_KEYS = ("name", "prefix", "channels", "dependencies", "variables")
_NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)")


class SpecError(Exception):
    """An environment.yml this reader cannot take (its line number and what is wrong)."""


def _scalar(text: str, number: int) -> str:
    """A YAML scalar: its comment dropped, quotes removed."""
    text = text.strip()
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        if end < 0:
            raise SpecError(f"line {number}: an unclosed quote")
        rest = text[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise SpecError(f"line {number}: text after a quoted value")
        return text[1:end]
    if " #" in text:
        text = text.split(" #", 1)[0]
    return "" if text.startswith("#") else text.strip()


def _flow(text: str, number: int) -> list[str]:
    """A flow list `[a, b]` (its items plain or quoted scalars)."""
    inner = text.strip()
    if " #" in inner:
        inner = inner.split(" #", 1)[0].strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        raise SpecError(f"line {number}: a list must be `- item` lines or `[a, b]`")
    return [_scalar(item, number) for item in inner[1:-1].split(",") if item.strip()]


def parse(text: str) -> dict:
    """environment.yml's subset conda reads: {"channels": [...], "dependencies": [...], "pip": [...]}.

    Top-level `name`, `prefix` and `variables` are accepted and not used (the prefix is hpcjup's);
    `dependencies` holds match specs and at most one `- pip:` list. Any other shape is a SpecError.
    """
    result: dict = {"channels": [], "dependencies": [], "pip": []}
    key = None  # the top-level key whose block we are in
    in_pip = False
    pip_indent = -1
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#") or line.strip() in ("---", "..."):
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise SpecError(f"line {number}: a tab in the indentation")
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if indent == 0 and not body.startswith("-"):
            name, colon, value = body.partition(":")
            if not colon or name.strip() not in _KEYS:
                raise SpecError(f"line {number}: {name.strip()!r} is not an environment.yml key hpcjup reads")
            key, in_pip = name.strip(), False
            value = value.strip()
            if value and not value.startswith("#") and key in ("channels", "dependencies"):
                result[key] = _flow(value, number)
            continue
        if key is None or not body.startswith("-"):
            if key == "variables":
                continue
            raise SpecError(f"line {number}: expected a `- item` line")
        item = body[1:].strip()
        if key in ("name", "prefix", "variables"):
            continue
        if in_pip and indent > pip_indent:
            result["pip"].append(_scalar(item, number))
            continue
        in_pip = False
        if key == "dependencies" and re.match(r"^pip\s*:(\s|$)", item):
            rest = item.split(":", 1)[1].strip()
            result["pip"] += _flow(rest, number) if rest and not rest.startswith("#") else []
            in_pip, pip_indent = True, indent
            continue
        value = _scalar(item, number)
        if value:
            result[key].append(value)
    return result


def render(env: dict) -> str:
    """An environment.yml of a parsed one (what `augment` writes for the host's conda tool)."""
    lines = ["channels:"] + [f"  - {json.dumps(c)}" for c in env["channels"]]
    lines += ["dependencies:"] + [f"  - {json.dumps(d)}" for d in env["dependencies"]]
    if env["pip"]:
        lines += ["  - pip:"] + [f"    - {json.dumps(p)}" for p in env["pip"]]
    return "\n".join(lines) + "\n"


def package_name(spec: str) -> str:
    """The package a match spec names (`conda-forge::numpy>=1` -> numpy), lowercased."""
    spec = spec.split("::", 1)[-1]
    match = _NAME.match(spec)
    return match.group(1).lower() if match else spec.lower()


def with_extra(env: dict, extra: list[str], pip: bool = False) -> dict:
    """The env with EXTRA's packages added where its dependencies lack them; with `pip`, pip too when the file
    has a `pip:` section (conda tools run pip for it; hpcjup's own route installs it with uv)."""
    names = {package_name(d) for d in env["dependencies"]}
    added = [x for x in extra if package_name(x) not in names]
    if pip and env["pip"] and "pip" not in names:
        added.append("pip")
    return dict(env, dependencies=env["dependencies"] + added)


def channel_urls(channels: list[str]) -> list[str]:
    """The channels to solve against: `defaults` spelt out, `nodefaults` dropped, none given: conda-forge."""
    urls: list[str] = []
    for channel in channels or list(DEFAULT_CHANNELS):
        if channel == "nodefaults":
            continue
        for url in DEFAULTS if channel == "defaults" else (channel,):
            if url not in urls:
                urls.append(url)
    return urls


def read_lock(text: str) -> tuple[list[tuple[str, str]], dict[str, str], list[str]]:
    """A lock's (URL, md5) lines, its sha256 per file name, and its pip pins."""
    urls: list[tuple[str, str]] = []
    sha: dict[str, str] = {}
    pip: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# sha256 "):
            parts = line.split()
            if len(parts) == 4:
                sha[parts[2]] = parts[3]
        elif line.startswith("# pip "):
            pip.append(line[len("# pip ") :].strip())
        elif line and not line.startswith(("#", "@")):
            url, _, md5 = line.partition("#")
            urls.append((url, md5))
    return urls, sha, pip


def _meta_records(prefix: str) -> dict:
    """A prefix's conda-meta records by file path."""
    meta = os.path.join(prefix, "conda-meta")
    records = {}
    for name in sorted(os.listdir(meta)):
        if name.endswith(".json"):
            with open(os.path.join(meta, name)) as f:
                records[os.path.join(meta, name)] = json.load(f)
    return records


def write_lock(prefix: str, platform: str, freeze: str = "") -> str:
    """The explicit lock of a built prefix (see the module docstring)."""
    return lock_text(list(_meta_records(prefix).values()), platform, freeze)


def lock_text(records: list, platform: str, freeze: str = "") -> str:
    """The explicit lock of these package records (dicts with name, url, md5, sha256)."""
    records = list(records)
    records.sort(key=lambda r: (r.get("name", ""), r.get("url", "")))
    lines = [
        "# hpcjup conda lock: the exact packages of this environment (conda's explicit format).",
        "# micromamba create -p PREFIX -f THIS_FILE or conda create -p PREFIX --file THIS_FILE installs it too.",
        f"# platform: {platform}",
        "@EXPLICIT",
    ]
    lines += ["{}#{}".format(r["url"], r.get("md5", "")) if r.get("md5") else r["url"] for r in records]
    lines += ["# sha256 {} {}".format(r["url"].rsplit("/", 1)[-1], r["sha256"]) for r in records if r.get("sha256")]
    conda = {_normal(r.get("name", "")) for r in records}
    for line in freeze.splitlines():
        name, eq, version = line.strip().partition("==")
        if eq and _normal(name) not in conda:
            lines.append(f"# pip {name.strip()}=={version.strip()}")
    return "\n".join(lines) + "\n"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_missing(lock: str, installed: set) -> str:
    """The entries (with their hash lines) of a pip lock whose packages are not in `installed` (normalized
    names): an offline pip section leaves what conda installed alone, as an online install into the prefix does."""
    blocks: list = []
    for line in lock.splitlines():
        if line[:1].isspace() and blocks:
            blocks[-1].append(line)
        elif line.strip() and not line.startswith("#"):
            blocks.append([line])
    kept = [b for b in blocks if _normal(re.split(r"[=<>!~\[; ]", b[0], maxsplit=1)[0]) not in installed]
    return "".join(line + "\n" for block in kept for line in block)


def installed_names(prefix: str) -> set:
    """The normalized names of the Python packages in a prefix (its *.dist-info) and of its conda packages."""
    import glob

    names = {_normal(str(r.get("name", ""))) for r in _meta_records(prefix).values()}
    for path in glob.glob(os.path.join(prefix, "lib", "python*", "site-packages", "*.dist-info")):
        names.add(_normal(os.path.basename(path).split("-", 1)[0]))
    return names


def _split_file(url: str) -> tuple[str, str, str, str, str]:
    """(channel, subdir, name, version, build) of a package URL."""
    base, subdir, file_name = url.rsplit("/", 2)
    stem = re.sub(r"(\.tar\.bz2|\.conda)$", "", file_name)
    name, version, build = stem.rsplit("-", 2)
    return base, subdir, name, version, build


def _rattler_solve(channels: list[str], specs: list[str], platform: str, virtual: list | None = None) -> list:
    """Solve with py-rattler (its own words on failure), for PLATFORM and noarch; `virtual`: the host's virtual
    packages when the solve runs elsewhere (the laptop), else this machine's."""
    import asyncio

    from rattler import Subdir, VirtualPackage, solve
    from rattler.virtual_package import VirtualPackageOverrides

    if virtual is None:
        virtual = VirtualPackage.detect(VirtualPackageOverrides.from_env())
    return asyncio.run(
        solve(sources=channels, specs=specs, platforms=[Subdir(platform), Subdir("noarch")], virtual_packages=virtual)
    )


def virtual_versions(libc: str, machine: str, kernel: str) -> list:
    """The virtual packages of a Linux host known by its probe, as (name, version, build): `__unix`, `__linux`
    (its kernel release's leading version, `6.1.0` of `6.1.0-18-amd64`), `__glibc` (from `glibc2.36`; none
    for musl), `__archspec` (its machine): what a solve on the host would detect."""
    release = re.match(r"[0-9]+(\.[0-9]+)*", kernel.strip())
    found = [("__unix", "0", "0"), ("__linux", release.group(0) if release else "0", "0")]
    glibc = re.fullmatch(r"glibc([0-9]+(\.[0-9]+)*)", libc.strip())
    if glibc:
        found.append(("__glibc", glibc.group(1), "0"))
    if re.fullmatch(r"[A-Za-z0-9_]+", machine):
        found.append(("__archspec", "1", machine))
    return found


def host_virtual(libc: str, machine: str, kernel: str) -> list:
    """virtual_versions as py-rattler's virtual packages."""
    from rattler import BuildString, GenericVirtualPackage, PackageName, Version

    return [
        GenericVirtualPackage(PackageName(n), Version(v), BuildString(b))
        for n, v, b in virtual_versions(libc, machine, kernel)
    ]


def _install(records: list, prefix: str, cache: str) -> None:
    import asyncio
    import pathlib

    from rattler import install

    asyncio.run(install(records, target_prefix=prefix, cache_dir=pathlib.Path(cache), show_progress=False))


def _show(records: list) -> None:
    for r in sorted(records, key=lambda r: str(r.name.normalized)):
        print(f"  {r.name.normalized} {r.version} {r.build}  {r.channel}", flush=True)


def _hex(digest: object) -> str:
    return digest.hex() if isinstance(digest, bytes) else ""


class Refused(Exception):
    """A solve or a lock's packages the channels do not give (the solver's or hpcjup's words)."""


def _solve_file(envfile: str, platform: str, extra: list[str], virtual: list | None) -> tuple[list, list[str]]:
    """An environment.yml solved: its records and its pip lines."""
    env = with_extra(parse(_read(envfile)), extra)
    channels = channel_urls(env["channels"])
    print(f"solving {len(env['dependencies'])} specs for {platform} against {' '.join(channels)}", flush=True)
    try:
        records = _rattler_solve(channels, env["dependencies"], platform, virtual)
    except Exception as exc:  # rattler's SolverError and its channel errors: their own words for the user
        raise Refused(f"The conda solver (rattler) could not resolve {os.path.basename(envfile)}:\n{exc}") from None
    print(f"resolved {len(records)} packages:", flush=True)
    return records, env["pip"]


def _locked_records(lockfile: str, platform: str, virtual: list | None, local: dict | None = None) -> tuple[list, list]:
    """Exactly a lock's packages (each one's URL, md5 and sha256 checked), and its pip pins. `local`: the
    lock's channels -> the local channels (`file://`) holding the same files, solved against instead."""
    urls, sha, pip = read_lock(_read(lockfile))
    parts = [_split_file(url) for url, _ in urls]
    channels = list(dict.fromkeys(p[0] for p in parts))
    if local is not None:
        channels = [local[c.rstrip("/")] for c in channels]
    specs = [f"{p[2]} =={p[3]} {p[4]}" for p in parts]
    print(f"installing the {len(specs)} packages of {os.path.basename(lockfile)}", flush=True)
    try:
        records = _rattler_solve(channels, specs, platform, virtual)
    except Exception as exc:
        raise Refused(f"The lock's packages are not all in its channels (rattler):\n{exc}") from None
    # By file name (unique in one env): a local channel's URLs are its own.
    wanted = {url.rsplit("/", 1)[-1]: md5 for url, md5 in urls}
    for r in records:
        file_name = r.url.rsplit("/", 1)[-1]
        md5, sha256 = _hex(r.md5), _hex(r.sha256)
        if file_name not in wanted:
            raise Refused(f"{r.url} is not in the lock (the lock lacks a dependency?)")
        if (wanted[file_name] and md5 and wanted[file_name] != md5) or (
            sha.get(file_name) and sha256 != sha[file_name]
        ):
            raise Refused(f"{r.url} differs from the lock: the channel now serves another file by that name")
    return records, pip


def command_solve(envfile: str, prefix: str, platform: str, cache: str, pipout: str, extra: list[str]) -> int:
    records, pip = _solve_file(envfile, platform, extra, None)
    _show(records)
    _install(records, prefix, cache)
    _write(pipout, "".join(line + "\n" for line in pip))
    return 0


def command_locked(lockfile: str, prefix: str, platform: str, cache: str, pipout: str) -> int:
    records, pip = _locked_records(lockfile, platform, None)
    _show(records)
    _install(records, prefix, cache)
    _write(pipout, "".join(line + "\n" for line in pip))
    return 0


def _download(url: str, target: str, sha256: str, md5: str) -> None:
    """One package file, its bytes checked against the channel's record before it is kept."""
    import hashlib
    import urllib.request

    sha, md = hashlib.sha256(), hashlib.md5()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with urllib.request.urlopen(url, timeout=300) as answer, open(target + ".part", "wb") as out:
        for chunk in iter(lambda: answer.read(1 << 20), b""):
            sha.update(chunk)
            md.update(chunk)
            out.write(chunk)
    if (sha256 and sha.hexdigest() != sha256) or (md5 and md.hexdigest() != md5):
        os.remove(target + ".part")
        raise Refused(f"{url}: its bytes do not match the channel's sha256/md5 (a damaged or replaced file)")
    os.replace(target + ".part", target)


def command_fetch(source: str, platform: str, libc: str, machine: str, kernel: str, out: str, extra: list[str]) -> int:
    """On the laptop: solve (or take the lock) for the host, download and check every package (module docstring)."""
    virtual = host_virtual(libc, machine, kernel)
    if source.endswith(".lock"):
        records, pip = _locked_records(source, platform, virtual)
    else:
        records, pip = _solve_file(source, platform, extra, virtual)
    _show(records)
    origins = list(dict.fromkeys(str(r.channel) for r in records))
    local = {origin: f"c{n}" for n, origin in enumerate(origins)}
    repodata: dict = {(c, sub): {} for c in local.values() for sub in (platform, "noarch")}
    rows = []
    for r in records:
        row = json.loads(r.to_json())
        where = local[str(r.channel)]
        print(f"downloading {r.file_name}", flush=True)
        try:
            _download(r.url, os.path.join(out, where, r.subdir, r.file_name), _hex(r.sha256), _hex(r.md5))
        except OSError as exc:
            raise Refused(f"Could not download {r.url}: {exc}") from None
        rows.append(row)
        entry = {k: v for k, v in row.items() if k not in ("fn", "url", "channel")}
        key = "packages.conda" if r.file_name.endswith(".conda") else "packages"
        repodata.setdefault((where, r.subdir), {}).setdefault(key, {})[r.file_name] = entry
    for (where, sub), packages in repodata.items():
        document = {"info": {"subdir": sub}, "packages": {}, "packages.conda": {}, "repodata_version": 1, **packages}
        os.makedirs(os.path.join(out, where, sub), exist_ok=True)
        _write(os.path.join(out, where, sub, "repodata.json"), json.dumps(document, sort_keys=True))
    _write(os.path.join(out, "channels.json"), json.dumps({c: origin for origin, c in local.items()}, sort_keys=True))
    _write(os.path.join(out, f"conda-{platform}.lock"), lock_text(rows, platform))
    _write(os.path.join(out, "pip.txt"), "".join(line + "\n" for line in pip))
    python = [str(r.version) for r in records if str(r.name.normalized) == "python"]
    _write(os.path.join(out, "python.txt"), ".".join(python[0].split(".")[:2]) if python else "")
    return 0


def _offline_parts(directory: str) -> tuple[str, dict, dict]:
    """An upload's lock, its channels -> the local channels' file:// URLs, and each file's original URL."""
    origins = json.loads(_read(os.path.join(directory, "channels.json")))
    locks = [n for n in os.listdir(directory) if n.startswith("conda-") and n.endswith(".lock")]
    if len(locks) != 1:
        raise SpecError(f"{directory} holds {len(locks)} conda locks, not one")
    lockfile = os.path.join(directory, locks[0])
    local = {o.rstrip("/"): "file://" + os.path.abspath(os.path.join(directory, c)) for c, o in origins.items()}
    original = {url.rsplit("/", 1)[-1]: url for url, _ in read_lock(_read(lockfile))[0]}
    return lockfile, local, original


def command_offline(directory: str, prefix: str, platform: str, cache: str, pipout: str) -> int:
    """On the host: the upload's lock installed from the upload's local channels only, then relabelled."""
    lockfile, local, _ = _offline_parts(directory)
    records, _ = _locked_records(lockfile, platform, None, local)
    _show(records)
    _install(records, prefix, cache)
    relabel(prefix, directory)
    _write(pipout, _read(os.path.join(directory, "pip.txt")))
    return 0


def explicit(directory: str) -> str:
    """The upload's lock with the uploaded files' file:// URLs (for the host's micromamba, mamba or conda)."""
    lockfile, local, _ = _offline_parts(directory)
    lines = []
    for line in _read(lockfile).splitlines():
        if line and not line.startswith(("#", "@")):
            base = _split_file(line.partition("#")[0])[0]
            line = local[base.rstrip("/")] + line[len(base) :]
        lines.append(line)
    return "\n".join(lines) + "\n"


def relabel(prefix: str, directory: str) -> None:
    """The prefix's records of packages installed from the upload given the URL and channel they came from."""
    origins = json.loads(_read(os.path.join(directory, "channels.json")))
    _, local, original = _offline_parts(directory)
    channel_of = {local[o.rstrip("/")]: o for o in origins.values()}
    for path, record in _meta_records(prefix).items():
        url = str(record.get("url", ""))
        name = url.rsplit("/", 1)[-1]
        if not url.startswith("file:") or name not in original:
            continue
        record["url"] = original[name]
        for local_url, channel in channel_of.items():
            if url.startswith(local_url + "/"):
                record["channel"] = channel
        _write(path, json.dumps(record, indent=2, sort_keys=True))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def main(argv: list[str]) -> int:
    """Run one command (see the module docstring); its errors are printed for the build's log and the laptop."""
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if command == "augment":
            _write(args[1], render(with_extra(parse(_read(args[0])), args[2:], pip=True)))
        elif command == "pins":
            _write(args[1], "".join(pin + "\n" for pin in read_lock(_read(args[0]))[2]))
        elif command == "lock":
            freeze = _read(args[2]) if os.path.exists(args[2]) else ""
            _write(args[3], write_lock(args[0], args[1], freeze))
        elif command == "explicit":
            _write(args[1], explicit(args[0]))
        elif command == "relabel":
            relabel(args[0], args[1])
        elif command == "pipfilter":
            _write(args[2], pip_missing(_read(args[0]), installed_names(args[1])))
        elif command == "solve":
            return command_solve(args[0], args[1], args[2], args[3], args[4], args[5:])
        elif command == "locked":
            return command_locked(args[0], args[1], args[2], args[3], args[4])
        elif command == "fetch":
            return command_fetch(args[0], args[1], args[2], args[3], args[4], args[5], args[6:])
        elif command == "offline":
            return command_offline(args[0], args[1], args[2], args[3], args[4])
        else:
            print(
                "usage: augment|pins|lock|explicit|relabel|pipfilter|solve|locked|fetch|offline ARGS...",
                file=sys.stderr,
            )
            return 2
    except SpecError as exc:
        print(f"environment.yml: {exc}", flush=True)
        return 1
    except Refused as exc:
        print(str(exc), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Straight out: rattler's runtime threads can crash the interpreter's shutdown after a failed solve.
    os._exit(code)

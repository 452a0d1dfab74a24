"""The offline conda route's parts that need no cluster: the host's virtual packages from its probe, the URL the
probe checks, and the host-tool branch (micromamba, mamba or conda installing the laptop's upload).

micromamba cannot be installed here (see tests/envs/test_conda_units.py): the host-tool branch runs the build
script's real `conda_install` and conda_solve's real `explicit` and `relabel` with a STAND-IN micromamba that
records the lock it is given and writes the conda-meta records a tool writes for `file://` packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs import conda, conda_offline, conda_solve
from hpcjup.envs.spec import EnvSpec

VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")


@pytest.mark.parametrize(
    ("libc", "machine", "kernel", "wanted"),
    [
        (
            "glibc2.36",
            "x86_64",
            "6.1.0-18-amd64",
            [("__unix", "0", "0"), ("__linux", "6.1.0", "0"), ("__glibc", "2.36", "0"), ("__archspec", "1", "x86_64")],
        ),
        (
            "musl1.2",
            "aarch64",
            "5.14.0-427.el9.aarch64",
            [("__unix", "0", "0"), ("__linux", "5.14.0", "0"), ("__archspec", "1", "aarch64")],
        ),
        ("unknown", "", "", [("__unix", "0", "0"), ("__linux", "0", "0")]),
    ],
)
def test_the_hosts_virtual_packages_from_its_probe(
    libc: str, machine: str, kernel: str, wanted: list[tuple[str, str, str]]
) -> None:
    assert conda_solve.virtual_versions(libc, machine, kernel) == wanted


@given(libc=st.text(max_size=20), machine=st.text(max_size=12), kernel=st.text(max_size=30))
def test_any_probe_answer_gives_versions_a_solver_reads(libc: str, machine: str, kernel: str) -> None:
    """Whatever the host printed, the virtual packages are the known names with dotted-number versions."""
    found = conda_solve.virtual_versions(libc, machine, kernel)
    assert found[:2] == [("__unix", "0", "0"), ("__linux", found[1][1], "0")]
    assert all(VERSION.fullmatch(version) for _, version, _ in found)
    assert {name for name, _, _ in found} <= {"__unix", "__linux", "__glibc", "__archspec"}
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", build) for _, _, build in found)


def _conda_spec(text: str) -> EnvSpec:
    return EnvSpec("conda", "environment.yml", {"environment.yml": text.encode()})


def test_the_probe_checks_the_first_channel() -> None:
    assert (
        conda_offline.index_url(_conda_spec("dependencies:\n  - numpy\n")) == "https://conda.anaconda.org/conda-forge/"
    )
    assert (
        conda_offline.index_url(_conda_spec("channels: [bioconda, conda-forge]\n"))
        == "https://conda.anaconda.org/bioconda/"
    )
    assert conda_offline.index_url(_conda_spec("channels: [defaults]\n")) == conda_solve.DEFAULTS[0]
    assert conda_offline.index_url(_conda_spec("channels: [http://mirror:8000/cf]\n")) == "http://mirror:8000/cf"
    assert conda_offline.index_url(_conda_spec("nonsense: 1\n")) == ""  # the build names the file's fault


# --- the host's own tool installing the laptop's upload ------------------------------------------------------

ORIGIN = "https://conda.anaconda.org/conda-forge"

#: A stand-in micromamba: `create -y -p PREFIX -f LOCK` records the lock and writes, per package URL (a file that
#: must exist), the conda-meta record a tool writes: its url and channel as it installed them.
STAND_IN = """#!/bin/sh
[ "$1" = --version ] && { echo 2.0.5; exit 0; }
prefix=$4 lock=$6
mkdir -p "$prefix/conda-meta" && cp "$lock" "$prefix/given.lock"
grep '^file://' "$lock" | while IFS='#' read -r url md5; do
    path=${url#file://}; [ -f "$path" ] || { echo "missing $path" >&2; exit 1; }
    fn=${url##*/}; stem=${fn%.tar.bz2}
    printf '{"name": "%s", "url": "%s", "channel": "%s", "md5": "%s"}' "${stem%%-*}" "$url" "${url%/*/*}" "$md5" >"$prefix/conda-meta/$stem.json"
done
"""


def _upload(stage: Path, platform: str) -> dict[str, str]:
    """An upload as the laptop's `fetch` lays it out: one local channel c0 of two packages, its lock."""
    off = stage / ".conda-offline"
    urls = {}
    lines = ["# platform: " + platform, "@EXPLICIT"]
    for subdir, fn in ((platform, "python-3.11.9-h0_0.tar.bz2"), ("noarch", "six-1.16.0-pyh0_0.tar.bz2")):
        (off / "c0" / subdir).mkdir(parents=True, exist_ok=True)
        data = fn.encode()
        (off / "c0" / subdir / fn).write_bytes(data)
        urls[fn] = f"{ORIGIN}/{subdir}/{fn}"
        lines.append(f"{urls[fn]}#{hashlib.md5(data).hexdigest()}")
    (off / f"conda-{platform}.lock").write_text("\n".join(lines) + "\n")
    (off / "channels.json").write_text(json.dumps({"c0": ORIGIN + "/"}))
    (off / "pip.txt").write_text("")
    return urls


def test_the_hosts_tool_installs_the_upload_from_its_files_and_the_records_say_where_they_came_from(
    tmp_path: Path,
) -> None:
    platform = conda.PLATFORMS[os.uname().machine]
    stage, prefix, bindir = tmp_path / ".stage-env-x-1", tmp_path / "env-x", tmp_path / "bin"
    urls = _upload(stage, platform)
    bindir.mkdir()
    (bindir / "micromamba").write_text(STAND_IN)
    (bindir / "micromamba").chmod(0o755)
    body = (
        'say() { printf "@@hpcjup %s\\n" "$*"; }\nstep() { "$@" </dev/null; }\n'
        f"root={tmp_path} stage={stage} tmp={prefix} work={tmp_path}/w log=/dev/null py=python3 uv= extra=\n"
        'solver=$(cat "$SOLVER")\nconda_build; echo "rc=$?"\n'
    )
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "SOLVER": conda_solve.__file__, "HOME": str(tmp_path)}
    done = subprocess.run(["sh", "-c", conda.SH + body], capture_output=True, text=True, env=env)
    assert done.stdout.splitlines()[-1] == "rc=0", done.stdout + done.stderr
    given_lock = (prefix / "given.lock").read_text()
    off = stage / ".conda-offline"
    assert f"file://{off}/c0/noarch/six-1.16.0-pyh0_0.tar.bz2#" in given_lock  # the upload's files, nothing else
    assert "https://" not in given_lock
    records = {p.stem: json.loads(p.read_text()) for p in (prefix / "conda-meta").glob("*.json")}
    assert {r["url"] for r in records.values()} == set(urls.values())
    assert {r["channel"] for r in records.values()} == {ORIGIN + "/"}
    assert not off.exists()  # the upload goes: the env's copy of its spec holds none


def test_the_pip_section_leaves_what_conda_installed() -> None:
    lock = "python-dateutil==2.9.0 \\\n    --hash=sha256:aa\nsix==1.17.0 \\\n    --hash=sha256:bb\nzipp[x]==3.0 ; python_version > '3'\n"
    assert (
        conda_solve.pip_missing(lock, {"six"})
        == "python-dateutil==2.9.0 \\\n    --hash=sha256:aa\nzipp[x]==3.0 ; python_version > '3'\n"
    )
    assert conda_solve.pip_missing(lock, {"python-dateutil", "six", "zipp"}) == ""


@given(
    names=st.lists(
        st.from_regex(r"[A-Za-z][A-Za-z0-9._-]{0,8}", fullmatch=True), max_size=6, unique_by=conda_solve._normal
    ),
    data=st.data(),
)
def test_any_lock_keeps_exactly_the_entries_not_installed(names: list[str], data: st.DataObject) -> None:
    installed = set(data.draw(st.lists(st.sampled_from(names), unique=True))) if names else set()
    lock = "".join(f"{n}==1.0 \\\n    --hash=sha256:{i:064x}\n" for i, n in enumerate(names))
    kept = conda_solve.pip_missing(lock, {conda_solve._normal(n) for n in installed})
    assert [line.split("==")[0] for line in kept.splitlines() if "==" in line] == [
        n for n in names if n not in installed
    ]
    assert kept.count("--hash=") == len(names) - len(installed)

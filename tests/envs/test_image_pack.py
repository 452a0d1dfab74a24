"""Each environment packed into one SquashFS image when it is built (envs/pack.py), on the mini-cluster's login node.

Real uv, real mksquashfs and squashfuse as hpcuser: the image's hash is the one its metadata records, the tree
is dropped (a handful of files stay on the shared filesystem; `env ls` counts both), and the environment runs from
wherever the image is mounted (uv's relocatable venv). A dropped tree comes back for env_mode direct; an env without
its tree whose image went bad is built again from its lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from hpcjup.envs.build import ensure
from hpcjup.envs.catalog import list_envs
from hpcjup.envs.spec import EnvSpec
from hpcjup.transport import Transport
from tests.envs.conftest import TEST_ROOT, leftovers

pytestmark = pytest.mark.cluster

Host = Callable[[], Transport]
MakeSpec = Callable[..., EnvSpec]

# Mounts the image at a fresh path and runs the env's python, its console script and ipykernel from there.
_MOUNTED = r"""
set -e
m=$(mktemp -d) && trap 'fusermount3 -u "$m" 2>/dev/null; rmdir "$m"' EXIT
squashfuse "$1" "$m"
"$m/bin/python" -c 'import six, sys; print(sys.prefix)'
"$m/bin/python" -c 'import os, six; print("pyc", os.path.exists(six.__cached__))'
"$m/bin/python" -m ipykernel --version >/dev/null && echo ipykernel-ok
"$m/bin/jupyter" --paths >/dev/null && echo script-ok
echo "mounted $m"
"""


def test_a_build_packs_one_image_whose_hash_the_metadata_records(host: Host, make_spec: MakeSpec) -> None:
    transport = host()
    built = ensure(transport, make_spec({"requirements.txt": "six\n"}), TEST_ROOT)
    image = f"{built.path}.sqsh"
    sha = transport.run(["sh", "-c", 'sha256sum <"$1" | cut -d" " -f1', "sh", image]).stdout.strip()
    meta = json.loads(transport.read_file(f"{built.path}/.hpcjup-env.json"))
    assert meta["image"]["sha256"] == sha and meta["image"]["codec"] == "zstd"
    assert leftovers(transport, built.name) == []  # no temp image left beside it

    # Relocated: the image mounted elsewhere runs the env's Python, ipykernel and a console script.
    out = transport.run(["sh", "-c", _MOUNTED, "sh", image]).stdout
    mount = out.split("mounted ", 1)[1].strip()
    assert f"{mount}\n" in out and "ipykernel-ok" in out and "script-ok" in out, out
    # With its bytecode: an import from the read-only image never compiles the source again.
    assert "pyc True" in out and meta["image"]["compiled"] is True, out

    # The tree is gone: on the shared filesystem, the image, the log and a directory of a handful of files.
    # `env ls` shows both counts: the files inside (as packed) and those on the shared filesystem.
    _, envs = list_envs(transport, TEST_ROOT)
    (env,) = [e for e in envs if e.name == built.name]
    assert env.image is not None and env.image.sha256 == sha and not env.image.bad
    assert not env.tree and env.inside_files == meta["image"]["tree_files"] > 100, env
    assert env.shared_files <= 10 and env.shared_files == env.files + 2, env  # + the image and the build's log
    kept = transport.run(["sh", "-c", 'cd "$1" && find . | sort', "sh", built.path]).stdout.split()
    assert "./.hpcjup-lock.txt" in kept and "./bin" not in kept, kept


def _six(transport: Transport, path: str) -> str:
    return transport.run([f"{path}/bin/python", "-c", "import six; print(six.__version__)"]).stdout.strip()


def test_a_dropped_tree_comes_back_when_the_env_runs_in_place(host: Host, make_spec: MakeSpec) -> None:
    """env_mode direct (keep_tree): the next build unpacks the tree from the image; the env is not built again."""
    transport = host()
    spec = make_spec({"requirements.txt": "six\n"})
    built = ensure(transport, spec, TEST_ROOT)
    assert transport.run(["test", "-e", f"{built.path}/bin"], check=False).returncode == 1
    again = ensure(transport, spec, TEST_ROOT, keep_tree=True)
    assert not again.built_now and again.path == built.path
    assert _six(transport, built.path)  # the tree runs in place
    meta = json.loads(transport.read_file(f"{built.path}/.hpcjup-env.json"))
    assert "image" in meta  # the metadata outside (with the image's hash) is the one kept
    assert leftovers(transport, built.name) == []
    # Kept from now on: a build with the default drops nothing of an env built before (it may be in use in place).
    ensure(transport, spec, TEST_ROOT)
    assert _six(transport, built.path)


def test_an_env_without_its_tree_and_a_bad_image_is_built_again_from_its_lock(host: Host, make_spec: MakeSpec) -> None:
    transport = host()
    spec = make_spec({"requirements.txt": "six\n"})
    built = ensure(transport, spec, TEST_ROOT)
    # Its lock says an older six than a fresh resolution would take: the rebuild must install exactly the lock.
    sed = ["sed", "-i", "-e", "s/^six==.*/six==1.15.0/", "-e", "/--hash/d", "-e", r"s/ \\$//"]
    transport.run([*sed, f"{built.path}/.hpcjup-lock.txt"])
    image = f"{built.path}.sqsh"
    transport.run(["sh", "-c", 'head -c 4096 "$1" >"$1.x" && mv "$1.x" "$1" && : >"$1.bad"', "sh", image])
    lines: list[str] = []

    class Seen:
        def phase(self, name: str) -> None:
            pass

        def line(self, text: str) -> None:
            lines.append(text)

    again = ensure(transport, spec, TEST_ROOT, progress=Seen())
    assert again.built_now and again.path == built.path
    assert any("building the environment again from its lock" in line for line in lines), lines
    assert _six_in_image(transport, image) == "1.15.0"
    assert leftovers(transport, built.name) == []


def _six_in_image(transport: Transport, image: str) -> str:
    script = r"""m=$(mktemp -d) && trap 'fusermount3 -u "$m" 2>/dev/null; rmdir "$m"' EXIT
squashfuse "$1" "$m" && "$m/bin/python" -c 'import six; print(six.__version__)'"""
    return transport.run(["sh", "-c", script, "sh", image]).stdout.strip()


def test_a_bad_image_is_packed_again_by_the_next_build(host: Host, make_spec: MakeSpec) -> None:
    """An env that kept its tree (env_mode direct) is packed again from it."""
    transport = host()
    spec = make_spec({"requirements.txt": "six\n"})
    built = ensure(transport, spec, TEST_ROOT, keep_tree=True)
    image = f"{built.path}.sqsh"
    # What a job does when the copy's hash does not match: truncates nothing, marks it bad.
    transport.run(["sh", "-c", 'head -c 4096 "$1" >"$1.x" && mv "$1.x" "$1" && : >"$1.bad"', "sh", image])
    _, envs = list_envs(transport, TEST_ROOT)
    assert [e.image.bad for e in envs if e.name == built.name and e.image] == [True]

    again = ensure(transport, spec, TEST_ROOT, keep_tree=True)
    assert not again.built_now  # the env itself was kept: only its image was packed anew
    sha = transport.run(["sh", "-c", 'sha256sum <"$1" | cut -d" " -f1', "sh", image]).stdout.strip()
    meta = json.loads(transport.read_file(f"{built.path}/.hpcjup-env.json"))
    assert meta["image"]["sha256"] == sha and meta["image"]["bytes"] > 4096
    assert leftovers(transport, built.name) == []

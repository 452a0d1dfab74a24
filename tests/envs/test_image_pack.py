"""Each environment packed into one SquashFS image when it is built (envs/pack.py), on the mini-cluster's login node.

Real uv, real mksquashfs and squashfuse as hpcuser: the image's hash is the one its metadata records, `env ls`
counts its files, and the environment runs from wherever the image is mounted (uv's relocatable venv).
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

    # `env ls`: the image, the files inside the tree, and what lies beside it on the shared filesystem.
    _, envs = list_envs(transport, TEST_ROOT)
    (env,) = [e for e in envs if e.name == built.name]
    assert env.image is not None and env.image.sha256 == sha and not env.image.bad
    assert env.files > 100 and env.shared_files == env.files + 2  # + the image and the build's log


def test_a_bad_image_is_packed_again_by_the_next_build(host: Host, make_spec: MakeSpec) -> None:
    transport = host()
    spec = make_spec({"requirements.txt": "six\n"})
    built = ensure(transport, spec, TEST_ROOT)
    image = f"{built.path}.sqsh"
    # What a job does when the copy's hash does not match: truncates nothing, marks it bad.
    transport.run(["sh", "-c", 'head -c 4096 "$1" >"$1.x" && mv "$1.x" "$1" && : >"$1.bad"', "sh", image])
    _, envs = list_envs(transport, TEST_ROOT)
    assert [e.image.bad for e in envs if e.name == built.name and e.image] == [True]

    again = ensure(transport, spec, TEST_ROOT)
    assert not again.built_now  # the env itself was kept: only its image was packed anew
    sha = transport.run(["sh", "-c", 'sha256sum <"$1" | cut -d" " -f1', "sh", image]).stdout.strip()
    meta = json.loads(transport.read_file(f"{built.path}/.hpcjup-env.json"))
    assert meta["image"]["sha256"] == sha and meta["image"]["bytes"] > 4096
    assert leftovers(transport, built.name) == []

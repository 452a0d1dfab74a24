"""`env ls`'s catalog (envs/catalog.py): the host script's listing, run for real on this machine, and its parser.

An environment whose tree was dropped after packing (envs/pack.py) is a handful of files on the shared filesystem:
FILES inside come from the image's recorded count, SHARED from what is there.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs.catalog import list_all
from hpcjup.transport.local import LocalTransport
from tests.schedulers.test_job_ids import ScriptedTransport


def _env(root: Path, name: str, *, tree: bool, tree_files: int) -> None:
    env = root / name
    (env / ".hpcjup-spec").mkdir(parents=True)
    (env / ".hpcjup-spec" / "requirements.txt").write_text("six\n")
    (env / ".hpcjup-lock.txt").write_text("six==1.17.0\n")
    if tree:
        (env / "bin").mkdir()
        (env / "bin" / "python").write_text("")
        for i in range(20):
            (env / f"f{i}").write_text("x")
    meta = {"python": "3.11.2", "image": {"sha256": "ab" * 32, "bytes": 4096, "codec": "zstd", "tree_kb": 7000}}
    meta["image"]["tree_files"] = tree_files
    (env / ".hpcjup-env.json").write_text(json.dumps(meta))
    (root / f"{name}.sqsh").write_bytes(b"image")
    (root / f"{name}.log").write_text("built\n")


def test_an_env_without_its_tree_counts_its_files_inside_from_the_image(tmp_path: Path) -> None:
    _env(tmp_path, "env-kept", tree=True, tree_files=999)
    _env(tmp_path, "env-slim", tree=False, tree_files=1234)
    _, envs, _ = list_all(LocalTransport(), str(tmp_path))
    found = {env.name: env for env in envs}
    kept, slim = found["env-kept"], found["env-slim"]
    assert kept.tree and kept.inside_files == kept.files > 20 and kept.shared_files == kept.files + 2
    # The slim one: its directory (itself, metadata, lock, the spec directory and its file) plus image and log.
    assert not slim.tree and slim.inside_files == 1234 and slim.files == 5 and slim.shared_files == 7
    assert slim.size_kb == 7000 and slim.image is not None and slim.image.sha256 == "ab" * 32
    row = slim.to_dict()
    assert (row["tree"], row["inside_files"], row["shared_files"]) == (False, 1234, 7)


_WORDS = st.sampled_from(["sqsh", "bad", "log", "notree", "x", ""]) | st.text(string.ascii_letters, max_size=6)


@given(
    words=st.lists(_WORDS, max_size=8), meta=st.one_of(st.text(max_size=40), st.just('{"image": {"tree_files": 3}}'))
)
def test_any_listing_line_parses_without_error(words: list[str], meta: str) -> None:
    """Whatever the host printed beside an env (or as its metadata), the listing is read: known words count."""
    stdout = f"@@hpcjup root /r\n@@env env-a 12 5 1700000000\n{meta}\n@@beside env-a {' '.join(words)}\n"
    _, envs, _ = list_all(ScriptedTransport({"sh": (0, stdout, "")}), "/r")
    (env,) = envs
    assert env.beside == sum(1 for w in words if w in ("sqsh", "bad", "log"))
    assert env.tree == ("notree" not in words)
    assert env.inside_files >= 0 and env.shared_files == 5 + env.beside

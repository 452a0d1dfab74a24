"""The laptop's side of environment images, without a cluster: what doctor makes of the host's line, what `env ls`
makes of an env's metadata, and the job's command that runs through job/envlocal.sh."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs.pack import Image, doctor_words, image_of

WORDS = st.sampled_from(["yes", "no-squashfuse", "no-/dev/fuse", "mount-refused", "untried", "?", "", "x y"])
MODES = st.sampled_from(["auto", "image", "unpack", "direct"])


@given(st.text(max_size=80), MODES)
def test_any_doctor_line_is_a_check(line: str, mode: str) -> None:
    status, found, _ = doctor_words(line, mode)
    assert status in ("pass", "warn", "skip") and found


@given(st.lists(WORDS, max_size=5), MODES)
def test_doctor_names_the_mode_a_job_would_choose(fields: list[str], mode: str) -> None:
    status, found, _ = doctor_words(" ".join(fields), mode)
    words = (" ".join(fields).split() + ["?"] * 4)[:4]
    if mode == "direct":
        assert status == "skip"
    elif words[2] == "yes" and mode == "auto":  # a tree on a local disk first, as envlocal.sh chooses
        assert found.startswith("unpack:") and ("mounted" if words[0] == "yes" else "tmpfs") in found
    elif words[0] == "yes" and mode != "unpack":
        assert found.startswith("image:")
    elif words[2] == "yes" and mode != "image":
        assert found.startswith("unpack:")
    else:
        assert found.startswith("direct:") and status == "warn"


def test_doctor_on_a_host_with_everything() -> None:
    assert doctor_words("yes yes yes yes", "auto")[0] == "pass"
    assert "else mounted with squashfuse" in doctor_words("yes yes yes yes", "auto")[1]
    assert doctor_words("no-/dev/fuse yes yes yes", "auto")[1].startswith("unpack: images are unpacked")
    assert doctor_words("yes yes no-unsquashfs yes", "auto")[1].startswith("image: squashfuse mounts work")
    status, found, fix = doctor_words("yes yes yes no-mksquashfs", "auto")
    assert status == "warn" and "no mksquashfs" in found and "squashfs-tools" in fix


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["image", "name", "sha256"]), JSON, max_size=3), st.booleans())
def test_any_metadata_gives_an_image_or_none(meta: dict[str, Any], bad: bool) -> None:
    found = image_of(meta, bad)
    assert found is None or (isinstance(found, Image) and found.bad == bad)


def test_an_image_from_its_metadata() -> None:
    meta = {"image": {"sha256": "ab" * 32, "bytes": 123, "codec": "zstd", "tree_kb": 9}}
    assert image_of(meta) == Image("ab" * 32, 123, "zstd")
    assert image_of({"tool": "pip"}) is None

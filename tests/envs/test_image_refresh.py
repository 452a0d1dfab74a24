"""A tag's current digest, asked of the registry before a cached image is used; `env ls` and `prune --envs` of images.

The registry answer's parsers (container_script.RESOLVE, run by the login node's python3) are read here by Hypothesis;
the script itself runs for real in sh on this machine (LocalTransport), with the stand-in `apptainer` of
test_container_units (Apptainer is not packaged for Debian 12). A moved tag against a real registry is
tests/cli/test_containers.py's.
"""

from __future__ import annotations

import hashlib
import os
import time
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs.catalog import list_all, prune
from hpcjup.envs.container import ensure_image, manifest_url, parse_ref, pull_argv
from hpcjup.envs.container_script import RESOLVE
from hpcjup.transport.local import LocalTransport
from tests.envs.conda_channel import Seen
from tests.envs.test_container_units import DATA
from tests.envs.test_container_units import apptainer as apptainer  # the stand-in runtime (a fixture)

RESOLVER: dict[str, Any] = {"__name__": "resolve"}
exec(RESOLVE, RESOLVER)  # its functions, without running its main part
UNREACHABLE = parse_ref("docker://localhost:9/group/analysis:latest")  # nothing listens on port 9

_token = st.from_regex(r"[A-Za-z_]{1,12}", fullmatch=True)
_value = st.text(st.characters(blacklist_characters='"\n\r', blacklist_categories=("Cs",)), max_size=40)


@given(st.sampled_from(["Bearer", "bearer", "Basic"]), st.dictionaries(_token, _value, max_size=4))
def test_a_challenge_reads_back_its_scheme_and_parameters(scheme: str, params: dict[str, str]) -> None:
    header = f"{scheme} " + ",".join(f'{k}="{v}"' for k, v in params.items())
    said, found = RESOLVER["challenge"](header)
    assert said == scheme.lower()
    assert found == {k.lower(): v for k, v in params.items()}


@given(st.text(max_size=80))
def test_any_challenge_text_reads_as_a_scheme_and_parameters(text: str) -> None:
    scheme, params = RESOLVER["challenge"](text)
    assert isinstance(scheme, str) and all(isinstance(v, str) for v in params.values())


@given(st.text(max_size=80), st.one_of(st.none(), st.binary(max_size=64)))
def test_a_digest_is_the_registrys_when_well_formed_else_the_manifests_own(header: str, body: bytes | None) -> None:
    headers = Message()
    headers["Docker-Content-Digest"] = header.replace("\n", " ").replace("\r", " ")
    found = RESOLVER["digest_of"](headers, body)
    if found is not None and found.strip() == headers["Docker-Content-Digest"].strip():
        assert len(found) == 71 and found.startswith("sha256:")
    elif body is not None:
        assert found == "sha256:" + hashlib.sha256(body).hexdigest()
    else:
        assert found is None


@pytest.mark.parametrize(
    ("ref", "url"),
    [
        ("docker://python:3.12", "https://registry-1.docker.io/v2/library/python/manifests/3.12"),
        (
            "docker://docker.io/jupyter/base-notebook",
            "https://registry-1.docker.io/v2/jupyter/base-notebook/manifests/latest",
        ),
        ("docker://localhost:5015/hpcjup/test:1", "https://localhost:5015/v2/hpcjup/test/manifests/1"),
        (f"docker://ghcr.io/a/b:1@sha256:{'0' * 64}", None),  # pinned: never asked
    ],
)
def test_the_manifest_url_is_the_registrys_name_for_the_tag(ref: str, url: str | None) -> None:
    assert manifest_url(parse_ref(ref)) == url
    assert pull_argv("r", "apptainer", parse_ref(ref))[-1] == (url or "")


def _pulled(root: Path, monkeypatch: pytest.MonkeyPatch, ref: Any = UNREACHABLE) -> Any:
    monkeypatch.setenv("TRANSCRIPT", str(DATA / "pull-ok.txt"))
    monkeypatch.setenv("RC", "0")
    return ensure_image(LocalTransport(), str(root), "apptainer", ref, Seen())


def test_an_unreachable_registry_uses_the_cached_copy_with_a_warning(
    apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "envs"
    first = _pulled(root, monkeypatch)
    assert first.pulled_now and first.warning is None, "no cached copy: the pull itself says what it finds"
    monkeypatch.setenv("RC", "255")  # a pull now would fail: the start must not try one
    again = ensure_image(LocalTransport(), str(root), "apptainer", UNREACHABLE, Seen(), always=True)  # `env pull`
    assert not again.pulled_now and again.path == first.path
    assert again.warning is not None and again.warning.startswith(f"could not ask the registry whether {UNREACHABLE}")
    assert "Connection refused" in again.warning and "using the copy cached" in again.warning

    # A start soon after does not ask again (a firewall that drops packets costs CHECK_TIMEOUT each time).
    quiet = ensure_image(LocalTransport(), str(root), "apptainer", UNREACHABLE, Seen())
    assert quiet.path == first.path and "not asked: it did not answer at" in (quiet.warning or "")
    assert len(apptainer.read_text().splitlines()) == 1, "pulled once"


def test_a_pinned_ref_is_never_asked_again(apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = parse_ref(f"{UNREACHABLE}@sha256:{'a' * 64}")
    root = tmp_path / "envs"
    first = _pulled(root, monkeypatch, pinned)
    again = ensure_image(LocalTransport(), str(root), "apptainer", pinned, Seen())
    assert (again.pulled_now, again.warning, again.moved) == (False, None, None)
    assert Path(first.path + ".info").read_text().splitlines()[2] == f"remote sha256:{'a' * 64}"


def test_images_are_listed_with_the_environments_and_pruned_when_unused(
    apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "envs"
    pulled = _pulled(root, monkeypatch)
    absolute, envs, [image] = list_all(LocalTransport(), str(root))
    assert envs == [] and image.path == pulled.path and absolute == str(root)
    assert (image.ref, image.runtime, image.current, image.files) == (str(UNREACHABLE), "apptainer", True, 1)
    assert image.digest is None  # the registry did not answer when it was pulled
    assert abs(image.last_used - time.time()) < 60 and image.kb >= 0

    assert prune(LocalTransport(), str(root), 1, lambda path: [])[2] == [], "used today: kept"
    old = time.time() - 3 * 86400
    os.utime(pulled.path + ".info", (old, old))
    _, _, kept = prune(LocalTransport(), str(root), 1, lambda path: ["s1"] if path == pulled.path else [])
    assert kept == [] and Path(pulled.path).exists(), "a running session uses it"
    _, _, [gone] = prune(LocalTransport(), str(root), 1, lambda path: [])
    assert gone.name == image.name and not Path(pulled.path).exists()
    assert [p.name for p in (root / "images").iterdir() if not p.name.startswith(".")] == [], "pointer, info gone"


def test_an_image_a_kernel_runs_is_one_the_session_uses() -> None:
    """session.json's `envs` names a kernel's image: `prune --envs` (session/envuse.py) then keeps it while it runs."""
    from hpcjup.session import envplan, hostfacts
    from tests.session.test_kernel_kinds import S

    image = "/home/u/.hpcjup/envs/images/sha256-ab.ch"
    roots, pythons = {".hpcjup/envs": "/home/u/.hpcjup/envs"}, {"python3": ["3.11", "x86_64", "glibc2.36"]}
    facts = hostfacts.HostFacts("/home/u", None, roots, pythons, {".hpcjup/envs": ""})
    plan = envplan.plan(S(kernels=(f"boxed=image:{image}",)))
    assert plan is not None
    located = envplan.locate(plan, facts, "/home/u")
    assert located is not None and image in located.envs


_names = st.from_regex(r"sha256-[0-9a-f]{64}\.(ch|sif)", fullmatch=True)
_words = st.one_of(st.none(), st.from_regex(r"[!-~]{1,30}", fullmatch=True).filter(lambda w: w != "-"))


@given(
    _names, st.integers(0, 2**40), st.integers(1, 2**31), st.integers(0, 2**33), _words, _words, st.booleans(), _words
)
def test_an_image_line_reads_back_as_the_catalog_wrote_it(
    name: str, kb: int, files: int, used: int, runtime: str | None, digest: str | None, current: bool, ref: str | None
) -> None:
    from hpcjup.envs.catalog import ImageInfo, _image_line

    fields = [name, kb, files, used, runtime or "-", digest or "-", int(current), ref or "-"]
    line = "@@image " + " ".join(map(str, fields))
    path = f"/r/images/{name}"
    assert _image_line(line, "/r") == ImageInfo(name, path, kb, files, used, runtime, digest, current, ref)


@given(st.text(max_size=120))
def test_any_other_line_is_no_image(text: str) -> None:
    from hpcjup.envs.catalog import _image_line

    found = _image_line(text, "/r")
    assert found is None or text.startswith("@@image ")


@given(_words, st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True))
def test_a_moved_line_gives_the_old_and_new_digests(old: str | None, new: str) -> None:
    import collections

    from hpcjup.envs.container import read_line

    said: dict[str, Any] = {}
    line = f"@@hpcjup moved {UNREACHABLE} {old or '-'} {new}"
    assert read_line(line, collections.deque(), Seen(), said) is None
    assert said == {"moved": (old or "-", new)}

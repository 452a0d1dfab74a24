"""Container image references, and the Apptainer path of the pull against Apptainer's recorded real output.

Apptainer is not packaged for Debian 12: a stand-in `apptainer` on PATH replays what the real one printed
(tests/envs/data/apptainer/, SOURCES.md names the threads) and, for a pull that worked, writes the .sif as the
real one does. Everything else is real: container_script.SCRIPT runs in sh on this machine (LocalTransport),
with its lock, temporary directory and renames.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs.container import (
    ImagePullError,
    ImageRef,
    cache_key,
    ensure_image,
    image_kernel,
    parse_ref,
    runtime_words,
)
from hpcjup.errors import ExitCode, UsageError
from hpcjup.session.kernelkinds import KERNEL_NAME as NAME
from hpcjup.transport.local import LocalTransport
from tests.envs.test_conda_build import Seen

DATA = Path(__file__).parent / "data" / "apptainer"
REF = parse_ref("docker://registry.example.org:5000/group/analysis:2024.1")

_component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,4}){0,2}", fullmatch=True)
_hosts = st.one_of(
    st.none(),
    st.just("localhost"),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}\.[a-z]{2,5}", fullmatch=True),
    st.builds(lambda h, p: f"{h}:{p}", st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True), st.integers(1, 65535)),
)
_refs = st.builds(
    ImageRef,
    _hosts,
    st.lists(_component, min_size=1, max_size=3).map("/".join),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    st.one_of(st.none(), st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)),
).filter(
    lambda r: r.host or "/" not in r.path or "." not in r.path.split("/")[0]
)  # else that part is a host, as Docker reads it


@given(_refs)
def test_a_reference_reads_back_as_written(ref: ImageRef) -> None:
    assert parse_ref(str(ref)) == ref


@given(st.text(max_size=40))
def test_any_text_is_a_reference_or_a_usage_error(text: str) -> None:
    try:
        ref = parse_ref("docker://" + text)
    except UsageError as exc:
        assert "is not a container image reference" in exc.message
    else:
        assert parse_ref(str(ref)) == ref
        assert not any(c.isspace() for c in str(ref)), "what reaches the runtime's argv has no blanks"


@pytest.mark.parametrize(
    "text", ["docker://", "docker://Upper/case", "docker://a b", "docker://x:tag:more", "docker://x@sha256:12"]
)
def test_malformed_references_are_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_ref(text)
    assert caught.value.exit_code == ExitCode.USAGE and "docker://[REGISTRY[:PORT]/]NAME" in (caught.value.hint or "")


def test_the_cache_key_tells_runtimes_and_refs_apart() -> None:
    assert cache_key("apptainer", REF) != cache_key("charliecloud", REF)
    assert cache_key("apptainer", REF) != cache_key("apptainer", parse_ref("docker://registry.example.org:5000/x"))
    assert cache_key("apptainer", REF) == cache_key("apptainer", parse_ref(str(REF)))


def test_the_runtimes_error_line_is_its_fatal_line() -> None:
    lines = (DATA / "pull-unreachable.txt").read_text().splitlines()
    assert runtime_words(["INFO:    Starting build...", *lines]).startswith("FATAL:   While making image")
    assert runtime_words(["only this"]) == "only this"


@pytest.fixture
def apptainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `apptainer` first on PATH: replays $TRANSCRIPT on stderr, writes the .sif when $RC is 0."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    stand_in = bindir / "apptainer"
    stand_in.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >>{calls}\n'
        'cat "$TRANSCRIPT" >&2\n'
        'sleep "${SLOW:-0}"\n'
        '[ "$RC" != 0 ] || printf "SIF image of %s" "$3" >"$2"\n'
        'exit "$RC"\n'
    )
    stand_in.chmod(0o755)
    for other in ("singularity", "ch-image"):  # `auto` must find the stand-in first, whatever this machine has
        assert not (bindir / other).exists()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_apptainer_pulls_once_into_a_sif_named_by_its_digest(
    apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSCRIPT", str(DATA / "pull-ok.txt"))
    monkeypatch.setenv("RC", "0")
    root, shown = tmp_path / "envs", Seen()
    pulled = ensure_image(LocalTransport(), str(root), "apptainer", REF, shown)
    sha = hashlib.sha256(f"SIF image of {REF}".encode()).hexdigest()
    assert pulled.pulled_now and pulled.runtime == "apptainer" and pulled.digest == sha
    assert pulled.path == str(root / "images" / f"sha256-{sha}.sif")
    assert shown.phases == ["pulling"]
    assert "Writing manifest to image destination" in shown.lines  # the runtime's own lines reach the display
    [call] = apptainer.read_text().splitlines()
    assert call.startswith(f"pull {root}/images/.pull-") and call.endswith(f"/out {REF}")

    again = ensure_image(LocalTransport(), str(root), "apptainer", REF, Seen())
    assert not again.pulled_now and again.path == pulled.path
    assert len(apptainer.read_text().splitlines()) == 1, "the second start pulls nothing"
    assert sorted(p.name for p in (root / "images").iterdir() if not p.name.startswith(".")) == [
        f"ref-{cache_key('apptainer', REF)}",
        f"sha256-{sha}.sif",
        f"sha256-{sha}.sif.info",  # its ref, runtime and registry digest; its mtime is the last use
    ]


def test_an_unreachable_registry_says_apptainers_words_and_caches_nothing(
    apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSCRIPT", str(DATA / "pull-unreachable.txt"))
    monkeypatch.setenv("RC", "255")
    root = tmp_path / "envs"
    with pytest.raises(ImagePullError) as caught:
        ensure_image(LocalTransport(), str(root), "auto", REF, Seen())
    error = caught.value
    assert error.exit_code == ExitCode.ENV_BUILD
    assert "dial tcp 131.169.5.213:5555: i/o timeout" in error.message and error.message.startswith("apptainer ")
    assert "nothing was cached" in (error.hint or "")
    assert [p.name for p in (root / "images").iterdir() if not p.name.startswith(".")] == []


@given(_refs, st.sampled_from(["", "#python3", "#/opt/env/bin/python"]))
def test_an_image_kernel_reads_its_image_and_python(ref: ImageRef, python: str) -> None:
    kernel = image_kernel(f"{ref}{python}", ["/p"])
    assert (kernel.image, kernel.python, kernel.binds) == (str(ref), python[1:] or "python3", ("/p",))
    assert NAME.fullmatch(kernel.name), kernel.name


@pytest.mark.parametrize("text", ["", "docker://Bad", "/img.sif#rel/python", "/img.sif#py thon"])
def test_a_bad_image_kernel_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        image_kernel(text)


def test_an_image_kernel_runs_its_python_through_the_runtime() -> None:
    kernel = image_kernel("/p/images/lab.sif#/opt/env/bin/python", ["/p/project"])
    assert (
        kernel.command("/home/u")
        == "env -u HPCJUP_LAUNCH apptainer exec -B /p/project /p/images/lab.sif /opt/env/bin/python"
    )
    assert kernel.name == "lab"


def test_two_starts_at_once_pull_once(apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second waits on the first's lock, then finds the image cached."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("TRANSCRIPT", str(DATA / "pull-ok.txt"))
    monkeypatch.setenv("RC", "0")
    monkeypatch.setenv("SLOW", "1")
    root = tmp_path / "envs"
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda _: ensure_image(LocalTransport(), str(root), "apptainer", REF, Seen()), [1, 2]))
    assert len(apptainer.read_text().splitlines()) == 1
    assert sorted(p.pulled_now for p in both) == [False, True] and both[0].path == both[1].path


def test_an_image_a_job_found_corrupt_is_pulled_again_and_replaced(
    apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """envlocal.sh marks IMAGE.bad where a copy's sha256 is not its name's: the next start pulls it again (it used
    the cached copy before) and the fresh file replaces the corrupt one under the same name."""
    monkeypatch.setenv("TRANSCRIPT", str(DATA / "pull-ok.txt"))
    monkeypatch.setenv("RC", "0")
    root = tmp_path / "envs"
    first = ensure_image(LocalTransport(), str(root), "apptainer", REF, Seen())
    Path(first.path).write_bytes(b"truncated")
    Path(f"{first.path}.bad").touch()
    again = ensure_image(LocalTransport(), str(root), "apptainer", REF, Seen())
    assert again.pulled_now and again.path == first.path, again
    assert Path(first.path).read_bytes() == f"SIF image of {REF}".encode() and not Path(f"{first.path}.bad").exists()

"""Reading spec directories as Binder does, and the parsers of runtime.txt and requirements lines.

What repo2docker 2026.4.0 (`repo2docker --no-build --debug DIR`, run here without Docker) chose
for the layouts below, and what hpcjup must match:

| layout                                   | repo2docker                                                    |
| ---------------------------------------- | -------------------------------------------------------------- |
| requirements.txt                         | pip install -r requirements.txt; "Python version unspecified,   |
|                                          | using Python version 3.10" (hpcjup: the host's python3)          |
| requirements.txt + runtime.txt python-3.12 | "Building conda environment for python=3.12"                  |
| environment.yml (python=3.11) + requirements.txt | mamba env update --file environment.yml; requirements.txt not installed |
| requirements.txt + binder/requirements.txt | pip install -r binder/requirements.txt only                  |
| binder/ and .binder/                     | RuntimeError "contains both a 'binder' and a '.binder' directory" |
| pyproject.toml with [project] and [build-system] | pip install .                                          |
| pyproject.toml with [project] only       | nothing installed                                              |
| requirements.txt + apt.txt               | apt-get install of apt.txt's packages (needs root: refused here) |
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs.errors import EnvSpecError
from hpcjup.envs.identity import env_name
from hpcjup.envs.spec import LOCK_FILE, REFUSED, parse_runtime, read_spec, requirement_refs
from hpcjup.errors import ExitCode


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_requirements_alone(tmp_path: Path) -> None:
    spec = read_spec(_tree(tmp_path, {"requirements.txt": "six\n"}))
    assert (spec.kind, spec.python, sorted(spec.files)) == ("pip", None, ["requirements.txt"])


def test_runtime_txt_sets_the_python(tmp_path: Path) -> None:
    spec = read_spec(_tree(tmp_path, {"requirements.txt": "six\n", "runtime.txt": "python-3.12\n"}))
    assert spec.python == "3.12"


def test_environment_yml_wins_over_requirements(tmp_path: Path) -> None:
    files = {"requirements.txt": "six\n", "environment.yml": "dependencies:\n  - python=3.11\n  - numpy\n"}
    spec = read_spec(_tree(tmp_path, files))
    assert (spec.kind, spec.python) == ("conda", "3.11")
    assert "requirements.txt" not in spec.files
    assert any("environment.yml wins" in note for note in spec.notes)


def test_binder_directory_replaces_the_root(tmp_path: Path) -> None:
    spec = read_spec(_tree(tmp_path, {"requirements.txt": "six\n", "binder/requirements.txt": "tomli\n"}))
    assert spec.files == {"requirements.txt": b"tomli\n"}


def test_dot_binder_too(tmp_path: Path) -> None:
    spec = read_spec(_tree(tmp_path, {".binder/requirements.txt": "tomli\n", ".binder/postBuild": "echo hi\n"}))
    assert spec.files["requirements.txt"] == b"tomli\n" and spec.postbuild


def test_both_binder_directories_are_refused(tmp_path: Path) -> None:
    _tree(tmp_path, {"binder/requirements.txt": "six\n", ".binder/requirements.txt": "six\n"})
    with pytest.raises(EnvSpecError, match=r"both binder/ and \.binder/") as caught:
        read_spec(tmp_path)
    assert caught.value.exit_code == ExitCode.USAGE


def test_pyproject_package_is_read_for_its_dependencies(tmp_path: Path) -> None:
    text = '[project]\nname="x"\nversion="0"\ndependencies=["six"]\n[build-system]\nrequires=["hatchling"]\n'
    spec = read_spec(_tree(tmp_path, {"pyproject.toml": text, "uv.lock": "version = 1\n"}))
    assert spec.kind == "pyproject" and sorted(spec.files) == ["pyproject.toml", "uv.lock"] and spec.locked


def test_pyproject_without_build_system_is_not_a_spec(tmp_path: Path) -> None:
    _tree(tmp_path, {"pyproject.toml": '[project]\nname="x"\nversion="0"\ndependencies=["six"]\n'})
    with pytest.raises(EnvSpecError, match="holds no environment spec"):
        read_spec(tmp_path)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_root_only_and_foreign_files_are_refused_by_name(tmp_path: Path, name: str) -> None:
    _tree(tmp_path, {"requirements.txt": "six\n", name: "x\n"})
    with pytest.raises(EnvSpecError) as caught:
        read_spec(tmp_path)
    assert name in caught.value.message and caught.value.hint == REFUSED[name]


def test_description_counts_only_at_the_root(tmp_path: Path) -> None:
    spec = read_spec(_tree(tmp_path, {"binder/requirements.txt": "six\n", "binder/DESCRIPTION": "x\n"}))
    assert spec.kind == "pip"


def test_included_requirement_files_travel_with_the_spec(tmp_path: Path) -> None:
    files = {"requirements.txt": "-r base.txt\n-c pins.txt\nsix\n", "base.txt": "tomli\n", "pins.txt": "six<2\n"}
    spec = read_spec(_tree(tmp_path, files))
    assert sorted(spec.files) == ["base.txt", "pins.txt", "requirements.txt"]


def test_local_packages_are_refused(tmp_path: Path) -> None:
    _tree(tmp_path, {"requirements.txt": "-e .\nsix\n"})
    with pytest.raises(EnvSpecError, match="local packages"):
        read_spec(tmp_path)


def test_a_lock_beside_the_spec_is_part_of_it(tmp_path: Path) -> None:
    plain = read_spec(_tree(tmp_path, {"requirements.txt": "six\n"}))
    locked = read_spec(_tree(tmp_path, {LOCK_FILE: "six==1.17.0\n"}))
    assert locked.locked and plain.digest != locked.digest


def test_the_digest_follows_the_bytes(tmp_path: Path) -> None:
    first = read_spec(_tree(tmp_path, {"requirements.txt": "six\n"})).digest
    again = read_spec(tmp_path).digest
    edited = read_spec(_tree(tmp_path, {"requirements.txt": "six \n"})).digest
    assert first == again != edited


def test_single_files(tmp_path: Path) -> None:
    assert read_spec(_tree(tmp_path, {"dev.txt": "six\n"}) / "dev.txt").files == {"requirements.txt": b"six\n"}
    with pytest.raises(EnvSpecError, match="cannot be built"):
        read_spec(_tree(tmp_path, {"apt.txt": "curl\n"}) / "apt.txt")


def test_names_differ_by_python_and_platform() -> None:
    names = {
        env_name("env", "d", py, m, c)
        for py in ("3.11", "3.12")
        for m in ("x86_64", "aarch64")
        for c in ("glibc2.36", "")
    }
    assert len(names) == 8 and all(n.startswith("env-") and len(n) == 20 for n in names)


# -- parsers, against everything Hypothesis can write -------------------------------------------

versions = st.from_regex(r"[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,2})?", fullmatch=True)
dates = st.dates().map(lambda d: d.isoformat()).filter(lambda d: len(d) == 10)


@given(versions, st.one_of(st.none(), dates), st.sampled_from(["", "\n", "  \n"]))
def test_runtime_txt_versions(version: str, date: str | None, end: str) -> None:
    text = f"python-{version}" + (f"-{date}" if date else "") + end
    assert parse_runtime(text) == ".".join(version.split(".")[:2])


@given(st.text(max_size=40))
def test_runtime_txt_anything_else_is_a_usage_error_never_a_crash(text: str) -> None:
    try:
        parsed = parse_runtime(text)
    except EnvSpecError as exc:
        assert exc.exit_code == ExitCode.USAGE
    else:
        assert text.strip().startswith("python-") and parsed.count(".") == 1


names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,20}", fullmatch=True)
specifiers = st.sampled_from(["", ">=1", "==2.0", "[extra]>=1,<3", " ; python_version>'3.8'", " @ https://x.org/p.whl"])


@given(st.lists(st.tuples(names, specifiers), max_size=8), st.lists(names.map(lambda n: n + ".txt"), max_size=3))
def test_requirement_lines(requirements: list[tuple[str, str]], included: list[str]) -> None:
    lines = [name + spec for name, spec in requirements] + [f"-r {f}" for f in included]
    lines += ["# a comment", "", "--index-url https://pypi.org/simple", "six  # why"]
    includes, local = requirement_refs("\n".join(lines))
    assert includes == included and local == []


@given(
    st.sampled_from(["-e .", "./pkg", "../lib", "/abs/wheel.whl", "x @ file:///tmp/x", "-e ./sub", "--find-links ./w"])
)
def test_local_references_are_found(line: str) -> None:
    assert requirement_refs(f"six\n{line}\n")[1]

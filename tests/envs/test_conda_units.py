"""The conda route's parts that need no cluster: environment.yml's reader, the lock, and the command lines
hpcjup gives the host's own conda tools.

micromamba, mamba and conda cannot be installed on these machines (not on PyPI; their channels are out of
reach): their command lines are checked here by running the build script's own `conda_create` with each
tool's name and `--version` answer, and a `step` that prints the argv instead of running it. They were
not run against the real tools.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.envs import conda, conda_solve
from hpcjup.envs.conda_solve import SpecError, parse, read_lock, render, with_extra, write_lock
from hpcjup.envs.spec import read_spec

ENV = """\
name: analysis   # not used: the prefix is hpcjup's
channels:
  - conda-forge
  - 'bioconda'
dependencies:
  - python=3.11
  - numpy >=1.26  # a comment
  - "conda-forge::xarray"
  - pip
  - pip:
    - requests==2.32.3
    - rich
variables:
  FOO: bar
"""


def test_the_environment_yml_subset_conda_reads() -> None:
    env = parse(ENV)
    assert env["channels"] == ["conda-forge", "bioconda"]
    assert env["dependencies"] == ["python=3.11", "numpy >=1.26", "conda-forge::xarray", "pip"]
    assert env["pip"] == ["requests==2.32.3", "rich"]


def test_flow_lists() -> None:
    env = parse("channels: [conda-forge, defaults]\ndependencies: [python=3.12, 'scipy']\n")
    assert (env["channels"], env["dependencies"], env["pip"]) == (
        ["conda-forge", "defaults"],
        ["python=3.12", "scipy"],
        [],
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("channel:\n  - conda-forge\n", "line 1: 'channel' is not an environment.yml key"),
        ("dependencies:\n  numpy\n", "line 2: expected a `- item` line"),
        ("dependencies:\n\t- numpy\n", "line 2: a tab in the indentation"),
        ("dependencies:\n  - 'numpy\n", "line 2: an unclosed quote"),
        ("channels: conda-forge\n", "line 1: a list must be"),
    ],
)
def test_what_it_cannot_read_is_named_with_its_line(text: str, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        parse(text)


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12).filter(
    lambda w: w[0].isalnum()
)
_spec = st.builds(
    lambda name, op, version: f"{name}{op}{version}" if version else name,
    st.one_of(_word, st.just("pip")),  # `pip::x` is a package from a channel named pip, not the pip section
    st.sampled_from(["=", "==", ">=", " >=", "<", " ", "::"]),
    st.one_of(st.just(""), st.from_regex(r"[0-9]{1,2}(\.[0-9]{1,2}){0,2}(\.\*)?", fullmatch=True)),
)


@given(
    channels=st.lists(_word, max_size=4),
    deps=st.lists(_spec, max_size=8),
    pip=st.lists(_spec, max_size=4),
    comments=st.booleans(),
    quote=st.sampled_from(["", "'", '"']),
    indent=st.sampled_from([0, 2, 4]),
)
def test_any_file_in_the_block_style_reads_back_as_written(
    channels: list[str], deps: list[str], pip: list[str], comments: bool, quote: str, indent: int
) -> None:
    """What is written (any indentation of the items, quotes, trailing comments) is what is read."""
    pad = " " * indent
    tail = "  # note" if comments else ""
    lines = ["name: x", "channels:", *(f"{pad}- {quote}{c}{quote}{tail}" for c in channels), "dependencies:"]
    lines += [f"{pad}- {quote}{d}{quote}{tail}" for d in deps]
    if pip:
        lines += [f"{pad}- pip:", *(f"{pad}  - {quote}{p}{quote}{tail}" for p in pip)]
    env = parse("\n".join(lines) + "\n")
    assert (env["channels"], env["dependencies"], env["pip"]) == (channels, deps, pip)


@given(text=st.text(alphabet=" \t\n-:#'\"[],abc=", max_size=80))
def test_any_text_reads_or_is_refused_by_name(text: str) -> None:
    """No input makes the reader fail otherwise than with a SpecError that names a line."""
    try:
        env = parse(text)
    except SpecError as exc:
        assert str(exc).startswith("line ")
    else:
        assert set(env) == {"channels", "dependencies", "pip"}


@given(deps=st.lists(_spec, max_size=6), pip=st.lists(_spec, max_size=3), extra=st.lists(_word, max_size=3))
def test_augment_adds_only_what_is_missing_and_round_trips(deps: list[str], pip: list[str], extra: list[str]) -> None:
    env = {"channels": ["conda-forge"], "dependencies": deps, "pip": pip}
    more = with_extra(env, extra, pip=True)
    names = [conda_solve.package_name(d) for d in more["dependencies"]]
    assert more["dependencies"][: len(deps)] == deps  # the user's own lines first, unchanged
    assert all(conda_solve.package_name(x) in names for x in extra)
    assert ("pip" in names) or not pip
    assert parse(render(more)) == more


def test_channels_as_conda_spells_them() -> None:
    assert conda_solve.channel_urls([]) == ["conda-forge"]
    assert conda_solve.channel_urls(["conda-forge", "nodefaults"]) == ["conda-forge"]
    assert conda_solve.channel_urls(["defaults"]) == list(conda_solve.DEFAULTS)


def _prefix(tmp_path: Path) -> Path:
    meta = tmp_path / "env" / "conda-meta"
    meta.mkdir(parents=True)
    for name, version, sha in (("numpy", "1.26.4", "a" * 64), ("python", "3.11.9", "b" * 64)):
        url = f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-h0_0.conda"
        record = {"name": name, "version": version, "url": url, "md5": "c" * 32, "sha256": sha}
        (meta / f"{name}-{version}-h0_0.json").write_text(json.dumps(record))
    return tmp_path / "env"


def test_the_lock_is_conda_explicit_format_with_hashes_and_pip_pins(tmp_path: Path) -> None:
    freeze = "numpy==1.26.4\nrequests==2.32.3\n"  # numpy came from conda: not a pip pin
    text = write_lock(str(_prefix(tmp_path)), "linux-64", freeze)
    lines = text.splitlines()
    assert "# platform: linux-64" in lines and "@EXPLICIT" in lines
    urls, sha, pins = read_lock(text)
    assert [u.rsplit("/", 1)[1] for u, _ in urls] == ["numpy-1.26.4-h0_0.conda", "python-3.11.9-h0_0.conda"]
    assert all(md5 == "c" * 32 for _, md5 in urls)
    assert sha == {"numpy-1.26.4-h0_0.conda": "a" * 64, "python-3.11.9-h0_0.conda": "b" * 64}
    assert pins == ["requests==2.32.3"]
    assert conda.lock_file_name(text.encode()) == "conda-linux-64.lock"
    assert conda.package_count(text.encode()) == 3


def test_a_spec_directory_carries_its_conda_locks(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text("dependencies:\n  - python=3.11\n")
    (tmp_path / "conda-linux-64.lock").write_text("@EXPLICIT\n")
    (tmp_path / "hpcjup.lock").write_text("six==1.16.0\n")  # a pip lock: not what a conda spec builds from
    spec = read_spec(tmp_path)
    assert sorted(spec.files) == ["conda-linux-64.lock", "environment.yml"]
    # Its python=3.11 comes from the channels; the host's own Python runs the tools and names the env.
    assert (spec.python, spec.base_python("python3")) == ("3.11", "python3")


# --- the host's own tools: the command lines the build script gives each -----------------------------------


def _tool(bindir: Path, name: str, version: str) -> Path:
    path = bindir / name
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(0o755)
    return path


def _sh(body: str, path: str = "/usr/bin:/bin", **env: str) -> list[str]:
    """Run the build script's conda functions with `step` printing its argv (one word a line)."""
    script = conda.SH + "\nstep() { printf '%s\\n' \"$@\"; }\n" + body
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={"PATH": path, **env}, check=True)
    return done.stdout.splitlines()


@pytest.mark.parametrize(
    ("name", "version", "env_file", "lock_file"),
    [
        ("micromamba", "2.0.5", "create -y -p /p -f /s/e.yml", "create -y -p /p -f /s/conda-linux-64.lock"),
        ("mamba", "2.1.0", "create -y -p /p -f /s/e.yml", "create -y -p /p -f /s/conda-linux-64.lock"),
        ("mamba", "mamba 1.5.8", "env create -p /p -f /s/e.yml", "create -y -p /p --file /s/conda-linux-64.lock"),
        ("conda", "conda 24.7.1", "env create -p /p -f /s/e.yml", "create -y -p /p --file /s/conda-linux-64.lock"),
    ],
)
def test_each_tool_gets_its_own_create_command(
    tmp_path: Path, name: str, version: str, env_file: str, lock_file: str
) -> None:
    tool = _tool(tmp_path, name, version)
    assert _sh(f"conda_create {tool} /p /s/e.yml") == [str(tool), *env_file.split()]
    assert _sh(f"conda_create {tool} /p /s/conda-linux-64.lock") == [str(tool), *lock_file.split()]


def test_the_first_tool_on_the_host_is_taken_in_order(tmp_path: Path) -> None:
    path = f"{tmp_path}:/usr/bin:/bin"
    assert _sh("conda_tool_find || echo none", path) == ["none"]  # no tool: hpcjup's rattler
    _tool(tmp_path, "conda", "conda 24.7.1")
    assert _sh("conda_tool_find", path) == [str(tmp_path / "conda")]
    _tool(tmp_path, "mamba", "2.1.0")
    assert _sh("conda_tool_find", path) == [str(tmp_path / "mamba")]
    _tool(tmp_path, "micromamba", "2.0.5")
    assert _sh("conda_tool_find", path) == [str(tmp_path / "micromamba")]
    # An activated micromamba elsewhere ($MAMBA_EXE) comes first.
    other = tmp_path / "elsewhere"
    other.mkdir()
    own = _tool(other, "micromamba", "2.0.5")
    assert _sh("conda_tool_find", path, MAMBA_EXE=str(own)) == [str(own)]


def test_the_host_platform_by_conda_name() -> None:
    machine = os.uname().machine
    assert _sh("conda_platform") == [conda.PLATFORMS[machine]]

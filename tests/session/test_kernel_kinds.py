"""`--kernel` kinds on the laptop (session/kernelkinds.py): `module:A,B` beside `cluster:PREFIX` and spec paths.

The parser gets Hypothesis; the wrapper a module-set kernel runs is run for real with Lmod (the copy
tests/cluster/install.sh unpacks) in a shell with nothing initialised, as Jupyter starts a kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.errors import UsageError
from hpcjup.session import envplan, hostfacts, kernelkinds
from tests.config.test_environment import lmod_home


class S:
    """A stand-in for Resolved: .value(key)."""

    def __init__(self, **values: object) -> None:
        self.values = values

    def value(self, key: str) -> object:
        return self.values.get(key)


MODULE = st.from_regex(r"[A-Za-z0-9_.+@%][A-Za-z0-9_.+@%/:-]{0,30}", fullmatch=True)


@given(
    st.lists(MODULE, min_size=1, max_size=4),
    st.one_of(st.none(), st.from_regex(kernelkinds.KERNEL_NAME, fullmatch=True)),
)
def test_a_module_set_kernel_is_named_and_loads_its_modules(modules: list[str], name: str | None) -> None:
    text = ("" if name is None else f"{name}=") + kernelkinds.MODULE + ",".join(modules)
    kernel = kernelkinds.read_kernel(text, S(module_use=["~/mods"]))
    assert kernel.modules == tuple(modules) and kernel.spec is None and kernel.prefix is None
    assert kernel.name == name if name else kernelkinds.KERNEL_NAME.fullmatch(kernel.name)
    assert kernel.what == kernelkinds.MODULE + ",".join(modules)
    wrapper = kernel.wrapper()
    assert wrapper.startswith("#!/bin/sh\n") and wrapper.endswith('exec python3 "$@"\n')
    assert 'module use "$HOME"/mods' in wrapper and any(line.startswith("module load ") for line in kernel.setup)
    assert subprocess.run(["sh", "-n", "-c", wrapper], check=False).returncode == 0


@given(st.text(max_size=40))
def test_any_module_text_is_a_module_set_or_a_usage_error(rest: str) -> None:
    try:
        kernel = kernelkinds.read_kernel(kernelkinds.MODULE + rest, S())
    except UsageError as exc:
        assert "module" in exc.message and exc.hint
        return
    assert kernel.modules and all(m == m.strip() and m and not m.startswith("-") for m in kernel.modules)
    assert ",".join(kernel.modules) == ",".join(m.strip() for m in rest.split(","))


@pytest.mark.parametrize("text", ["module:", "module:a,,b", "module:-f", "module:a b", "module:$(reboot)"])
def test_bad_module_sets_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="not a module name"):
        kernelkinds.read_kernel(text, S())


def test_every_kind_is_in_the_table() -> None:
    """A kind is one entry of KINDS (its prefix and reader): `image:` and the next kind go there, not in an if."""
    assert set(kernelkinds.KINDS) == {kernelkinds.CLUSTER, kernelkinds.MODULE, kernelkinds.IMAGE}
    assert kernelkinds.read_kernel("py=cluster:/opt/x/", S()).prefix == "/opt/x"


def test_a_module_kernel_is_a_wrapper_in_the_session_directory() -> None:
    """Nothing on the host is checked for it (the launcher asks the wrapper before Jupyter starts); its Python is
    the wrapper the session uploads, made absolute once the session's directory is known."""
    roots, pythons = {".hpcjup/envs": "/home/u/.hpcjup/envs"}, {"python3": ["3.11", "x86_64", "glibc2.36"]}
    facts = hostfacts.HostFacts("/home/u", None, roots, pythons, {".hpcjup/envs": ""})
    p = envplan.plan(S(kernels=("module:Python/3.11,SciPy-bundle", "b=cluster:~/v")))
    assert p is not None and [k.name for k in p.kernels] == ["python-3.11-scipy-bundle", "b"]
    located = envplan.locate(p, facts, "/home/u")
    assert located is not None
    wrapper = "kernels/python-3.11-scipy-bundle/bin/python"
    assert located.kernels[0] == ("python-3.11-scipy-bundle", wrapper)
    assert [c for c in located.checks if c.startswith("p:")] == ["p:/home/u/v"] and len(located.envs) == 2
    module_check = "m:python-3.11-scipy-bundle=module:Python/3.11,SciPy-bundle " + p.kernels[0].wrapper()
    assert [c for c in located.checks if c.startswith("m:")] == [module_check]
    there = located.at("/home/u/.hpcjup/sessions/lab")
    assert there.kernels == (
        ("python-3.11-scipy-bundle", f"/home/u/.hpcjup/sessions/lab/{wrapper}"),
        ("b", "/home/u/v/bin/python"),
    )
    assert there.dask_python == f"/home/u/.hpcjup/sessions/lab/{wrapper}" and there.at("/x") == there
    ((content, mode),) = located.files().values()
    assert mode == 0o700 and b"module load Python/3.11 SciPy-bundle ||" in content


def test_a_containers_kernel_command_is_not_put_in_the_session_directory() -> None:
    """`at` makes only the module sets' wrappers absolute: an image kernel's Python is a command line (`env -u ...
    ch-run ... -- python3`) that runs as it is (the merge of both kinds once prefixed it with the session's path)."""
    roots, pythons = {".hpcjup/envs": "/home/u/.hpcjup/envs"}, {"python3": ["3.11", "x86_64", "glibc2.36"]}
    facts = hostfacts.HostFacts("/home/u", None, roots, pythons, {".hpcjup/envs": ""})
    p = envplan.plan(S(kernels=("boxed=image:/home/u/img.sif", "module:Python/3.11")))
    assert p is not None
    located = envplan.locate(p, facts, "/home/u")
    assert located is not None
    there = located.at("/home/u/.hpcjup/sessions/lab")
    (name, command), (_, wrapper) = there.kernels
    assert name == "boxed" and command == located.kernels[0][1] and not command.startswith("/home/u/.hpcjup/sessions")
    assert wrapper == "/home/u/.hpcjup/sessions/lab/kernels/python-3.11/bin/python"


@pytest.fixture
def lua_modules(tmp_path: Path) -> Path:
    """An Lmod module `pyset/1.0` (Lua) that puts a python3 on PATH and sets a variable."""
    bin_dir = tmp_path / "pyset" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").symlink_to(sys.executable)
    mods = tmp_path / "lmodfiles" / "pyset"
    mods.mkdir(parents=True)
    (mods / "1.0.lua").write_text(f'prepend_path("PATH", "{bin_dir}")\nsetenv("PYSET_LOADED", "yes")\n')
    return tmp_path / "lmodfiles"


def run_wrapper(wrapper: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The wrapper run as Jupyter runs a kernel's argv[0]: executed, in a bare environment but for Lmod's home."""
    path = tmp_path / "kernels" / "k" / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wrapper)
    path.chmod(0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODULESHOME": lmod_home()}
    return subprocess.run([str(path), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_the_wrapper_loads_the_module_set_with_lmod_and_runs_its_python(lua_modules: Path, tmp_path: Path) -> None:
    kernel = kernelkinds.read_kernel("module:pyset/1.0", S(module_use=[str(lua_modules)]))
    code = "import os, sys; print(sys.executable, os.environ['PYSET_LOADED'], os.environ.get('LMOD_CMD', 'none'))"
    result = run_wrapper(kernel.wrapper(), tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr
    executable, loaded, lmod = result.stdout.split()
    assert executable == str(lua_modules.parent / "pyset" / "bin" / "python3") and loaded == "yes" and lmod != "none"


def test_the_wrapper_says_why_it_cannot_run(lua_modules: Path, tmp_path: Path) -> None:
    unknown = kernelkinds.read_kernel("module:nosuch", S(module_use=[str(lua_modules)]))
    result = run_wrapper(unknown.wrapper(), tmp_path, "-c", "print('ran')")
    assert result.returncode == 1 and "ran" not in result.stdout
    assert "nosuch" in result.stderr and result.stderr.rstrip().endswith("hpcjup: module load failed (see above)")
    (lua_modules / "empty").mkdir()
    (lua_modules / "empty" / "1.0.lua").write_text('setenv("X", "1")\n')
    no_python = kernelkinds.read_kernel("module:empty", S(module_use=[str(lua_modules)]))
    result = run_wrapper(no_python.wrapper().replace("python3", "python3-not-here"), tmp_path)
    assert result.returncode == 1 and "puts no python3-not-here on PATH" in result.stderr
    assert os.environ.get("PYSET_LOADED") is None


def claim(tmp_path: Path, env: dict[str, str], *checks: str) -> subprocess.CompletedProcess[str]:
    """The upload's command (claim.py) with only `checks` to make: nothing is submitted (`true`)."""
    from hpcjup.session.claim import _CLAIM, _RECORDED, JOB_ID_SLOT, RECORD_TEMPLATE
    from hpcjup.transport.batch import pack

    root = tmp_path / "sessions"
    argv = ["sh", "-c", _CLAIM, "sh", str(root), "n", "t", "", "true", env["HOME"], "", "claimed", _RECORDED]
    argv += [RECORD_TEMPLATE, JOB_ID_SLOT, *checks]
    return subprocess.run(argv, input=pack({"f": (b"x", 0o600)}), capture_output=True, env=env, check=False)


def test_the_upload_refuses_a_module_set_whose_python_has_no_ipykernel(lua_modules: Path, tmp_path: Path) -> None:
    """Checked in the upload's command, before anything is claimed or submitted, by running the kernel's own
    wrapper: a set whose python3 lacks ipykernel is refused with its label; a set that does not load on the login
    node is let through (the nodes may have it; the job's own check says so)."""
    from tests.cli.helpers import CLUSTER_PYTHON

    for name, python in (("with", CLUSTER_PYTHON), ("without", "/usr/bin/python3")):
        bin_dir = tmp_path / name / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {python} "$@"\n')
        (bin_dir / "python3").chmod(0o755)
        (lua_modules / name).mkdir()
        (lua_modules / name / "1.0.lua").write_text(f'prepend_path("PATH", "{bin_dir}")\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MODULESHOME": lmod_home()}
    located = []
    for text in ("module:with", "k=module:without", "module:nosuch"):
        kernel = kernelkinds.read_kernel(text, S(module_use=[str(lua_modules)]))
        located.append(f"m:{kernel.name}={kernel.what} {kernel.wrapper()}")
    refused = claim(tmp_path, env, *located)
    assert refused.returncode == 80 and refused.stderr.decode().splitlines()[-1] == "k=module:without"
    assert not (tmp_path / "sessions").exists(), "nothing claimed"
    assert claim(tmp_path, env, located[0], located[2]).returncode == 0
    assert (tmp_path / "sessions" / "n" / "f").read_bytes() == b"x"

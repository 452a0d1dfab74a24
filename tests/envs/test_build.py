"""Real builds on the mini-cluster's login node as hpcuser: real uv (brought by the laptop), real PyPI, real Slurm."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import pytest

from hpcjup.envs.build import BuiltEnv, check, ensure
from hpcjup.envs.errors import EnvBuildError
from hpcjup.envs.identity import env_name
from hpcjup.envs.spec import EnvSpec
from hpcjup.errors import ExitCode
from hpcjup.transport import Transport
from tests.cluster.procs import wait_until
from tests.envs.conftest import TEST_ROOT, leftovers

pytestmark = pytest.mark.cluster

Host = Callable[[], Transport]
MakeSpec = Callable[..., EnvSpec]


def test_builds_once_then_every_start_reuses_it(host: Host, make_spec: MakeSpec) -> None:
    spec = make_spec({"requirements.txt": "six\n"})
    transport = host()
    before = check(transport, spec, TEST_ROOT)
    assert not before.built and before.name

    built = ensure(transport, spec, TEST_ROOT, keep_tree=True)  # run in place below (env_mode direct's way)
    assert built.built_now and built.name == before.name
    # The login node named it by the rule hpcjup documents (spec digest, Python, machine, libc).
    assert built.name == env_name(
        "env", spec.digest, before.python_version or "", before.machine or "", before.libc or ""
    )
    # A compute node runs it (the job sees the same home).
    out = transport.run(["srun", "-N1", "-t", "1", built.python, "-c", "import six, sys; print(sys.prefix)"]).stdout
    assert out.strip() == built.path
    lock = transport.read_file(f"{built.path}/.hpcjup-lock.txt").decode()
    assert "six==" in lock and "--hash=sha256:" in lock
    assert leftovers(transport, built.name) == []

    again = ensure(host(), spec, TEST_ROOT, keep_tree=True)
    assert (again.built_now, again.path) == (False, built.path)
    assert check(transport, spec, TEST_ROOT).built


def test_two_racing_builds_build_once(host: Host, make_spec: MakeSpec) -> None:
    # postBuild keeps the first builder busy long enough for the second to find its lock.
    spec = make_spec({"requirements.txt": "six\n", "postBuild": "#!/bin/sh\nsleep 3\necho built-by-postbuild\n"})
    results: list[BuiltEnv | BaseException] = []

    def build() -> None:
        try:
            results.append(ensure(host(), spec, TEST_ROOT))
        except BaseException as exc:  # the assertion below shows it
            results.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(isinstance(r, BuiltEnv) for r in results), results
    built = [r for r in results if isinstance(r, BuiltEnv)]
    assert len({r.path for r in built}) == 1
    assert sorted(r.built_now for r in built) == [False, True]
    transport = host()
    log = transport.read_file(f"{built[0].path}.log").decode()
    assert log.count("built-by-postbuild") == 1
    assert leftovers(transport, built[0].name) == []


def test_a_spec_that_does_not_resolve(host: Host, make_spec: MakeSpec) -> None:
    spec = make_spec({"requirements.txt": "hpcjup-surely-no-such-package-4711\n"})
    transport = host()
    with pytest.raises(EnvBuildError) as caught:
        ensure(transport, spec, TEST_ROOT)
    error = caught.value
    assert error.exit_code == ExitCode.ENV_BUILD == 11
    assert "did not resolve" in error.message
    # uv's own words reach the user.
    assert "hpcjup-surely-no-such-package-4711" in (error.details or "")
    assert "not found in the package registry" in (error.details or "") or "No solution found" in (error.details or "")
    name = check(transport, spec, TEST_ROOT).name
    assert name and not check(transport, spec, TEST_ROOT).built
    assert leftovers(transport, name) == []
    assert (
        "hpcjup-surely-no-such-package-4711"
        in transport.read_file(f"{transport.home()}/{TEST_ROOT}/{name}.failed.log").decode()
    )


def test_postbuild_failing_shows_its_output(host: Host, make_spec: MakeSpec) -> None:
    spec = make_spec({"requirements.txt": "six\n", "postBuild": "#!/bin/sh\necho preparing-data-xyz\nexit 3\n"})
    transport = host()
    with pytest.raises(EnvBuildError, match="postBuild failed") as caught:
        ensure(transport, spec, TEST_ROOT)
    assert "preparing-data-xyz" in (caught.value.details or "")
    name = check(transport, spec, TEST_ROOT).name
    assert name and leftovers(transport, name) == []
    assert not transport.run(["test", "-e", f"{transport.home()}/{TEST_ROOT}/{name}"], check=False).returncode == 0


def test_a_python_older_than_the_spec_asks_for(host: Host, make_spec: MakeSpec) -> None:
    # The mini-cluster has Python 3.11 only; runtime.txt asks for 3.13.
    spec = make_spec({"requirements.txt": "six\n", "runtime.txt": "python-3.13\n"})
    with pytest.raises(EnvBuildError, match=r"No Python 3\.13 on minicluster \(runtime.txt asks for 3\.13\)") as caught:
        ensure(host(), spec, TEST_ROOT)
    assert caught.value.exit_code == 11 and "module" in (caught.value.hint or "")


def test_a_killed_builders_lock_is_taken_over(host: Host, make_spec: MakeSpec, minicluster: Any) -> None:
    # postBuild waits while a flag file exists: the first build hangs there, the second (same spec) does not.
    marker = f"hang-{secrets.token_hex(4)}"
    flag = f"{TEST_ROOT}/{marker}.flag"
    post = f"#!/bin/sh\nif [ -e \"$HOME/{flag}\" ]; then exec python3 -c 'import time; time.sleep(120)' {marker}; fi\n"
    spec = make_spec({"requirements.txt": "six\n", "postBuild": post})
    transport = host()
    transport.run(["sh", "-c", f'mkdir -p "$HOME/{TEST_ROOT}" && touch "$HOME/{flag}"'])
    name = check(transport, spec, TEST_ROOT).name
    errors: list[BaseException] = []

    def first() -> None:
        try:
            ensure(host(), spec, TEST_ROOT)
        except BaseException as exc:  # the build is killed under it: an error is what it should see
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    pattern = f"'[{marker[0]}]{marker[1:]}'"
    running = f'pgrep -u "$(id -u)" -f {pattern} || true'
    wait_until(lambda: transport.run(["sh", "-c", running]).stdout.strip(), 60, "postBuild")
    owner = transport.read_file(f"{transport.home()}/{TEST_ROOT}/.lock-{name}/owner").decode().split()
    # kill -9 of the builder, then of its postBuild, as a login node's OOM killer or reboot would.
    transport.run(["sh", "-c", f'kill -9 {owner[1]}; pkill -9 -u "$(id -u)" -f {pattern} || true'])
    transport.run(["rm", "-f", f"{transport.home()}/{flag}"])
    thread.join(60)
    assert errors and isinstance(errors[0], EnvBuildError)
    assert transport.run(["test", "-d", f"{transport.home()}/{TEST_ROOT}/.lock-{name}"], check=False).returncode == 0

    built = ensure(transport, spec, TEST_ROOT)
    assert built.built_now and built.name == name
    assert leftovers(transport, name) == []


@pytest.mark.slow
def test_the_analysis_spec_builds_and_imports_on_a_compute_node(host: Host, make_spec: MakeSpec) -> None:
    """The issue's analysis spec, once (real PyPI, a few seconds with uv): every package imports inside a job."""
    spec = make_spec({"requirements.txt": "numpy\nxarray\nnetCDF4\ndask\ndistributed\n"})
    transport = host()
    built = ensure(transport, spec, TEST_ROOT, keep_tree=True)  # run in place below (env_mode direct's way)
    code = "import numpy, xarray, netCDF4, dask, distributed; print(distributed.__version__)"
    out = transport.run(["srun", "-N1", "-t", "2", built.python, "-c", code], timeout=300).stdout
    assert out.strip() and out.strip() in transport.read_file(f"{built.path}/.hpcjup-lock.txt").decode()

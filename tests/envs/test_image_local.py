"""job/envlocal.sh on the real Slurm mini-cluster: environments run from node-local copies of their images.

As hpcuser, through `srun` on the compute nodes: one copy (and one squashfuse_ll mount) per node and image digest,
shared by two jobs at once; nothing left under the local directory nor in /proc/mounts when the last ends; a
mount a killed job left cleaned by the next job; a corrupt image never used (the env in place, marked bad for the
next build); no room, or unpack instead of FUSE. Each test uses its own local directory ($HPCJUP_ENV_LOCAL) so
other helpers' sessions on the same nodes never meet it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hpcjup.envs.build import BuiltEnv, ensure
from hpcjup.envs.spec import EnvSpec
from hpcjup.job import ENVLOCAL_FILE, LAUNCHER_PATH
from hpcjup.transport import Transport
from tests.envs.conftest import TEST_ROOT

pytestmark = pytest.mark.cluster

Host = Callable[[], Transport]
MakeSpec = Callable[..., EnvSpec]
WRAPPER = LAUNCHER_PATH.with_name(ENVLOCAL_FILE).read_bytes()
# The command a job runs in its environment: where its Python lives, then a pause while the test looks around.
SHOW = (
    "import os, sys, six, time; print('prefix', sys.prefix, os.getpid(), os.getppid(), flush=True); "
    "time.sleep(float(sys.argv[1]))"
)


@pytest.fixture(scope="module")
def spec(make_spec_module: MakeSpec) -> EnvSpec:
    return make_spec_module({"requirements.txt": "six\n"})


@pytest.fixture(scope="module")
def env(host: Host, spec: EnvSpec) -> BuiltEnv:
    return ensure(host(), spec, TEST_ROOT)


@pytest.fixture(scope="module")
def make_spec_module(tmp_path_factory: pytest.TempPathFactory) -> MakeSpec:
    import secrets

    from hpcjup.envs.spec import read_spec

    def _make(files: dict[str, str]) -> EnvSpec:
        directory = tmp_path_factory.mktemp("spec")
        for name, text in files.items():
            (directory / name).write_text(f"# test {secrets.token_hex(8)}\n{text}" if name.endswith(".txt") else text)
        return read_spec(directory)

    return _make


@pytest.fixture(scope="module")
def host(laptop_environ: dict[str, str]) -> Iterator[Host]:
    import os

    from hpcjup.transport import connect

    opened: list[Transport] = []

    def _open() -> Transport:
        transport = connect("minicluster", backend=os.environ.get("HPCJUP_SSH", "openssh"))
        opened.append(transport)
        return transport

    yield _open
    for transport in opened:
        transport.close()


@pytest.fixture
def place(host: Host) -> Iterator[tuple[Transport, str, str]]:
    """(connection, the wrapper's path, a fresh local directory for this test) on the cluster; removed after."""
    transport = host()
    made = transport.run(["sh", "-c", 'd=$(mktemp -d /tmp/hpcjup-img-XXXXXX) && cat >"$d/envlocal.sh" && echo "$d"'])
    top = made.stdout.strip()
    transport.run(["sh", "-c", 'cat >"$1"', "sh", f"{top}/envlocal.sh"], input=WRAPPER)
    transport.run(["mkdir", f"{top}/local"])
    yield transport, f"{top}/envlocal.sh", f"{top}/local"
    transport.run(
        ["sh", "-c", 'grep -o " $1/[^ ]*" /proc/mounts | xargs -r -n1 fusermount3 -uz; rm -rf "$1"', "sh", top]
    )


def mounts(transport: Transport, local: str) -> list[str]:
    out = transport.run(["sh", "-c", 'grep -F " $1/" /proc/mounts || true', "sh", local]).stdout
    return out.splitlines()


def left(transport: Transport, local: str) -> list[str]:
    """Everything under the local directory but its (empty) private dirs and the setup lock."""
    out = transport.run(["sh", "-c", 'cd "$1" && find . -mindepth 1 | sort', "sh", local]).stdout.split()
    return [p for p in out if p not in ("./hpcjup-1001", "./hpcjup-1001/envs", "./hpcjup-1001/envs/.lock")]


def job(wrapper: str, local: str, env: BuiltEnv, seconds: float, mode: str = "auto", node: str = "") -> str:
    """A shell command: one srun job step running the env's Python through the wrapper."""
    where = f"-w {node} " if node else ""
    return (
        f"HPCJUP_ENV_LOCAL={local} srun -N1 -t 2 {where}sh {wrapper} {mode} {env.path} -- "
        f'{env.python} -c "{SHOW}" {seconds}'
    )


def test_two_jobs_on_a_node_share_one_mount_and_the_last_removes_it(
    place: tuple[Transport, str, str], env: BuiltEnv
) -> None:
    transport, wrapper, local = place
    both = (
        f"{job(wrapper, local, env, 6, 'image', 'node1')} >{local}.1 2>&1 & "
        f"sleep 3; {job(wrapper, local, env, 1, 'image', 'node1')} >{local}.2 2>&1; "
        f"grep -F ' {local}/' /proc/mounts | cut -d' ' -f3; echo --; wait; cat {local}.1 {local}.2"
    )
    out = transport.run(["sh", "-c", both], timeout=120).stdout
    lines = out.splitlines()
    # One mount while both ran (the second job finished while the first still held it), by squashfuse_ll: the
    # low-level FUSE daemon, whose imports are the fast ones (envlocal.sh says by how much).
    assert lines[: lines.index("--")] == ["fuse.squashfuse_ll"], out
    prefixes = {line.split()[1] for line in lines if line.startswith("prefix ")}
    (prefix,) = prefixes  # both ran from the same copy
    assert prefix.startswith(f"{local}/hpcjup-1001/envs/") and prefix.endswith("/env"), out
    assert f"{env.path} from {prefix} (image)" in out
    # Only the first job made the copy, and says what it cost (the second found it ready).
    assert out.count(f"{env.path} from {prefix} (image), first use on this node: copy + image in ") == 1, out
    assert mounts(transport, local) == [] and left(transport, local) == []


def test_a_mount_a_killed_job_left_is_cleaned_by_the_next(place: tuple[Transport, str, str], env: BuiltEnv) -> None:
    transport, wrapper, local = place
    # Kill the wrapper and its Python outright (kill -9: no cleanup runs), as a killed launcher's job would be.
    kill = (
        f"{job(wrapper, local, env, 30, 'image', 'node1')} >{local}.1 2>&1 & "
        f"for i in $(seq 50); do grep -q prefix {local}.1 2>/dev/null && break; sleep 0.2; done; "
        f"kill -9 $(grep prefix {local}.1 | cut -d' ' -f3,4); wait; echo killed"
    )
    assert "killed" in transport.run(["sh", "-c", kill], timeout=120).stdout
    assert len(mounts(transport, local)) == 1  # left behind: nobody unmounted it
    out = transport.run(["sh", "-c", job(wrapper, local, env, 0, "image")], timeout=120).stdout
    assert "prefix " + local in out
    assert mounts(transport, local) == [] and left(transport, local) == []


def test_a_corrupt_image_is_never_used(place: tuple[Transport, str, str], env: BuiltEnv, spec: EnvSpec) -> None:
    transport, wrapper, local = place
    image = f"{env.path}.sqsh"
    # Same size, one byte changed: only its hash tells.
    corrupt = 'printf X | dd of="$1" bs=1 seek=2000 conv=notrunc 2>/dev/null'
    transport.run(["sh", "-c", corrupt, "sh", image])
    try:
        result = transport.run(["sh", "-c", job(wrapper, local, env, 0)], timeout=120)
        assert f"prefix {env.path} " in result.stdout  # the env in place
        assert "is corrupt" in result.stderr and "never used" in result.stderr, result.stderr
        assert transport.run(["test", "-e", f"{image}.bad"], check=False).returncode == 0
        assert mounts(transport, local) == [] and left(transport, local) == []
        # The next build packs it again (test_image_pack checks the new hash).
        again = ensure(transport, spec, TEST_ROOT)
        assert again.path == env.path
        assert transport.run(["test", "-e", f"{image}.bad"], check=False).returncode != 0
    finally:
        transport.run(["sh", "-c", 'rm -f "$1.bad"', "sh", image])


def test_no_room_falls_back_to_the_env_in_place_and_says_why(place: tuple[Transport, str, str], env: BuiltEnv) -> None:
    transport, wrapper, _ = place
    result = transport.run(["sh", "-c", job(wrapper, "/nonexistent", env, 0)], timeout=120)
    assert f"prefix {env.path} " in result.stdout
    assert "no node-local storage" in result.stderr and "slower" in result.stderr, result.stderr


def test_unpack_instead_of_fuse(place: tuple[Transport, str, str], env: BuiltEnv) -> None:
    transport, wrapper, local = place
    # The job's output goes to a file (read after): the count of mounts, taken while it runs, comes first whatever
    # the job printed by then (under load the job's own line could come before it).
    watch = (
        f"{job(wrapper, local, env, 2, mode='unpack')} >{local}.1 2>&1 & sleep 1.5; "
        f"grep -cF ' {local}/' /proc/mounts; wait; cat {local}.1"
    )
    out = transport.run(["sh", "-c", watch], timeout=120)
    assert out.stdout.splitlines()[0] == "0" and f"prefix {local}/hpcjup-1001/envs/" in out.stdout, out
    assert "(unpack)" in out.stdout
    assert left(transport, local) == []


def test_auto_mounts_where_fuse_works_on_a_local_disk_and_on_tmpfs(
    place: tuple[Transport, str, str], env: BuiltEnv
) -> None:
    """auto: the image mounted where FUSE works (the first use on a node costs a copy and a mount, not an unpack of
    thousands of files), whether the local storage is a disk or tmpfs; nothing left after either."""
    transport, wrapper, local = place
    disk = transport.run(["sh", "-c", job(wrapper, local, env, 0)], timeout=120)
    assert f"{env.path} from {local}/hpcjup-1001/envs/" in disk.stderr and "(image)" in disk.stderr, disk.stderr
    shm = transport.run(["mktemp", "-d", "/dev/shm/hpcjup-img-XXXXXX"]).stdout.strip()
    try:
        memory = transport.run(["sh", "-c", job(wrapper, shm, env, 0)], timeout=120)
        assert f"{env.path} from {shm}/hpcjup-1001/envs/" in memory.stderr, memory.stderr
        assert "(image)" in memory.stderr, memory.stderr
        assert mounts(transport, shm) == [] and left(transport, shm) == []
    finally:
        transport.run(["rm", "-rf", shm])
    assert left(transport, local) == []

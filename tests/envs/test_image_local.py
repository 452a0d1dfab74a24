"""job/envlocal.sh on the real Slurm mini-cluster: environments run from node-local copies of their images.

As hpcuser, through `srun` on the compute nodes: one copy (and one squashfuse_ll mount) per node and image digest,
shared by two jobs at once; nothing left under the local directory nor in /proc/mounts when the last ends; a
mount a killed job left cleaned by the next job; a corrupt image never used (an env that kept its tree runs in place;
one without it ends the job, and both are marked bad for the next build); no room (in place, or for an env without
its tree unpacked into the session's directory), or unpack instead of FUSE. Each test uses its own local directory ($HPCJUP_ENV_LOCAL) so
other helpers' sessions on the same nodes never meet it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator

import pytest

from hpcjup.envs.build import BuiltEnv, ensure
from hpcjup.envs.spec import EnvSpec
from hpcjup.job import ENV_MEMORY_KB, ENVLOCAL_FILE, LAUNCHER_PATH
from hpcjup.schedulers.base import JobSpec
from hpcjup.schedulers.slurm import Slurm
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
    """Built as by default: its tree dropped, the image is all there is on the shared filesystem."""
    return ensure(host(), spec, TEST_ROOT)


@pytest.fixture(scope="module")
def tree_env(host: Host, make_spec_module: MakeSpec) -> BuiltEnv:
    """Built with its tree kept (env_mode direct's choice), so it can also run in place."""
    return ensure(host(), make_spec_module({"requirements.txt": "six\n"}), TEST_ROOT, keep_tree=True)


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
    remove(transport, top)


def remove(transport: Transport, top: str) -> None:
    """A test's directory on the cluster, and every mount under it."""
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


def job(
    wrapper: str, local: str, env: BuiltEnv, seconds: float, mode: str = "auto", node: str = "", mem: int = 0
) -> str:
    """A shell command: one srun job step running the env's Python through the wrapper; `local`: its local
    candidates (space-separated); `mem`: the job's memory in MB (an allocation of its own: Slurm tells the job)."""
    where = f"-w {node} " if node else ""
    alloc = f"salloc -Q -N1 -t 2 {where}--mem={mem} " if mem else ""
    # The job's memory as a session's job script exports it (the Slurm adapter's own line, evaluated in the step).
    memory = Slurm().environment(JobSpec("t", "/s", ["true"]))[ENV_MEMORY_KB]
    step = shlex.quote(f'export {ENV_MEMORY_KB}={memory}; exec sh "$@"')
    return (
        f"HPCJUP_ENV_LOCAL='{local}' {alloc}srun -N1 -t 2 {where}sh -c {step} sh {wrapper} {mode} {env.path} -- "
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


def kill_a_job(transport: Transport, command: str, out: str) -> None:
    """Run a job's command (output to `out`), then kill its wrapper and its Python outright once it runs (kill -9: no
    cleanup runs), as a killed launcher's job would be."""
    kill = (
        f"{command} >{out} 2>&1 & "
        f"for i in $(seq 50); do grep -q prefix {out} 2>/dev/null && break; sleep 0.2; done; "
        f"kill -9 $(grep prefix {out} | cut -d' ' -f3,4); wait; echo killed"
    )
    assert "killed" in transport.run(["sh", "-c", kill], timeout=120).stdout


def test_a_mount_a_killed_job_left_is_cleaned_by_the_next(place: tuple[Transport, str, str], env: BuiltEnv) -> None:
    transport, wrapper, local = place
    kill_a_job(transport, job(wrapper, local, env, 30, "image", "node1"), f"{local}.1")
    assert len(mounts(transport, local)) == 1  # left behind: nobody unmounted it
    out = transport.run(["sh", "-c", job(wrapper, local, env, 0, "image")], timeout=120).stdout
    assert "prefix " + local in out
    assert mounts(transport, local) == [] and left(transport, local) == []


def _corrupt(transport: Transport, image: str) -> None:
    """Same size, one byte changed: only its hash tells."""
    transport.run(["sh", "-c", 'printf X | dd of="$1" bs=1 seek=2000 conv=notrunc 2>/dev/null', "sh", image])


def test_a_corrupt_image_is_never_used(place: tuple[Transport, str, str], env: BuiltEnv, spec: EnvSpec) -> None:
    """Without its tree there is nothing else to run: the job ends (exit 3) and says why; the next build makes it
    again (test_image_pack: from its lock)."""
    transport, wrapper, local = place
    image = f"{env.path}.sqsh"
    _corrupt(transport, image)
    result = transport.run(["sh", "-c", job(wrapper, local, env, 0)], timeout=120, check=False)
    assert result.returncode == 3 and "prefix " not in result.stdout, result
    assert "is corrupt" in result.stderr and "never used" in result.stderr, result.stderr
    assert "cannot run on " in result.stderr and "the next start builds it again" in result.stderr, result.stderr
    assert transport.run(["test", "-e", f"{image}.bad"], check=False).returncode == 0
    assert mounts(transport, local) == [] and left(transport, local) == []
    again = ensure(transport, spec, TEST_ROOT)
    assert again.path == env.path and again.built_now
    assert transport.run(["test", "-e", f"{image}.bad"], check=False).returncode != 0


def test_a_corrupt_image_of_an_env_with_its_tree_runs_it_in_place(
    place: tuple[Transport, str, str], tree_env: BuiltEnv
) -> None:
    transport, wrapper, local = place
    image = f"{tree_env.path}.sqsh"
    _corrupt(transport, image)
    try:
        result = transport.run(["sh", "-c", job(wrapper, local, tree_env, 0)], timeout=120)
        assert f"prefix {tree_env.path} " in result.stdout  # the env in place
        assert "is corrupt" in result.stderr and "never used" in result.stderr, result.stderr
        assert transport.run(["test", "-e", f"{image}.bad"], check=False).returncode == 0
        assert mounts(transport, local) == [] and left(transport, local) == []
    finally:
        transport.run(["sh", "-c", 'rm -f "$1.bad"', "sh", image])


def test_no_room_falls_back_to_the_env_in_place_and_says_why(
    place: tuple[Transport, str, str], tree_env: BuiltEnv
) -> None:
    transport, wrapper, _ = place
    result = transport.run(["sh", "-c", job(wrapper, "/nonexistent", tree_env, 0)], timeout=120)
    assert f"prefix {tree_env.path} " in result.stdout
    assert "no node-local storage" in result.stderr and "slower" in result.stderr, result.stderr


def test_no_room_unpacks_an_env_without_its_tree_into_the_session_directory(
    place: tuple[Transport, str, str], env: BuiltEnv
) -> None:
    """No node-local storage: the session's own copy, on the shared filesystem, this machine's (its host name: the
    mini-cluster's two nodes are one machine); gone at the end."""
    transport, wrapper, _ = place
    top = wrapper.rsplit("/", 1)[0]
    machine = transport.run(["uname", "-n"]).stdout.strip()
    result = transport.run(["sh", "-c", job(wrapper, "/nonexistent", env, 0, node="node2")], timeout=120)
    assert f"prefix {top}/nodes/{machine}/hpcjup-1001/envs/" in result.stdout, result
    assert "unpacked into" in result.stderr and "no node-local storage" in result.stderr, result.stderr
    assert left(transport, f"{top}/nodes/{machine}") == []


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


@pytest.fixture
def shm(place: tuple[Transport, str, str]) -> Iterator[str]:
    """A fresh directory on /dev/shm (tmpfs: RAM) for this test; removed after."""
    transport = place[0]
    made = transport.run(["mktemp", "-d", "/dev/shm/hpcjup-img-XXXXXX"]).stdout.strip()
    yield made
    remove(transport, made)


def test_auto_unpacks_into_ram_and_mounts_on_a_local_disk(
    place: tuple[Transport, str, str], shm: str, env: BuiltEnv
) -> None:
    """auto: unpacked on tmpfs (imports at local-disk speed, a first use of a copy and an unpack in RAM), where its
    tree fits in a quarter of the job's memory; mounted where the local storage is a disk; nothing left after."""
    transport, wrapper, local = place
    disk = transport.run(["sh", "-c", job(wrapper, local, env, 0)], timeout=120)
    assert f"{env.path} from {local}/hpcjup-1001/envs/" in disk.stderr and "(image)" in disk.stderr, disk.stderr
    memory = transport.run(["sh", "-c", job(wrapper, shm, env, 0)], timeout=120)
    assert f"prefix {shm}/hpcjup-1001/envs/" in memory.stdout, memory.stdout
    assert "(unpack), first use on this node: copy + unpack in " in memory.stderr, memory.stderr
    assert mounts(transport, shm) == [] and left(transport, shm) == [] and left(transport, local) == []


def test_ram_is_used_within_a_quarter_of_the_jobs_memory(
    place: tuple[Transport, str, str], shm: str, env: BuiltEnv
) -> None:
    """A job whose memory (Slurm's --mem) is under four times the env's tree: mounted from a disk, not unpacked into
    RAM (tmpfs pages count against that job's memory); a ready copy another job made in RAM is used as it is."""
    transport, wrapper, local = place
    small = 8  # MB: a quarter is 2 MB, the env's tree is tens of MB
    # tmpfs offered first, a disk second: neither the tree nor the image fits in RAM's quarter, the disk takes it.
    tight = transport.run(["sh", "-c", job(wrapper, f"{shm} {local}", env, 0, mem=small)], timeout=120)
    assert f"{env.path} from {local}/hpcjup-1001/envs/" in tight.stderr and "(image)" in tight.stderr, tight.stderr
    # One job unpacks into RAM and holds its copy; a small one on the same node, offered a local disk first, uses
    # that copy (not a mount of its own on the disk).
    both = (
        f"{job(wrapper, f'{local} {shm}', env, 6, node='node1')} >{local}.1 2>&1 & sleep 3; "
        f"{job(wrapper, f'{local} {shm}', env, 0, node='node1', mem=small)} >{local}.2 2>&1; "
        f"wait; cat {local}.1; echo --; cat {local}.2"
    )
    out = transport.run(["sh", "-c", both], timeout=120).stdout
    first, second = out.split("--\n")
    assert "(unpack), first use on this node" in first and f"prefix {shm}/hpcjup-1001/envs/" in first, out
    assert "(unpack)" in second and "first use" not in second and f"prefix {shm}/hpcjup-1001/envs/" in second, out
    assert mounts(transport, local) == [] and left(transport, shm) == [] and left(transport, local) == []


def test_a_copy_a_killed_job_left_in_ram_is_cleaned_by_a_job_that_mounts_on_disk(
    place: tuple[Transport, str, str], shm: str, env: BuiltEnv
) -> None:
    transport, wrapper, local = place
    kill_a_job(transport, job(wrapper, shm, env, 30, node="node1"), f"{local}.1")
    assert left(transport, shm) != []  # left behind: nobody removed it
    # The next job chooses a mount on the disk (its memory is small) and still cleans what the killed one left.
    out = transport.run(["sh", "-c", job(wrapper, f"{local} {shm}", env, 0, mem=8)], timeout=120)
    assert f"prefix {local}/hpcjup-1001/envs/" in out.stdout and "(image)" in out.stderr, out
    assert left(transport, shm) == [] and left(transport, local) == [] and mounts(transport, local) == []

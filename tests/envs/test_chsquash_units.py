"""Charliecloud SquashFS images (envs/chsquash.py): found in the job's commands, mounted by job/envlocal.sh.

The job scripts are rendered as `start` renders them; envlocal.sh runs for real in sh on this machine with a real
SquashFS image (mksquashfs) and a real squashfuse mount in a temporary local directory ($HPCJUP_ENV_LOCAL). The
cluster tests (tests/cli/test_containers.py, test_image_nodes.py) run the whole thing on the Slurm nodes.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.config.resources import Resources
from hpcjup.envs.chsquash import SUFFIXES, mount_args, squash_images
from hpcjup.job import ENVLOCAL_FILE, LAUNCHER_PATH
from hpcjup.schedulers import get_scheduler
from hpcjup.session.envplan import Located
from hpcjup.session.jobscript import launcher_command, python_command, unwrapped
from hpcjup.session.layout import SessionPaths
from hpcjup.session.request import DaskRequest, StartRequest

PATHS = SessionPaths("/home/u", "lab")
IMAGE = "/home/u/.hpcjup/envs/images/sha256-" + "ab" * 32 + ".sqfs"
ENVLOCAL = ["sh", PATHS.file(ENVLOCAL_FILE)]

_word = st.from_regex(r"/?[a-z0-9_.-]{1,8}(/[a-z0-9_.-]{1,8}){0,2}", fullmatch=True)
_options = st.lists(st.sampled_from(["-b", "/home/u", "--bind=/opt/x", "-w", "--no-passwd"]), max_size=4)


@given(st.lists(_word, max_size=3), _options, _word, st.sampled_from(["", *SUFFIXES]), st.lists(_word, max_size=3))
def test_the_image_ch_run_runs_is_found_only_where_it_is_a_squashfs_file(
    before: list[str], options: list[str], image: str, suffix: str, after: list[str]
) -> None:
    before = [w for w in before if not w.endswith("ch-run")]
    argv = [*before, "ch-run", *options, image + suffix, "--", "python3", *after]
    assert squash_images(argv) == ([image + suffix] if suffix else [])
    assert mount_args([shlex.join(argv)]) == ([f"image:{image}{suffix}"] if suffix else [])
    assert squash_images([*before, image + ".sqfs", "--", "python3"]) == [], "no ch-run: none"


class Settings:
    def __init__(self, **values: Any) -> None:
        self.values = values

    def value(self, key: str) -> Any:
        return self.values.get(key)


def request(nodes: int = 1, image: str = IMAGE, envs: Located | None = None, **settings: Any) -> StartRequest:
    values = {"image": image, "python": "/env/bin/python", "container_runtime": "charliecloud", **settings}
    return StartRequest(
        resources=Resources(nodes=nodes, time="1:00:00"),
        name="lab",
        dask=DaskRequest(),
        settings=Settings(**values),  # type: ignore[arg-type]
        envs=envs,
    )


def _inner(argv: list[str]) -> list[str]:
    """The command after envlocal.sh's `--`, checking what comes before it."""
    at = argv.index(ENVLOCAL[1])
    assert argv[at - 1 : at + 3] == [*ENVLOCAL, "auto", f"image:{IMAGE}"] and argv[at + 3] == "--", argv
    return argv[at + 4 :]


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_a_squashfs_image_is_mounted_before_the_launcher_and_for_the_workers(scheduler: str) -> None:
    """The launcher, the notebook's scale-out jobs ($HPCJUP_ENV_WRAP) and worker groups (python_command) go
    through envlocal.sh `image:FILE`. Before, ch-run was handed the file, which Debian's 0.31 cannot run."""
    sched = get_scheduler(scheduler)
    argv = launcher_command(request(), PATHS, sched)
    assert argv[1] == f"HPCJUP_ENV_WRAP={shlex.join([*ENVLOCAL, 'auto', f'image:{IMAGE}', '--'])}", argv
    assert _inner(argv)[:6] == ["env", "-u", "HPCJUP_LAUNCH", "ch-run", "-b", "/home/u"], argv
    workers = shlex.split(python_command(request(), PATHS, sched))
    assert _inner(workers) == ["env", "-u", "HPCJUP_LAUNCH", "ch-run", "-b", "/home/u", IMAGE, "--", "/env/bin/python"]
    assert unwrapped(workers, PATHS) == workers, "the login node (a worker group's render) mounts it too"


def test_several_nodes_mount_it_before_the_relay() -> None:
    argv = launcher_command(request(nodes=2), PATHS, get_scheduler("slurm"))
    inner = _inner(argv)
    assert inner[:3] == ["sh", PATHS.file("relay.sh"), "--"] and inner[3:6] == ["ch-run", "-b", "/home/u"], argv


def test_a_kernels_image_is_mounted_and_an_env_mode_of_direct_still_mounts_it() -> None:
    kernel = f"env -u HPCJUP_LAUNCH ch-run -b /home/u {IMAGE} -- python3"
    envs = Located("/root/envs/server/bin/python", (("boxed", kernel),), ("b:/root/envs/server",), ())
    argv = launcher_command(request(image=None, envs=envs), PATHS, get_scheduler("slurm"))
    at = argv.index(ENVLOCAL[1])
    assert argv[at + 1 : at + 5] == ["auto", "/root/envs/server", f"image:{IMAGE}", "--"], argv
    assert f"boxed={kernel}" in argv
    direct = launcher_command(request(image=None, envs=envs, env_mode="direct"), PATHS, get_scheduler("slurm"))
    at = direct.index(ENVLOCAL[1])
    assert direct[at + 1 : at + 4] == ["direct", f"image:{IMAGE}", "--"], direct


@pytest.mark.parametrize(
    "req",
    [request(image="/home/u/img.ch"), request(container_runtime="apptainer", image="/home/u/img.sqfs")],
    ids=["directory", "apptainer"],
)
def test_a_directory_or_another_runtimes_image_is_run_as_before(req: StartRequest) -> None:
    argv = launcher_command(req, PATHS, get_scheduler("slurm"))
    assert ENVLOCAL[1] not in argv and not python_command(req, PATHS, get_scheduler("slurm")).startswith("sh "), argv


# envlocal.sh for real: a SquashFS image mounted with squashfuse in a temporary local directory.
needs_fuse = pytest.mark.skipif(
    not (Path("/dev/fuse").exists() and shutil.which("squashfuse") and shutil.which("mksquashfs")),
    reason="needs /dev/fuse, squashfuse and mksquashfs",
)
SHOW = 'cat "$1/marker"; grep -c " $1 " /proc/mounts; printf "%s\\n" "$2"; cat'  # the last: its stdin


def _image(tmp_path: Path, name: str | None = None, text: str = "inside the image") -> Path:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "marker").write_text(text + "\n")
    built = tmp_path / "built.sqfs"
    subprocess.run(["mksquashfs", str(tree), str(built), "-quiet", "-no-progress"], check=True, capture_output=True)
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    return built.rename(tmp_path / (name or f"sha256-{digest}.sqfs"))


def _envlocal(
    tmp_path: Path,
    image: Path,
    *command: str,
    mode: str = "auto",
    path: str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "session" / ENVLOCAL_FILE
    script.parent.mkdir(exist_ok=True)
    script.write_bytes(LAUNCHER_PATH.with_name(ENVLOCAL_FILE).read_bytes())
    local = tmp_path / "local"
    local.mkdir(mode=0o700, exist_ok=True)
    argv = ["sh", str(script), mode, f"image:{image}", "--", *command]
    env = {"PATH": path, "HPCJUP_ENV_LOCAL": str(local)}
    return subprocess.run(argv, env=env, input="its stdin\n", capture_output=True, text=True, timeout=60)


@needs_fuse
@pytest.mark.parametrize("named", [True, False], ids=["pulled", "users-own"])
def test_envlocal_mounts_an_image_file_renames_it_inside_arguments_and_leaves_nothing(
    tmp_path: Path, named: bool
) -> None:
    image = _image(tmp_path, None if named else "mine.sqfs")
    done = _envlocal(tmp_path, image, "sh", "-c", SHOW, "sh", str(image), f"x=env ch-run {image} -- python3")
    assert done.returncode == 0, done.stderr
    marker, mounts, inner, given = done.stdout.splitlines()
    mount = inner.split()[2]
    assert marker == "inside the image" and mounts == "1", done.stdout
    assert given == "its stdin", "the command reads envlocal.sh's stdin (a worker group's render reads its spec)"
    assert mount.startswith(str(tmp_path / "local")) and inner == f"x=env ch-run {mount} -- python3", inner
    assert f"{image} from {mount} (image)" in done.stderr
    assert not list((tmp_path / "local").glob("hpcjup-*/envs/*/")), "the copy went with the last user"
    assert str(tmp_path) not in Path("/proc/mounts").read_text()


@needs_fuse
def test_a_corrupt_image_is_never_run_marked_bad_and_the_job_ends_saying_why(tmp_path: Path) -> None:
    image = _image(tmp_path)
    image.write_bytes(image.read_bytes()[:-4096] + b"\0" * 4096)  # its name's sha256 no longer its own
    done = _envlocal(tmp_path, image, "echo", "ran")
    assert done.returncode == 1 and "ran" not in done.stdout, done
    assert f"{image} is corrupt" in done.stderr and "pulls it again" in done.stderr, done.stderr
    assert "cannot run the container image" in done.stderr and "ch-convert" in done.stderr, done.stderr
    assert Path(f"{image}.bad").exists(), "the next start pulls it again (container_script: never cached)"
    assert str(tmp_path) not in Path("/proc/mounts").read_text()


@needs_fuse
def test_a_mount_a_killed_job_left_is_cleaned_by_the_next_job(tmp_path: Path) -> None:
    """kill -9 of envlocal.sh and its command (a job killed outright) leaves the mount; the next job on the node,
    whatever image it runs, unmounts and removes it at its start."""
    import os
    import signal
    import time

    first = _image(tmp_path / "a")
    script = tmp_path / "session" / ENVLOCAL_FILE
    _envlocal(tmp_path, first, "true")  # writes the script and the local directory
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HPCJUP_ENV_LOCAL": str(tmp_path / "local")}
    argv = ["sh", str(script), "auto", f"image:{first}", "--", "sleep", "60"]
    killed = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 20
    while str(tmp_path / "local") not in Path("/proc/mounts").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert str(tmp_path / "local") in Path("/proc/mounts").read_text(), "the killed job's mount is still there"
    done = _envlocal(tmp_path, _image(tmp_path / "b", text="another image"), "true")
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) not in Path("/proc/mounts").read_text()
    assert not list((tmp_path / "local").glob("hpcjup-*/envs/*/")), "nothing of either job is left"


@needs_fuse
def test_without_squashfuse_the_job_ends_naming_the_fix(tmp_path: Path) -> None:
    """env_mode image where the node has no squashfuse: nothing to run the file with; the job ends saying why and
    what to do (auto would unpack it with unsquashfs instead)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if not tool.name.startswith("squashfuse"):
            (bindir / tool.name).symlink_to(tool)
    image = _image(tmp_path)
    done = _envlocal(tmp_path, image, "echo", "ran", mode="image", path=str(bindir))
    assert done.returncode == 1 and "ran" not in done.stdout, done
    assert f"cannot run the container image {image}" in done.stderr and "no usable FUSE" in done.stderr, done.stderr
    assert "ch-convert" in done.stderr and "Apptainer" in done.stderr, done.stderr
    unpacked = _envlocal(tmp_path, image, "sh", "-c", 'cat "$1/marker"', "sh", str(image), path=str(bindir))
    assert unpacked.returncode == 0 and unpacked.stdout == "inside the image\n", unpacked
    assert "(unpack)" in unpacked.stderr, unpacked.stderr

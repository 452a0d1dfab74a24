"""`hpcjup doctor`: the real CLI against the mini-cluster, a healthy profile and broken ones."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpcjup.errors import ConnectError, ExitCode
from hpcjup.session.doctor import Check, Report, Status, run_checks
from tests.cli.helpers import CLUSTER_PYTHON

pytestmark = pytest.mark.one_backend

# Registers the new commands for a real `hpcjup` process until the lead adds them to COMMANDS.
REGISTER = (
    "import sys; from hpcjup.cli import COMMANDS, main; "
    "[COMMANDS.setdefault(n, (m, 'command', h)) for n, m, h in "
    "(('profile', 'profile', 'Profiles.'), ('sites', 'sites', 'Site presets.'), ('doctor', 'doctor', 'Checks.'))]; "
    "main(sys.argv[1:])"
)
HEALTHY = """\
[defaults]
host = "minicluster"

[profiles.good]
partition = "booster"
time = "30"

[profiles.broken]
partition = "nosuch"
python = "/usr/bin/python3"
"""


def hpcjup(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-c", REGISTER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def write_config(env: dict[str, str], text: str) -> Path:
    path = Path(env["XDG_CONFIG_HOME"]) / "hpcjup" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def statuses(stdout: str) -> dict[str, str]:
    return {check["name"]: check["status"] for check in json.loads(stdout)["checks"]}


# -- against the mini-cluster -----------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.transport  # counts authentications
def test_healthy_profile_passes(minicluster: Any, laptop_env: dict[str, str]) -> None:
    write_config(laptop_env, HEALTHY)
    auths = minicluster.auth_count()
    result = hpcjup(["doctor", "--profile", "good", "--json"], laptop_env)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["host"] == "minicluster" and data["profile"] == "good"
    assert set(statuses(result.stdout).values()) == {"pass"}, result.stdout
    checks = {c["name"]: c["summary"] for c in data["checks"]}
    assert "jupyter_server 2." in checks["jupyter"] and "jupyterlab 4." in checks["jupyter"]
    assert "distributed 20" in checks["dask"]
    assert checks["environment"].startswith("Python 3.") and CLUSTER_PYTHON.rsplit("/", 1)[0] in checks["environment"]
    assert "/home/hpcuser/.hpcjup/sessions" in checks["sessions"]
    assert minicluster.auth_count() - auths == 1, "doctor must authenticate exactly once"
    assert not [job for job in minicluster.jobs() if job["name"] == "hpcjup-doctor"], "doctor submitted a job"


@pytest.fixture
def tmpfs() -> Iterator[Callable[[str], str]]:
    """Mounts small memory file systems hpcuser owns (`mount -t tmpfs -o OPTIONS`); unmounted afterwards."""
    mounts: list[Path] = []

    def _mount(options: str) -> str:
        mount = Path(f"/tmp/hpcjup-doctor-{os.getpid()}-{len(mounts)}")
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},mode=0755", "tmpfs", str(mount)], check=True)
        mounts.append(mount)
        shutil.chown(mount, "hpcuser")
        return str(mount)

    yield _mount
    for mount in mounts:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


@pytest.mark.cluster
def test_env_root_is_checked_in_the_environment_checks_command(
    minicluster: Any, laptop_env: dict[str, str], tmpfs: Callable[[str], str]
) -> None:
    """The env root (HPCJUP_ENV_ROOT here, as a start would use it): space and inodes from df, a memory file
    system the compute nodes cannot see, a $VAR the login node lacks; one command for all of it."""
    write_config(laptop_env, HEALTHY)

    def env_root(root: str) -> dict[str, Any]:
        result = hpcjup(["doctor", "--profile", "good", "--json"], {**laptop_env, "HPCJUP_ENV_ROOT": root})
        checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
        return {**checks["env-root"], "exit": result.returncode}

    small = tmpfs("size=4m,nr_inodes=1000")
    found = env_root(f"{small}/envs")
    assert (found["status"], found["exit"]) == ("fail", ExitCode.REMOTE), found
    assert f"{small}/envs: 0.0 GB and" in found["summary"] and "too little for one environment" in found["summary"]
    assert "env_root" in found["fix"] and "18,000 files" in found["fix"]
    large = env_root(tmpfs("size=8g,nr_inodes=200000"))
    assert (large["status"], large["exit"]) == ("warn", 0) and "compute nodes do not see" in large["summary"], large
    unset = env_root("$HPCJUP_NO_SUCH_VARIABLE/envs")
    assert unset["status"] == "fail" and "$HPCJUP_NO_SUCH_VARIABLE is not set on the login node" in unset["summary"]
    readonly = env_root("/proc/hpcjup-envs")
    assert readonly["status"] == "fail" and "cannot make /proc/hpcjup-envs" in readonly["summary"]


@pytest.mark.cluster
def test_broken_profile_names_each_failure_and_its_fix(minicluster: Any, laptop_env: dict[str, str]) -> None:
    write_config(laptop_env, HEALTHY)
    result = hpcjup(["doctor", "--profile", "broken"], laptop_env)
    assert result.returncode == ExitCode.REMOTE, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failed = [line.split()[1] for line in lines if line.startswith("FAIL")]
    assert failed == ["partition", "request", "jupyter", "dask"], result.stdout
    assert "no partition 'nosuch' (from profile broken (" in result.stdout
    assert "fix: Choose one of: batch, booster" in result.stdout
    assert "invalid partition specified: nosuch" in result.stdout
    assert "jupyter_server and jupyterlab missing in /usr/bin/python3" in result.stdout
    assert "fix: /usr/bin/python3 -m pip install -U jupyterlab 'jupyter_server>=2.20'" in result.stdout
    assert "4 of 12 checks failed." in result.stderr


@pytest.mark.cluster
def test_command_line_beats_the_profile(minicluster: Any, laptop_env: dict[str, str]) -> None:
    write_config(laptop_env, HEALTHY)
    result = hpcjup(
        ["doctor", "--profile", "broken", "-p", "batch", "--python", CLUSTER_PYTHON, "--no-dask", "--json"], laptop_env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert statuses(result.stdout)["dask"] == "skip"


@pytest.fixture
def user_modulefiles(minicluster: Any) -> Iterator[str]:
    """A modulefile in the cluster user's home that puts `hpcjup-test-python` (the cluster env's Python) on PATH."""
    entry = pwd.getpwnam(minicluster.user)
    root = Path(entry.pw_dir) / ".hpcjup-doctor-test"
    (root / "mods" / "labenv").mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    tool = root / "bin" / "hpcjup-test-python"
    tool.write_text(f'#!/bin/sh\nexec {CLUSTER_PYTHON} "$@"\n')
    tool.chmod(0o755)
    (root / "mods" / "labenv" / "1.0").write_text(f"#%Module1.0\nprepend-path PATH {root / 'bin'}\n")
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    yield "~/.hpcjup-doctor-test/mods"
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.cluster
def test_environment_from_modules_activates_on_the_login_node(
    minicluster: Any, laptop_env: dict[str, str], user_modulefiles: str
) -> None:
    if not Path("/usr/share/modules/init/sh").exists():
        message = "environment-modules is not installed (tests/cluster/install.sh installs it)"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    made = hpcjup(
        [
            "profile",
            "create",
            "mods",
            "--host",
            "minicluster",
            "-p",
            "booster",
            f"module_use={user_modulefiles}",
            "modules=labenv",
            "python=hpcjup-test-python",
        ],
        laptop_env,
    )
    assert made.returncode == 0, made.stderr
    good = hpcjup(["doctor", "--profile", "mods", "--json"], laptop_env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert statuses(good.stdout)["environment"] == statuses(good.stdout)["jupyter"] == "pass"
    overridden = hpcjup(["doctor", "--profile", "mods", "--json"], {**laptop_env, "HPCJUP_PYTHON": "/usr/bin/python3"})
    assert overridden.returncode == ExitCode.REMOTE  # $HPCJUP_PYTHON beats the profile's python, which has no Jupyter
    assert statuses(overridden.stdout)["jupyter"] == "fail"
    without = write_config(laptop_env, '[profiles.nomod]\nhost = "minicluster"\nmodules = ["nosuchmodule"]\n')
    assert without.exists()
    failed = hpcjup(["doctor", "--profile", "nomod"], laptop_env)
    assert failed.returncode == ExitCode.REMOTE
    assert (
        "FAIL  environment" in failed.stdout
        and "hpcjup: module load failed" in failed.stdout
        and "nosuchmodule" in failed.stdout
    )


@pytest.mark.cluster
def test_site_preset_is_checked_against_the_cluster(minicluster: Any, laptop_env: dict[str, str]) -> None:
    result = hpcjup(["doctor", "--site", "juwels", "--host", "minicluster", "--json"], laptop_env)
    assert result.returncode == ExitCode.REMOTE
    data = json.loads(result.stdout)
    assert data["site"] == "juwels"
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["partition"]["status"] == "fail" and "develbooster" in checks["partition"]["summary"]
    assert checks["account"]["status"] == "fail" and "JUWELS needs one" in checks["account"]["summary"]
    assert checks["environment"]["status"] == "fail" and "Stages/2025" in (checks["environment"]["details"] or "")


@pytest.mark.cluster
@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_ssh_backend_from_the_command_line(backend: str, minicluster: Any, laptop_env: dict[str, str]) -> None:
    other = "paramiko" if backend == "openssh" else "openssh"
    write_config(laptop_env, HEALTHY + f'ssh = "{other}"\n')  # in [profiles.broken]: the command line must win
    env = {**laptop_env, "HPCJUP_SSH": other}  # and over $HPCJUP_SSH (the test run's backend leg)
    result = hpcjup(["doctor", "--profile", "broken", "--python", CLUSTER_PYTHON, "--ssh", backend, "--json"], env)
    ssh = json.loads(result.stdout)["checks"][0]
    assert ssh["status"] == "pass" and f"minicluster ({backend}) in " in ssh["summary"], ssh


@pytest.mark.cluster
@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_accept_new_host_key(backend: str, minicluster: Any, laptop_env: dict[str, str]) -> None:
    write_config(laptop_env, HEALTHY)
    known_hosts = Path(laptop_env["HOME"]) / ".ssh" / "known_hosts"
    known_hosts.write_text("")  # a first login: the host key is unknown
    args = ["doctor", "--profile", "good", "--ssh", backend, "--json"]
    refused = hpcjup(args, laptop_env)
    assert refused.returncode == ExitCode.AUTH, refused.stdout + refused.stderr
    assert "Unknown host key" in json.loads(refused.stdout)["checks"][0]["summary"]
    assert known_hosts.read_text() == ""
    accepted = hpcjup([*args, "--accept-new-host-key"], laptop_env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert len(known_hosts.read_text().splitlines()) == 1


# -- without the cluster ----------------------------------------------------------------------------


def test_unreachable_host_exits_3_and_skips_the_rest(laptop_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = hpcjup(["doctor", "--host", f"hpcuser@127.0.0.1:{port}", "--json"], laptop_env)
    assert result.returncode == ExitCode.CONNECT, result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert checks[0]["name"] == "ssh" and checks[0]["status"] == "fail" and checks[0]["fix"]
    assert {c["status"] for c in checks[1:]} == {"skip"}


def test_no_host_is_a_usage_error(laptop_env: dict[str, str]) -> None:
    result = hpcjup(["doctor"], laptop_env)
    assert result.returncode == ExitCode.USAGE and "--host" in result.stderr


@pytest.mark.skipif(not Path(CLUSTER_PYTHON).exists(), reason="no cluster env (tests/cluster/install.sh)")
def test_local_environment(laptop_env: dict[str, str]) -> None:
    result = hpcjup(["doctor", "--local", "--python", CLUSTER_PYTHON, "--json"], laptop_env)
    assert result.returncode == 0, result.stdout + result.stderr
    got = statuses(result.stdout)
    assert got["ssh"] == "skip" and "scheduler" not in got
    assert got["environment"] == got["jupyter"] == got["sessions"] == "pass"
    broken = hpcjup(["doctor", "--local", "--python", "/usr/bin/python3"], laptop_env)
    assert broken.returncode == ExitCode.REMOTE and "FAIL  jupyter" in broken.stdout


class FakeSlurm:
    """A transport whose `sinfo` prints canned partitions (the mini-cluster's have no time limits)."""

    name = "fake"

    def run(self, argv: list[str], **_: Any) -> Any:
        from hpcjup.transport.base import CommandResult

        return CommandResult(
            tuple(argv), 0, "batch*|up|1-00:00:00\nbatch*|up|1-00:00:00\ndevel|up|2:00:00\nold|down|infinite\n", ""
        )


@pytest.mark.parametrize(
    ("partition", "time", "status", "words"),
    [
        (None, None, Status.PASS, "the cluster's default (batch)"),
        ("devel", "1:00:00", Status.PASS, "devel is up, time limit 2:00:00"),
        ("devel", "3:00:00", Status.FAIL, "time 3:00:00 is more than devel's limit 2:00:00"),
        ("old", None, Status.WARN, "old is down"),
        ("gpus", None, Status.FAIL, "no partition 'gpus'"),
    ],
)
def test_partition_check(partition: str | None, time: str | None, status: Status, words: str, tmp_path: Path) -> None:
    from hpcjup.config.profiles import resolve
    from hpcjup.schedulers.slurm import check_partition  # the Slurm adapter's own check

    resolved = resolve({"partition": partition, "time": time}, profile=None, env={}, path=tmp_path / "none.toml")
    check = check_partition(FakeSlurm(), resolved)  # type: ignore[arg-type]
    assert check.status is status and words in check.summary
    if status is Status.FAIL and partition == "gpus":
        assert check.fix == "Choose one of: batch, devel, old (`sinfo -s` shows them)."


def test_report_exit_codes() -> None:
    ok = Report(
        "h", [Check("ssh", Status.PASS, "x"), Check("dask-jobqueue", Status.SKIP, "y"), Check("dask", Status.WARN, "z")]
    )
    assert ok.ok and ok.exit_code == ExitCode.OK
    assert Report("h", [Check("jupyter", Status.FAIL, "x")]).exit_code == ExitCode.REMOTE

    def refuse(host: str) -> Any:
        raise ConnectError(f"Cannot reach {host}.", hint="Check the network.")

    report = run_checks(None, "nowhere", refuse)  # type: ignore[arg-type]
    assert report.exit_code == ExitCode.CONNECT and report.checks[0].fix == "Check the network."


@given(st.text(max_size=80))
def test_any_env_root_line_is_a_check(line: str) -> None:
    """The env-root line comes from the login node's shell (df, stat): whatever it says, doctor reports a check."""
    from hpcjup.session.doctor import _root_check

    check = _root_check(f"noise\nHPCJUP-ENVROOT {line}\n", "~/.hpcjup/envs")
    assert check.name == "env-root" and check.status in set(Status)
    assert _root_check("", "x").status is Status.FAIL
    assert _root_check("HPCJUP-ENVROOT ok writable 99999999 9999999 nfs /p/envs", "x").status is Status.PASS


@pytest.mark.cluster
def test_node_reads_the_env_root_back_from_a_compute_node(
    minicluster: Any, laptop_env: dict[str, str], tmpfs: Callable[[str], str]
) -> None:
    """`doctor --node`: one short Slurm job looks at the env root as the login node names it. It passes for a
    root the nodes share; it fails for one whose server environment cannot run there: here a file system mounted
    noexec (the mini-cluster's nodes share every mount with the login node, so a root missing only on the nodes
    cannot be made here; the job's `missing` answer takes the same path to the same FAIL)."""
    write_config(laptop_env, HEALTHY)

    def node_check(root: str) -> dict[str, Any]:
        result = hpcjup(["doctor", "--profile", "good", "--node", "--json"], {**laptop_env, "HPCJUP_ENV_ROOT": root})
        checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
        return {**checks["env-root-node"], "exit": result.returncode}

    shared = node_check(".hpcjup/envs-node-test")
    assert shared["status"] == "pass", shared
    assert "/home/hpcuser/.hpcjup/envs-node-test is visible on node" in shared["summary"], shared
    root = Path(tmpfs("noexec,size=8g,nr_inodes=200000")) / "envs"
    server = root / "server-0000000000000000"
    (server / "bin").mkdir(parents=True)
    shutil.copy("/usr/bin/python3", server / "bin" / "python")
    (server / ".hpcjup-env.json").write_text("{}")
    subprocess.run(["chown", "-R", "hpcuser", str(root)], check=True)
    broken = node_check(str(root))
    assert (broken["status"], broken["exit"]) == ("fail", ExitCode.REMOTE), broken
    assert "server-0000000000000000's Python does not run there" in broken["summary"], broken
    assert "noexec" in broken["fix"]
    assert not [job for job in minicluster.active_jobs() if job["name"] == "hpcjup-doctor"]

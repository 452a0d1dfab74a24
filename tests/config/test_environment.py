"""The job's environment lines and Python argv: rendered as expected, and working in a real non-interactive shell.

Real here: Environment Modules (Debian's environment-modules), Lmod when installed, a real venv,
and Charliecloud (`ch-run`) with an image directory built from this machine's own Python. conda
and micromamba are not packaged for Debian: their activation is run against small stand-ins that
implement the `shell ... hook` / `activate` protocol, which checks our dispatch, not conda itself.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpcjup.config.environment import (
    conda_lines,
    guess_runtime,
    has_jupyterlab,
    launcher_python,
    local_python,
    local_requirements,
    module_lines,
    setup_lines,
    shell_path,
)
from hpcjup.errors import UsageError

ENV_MODULES_INIT = Path("/usr/share/modules/init/sh")
# Lmod's homes: a developer's own ($HPCJUP_TEST_LMOD_HOME), Debian's package, the unpacked copy from install.sh
# (Debian's lmod conflicts with environment-modules, so install.sh unpacks it instead of installing it).
LMOD_HOMES = (
    os.environ.get("HPCJUP_TEST_LMOD_HOME", ""),
    "/usr/share/lmod/lmod",
    "/opt/hpcjup-lmod/usr/share/lmod/lmod",
)
CLUSTER_ENV = Path("/opt/hpcjup-cluster-env")  # the cluster-side JupyterLab (tests/cluster/install.sh)
OUTSIDE = ["env", "-u", "HPCJUP_LAUNCH"]  # before a container runtime: the per-node launch is out of reach inside
SHELLS = ("bash", "sh")  # Slurm runs job.sh with bash -l, the local scheduler with sh (dash on Debian)


class Settings:
    """A stand-in for Resolved: just .value(key)."""

    def __init__(self, **values: Any) -> None:
        self.values = values

    def value(self, key: str) -> Any:
        return self.values.get(key)


def need(path: str | Path, package: str) -> None:
    """Skip without `path` (installed by tests/cluster/install.sh); under CI=true that is a failure."""
    if Path(path).exists() or shutil.which(str(path)):
        return
    message = f"{path} missing: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def run_batch(lines: list[str], tail: str, shell: str, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the lines as a batch job's shell would: non-interactive, no rc files, a minimal environment."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "USER": "root", **extra}
    script = "\n".join([*lines, tail])
    return subprocess.run(
        ["env", "-i", *(f"{k}={v}" for k, v in env.items()), shell, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- rendering ------------------------------------------------------------------------------------


def test_nothing_configured_means_no_lines() -> None:
    assert setup_lines(Settings()) == []
    assert launcher_python(Settings()) == ["python3"]
    assert launcher_python(Settings(python="/opt/env/bin/python")) == ["/opt/env/bin/python"]


def test_order_and_quoting() -> None:
    lines = setup_lines(
        Settings(
            modules=("Stages/2025", "a b;rm -rf /"),
            module_use=("~/mods",),
            module_purge=True,
            conda="myenv",
            venv="$PROJECT/jupyter env",
            setup=("export OMP_NUM_THREADS=1",),
        )
    )
    text = "\n".join(lines)
    assert (
        text.index("module purge")
        < text.index("module use")
        < text.index("module load")
        < text.index("conda activate")
        < text.index("/bin/activate")
    )
    assert "module load Stages/2025 'a b;rm -rf /' ||" in text
    assert 'module use "$HOME"/mods ||' in text
    assert ". \"$PROJECT\"/'jupyter env'/bin/activate ||" in text
    assert lines[-1] == "export OMP_NUM_THREADS=1"  # the user's own lines, verbatim and last
    for shell in SHELLS:  # every line parses in both shells
        assert subprocess.run([shell, "-n", "-c", text], capture_output=True, check=False).returncode == 0, shell


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/p/env", "/p/env"),
        ("~", '"$HOME"'),
        ("~/a b", "\"$HOME\"/'a b'"),
        ("$PROJECT/x", '"$PROJECT"/x'),
        ("${SCRATCH}/y", '"${SCRATCH}"/y'),
        ("$(reboot)/x", "'$(reboot)/x'"),
        ("~user/x", "'~user/x'"),
        ("$HOME", '"$HOME"'),
    ],
)
def test_shell_path(path: str, expected: str) -> None:
    assert shell_path(path) == expected


def test_containers() -> None:
    sif = Settings(image="~/images/lab.sif", binds=("/p/project", "/p/scratch:/scratch"), gpu=True)
    assert launcher_python(sif, home="/home/u") == [
        *OUTSIDE,
        "apptainer",
        "exec",
        "--nv",
        "-B",
        "/p/project,/p/scratch:/scratch",
        "/home/u/images/lab.sif",
        "python3",
    ]
    docker = Settings(
        image="docker://jupyter/base-notebook", container_runtime="singularity", python="/opt/conda/bin/python"
    )
    assert launcher_python(docker) == [
        *OUTSIDE,
        "singularity",
        "exec",
        "docker://jupyter/base-notebook",
        "/opt/conda/bin/python",
    ]
    assert launcher_python(Settings(image="/p/img.sif", gpus="4"))[3:6] == ["apptainer", "exec", "--nv"]
    ch = Settings(image="/p/images/lab", binds=("/p/project",))
    assert launcher_python(ch, home="/home/u") == [
        *OUTSIDE,
        "ch-run",
        "-b",
        "/home/u",
        "-b",
        "/p/project",
        "/p/images/lab",
        "--",
        "python3",
    ]
    assert guess_runtime("x.sif") == guess_runtime("oras://r/x") == "apptainer"
    assert guess_runtime("/p/images/lab.sqfs") == "charliecloud"


# -- Environment Modules and Lmod, for real -------------------------------------------------------------


@pytest.fixture
def modulefiles(tmp_path: Path) -> Path:
    """A modulefile directory with hello/1.0, which puts a `hello-tool` on PATH."""
    bin_dir = tmp_path / "tools" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "hello-tool").write_text("#!/bin/sh\necho hello from the module\n")
    (bin_dir / "hello-tool").chmod(0o755)
    mods = tmp_path / "modulefiles"
    (mods / "hello").mkdir(parents=True)
    (mods / "hello" / "1.0").write_text(f"#%Module1.0\nprepend-path PATH {bin_dir}\nsetenv HELLO_LOADED yes\n")
    return mods


@pytest.mark.parametrize("shell", SHELLS)
def test_environment_modules_load_in_a_non_interactive_shell(shell: str, modulefiles: Path, tmp_path: Path) -> None:
    need(ENV_MODULES_INIT, "environment-modules")
    lines = module_lines(["hello"], [str(modulefiles)], purge=True)
    result = run_batch(lines, 'hello-tool && echo "loaded=$HELLO_LOADED"', shell, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello from the module", "loaded=yes"]


@pytest.mark.parametrize("shell", SHELLS)
def test_missing_module_ends_the_job_with_a_reason(shell: str, modulefiles: Path, tmp_path: Path) -> None:
    need(ENV_MODULES_INIT, "environment-modules")
    result = run_batch(module_lines(["nosuchmodule"], [str(modulefiles)]), "echo launcher-started", shell, tmp_path)
    assert result.returncode == 1
    assert "launcher-started" not in result.stdout
    assert "nosuchmodule" in result.stderr and "hpcjup: module load failed" in result.stderr


def test_no_module_system_is_said_plainly(tmp_path: Path) -> None:
    fake_root = tmp_path / "none"
    lines = [
        line.replace("/usr/share", str(fake_root)).replace("/etc/profile.d", str(fake_root))
        for line in module_lines(["x"])
    ]
    result = run_batch(lines, "echo launcher-started", "sh", tmp_path)
    assert result.returncode == 1 and "hpcjup: no module command" in result.stderr


def lmod_home() -> str:
    """The first Lmod found in LMOD_HOMES; skip without one (under CI=true that is a failure)."""
    home = next((h for h in LMOD_HOMES if h and Path(h, "init", "sh").exists()), None)
    if home is not None:
        return home
    message = f"no Lmod in {', '.join(h for h in LMOD_HOMES if h)}: run tests/cluster/install.sh (as root)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.mark.parametrize("shell", SHELLS)
def test_lmod_loads_in_a_non_interactive_shell(shell: str, modulefiles: Path, tmp_path: Path) -> None:
    home = lmod_home()  # found through $MODULESHOME, as on a cluster whose login shell initialised Lmod
    lines = module_lines(["hello"], [str(modulefiles)], purge=True)
    result = run_batch(lines, 'hello-tool; echo "lmod=${LMOD_CMD:-none}"', shell, tmp_path, MODULESHOME=home)
    assert result.returncode == 0, result.stderr
    tool, version = result.stdout.splitlines()
    assert tool == "hello from the module" and version != "lmod=none"  # Lmod did it, not Environment Modules


# -- venv, for real ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_venv_activation(shell: str, tmp_path: Path) -> None:
    venv = tmp_path / "jupyter env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    lines = setup_lines(Settings(venv="~/jupyter env/"))
    result = run_batch(lines, 'python -c "import sys; print(sys.prefix)"; echo "$VIRTUAL_ENV"', shell, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(venv), str(venv)]


def test_missing_venv_ends_the_job(tmp_path: Path) -> None:
    result = run_batch(setup_lines(Settings(venv="/nonexistent/env")), "echo launcher-started", "bash", tmp_path)
    assert result.returncode == 1 and "launcher-started" not in result.stdout
    assert "hpcjup: cannot activate the venv /nonexistent/env" in result.stderr


# -- conda and micromamba, against stand-ins -----------------------------------------------------------

# Stand-ins for `conda shell.posix hook` and `micromamba shell hook --shell posix`: they print a shell
# function that, like the real one, activates an environment (name under envs/, or a prefix).
FAKE_TOOL = """#!/bin/sh
root=$(cd "$(dirname "$0")/.." && pwd)
echo "$(basename "$0")() {
  if [ \\"\\$1\\" = activate ]; then
    case \\"\\$2\\" in /*) p=\\"\\$2\\" ;; *) p=$root/envs/\\"\\$2\\" ;; esac
    [ -d \\"\\$p\\" ] || { echo \\"EnvironmentNameNotFound: \\$2\\" >&2; return 1; }
    export CONDA_PREFIX=\\"\\$p\\" PATH=\\"\\$p/bin:\\$PATH\\" ACTIVATED_BY=$(basename "$0")
  fi
}"
"""


def fake_install(root: Path, tool: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "envs" / "lab" / "bin").mkdir(parents=True)
    exe = root / "bin" / tool
    exe.write_text(FAKE_TOOL)
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize("shell", SHELLS)
def test_conda_found_in_the_usual_place_without_being_on_path(shell: str, tmp_path: Path) -> None:
    fake_install(tmp_path / "miniforge3", "conda")  # ~/miniforge3, as the installer leaves it; no `conda init`
    result = run_batch(conda_lines("lab"), 'echo "$CONDA_PREFIX $ACTIVATED_BY"', shell, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tmp_path}/miniforge3/envs/lab conda"


def test_micromamba_on_path_and_a_prefix(tmp_path: Path) -> None:
    exe = fake_install(tmp_path / "mm", "micromamba")
    result = run_batch(
        conda_lines(str(tmp_path / "mm" / "envs" / "lab")),
        'echo "$CONDA_PREFIX $ACTIVATED_BY"',
        "sh",
        tmp_path,
        PATH=f"{exe.parent}:/usr/bin:/bin",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{tmp_path}/mm/envs/lab micromamba"


def test_conda_errors_end_the_job_with_a_reason(tmp_path: Path) -> None:
    missing = run_batch(conda_lines("lab"), "echo launcher-started", "sh", tmp_path)
    assert missing.returncode == 1 and "hpcjup: no conda or micromamba found" in missing.stderr
    fake_install(tmp_path / "miniconda3", "conda")
    wrong = run_batch(conda_lines("nosuchenv"), "echo launcher-started", "bash", tmp_path)
    assert wrong.returncode == 1 and "launcher-started" not in wrong.stdout
    assert (
        "EnvironmentNameNotFound" in wrong.stderr
        and "hpcjup: cannot activate the conda environment nosuchenv" in wrong.stderr
    )


# -- Charliecloud, for real ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ch_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Charliecloud image directory holding this machine's /usr/bin/python3 and its standard library."""
    need("ch-run", "charliecloud-runtime")
    image = tmp_path_factory.mktemp("ch") / "img"
    python = Path(os.path.realpath("/usr/bin/python3"))
    for sub in (
        "dev",
        "proc",
        "sys",
        "tmp",
        "home",
        "etc",
        "root",
        "run",
        "mnt",
        "usr/bin",
        "usr/lib",
        "usr/lib64",
        "var/tmp",
    ):
        (image / sub).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib", "lib64"):
        (image / link).symlink_to(f"usr/{link}")
    for name in ("passwd", "group", "hosts", "resolv.conf"):
        (image / "etc" / name).touch()
    shutil.copy2(python, image / "usr/bin")
    (image / "usr/bin/python3").symlink_to(python.name)
    libs = subprocess.run(["ldd", str(python)], capture_output=True, text=True, check=True).stdout
    for lib in {word for word in libs.split() if word.startswith("/")}:
        (image / lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, image / lib.lstrip("/"))
    stdlib = Path(f"/usr/lib/{python.name}")
    shutil.copytree(
        stdlib,
        image / "usr/lib" / python.name,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            "test", "tests", "site-packages", "dist-packages", "__pycache__", "idlelib", "tkinter"
        ),
    )
    # The shared libraries that the standard library's and the cluster env's extension modules load (ssl, sqlite3, zmq, ...).
    modules = [*stdlib.glob("lib-dynload/*.so"), *(CLUSTER_ENV.rglob("*.so*") if CLUSTER_ENV.exists() else [])]
    copy_libraries(image, [str(m) for m in modules])
    return image


def copy_libraries(image: Path, binaries: list[str]) -> None:
    """Copy the system libraries `binaries` link to into the image (ldd, many at a time)."""
    for start in range(0, len(binaries), 200):
        out = subprocess.run(
            ["ldd", *binaries[start : start + 200]], capture_output=True, text=True, check=False
        ).stdout
        for lib in {
            w for w in out.split() if w.startswith("/") and not w.startswith(str(CLUSTER_ENV)) and not w.endswith(":")
        }:
            target = image / lib.lstrip("/")
            if not target.exists() and Path(lib).is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lib, target)


def test_charliecloud_runs_python_with_the_session_directory_visible(ch_image: Path, tmp_path: Path) -> None:
    home = Path("/home/hpcjup-ch-test")  # the image needs the home's directory: ch-run binds onto it, read-only image
    (ch_image / home.relative_to("/")).mkdir(parents=True, exist_ok=True)
    host_home = tmp_path / "home"
    (host_home / ".hpcjup/sessions/lab").mkdir(parents=True)
    (host_home / ".hpcjup/sessions/lab/launcher.py").write_text(
        "import sys; print('launcher in', sys.version.split()[0], sys.argv[1])\n"
    )
    # Bind the tmp home where the image expects `home`: the argv hpcjup builds, with the bind source swapped.
    argv = launcher_python(Settings(image=str(ch_image), container_runtime="charliecloud"), home=str(home))
    assert argv == [*OUTSIDE, "ch-run", "-b", str(home), str(ch_image), "--", "python3"]
    argv[5] = f"{host_home}:{home}"
    result = subprocess.run(
        [*argv, f"{home}/.hpcjup/sessions/lab/launcher.py", "--session-dir"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "USER": os.environ.get("USER", "root")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("launcher in 3.") and "--session-dir" in result.stdout


def test_charliecloud_reports_a_missing_mount_point(ch_image: Path) -> None:
    argv = launcher_python(Settings(image=str(ch_image)), home="/nonexistent-home-dir")
    result = subprocess.run(
        [*argv, "-c", "print(1)"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "USER": "root"},
        check=False,
    )
    assert result.returncode != 0 and "nonexistent-home-dir" in result.stderr
    assert shlex.join(argv).startswith("env -u HPCJUP_LAUNCH ch-run -b /nonexistent-home-dir ")


def test_jupyter_runs_in_a_charliecloud_container(ch_image: Path, tmp_path: Path) -> None:
    """The real launcher, started as a job would start it with `image` set: Jupyter answers, SIGTERM ends it cleanly."""
    import json
    import time
    import urllib.request

    from hpcjup.job import job_files

    if not (CLUSTER_ENV / "bin" / "jupyter-lab").exists():
        pytest.skip(f"{CLUSTER_ENV} has no JupyterLab (tests/cluster/install.sh)")
    (ch_image / CLUSTER_ENV.relative_to("/")).mkdir(parents=True, exist_ok=True)  # mount point for the bound env
    home = tmp_path / "home"
    session = home / ".hpcjup" / "sessions" / "lab"
    session.mkdir(parents=True, mode=0o700)
    for name, code in job_files().items():  # what `start` uploads into the session directory
        (session / name).write_bytes(code)
    settings = Settings(image=str(ch_image), binds=(str(CLUSTER_ENV),), python=str(CLUSTER_ENV / "bin" / "python"))
    argv = [
        *launcher_python(settings, home=str(home)),
        str(session / "launcher.py"),
        "--session-dir",
        str(session),
        "--bind",
        "127.0.0.1",
        "--ready-timeout",
        "90",
    ]
    assert argv[:8] == [*OUTSIDE, "ch-run", "-b", str(home), "-b", str(CLUSTER_ENV)]
    with open(tmp_path / "job.out", "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "USER": "root", "HPCJUP_JOB_ID": "77"}
        )
    try:
        deadline = time.monotonic() + 90
        while not (session / "connection.json").exists():
            assert proc.poll() is None, (tmp_path / "job.out").read_text()
            assert time.monotonic() < deadline, "Jupyter did not start in the container"
            time.sleep(0.1)
        conn = json.loads((session / "connection.json").read_text())
        request = urllib.request.Request(
            f"http://127.0.0.1:{conn['port']}/api/status", headers={"Authorization": f"token {conn['token']}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert conn["python"].startswith(str(CLUSTER_ENV))
        proc.terminate()
        assert proc.wait(60) == 0, (tmp_path / "job.out").read_text()
        assert json.loads((session / "state.json").read_text())["reason"] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the Python for --local, for real interpreters -------------------------------------------------------


def fake_jupyter_python(root: Path, server_version: str | None) -> str:
    """A real venv (no pip) whose site-packages holds a `jupyterlab` package and jupyter_server's metadata only."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site / "jupyterlab").mkdir()
    (site / "jupyterlab" / "__init__.py").write_text(
        "raise SystemExit('jupyterlab must not be imported to be found')\n"
    )
    if server_version:
        info = site / f"jupyter_server-{server_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: jupyter_server\nVersion: {server_version}\n")
    return str(python)


@pytest.mark.parametrize(("version", "usable"), [("2.20.0", True), ("2.21.1", True), ("2.19.9", False), (None, False)])
def test_has_jupyterlab_wants_jupyter_server_2_20(version: str | None, usable: bool, tmp_path: Path) -> None:
    assert has_jupyterlab(fake_jupyter_python(tmp_path / "env", version)) is usable


def test_local_python_prefers_hpcjups_own_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = fake_jupyter_python(tmp_path / "own", "2.21.1")
    monkeypatch.setenv("PATH", str(bin_with_python3(tmp_path / "path", fake_jupyter_python(tmp_path / "p", "2.21.1"))))
    assert local_python(own) == own


def test_local_python_falls_back_to_python3_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = fake_jupyter_python(tmp_path / "own", None)
    monkeypatch.setenv("PATH", str(bin_with_python3(tmp_path / "path", fake_jupyter_python(tmp_path / "p", "2.20.0"))))
    assert local_python(own) == "python3"


def test_local_python_names_the_install_command_when_nothing_has_jupyterlab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = fake_jupyter_python(tmp_path / "own", "2.19.0")
    monkeypatch.setenv("PATH", str(bin_with_python3(tmp_path / "path", fake_jupyter_python(tmp_path / "p", None))))
    with pytest.raises(UsageError) as raised:
        local_python(own)
    assert raised.value.exit_code == 2
    hint = raised.value.hint or ""
    # Not `pip install 'hpcjup[local]'`: on an index that asks PyPI, that is whoever registers the name hpcjup there.
    assert "hpcjup[" not in hint, hint
    command = shlex.split(hint.split("next to hpcjup: ", 1)[1].split("   (", 1)[0])
    assert command[:4] == [own, "-m", "pip", "install"], command
    assert command[4:] == local_requirements(), command


def test_the_local_requirements_are_the_local_extra_of_the_installed_metadata() -> None:
    import importlib.metadata

    declared = [r.split(";")[0].strip() for r in importlib.metadata.requires("hpcjup") or [] if 'extra == "local"' in r]
    assert declared and local_requirements() == declared
    assert {"jupyterlab>=4", "jupyter_server>=2.20"} <= set(local_requirements())


def bin_with_python3(directory: Path, python: str) -> Path:
    """A PATH directory whose only entry is `python3`, which runs `python` (a wrapper: a symlink would leave the venv)."""
    directory.mkdir()
    (directory / "python3").write_text(f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
    (directory / "python3").chmod(0o755)
    return directory

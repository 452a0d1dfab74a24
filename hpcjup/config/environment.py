"""The job's software environment: the shell lines that prepare it and the argv that runs Python.

`setup_lines` renders modules, conda/micromamba, a venv and the user's own `setup` lines into
POSIX shell lines that go before the launcher in the batch script. They must work in a
NON-interactive shell (a batch job: nothing from ~/.bashrc, often no `module` function, no
`conda init`), so each tool is initialised explicitly, and a step that fails ends the job with a
line in its log that says which step it was. `launcher_python` gives the argv prefix that runs
the Python with Jupyter: plain, or inside an Apptainer/Singularity/Charliecloud container.

Every value is quoted with shlex.quote; a leading `~`, `$VAR` or `${VAR}` in a path is left
for the shell to expand (`venv = "$PROJECT/jupyter-env"` is how people write paths on HPC systems).

`local_python` picks the Python for `--local` on this machine, where no profile says which one.
"""

from __future__ import annotations

import re
import shlex
import sys
from typing import Any, Protocol

from hpcjup.errors import UsageError
from hpcjup.job.contract import ENV_LAUNCH, MIN_SERVER

#: The extra of hpcjup's own metadata that lists what `--local` needs (pyproject.toml's `local`). The hint names
#: its requirements one by one: `hpcjup[local]` would ask the index for a project called hpcjup, a name on PyPI
#: that is not this project's (anyone could publish there under it).
LOCAL_EXTRA = "local"

# Where `module` comes from when the batch shell has no such function: the init scripts of
# Lmod and Environment Modules, for sh (which bash runs too). $MODULESHOME and $LMOD_PKG are set
# by both when they were initialised on the login node (Slurm passes the environment on).
_MODULE_INITS = (
    '"${MODULESHOME:-/nonexistent}/init/sh"',
    '"${LMOD_PKG:-/nonexistent}/init/sh"',
    "/usr/share/lmod/lmod/init/sh",
    "/usr/share/modules/init/sh",
    "/usr/share/Modules/init/sh",
    "/etc/profile.d/modules.sh",
)
# Where conda lives when it is not on PATH in a batch shell (installers' default prefixes).
_CONDA_GUESSES = ("miniforge3", "miniconda3", "mambaforge", "anaconda3")
_LEADING_VAR = re.compile(r"^(~|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})(/.*)?$")
RUNTIMES = ("apptainer", "singularity", "charliecloud", "podman")  # podman: a laptop's engine, for --local


class Settings(Protocol):
    """What these functions read: hpcjup.config.profiles.Resolved, or anything with .value(key)."""

    def value(self, key: str) -> Any: ...


def setup_lines(settings: Settings) -> list[str]:
    """Shell lines that prepare the job's environment, in order: modules, conda, venv, the user's `setup`."""
    lines: list[str] = []
    lines += module_lines(
        settings.value("modules") or (), settings.value("module_use") or (), bool(settings.value("module_purge"))
    )
    if settings.value("conda"):
        lines += conda_lines(settings.value("conda"))
    if settings.value("venv"):
        venv = shell_path(settings.value("venv").rstrip("/") or "/")
        lines.append(f". {venv}/bin/activate || {_fail('cannot activate the venv', venv)}")
    lines += list(settings.value("setup") or ())  # the user's own shell: verbatim
    return lines


def module_lines(
    modules: tuple[str, ...] | list[str], use: tuple[str, ...] | list[str] = (), purge: bool = False
) -> list[str]:
    """`module purge`, `module use DIR`, `module load A B`, with `module` defined first if the shell lacks it."""
    if not (modules or use or purge):
        return []
    inits = " ".join(_MODULE_INITS)
    lines = [f'command -v module >/dev/null 2>&1 || for f in {inits}; do if [ -r "$f" ]; then . "$f"; break; fi; done']
    lines.append(
        f"command -v module >/dev/null 2>&1 || {_fail('no module command (Lmod or Environment Modules) in this shell')}"
    )
    if purge:
        lines.append("module purge")
    for directory in use:
        lines.append(f"module use {shell_path(directory)} || {_fail('module use failed:', shell_path(directory))}")
    if modules:
        lines.append(
            f"module load {' '.join(shlex.quote(m) for m in modules)} || {_fail('module load failed (see above)')}"
        )
    return lines


def conda_lines(env: str) -> list[str]:
    """Activate a conda environment (name or prefix) in a non-interactive shell: conda's or micromamba's hook, then activate."""
    target = shell_path(env)
    guesses = " ".join(f'"$HOME/{prefix}/bin/conda"' for prefix in _CONDA_GUESSES)
    return [
        "hpcjup_conda=",
        (
            f'for c in "${{CONDA_EXE:-}}" conda "${{MAMBA_EXE:-}}" micromamba {guesses}; do '
            'if [ -n "$c" ] && command -v "$c" >/dev/null 2>&1; then hpcjup_conda=$c; break; fi; done'
        ),
        'case "$hpcjup_conda" in',
        f"  '') {_fail('no conda or micromamba found (load its module first) to activate', target)} ;;",
        f'  *micromamba) eval "$("$hpcjup_conda" shell hook --shell posix)" && micromamba activate {target} ;;',
        f'  *) eval "$("$hpcjup_conda" shell.posix hook)" && conda activate {target} ;;',
        f"esac || {_fail('cannot activate the conda environment', target)}",
        "unset hpcjup_conda",
    ]


def launcher_python(settings: Settings, home: str | None = None, relayed: bool = False) -> list[str]:
    """The argv prefix that runs the cluster-side Python: `python3`, an explicit one, or one inside a container.

    `home` is the remote home directory: a leading `~` in the Python or image path becomes it
    (argv is not expanded by a shell), and Charliecloud binds it so the session directory is
    visible inside the container. `relayed`: the job's launcher, run through the host-side relay (job/relay.sh),
    which keeps the scheduler's per-node launch in its environment.
    """
    python = _expand_home(settings.value("python") or "python3", home)
    image = settings.value("image")
    if not image:
        return [python]
    image = _expand_home(image, home)
    runtime = settings.value("container_runtime") or guess_runtime(image)
    binds = [_expand_home(b, home) for b in settings.value("binds") or ()]
    # The scheduler's per-node launch (srun, blaunch...) is not inside an image. A launcher of several nodes' Dask
    # keeps it (`relayed`): the host-side relay runs each launch for it (session/jobscript.py says why). Any other
    # Python in an image never sees it (`env -u`): a launcher of one node starts its workers beside itself, in the
    # container; kernels in images and the workers' own command (python_command) have no use for it.
    outside = [] if relayed else ["env", "-u", ENV_LAUNCH]
    if runtime == "charliecloud":
        # ch-run binds nothing by default: the session directory (under home) must be visible at the same path.
        mounts = [arg for path in ([home] if home else []) + binds for arg in ("-b", path)]
        return [*outside, "ch-run", *mounts, image, "--", python]
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown container runtime {runtime!r}")
    if runtime == "podman":
        return podman_run(image, python, [home] if home else [], binds)
    gpu = bool(settings.value("gpu") or settings.value("gpus"))
    mounts = ["-B", ",".join(binds)] if binds else []
    return [*outside, runtime, "exec", *(["--nv"] if gpu else []), *mounts, image, python]


def podman_run(image: str, python: str, homes: list[str], binds: list[str]) -> list[str]:
    """`podman run` of a registry image on this machine (--local): the host's network (Jupyter's loopback port is the
    laptop's), the host's environment (the job's HPCJUP_* variables reach the launcher), the home (the session
    directory) and the binds at the same paths, the user's own uid for a rootless engine (files it writes are
    theirs), no SELinux relabelling of the home. Signals reach the launcher through podman (its default)."""
    import os

    volumes = [arg for path in [*homes, *binds] for arg in ("-v", path if ":" in path else f"{path}:{path}")]
    rootless = ["--userns=keep-id"] if os.geteuid() != 0 else []
    label = ["--security-opt", "label=disable"]
    return ["podman", "run", "--rm", "--network=host", "--env-host", *rootless, *label, *volumes, image, python]


def guess_runtime(image: str) -> str:
    """Apptainer for .sif files and docker:// (and other URI) images; Charliecloud for image directories and SquashFS."""
    if image.endswith(".sif") or "://" in image:
        return "apptainer"
    return "charliecloud"


def shell_path(path: str) -> str:
    """`path` quoted for a shell line, a leading ~, $VAR or ${VAR} left for the shell to expand."""
    m = _LEADING_VAR.match(path)
    if not m:
        return shlex.quote(path)
    head = '"$HOME"' if m.group(1) == "~" else f'"{m.group(1)}"'
    rest = m.group(2) or ""
    return head + ("/" + shlex.quote(rest[1:]) if len(rest) > 1 else rest)


def _expand_home(path: str, home: str | None) -> str:
    if home and (path == "~" or path.startswith("~/")):
        return home.rstrip("/") + path[1:]
    return path


def _fail(message: str, word: str | None = None) -> str:
    """A shell command that says on stderr (the job log) what failed, then ends the job; `word` is already shell-quoted."""
    return f"{{ echo {shlex.quote('hpcjup: ' + message)}{' ' + word if word else ''} >&2; exit 1; }}"


def local_python(own: str = sys.executable) -> str:
    """The Python that `--local` runs Jupyter with when none is set: hpcjup's own (`own`), else `python3` on PATH.

    Each must have jupyterlab and jupyter_server >= 2.20; when neither has, a UsageError names the
    command that installs them into hpcjup's own environment.
    """
    import shutil

    if has_jupyterlab(own):
        return own
    on_path = shutil.which("python3")
    if on_path and has_jupyterlab(on_path):
        return "python3"
    install = shlex.join([own, "-m", "pip", "install", *local_requirements()])
    raise UsageError(
        f"No JupyterLab for --local: neither hpcjup's Python ({own}) nor python3 on PATH "
        f"({on_path or 'none'}) has jupyterlab and jupyter_server >= {'.'.join(map(str, MIN_SERVER))}.",
        hint=f"Install them next to hpcjup: {install}   (or name a Python that has them: --python PATH).",
    )


def local_requirements() -> list[str]:
    """What `--local` needs in hpcjup's own environment, as pip requirements: the `local` extra of the installed
    hpcjup's metadata (pyproject.toml is the one list), else JupyterLab and the jupyter_server it needs."""
    import importlib.metadata

    extra = re.compile(r"""extra\s*==\s*["']""" + LOCAL_EXTRA + r"""["']""")
    try:
        found = importlib.metadata.requires("hpcjup") or []
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        found = []
    wanted = [req.strip() for req, _, marker in (line.partition(";") for line in found) if extra.search(marker)]
    return wanted or ["jupyterlab>=4", f"jupyter_server>={'.'.join(map(str, MIN_SERVER))}"]


# Run by another Python: does it have JupyterLab and a recent enough jupyter_server? (stdlib only, nothing imported)
_PROBE = f"""
import importlib.metadata as m, importlib.util as u, re, sys
try:
    v = re.match(r"(\\d+)\\.(\\d+)", m.version("jupyter_server"))
    ok = bool(v) and (int(v.group(1)), int(v.group(2))) >= {MIN_SERVER!r} and u.find_spec("jupyterlab") is not None
except Exception:
    ok = False
sys.exit(0 if ok else 1)
"""


def has_jupyterlab(python: str) -> bool:
    """Whether `python` has jupyterlab and jupyter_server >= MIN_SERVER, found without importing them."""
    if python == sys.executable:  # this interpreter: ask it directly, no subprocess
        import importlib.metadata
        import importlib.util

        try:
            server = importlib.metadata.version("jupyter_server")
            return _version(server) >= MIN_SERVER and importlib.util.find_spec("jupyterlab") is not None
        except (importlib.metadata.PackageNotFoundError, ValueError):
            return False
    import subprocess

    try:
        return subprocess.run([python, "-c", _PROBE], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _version(text: str) -> tuple[int, int]:
    """(major, minor) of a version string like "2.21.1" or "2.20.0rc1"; (0, 0) when it has no numbers."""
    found = re.match(r"(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)

"""The session's own kernels (`--kernel NAME=PYTHON`): checked, then registered for this session only.

Standard library only, Python >= 3.9, shipped beside launcher.py. Jupyter's server runs from the server
environment; each user environment is a kernel whose Python the launcher is given. Before Jupyter starts,
`probe` asks every named Python, one subprocess each and all at once, whether it exists, runs, has ipykernel,
and which `distributed` it has (the Dask Python is probed the same way, in the same round). `write_specs` puts
`kernels/NAME/kernel.json` under a data directory inside the session's private node-local directory, which only
Jupyter's server sees first on its JUPYTER_PATH (nothing goes to ~/.local/share/jupyter); `server_args` makes
the first kernel the default and offers the session's kernels and the user's own (`own_kernels`: those in the
user's Jupyter data directory, $JUPYTER_PATH and the system's), never the server environment's (its `python3`
would run the server's packages, not the user's). A PYTHON may be a wrapper that prepares an environment and
execs a Python (a module set's: the laptop renders it): the probe reports the Python it ran.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from typing import NamedTuple

from contract import REASON_NO_IPYKERNEL as REASON
from endings import Ended

#: A kernel's name (jupyter_client allows [a-z0-9._-]; the launcher's interface is stricter, see phase 2).
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
DATA_DIR = "jupyter-data"  # in the private directory: put first on the server's JUPYTER_PATH
_MARK = "hpcjup-probe:"  # the probe's answer line (a sitecustomize may print other lines first)
# Run by each probed Python (any version >= 3.9); one JSON line, nothing imported that costs time.
_PROBE = f"""
import importlib.util, json, sys
def version(name):
    if importlib.util.find_spec(name) is None:
        return None
    try:
        from importlib.metadata import version as v
        return v(name)
    except Exception:
        return "unknown"
print({_MARK!r} + json.dumps({{"executable": sys.executable, "python": "%d.%d.%d" % sys.version_info[:3],
    "ipykernel": version("ipykernel") if importlib.util.find_spec("ipykernel_launcher") else None,
    "distributed": version("distributed")}}))
"""


class Kernel(NamedTuple):
    """One `--kernel NAME=PYTHON`: an absolute path, or a command's shell words (a Python inside a container)."""

    name: str
    python: str

    @property
    def argv(self) -> list:
        """What runs the kernel's Python: its path, or the command's words."""
        return argv_of(self.python)

    @property
    def bindir(self) -> str:
        """The kernel environment's bin directory (as given: a venv's python is a link to its base's)."""
        return os.path.dirname(self.python)

    @property
    def prefix(self) -> str:
        return os.path.dirname(self.bindir)


class Probe(NamedTuple):
    """What one Python said about itself, or why it could not say (`error`)."""

    python: str
    error: str | None = None
    version: str = ""
    ipykernel: str | None = None
    distributed: str | None = None
    executable: str = ""  # the Python that answered (another than `python` when that is a wrapper)


def argv_of(python: str) -> list:
    """A Python's argv: an absolute path as it is, a command (a container runtime's prefix) split into its words."""
    return [python] if os.path.isabs(python) else shlex.split(python)


def parse_kernel(text: str) -> Kernel:
    """A Kernel from `NAME=PYTHON` (PYTHON an absolute path, or a command whose words end in one: a container's);
    ValueError naming what is wrong."""
    name, sep, python = text.partition("=")
    if not sep or not NAME.fullmatch(name):
        raise ValueError(f"--kernel {text!r}: expected NAME=PYTHON, NAME of a-z, 0-9, '_', '.', '-' (64 at most)")
    try:
        words = argv_of(python)
    except ValueError:
        words = []
    if not words or "\0" in python or not (os.path.isabs(python) or len(words) > 1):
        raise ValueError(f"--kernel {text!r}: PYTHON must be an absolute path or a command that runs one")
    return Kernel(name, python)


def parse_kernels(texts: list[str]) -> list[Kernel]:
    """The `--kernel` options in their order; ValueError for a bad one or a name given twice."""
    kernels = [parse_kernel(text) for text in texts]
    names = [k.name for k in kernels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--kernel names must differ: {', '.join(twice)} given twice")
    return kernels


def probe(pythons: list[str], timeout: float, wait: Callable[[float], None], popen_options: dict) -> dict[str, Probe]:
    """Python path -> Probe, for each distinct Python, all asked at once; `wait(seconds)` sleeps (and may raise
    Ended on a stop signal: the children end with the launcher through `popen_options`)."""
    procs: dict[str, subprocess.Popen] = {}
    found: dict[str, Probe] = {}
    for python in dict.fromkeys(pythons):
        # A command (a container's Python) says itself whether it runs: the checks below are for a path.
        if os.path.isabs(python) and not os.path.isfile(python):
            found[python] = Probe(python, f"{python} does not exist")
            continue
        if os.path.isabs(python) and not os.access(python, os.X_OK):
            found[python] = Probe(python, f"{python} is not executable")
            continue
        try:
            procs[python] = subprocess.Popen(
                [*argv_of(python), "-c", _PROBE],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                **popen_options,
            )
        except OSError as exc:
            found[python] = Probe(python, f"{python} does not run ({exc.strerror or exc})")
    deadline = time.monotonic() + timeout
    try:
        while any(proc.poll() is None for proc in procs.values()) and time.monotonic() < deadline:
            wait(0.05)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for python, proc in procs.items():
        out, err = proc.communicate()
        found[python] = _answer(python, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
    return found


def _answer(python: str, code: int, out: str, err: str) -> Probe:
    """The Probe from one Python's exit code and output."""
    if code != 0:
        # The last lines: a wrapper's own complaint, with what a module command said before it (Lmod's is long).
        tail = " ".join(" ".join(line.split()) for line in err.splitlines() if line.strip())[-600:]
        how = f"was killed (signal {-code}, or no answer in time)" if code < 0 else f"exited with code {code}"
        return Probe(python, f"{python} does not run: it {how}" + (f": {tail}" if tail else ""))
    for line in reversed(out.splitlines()):
        if line.startswith(_MARK):
            try:
                doc = json.loads(line[len(_MARK) :])
                found = doc.get("ipykernel"), doc.get("distributed"), str(doc.get("executable") or python)
                return Probe(python, None, str(doc["python"]), *found)
            except (ValueError, KeyError, TypeError):
                break
    return Probe(python, f"{python} gave no answer about itself (is it a Python?)")


def check_kernels(kernels: list[Kernel], found: dict[str, Probe]) -> None:
    """Ended(no-ipykernel) for the first kernel whose Python cannot run a kernel: the Python and the fix."""
    for kernel in kernels:
        seen = found[kernel.python]
        if seen.error:
            raise Ended(REASON, f"kernel {kernel.name}: {seen.error}. Name an existing environment's bin/python.")
        if seen.ipykernel is None:
            python = seen.executable or kernel.python
            which = python if python == kernel.python else f"{kernel.python} runs {python}, which"
            raise Ended(
                REASON,
                f"kernel {kernel.name}: {which} has no ipykernel, which runs Jupyter kernels. Install it "
                f"there ({python} -m pip install ipykernel, or uv pip install --python {python} "
                "ipykernel) or choose another Python.",
            )


def dask_missing(python: str, seen: Probe) -> str | None:
    """Why the Dask Python cannot run Dask, or None."""
    if seen.error:
        return f"{seen.error}, so the session has no Dask"
    if seen.distributed is None:
        return (
            f"{python} has no Dask (`distributed`), so the session has no Dask. Install it in that environment "
            f"({python} -m pip install distributed) to have Dask in the next session."
        )
    return None


def _escaped(value: str) -> str:
    """A kernel.json env value taken literally: jupyter_client substitutes ${VAR} from its own environment."""
    return value.replace("$", "$$")


def kernel_env(kernel: Kernel, base: dict[str, str], first: str = "") -> dict[str, str]:
    """The kernel's own environment over the server's (`base`): its bin first on PATH (for `!pip` and shell
    commands in a notebook), but after `first` (the Dask submit wrapper's directory: the submit command must stay the
    wrapper), its prefix as VIRTUAL_ENV or CONDA_PREFIX (tools such as `uv pip` install where that points)."""
    if not os.path.isabs(kernel.python):  # a container's Python: its own PATH and prefix are inside the image
        env = {"PATH": os.pathsep.join(p for p in [first, base.get("PATH", "")] if p)}
        env.update({"DASK_CONFIG": base["DASK_CONFIG"]} if "DASK_CONFIG" in base else {})
        return {key: _escaped(value) for key, value in env.items()}
    path = [p for p in base.get("PATH", "").split(os.pathsep) if p and p not in (first, kernel.bindir)]
    env = {"PATH": os.pathsep.join([*([first] if first else []), kernel.bindir, *path])}
    if os.path.isfile(os.path.join(kernel.prefix, "pyvenv.cfg")):
        env["VIRTUAL_ENV"] = kernel.prefix
    elif os.path.isdir(os.path.join(kernel.prefix, "conda-meta")):
        env["CONDA_PREFIX"] = kernel.prefix
    if "DASK_CONFIG" in base:
        env["DASK_CONFIG"] = base["DASK_CONFIG"]
    return {key: _escaped(value) for key, value in env.items()}


def spec(kernel: Kernel, seen: Probe, base: dict[str, str], first: str = "") -> dict:
    """kernel.json for `kernel`."""
    doc: dict = {
        "argv": [*kernel.argv, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"{kernel.name} (hpcjup)",
        "language": "python",
        "env": kernel_env(kernel, base, first),
        "metadata": {},
    }
    major = re.match(r"(\d+)", seen.ipykernel or "")
    if major and int(major.group(1)) >= 6:  # ipykernel 6 brought the debugger; its own spec says so
        doc["metadata"]["debugger"] = True
    return doc


def write_specs(
    private: str,
    kernels: list[Kernel],
    found: dict[str, Probe],
    base: dict[str, str],
    own: dict[str, str],
    first: str = "",
) -> str:
    """kernels/NAME/kernel.json under a data directory in the private directory (kernel_env: `base`, `first`), and
    a copy of each of the user's own kernels `own` (own_kernels's); that directory."""
    data = os.path.join(private, DATA_DIR)
    for kernel in kernels:
        where = os.path.join(data, "kernels", kernel.name)
        os.makedirs(where, mode=0o700, exist_ok=True)
        with open(os.path.join(where, "kernel.json"), "w") as fh:
            json.dump(spec(kernel, found[kernel.python], base, first), fh, indent=2)
    for name, source in own.items():
        try:
            copy_own(os.path.join(data, "kernels"), name, source)
        except (OSError, ValueError):  # unreadable now: Jupyter finds the original where it is
            pass
    return data


def server_env(env: dict[str, str], data: str) -> dict[str, str]:
    """Jupyter's server environment with the session's data directory first on JUPYTER_PATH."""
    rest = env.get("JUPYTER_PATH", "")
    return dict(env, JUPYTER_PATH=data + (os.pathsep + rest if rest else ""))


def server_args(kernels: list[Kernel], own: dict[str, str]) -> list[str]:
    """Jupyter's options: the first kernel the default, the session's kernels and the user's own `own`
    (own_kernels's) the ones offered."""
    names = [kernel.name for kernel in kernels]
    return [
        f"--MappingKernelManager.default_kernel_name={names[0]}",
        "--KernelSpecManager.ensure_native_kernel=False",
        # A Set trait: traitlets reads a Python literal from the command line.
        f"--KernelSpecManager.allowed_kernelspecs={set(names) | set(own)!r}",
    ]


#: A kernel.json whose argv[0] is a bare `python`, `python3` or `python3.11`: jupyter_client runs it with the
#: server's own Python (its sys.executable), so it would run the server environment's packages.
_BARE_PYTHON = re.compile(r"python[0-9.]*")


def user_kernel_dirs(environ: dict[str, str]) -> list[str]:
    """Where a user's own kernel specs are, as jupyter_core looks (standard library here): $JUPYTER_PATH, the
    user's data directory ($JUPYTER_DATA_DIR, else $XDG_DATA_HOME/jupyter or ~/.local/share/jupyter), the
    system's. Not the environment of the Python serving Jupyter: that is hpcjup's server env."""
    home = environ.get("HOME") or os.path.expanduser("~")
    data = environ.get("JUPYTER_DATA_DIR") or os.path.join(
        environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "jupyter"
    )
    roots = [p for p in environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    roots += [data, "/usr/local/share/jupyter", "/usr/share/jupyter"]
    return [os.path.join(root, "kernels") for root in dict.fromkeys(roots)]


def own_kernels(session: list[str], environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(the user's own kernels Jupyter will offer beside the session's: name -> its directory, a note for each one
    left out). One named as a session kernel is left out (the session's runs); so is one whose argv runs a bare
    `python`, which would be the server's Python, not the user's."""
    own: dict[str, str] = {}
    notes: list[str] = []
    for where in user_kernel_dirs(environ):
        try:
            entries = sorted(os.listdir(where))
        except OSError:
            continue
        for entry in entries:
            name, path = entry.lower(), os.path.join(where, entry)
            if name in own or not NAME.fullmatch(name) or not os.path.isfile(os.path.join(path, "kernel.json")):
                continue  # Jupyter too takes the first of a name, and only valid names
            try:
                with open(os.path.join(path, "kernel.json")) as fh:
                    argv = json.load(fh).get("argv") or [""]
            except (OSError, ValueError, AttributeError):
                continue  # Jupyter cannot read it either
            own[name] = ""  # seen: a later directory's kernel of this name is not Jupyter's either
            if name in session:
                notes.append(
                    f"your kernel {name} ({path}) is not offered: this session's kernel has its name, and runs "
                    "(rename yours, or give the session's kernel another name: --kernel NAME=SPEC)"
                )
            elif _BARE_PYTHON.fullmatch(str(argv[0])):
                notes.append(
                    f"kernel {name} ({path}) is not offered: it runs `{argv[0]}`, which Jupyter takes as its own "
                    "server's Python, not yours (give its argv an absolute Python path)"
                )
            else:
                own[name] = path
    return {name: path for name, path in own.items() if path}, notes


#: At most this much of a user's kernel directory's files (logos, kernel.js) is copied beside its kernel.json.
_COPY_LIMIT = 1024 * 1024


def copy_own(kernels_dir: str, name: str, source: str) -> None:
    """The user's kernel `source` as kernel `name` in the session's data directory, which Jupyter searches first
    (before the server env's own `python3`, which a venv's Jupyter prefers to the user's directory). Its
    `{resource_dir}` stays the original directory (its scripts are there); its small files come along."""
    where = os.path.join(kernels_dir, name)
    os.makedirs(where, mode=0o700, exist_ok=True)
    for entry in os.listdir(source):
        path = os.path.join(source, entry)
        if entry == "kernel.json" or not os.path.isfile(path) or os.path.getsize(path) > _COPY_LIMIT:
            continue
        with open(path, "rb") as fh, open(os.path.join(where, entry), "wb") as out:
            out.write(fh.read())
    with open(os.path.join(source, "kernel.json")) as fh:
        doc = json.load(fh)
    doc["argv"] = [str(arg).replace("{resource_dir}", source) for arg in doc.get("argv") or []]
    with open(os.path.join(where, "kernel.json"), "w") as out:
        json.dump(doc, out, indent=2)


def describe(kernels: list[Kernel], found: dict[str, Probe]) -> list[dict]:
    """connection.json's "kernels": name, Python, its version, ipykernel's and distributed's."""
    return [
        {
            "name": k.name,
            "python": k.python,
            "python_version": found[k.python].version,
            "ipykernel": found[k.python].ipykernel,
            "distributed": found[k.python].distributed,
        }
        for k in kernels
    ]

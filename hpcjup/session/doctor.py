"""`hpcjup doctor`: check everything a session needs, before the first `start`, over one connection.

Each check passes or fails with what was found and, when it fails, the fix. Checks that cannot
run (nothing to check, or an earlier failure makes them meaningless) are skipped, with the
reason. Nothing is submitted, except with `--node` (session/nodecheck.py: one short job that reads the env
root back from a compute node). The scheduler's own checks (its commands, queue, account, whether it
would accept the request) come from its adapter (`Scheduler.doctor_checks`, built from the
`Check` and `Status` of schedulers/checks.py, below both); this module runs the
generic ones: SSH, the environment, Jupyter, Dask, the env root (where `hpcjup env` builds
environments: made, writable, free space and inodes, and whether it is a memory file system the
compute nodes cannot see; all in the environment check's one command) and the session directory.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcjup.config.environment import MIN_SERVER, launcher_python, setup_lines
from hpcjup.errors import AuthError, ConnectError, ExitCode, HpcjupError
from hpcjup.schedulers.checks import Check, Status

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.transport.base import Transport

_MARK = "HPCJUP-PROBE "
_ROOT_MARK = "HPCJUP-ENVROOT "
# What an environment takes, for the env-root check: the analysis env (numpy, xarray, netCDF4,
# dask, distributed, JupyterLab) holds ~17,800 files in ~600 MB; the server env about as much.
ENV_KB, ENV_FILES = 600 * 1024, 18_000
# The env root as the build expands it (hpcjup.envs.script's absroot: ~/, $VAR/..., else under $HOME), made if
# missing, a file written and removed; then its free KB and inodes (df -P, df -Pi) and file system type.
_ENV_ROOT = r"""(
umask 077
r=$1
case $r in
    '~'/*) r="$HOME/${r#'~/'}" ;;
    '$'*) v=${r#'$'}; v=${v%%/*}; rest=${r#'$'"$v"}; val=$(printenv "$v") || { echo "HPCJUP-ENVROOT unset $v"; exit 0; }; r="$val$rest" ;;
    /*) ;;
    *) r="$HOME/$r" ;;
esac
mkdir -p "$r" 2>/dev/null || { echo "HPCJUP-ENVROOT nomake $r"; exit 0; }
f="$r/.doctor-$$"
( : >"$f" ) 2>/dev/null && rm -f "$f" && w=writable || w=readonly
kb=$(df -Pk "$r" 2>/dev/null | awk 'NR==2 {print $4}')
ino=$(df -Pi "$r" 2>/dev/null | awk 'NR==2 {print $4}')
fs=$(stat -f -c %T "$r" 2>/dev/null)
echo "HPCJUP-ENVROOT ok $w ${kb:-?} ${ino:-?} ${fs:-?} $r"
) 2>/dev/null"""
# Runs in the cluster-side Python (>= 3.9, standard library only): its version and the packages' versions.
_PROBE = f"""
import json, sys
versions = {{}}
for name in ("jupyter_server", "jupyterlab", "distributed", "dask", "dask_jobqueue", "jupyter_server_proxy"):
    try:
        from importlib.metadata import version
        versions[name] = version(name)
    except Exception:
        try:
            versions[name] = getattr(__import__(name), "__version__", "unknown")
        except Exception:
            versions[name] = None
print({_MARK!r} + json.dumps({{"version": sys.version.split()[0], "executable": sys.executable, "versions": versions}}))
"""


@dataclass(frozen=True)
class Report:
    """All checks of one `doctor` run."""

    host: str
    checks: list[Check]
    connect_error: HpcjupError | None = None

    @property
    def ok(self) -> bool:
        """Whether no check failed."""
        return all(check.status is not Status.FAIL for check in self.checks)

    @property
    def exit_code(self) -> ExitCode:
        """0 if all passed; 3/4 when the host could not be reached or refused us (as for every command); else 10."""
        if self.connect_error is not None:
            return self.connect_error.exit_code
        return ExitCode.OK if self.ok else ExitCode.REMOTE

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"host": self.host, "ok": self.ok, "checks": [check.to_dict() for check in self.checks]}


Connector = Callable[[str], "Transport"]


def run_checks(
    resolved: Resolved,
    host: str,
    connect: Connector,
    *,
    scheduler: Callable[[Transport], Scheduler] | None = None,
    dask: bool = True,
    node: bool = False,
    progress: Callable[[str], None] = lambda text: None,
) -> Report:
    """Connect to `host` once and run every check; a connection failure skips the rest. `scheduler` picks
    the adapter once connected (its checks come from `doctor_checks`); None: no batch system (--local)."""
    checks: list[Check] = []
    progress(f"Connecting to {host}…")
    started = time.monotonic()
    try:
        transport = connect(host)
    except (ConnectError, AuthError) as exc:
        checks.append(Check("ssh", Status.FAIL, exc.message, fix=exc.hint))
        after = [*(("scheduler",) if scheduler is not None else ()), *_AFTER_SSH]
        checks += [Check(name, Status.SKIP, "not checked: no connection") for name in after]
        return Report(host, checks, exc)
    with transport:
        kind = type(transport).__name__.replace("Transport", "").lower()
        if kind == "local":
            checks.append(Check("ssh", Status.SKIP, "--local: no SSH, no scheduler"))
        else:
            checks.append(
                Check("ssh", Status.PASS, f"connected to {host} ({kind}) in {time.monotonic() - started:.1f} s")
            )
        adapter = None
        if scheduler is not None:
            progress("Asking the scheduler…")
            try:
                adapter = scheduler(transport)
            except HpcjupError as exc:  # none of the known batch systems' commands on the host
                checks.append(Check("scheduler", Status.FAIL, exc.message, fix=exc.hint))
            else:
                checks += adapter.doctor_checks(transport, resolved)
        progress("Activating the environment…")
        where = "this machine" if kind == "local" else "the login node" if adapter and adapter.commands else host
        checks += check_environment(
            transport, resolved, shell=_job_shell(adapter), dask=dask, where=where, env_root=_env_root(resolved)
        )
        checks.append(check_session_dir(transport))
        if node:
            progress("Reading the env root back from a compute node (a short job)…")
            checks.append(_node_check(transport, adapter, resolved, _env_root(resolved)))
    return Report(host, checks)


def _node_check(transport: Transport, adapter: Scheduler | None, resolved: Resolved, root: str) -> Check:
    """--node: the env root as the login node names it, seen from a compute node (session/nodecheck.py)."""
    from hpcjup.session.nodecheck import check_node

    if adapter is None or not adapter.commands:
        return Check("env-root-node", Status.SKIP, "not checked: no batch system, no compute node")
    found = transport.run(["sh", "-c", _ENV_ROOT, "sh", root], check=False).stdout
    line = next((x[len(_ROOT_MARK) :] for x in found.splitlines() if x.startswith(_ROOT_MARK)), "")
    if not line.startswith("ok "):
        return Check("env-root-node", Status.SKIP, "not checked: the env root is not usable on the login node")
    return check_node(transport, adapter, resolved, line.split(" ", 5)[5])


_AFTER_SSH = ("environment", "jupyter", "dask", "dask-jobqueue", "env-root", "env-images", "sessions")


def _env_root(resolved: Resolved) -> str:
    """The env root a start would use: the `env_root` setting where there is one, else $HPCJUP_ENV_ROOT or the default."""
    from hpcjup.envs.identity import env_root

    setting = resolved.settings.get("env_root")
    return env_root(str(setting.value) if setting and setting.value else None)


def _job_shell(scheduler: Scheduler | None) -> list[str]:
    """The shell the job script runs in (its #! line, e.g. `bash -l` or `sh`): the setup lines are checked in it."""
    if scheduler is None:
        return ["sh"]
    from hpcjup.schedulers.base import JobSpec

    first = scheduler.render(JobSpec(name="doctor", session_dir="/tmp", command=["true"])).split("\n", 1)[0]
    return shlex.split(first[2:]) if first.startswith("#!") and first[2:].strip() else ["sh"]


def check_environment(
    transport: Transport,
    resolved: Resolved,
    *,
    shell: list[str],
    dask: bool,
    where: str = "the login node",
    env_root: str | None = None,
) -> list[Check]:
    """Run the job's setup lines and its Python non-interactively in the job's `shell`, as the job will; then
    the packages Jupyter needs. With `env_root`, the same command checks it first (the "env-root" check, last)."""
    python_argv = launcher_python(resolved, transport.home())
    from hpcjup.envs import pack

    root_lines = [f"set -- {shlex.quote(env_root)}", _ENV_ROOT, pack.DOCTOR, "set --"] if env_root is not None else []
    script = "\n".join([*root_lines, *setup_lines(resolved), shlex.join([*python_argv, "-c", _PROBE])])
    result = transport.run([*shell, "-c", script], check=False, timeout=180)
    root_check = [_root_check(result.stdout, env_root), _images_check(result.stdout, resolved)] if env_root else []
    probe = next((line[len(_MARK) :] for line in reversed(result.stdout.splitlines()) if line.startswith(_MARK)), None)
    if result.returncode != 0 or probe is None:
        failed = Check(
            "environment",
            Status.FAIL,
            f"`{shlex.join(python_argv)}` did not run after the setup lines (exit {result.returncode})",
            fix="Check python, modules, conda, venv, image and setup in your profile (`hpcjup profile show`); "
            "the lines run in a non-interactive login shell, as in the job.",
            details=_tail(result.stderr or result.stdout),
        )
        skipped = [
            Check(name, Status.SKIP, "not checked: the environment does not start")
            for name in ("jupyter", "dask", "dask-jobqueue")
        ]
        return [failed, *skipped, *root_check]
    info = json.loads(probe)
    versions: dict[str, str | None] = info["versions"]
    checks = [Check("environment", Status.PASS, f"Python {info['version']} ({info['executable']}) starts on {where}")]
    checks.append(_jupyter_check(versions, info["executable"]))
    checks += _dask_checks(versions, info["executable"], dask)
    return checks + root_check


def _root_check(stdout: str, given: str | None) -> Check:
    """The env root's line of the environment check's command as a Check."""
    line = next((line[len(_ROOT_MARK) :] for line in stdout.splitlines() if line.startswith(_ROOT_MARK)), None)
    fix_root = "Set `env_root` (or $HPCJUP_ENV_ROOT) to a directory you can write on a file system the compute nodes share, e.g. $PROJECT/.hpcjup/envs."
    if line is None:
        return Check("env-root", Status.FAIL, f"{given}: the check printed nothing", fix=fix_root)
    word, _, rest = line.partition(" ")
    if word == "unset":
        return Check("env-root", Status.FAIL, f"{given}: ${rest} is not set on the login node", fix=fix_root)
    if word == "nomake":
        return Check("env-root", Status.FAIL, f"cannot make {rest}", fix=fix_root)
    fields = rest.split(" ", 4)
    if word != "ok" or len(fields) != 5:
        return Check("env-root", Status.FAIL, f"{given}: the check printed {line!r}", fix=fix_root)
    mode, kb, inodes, fs, root = fields
    if mode != "writable":
        return Check("env-root", Status.FAIL, f"{root} is not writable", fix=fix_root)
    found = f"{root}: {_size(kb)} and {inodes} inodes free ({fs})"
    need = f"an environment takes about {ENV_KB // 1024} MB in {ENV_FILES:,} files"
    if (kb.isdigit() and int(kb) < ENV_KB) or (inodes.isdigit() and int(inodes) < ENV_FILES):
        return Check("env-root", Status.FAIL, f"{found}: too little for one environment", fix=f"{fix_root} ({need}.)")
    if fs in ("tmpfs", "ramfs"):
        return Check(
            "env-root",
            Status.WARN,
            f"{found}: a memory file system of the login node, which compute nodes do not see",
            fix=fix_root,
        )
    if (kb.isdigit() and int(kb) < 4 * ENV_KB) or (inodes.isdigit() and int(inodes) < 4 * ENV_FILES):
        return Check("env-root", Status.WARN, f"{found}: room for fewer than four environments", fix=f"{need}.")
    return Check("env-root", Status.PASS, found)


def _images_check(stdout: str, resolved: Resolved) -> Check:
    """How jobs can use environment images here (envs/pack.py's DOCTOR line): mounted, unpacked, or in place."""
    from hpcjup.envs.pack import DOCTOR_MARK, doctor_words

    line = next((line[len(DOCTOR_MARK) :] for line in stdout.splitlines() if line.startswith(DOCTOR_MARK)), "")
    setting = resolved.settings.get("env_mode")
    status, found, fix = doctor_words(line, str(setting.value) if setting and setting.value else "auto")
    where = " (on the login node; each job decides again on its nodes)"
    return Check("env-images", Status(status), found + where, fix=fix or None)


def _size(kb: str) -> str:
    return f"{int(kb) / 1024 / 1024:.1f} GB" if kb.isdigit() else "? GB"


def _jupyter_check(versions: dict[str, str | None], python: str) -> Check:
    server, lab = versions.get("jupyter_server"), versions.get("jupyterlab")
    fix = f"{python} -m pip install -U jupyterlab 'jupyter_server>=2.20' (or choose a Python that has them: python = ... in your profile)."
    if not server or not lab:
        missing = " and ".join(name for name, v in (("jupyter_server", server), ("jupyterlab", lab)) if not v)
        return Check("jupyter", Status.FAIL, f"{missing} missing in {python}", fix=fix)
    if _version(server) < MIN_SERVER:
        return Check(
            "jupyter",
            Status.FAIL,
            f"jupyter_server {server} is older than 2.20 (which fixed a token-stealing XSS)",
            fix=fix,
        )
    return Check("jupyter", Status.PASS, f"jupyter_server {server}, jupyterlab {lab}")


def _dask_checks(versions: dict[str, str | None], python: str, dask: bool) -> list[Check]:
    distributed, jobqueue, proxy = (
        versions.get("distributed"),
        versions.get("dask_jobqueue"),
        versions.get("jupyter_server_proxy"),
    )
    if not dask:
        checks = [Check("dask", Status.SKIP, "not checked: --no-dask")]
    elif not distributed:
        checks = [
            Check(
                "dask",
                Status.FAIL,
                f"distributed missing in {python}: sessions with Dask (the default) fail",
                fix=f"{python} -m pip install distributed, or start with --no-dask.",
            )
        ]
    elif not proxy:
        checks = [
            Check(
                "dask",
                Status.WARN,
                f"distributed {distributed}, but no jupyter-server-proxy: the dashboard link will not work",
                fix=f"{python} -m pip install jupyter-server-proxy",
            )
        ]
    else:
        checks = [Check("dask", Status.PASS, f"distributed {distributed}, jupyter-server-proxy {proxy}")]
    if jobqueue:
        checks.append(Check("dask-jobqueue", Status.PASS, f"dask-jobqueue {jobqueue} (for --worker-group)"))
    else:
        checks.append(
            Check("dask-jobqueue", Status.SKIP, "not installed: needed only for --worker-group and SLURMCluster()")
        )
    return checks


def check_session_dir(transport: Transport) -> Check:
    """~/.hpcjup/sessions can be created (0700) and written to."""
    from hpcjup.session.layout import SessionPaths

    root = SessionPaths(transport.home(), "x").root
    probe = f"{root}/.doctor-{time.time_ns()}"
    try:
        transport.makedirs(root, 0o700)
        transport.write_file(probe, b"ok\n", 0o600)
        transport.remove(probe)
    except (OSError, HpcjupError) as exc:
        return Check(
            "sessions",
            Status.FAIL,
            f"cannot write in {root}: {exc}",
            fix=f"Make {root} a directory you own (mode 0700) on a writable file system.",
        )
    return Check("sessions", Status.PASS, f"{root} is writable")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])

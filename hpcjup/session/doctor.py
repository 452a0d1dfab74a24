"""`hpcjup doctor`: check everything a session needs, before the first `start`, over one connection.

Each check passes or fails with what was found and, when it fails, the fix. Checks that cannot
run (nothing to check, or an earlier failure makes them meaningless) are skipped, with the
reason. Nothing is submitted: the scheduler is asked with `sbatch --test-only`.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from hpcjup.config.environment import MIN_SERVER, launcher_python, setup_lines
from hpcjup.errors import AuthError, ConnectError, ExitCode, HpcjupError

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.transport.base import Transport

_MARK = "HPCJUP-PROBE "
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


class Status(str, Enum):
    """The outcome of one check; only FAIL makes `doctor` exit non-zero."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One check's outcome, what was found, and how to fix a failure."""

    name: str
    status: Status
    summary: str
    fix: str | None = None
    details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {**asdict(self), "status": self.status.value}


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
    slurm: bool = True,
    dask: bool = True,
    progress: Callable[[str], None] = lambda text: None,
) -> Report:
    """Connect to `host` once and run every check; a connection failure skips the rest."""
    checks: list[Check] = []
    progress(f"Connecting to {host}…")
    started = time.monotonic()
    try:
        transport = connect(host)
    except (ConnectError, AuthError) as exc:
        checks.append(Check("ssh", Status.FAIL, exc.message, fix=exc.hint))
        checks += [Check(name, Status.SKIP, "not checked: no connection") for name in _AFTER_SSH]
        return Report(host, checks, exc)
    with transport:
        kind = type(transport).__name__.replace("Transport", "").lower()
        if kind == "local":
            checks.append(Check("ssh", Status.SKIP, "--local: no SSH, no scheduler"))
        else:
            checks.append(
                Check("ssh", Status.PASS, f"connected to {host} ({kind}) in {time.monotonic() - started:.1f} s")
            )
        if slurm:
            progress("Asking the scheduler…")
            checks.append(check_scheduler(transport))
            scheduler_ok = checks[-1].status is Status.PASS
            checks.append(
                check_partition(transport, resolved)
                if scheduler_ok
                else Check("partition", Status.SKIP, "not checked: no Slurm commands")
            )
            checks.append(
                check_account(transport, resolved)
                if scheduler_ok
                else Check("account", Status.SKIP, "not checked: no Slurm commands")
            )
            checks.append(
                check_request(transport, resolved)
                if scheduler_ok
                else Check("request", Status.SKIP, "not checked: no Slurm commands")
            )
        progress("Activating the environment…")
        checks += check_environment(transport, resolved, login_shell=slurm, dask=dask)
        checks.append(check_session_dir(transport))
    return Report(host, checks)


_AFTER_SSH = (
    "scheduler",
    "partition",
    "account",
    "request",
    "environment",
    "jupyter",
    "dask",
    "dask-jobqueue",
    "sessions",
)


def check_scheduler(transport: Transport) -> Check:
    """sbatch, squeue and scancel are on the PATH of a command run over SSH."""
    script = 'for c in sbatch squeue scancel; do command -v "$c" >/dev/null 2>&1 || echo "$c"; done'
    missing = transport.run(["sh", "-c", script], check=False).stdout.split()
    if missing:
        return Check(
            "scheduler",
            Status.FAIL,
            f"not found over SSH: {' '.join(missing)}",
            fix="hpcjup needs Slurm on the login node's PATH for commands run over SSH (not only in a login shell); "
            "check `ssh HOST command -v sbatch`.",
        )
    return Check("scheduler", Status.PASS, "sbatch, squeue and scancel found")


def check_partition(transport: Transport, resolved: Resolved) -> Check:
    """The partition exists, is up, and allows the requested time."""
    from hpcjup.config.resources import time_to_seconds

    result = transport.run(["sinfo", "-h", "-o", "%P|%a|%l"], check=False)
    if result.returncode != 0:
        return Check(
            "partition",
            Status.FAIL,
            f"sinfo failed: {_first(result.stderr)}",
            fix="Check that Slurm answers: `sinfo -s` on the login node.",
        )
    partitions: dict[str, tuple[str, str]] = {}
    default = None
    for line in result.stdout.splitlines():
        name, avail, limit = ([*line.strip().split("|"), "", ""])[:3]
        if name.endswith("*"):
            name = default = name[:-1]
        partitions.setdefault(name, (avail, limit))
    wanted = resolved.value("partition")
    if wanted is None:
        return Check("partition", Status.PASS, f"none set: the cluster's default ({default or 'none marked'})")
    if wanted not in partitions:
        return Check(
            "partition",
            Status.FAIL,
            f"no partition {wanted!r} (from {resolved.source('partition')})",
            fix=f"Choose one of: {', '.join(partitions) or 'none listed'} (`sinfo -s` shows them).",
        )
    avail, limit = partitions[wanted]
    if avail != "up":
        return Check(
            "partition",
            Status.WARN,
            f"{wanted} is {avail}: jobs will pend",
            fix="Choose a partition that is up (`sinfo -s`).",
        )
    asked = resolved.value("time")
    try:
        too_long = (
            asked is not None
            and limit not in ("infinite", "UNLIMITED", "")
            and time_to_seconds(asked) > time_to_seconds(limit)
        )
    except ValueError:
        too_long = False
    if too_long:
        return Check(
            "partition",
            Status.FAIL,
            f"time {asked} is more than {wanted}'s limit {limit}",
            fix=f"Ask for at most --time {limit}, or another partition.",
        )
    return Check("partition", Status.PASS, f"{wanted} is up, time limit {limit}")


def check_account(transport: Transport, resolved: Resolved) -> Check:
    """An account is set where the site needs one, and Slurm's accounting knows it for this user."""
    account = resolved.value("account")
    if account is None:
        if resolved.site is not None and resolved.site.account_required:
            return Check(
                "account",
                Status.FAIL,
                f"none set, and {resolved.site.title} needs one for every job",
                fix='Pass --account (-A), set HPCJUP_ACCOUNT, or add `account = "..."` to your profile.',
            )
        return Check("account", Status.PASS, "none set: the cluster's default account")
    script = 'command -v sacctmgr >/dev/null 2>&1 || exit 99; exec sacctmgr -n -P show associations where user="$(id -un)" account="$1" format=Account'
    result = transport.run(["sh", "-c", script, "sh", account], check=False)
    if result.returncode == 99:
        return Check("account", Status.SKIP, f"{account}: no sacctmgr to ask (the request check still tests it)")
    if result.returncode != 0:
        return Check(
            "account",
            Status.SKIP,
            f"{account}: sacctmgr cannot answer ({_first(result.stderr)}); the request check still tests it",
        )
    if not result.stdout.strip():
        return Check(
            "account",
            Status.FAIL,
            f"you have no association with account {account!r} (from {resolved.source('account')})",
            fix="`sacctmgr show associations user=$USER` lists your accounts; fix --account or the profile.",
        )
    return Check("account", Status.PASS, f"{account} is one of your accounts")


def check_request(transport: Transport, resolved: Resolved) -> Check:
    """Slurm would accept the job as configured (`sbatch --test-only`: nothing is submitted)."""
    res = resolved.resources()
    options = {
        "partition": res.partition,
        "account": res.account,
        "time": res.time,
        "nodes": str(res.nodes),
        "cpus-per-task": str(res.cpus) if res.cpus else None,
        "mem": res.mem,
        "gpus": res.gpus,
    }
    argv = ["sbatch", "--test-only", "--job-name=hpcjup-doctor", "--output=/dev/null", "--ntasks-per-node=1"]
    argv += [f"--{key}={value}" for key, value in options.items() if value is not None] + ["--wrap", "true"]
    result = transport.run(argv, check=False, timeout=60)
    text = (result.stderr.strip() or result.stdout.strip()).replace("sbatch: ", "")
    if result.returncode != 0:
        return Check(
            "request",
            Status.FAIL,
            f"Slurm would refuse the job: {_first(text)}",
            fix="Change what it names (partition, account, time, resources); `sinfo -s` and `sacctmgr show assoc user=$USER` help.",
            details=shlex.join(argv),
        )
    return Check("request", Status.PASS, f"Slurm would accept the job: {_first(text) or 'ok'}")


def check_environment(transport: Transport, resolved: Resolved, *, login_shell: bool, dask: bool) -> list[Check]:
    """Run the job's setup lines and its Python non-interactively, as the job will; then the packages Jupyter needs."""
    python_argv = launcher_python(resolved, transport.home())
    script = "\n".join([*setup_lines(resolved), shlex.join([*python_argv, "-c", _PROBE])])
    shell = ["bash", "-lc", script] if login_shell else ["sh", "-c", script]  # as job.sh runs: Slurm bash -l, local sh
    result = transport.run(shell, check=False, timeout=180)
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
        return [failed, *skipped]
    info = json.loads(probe)
    versions: dict[str, str | None] = info["versions"]
    where = "the login node" if login_shell else "this machine"
    checks = [Check("environment", Status.PASS, f"Python {info['version']} ({info['executable']}) starts on {where}")]
    checks.append(_jupyter_check(versions, info["executable"]))
    checks += _dask_checks(versions, info["executable"], dask)
    return checks


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


def _first(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])

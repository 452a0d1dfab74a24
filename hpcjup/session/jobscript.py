"""The session's files as the job needs them: the job script, the launcher's command line, the setup file, Dask's TLS.

submit.py uploads what `session_files` renders; `start --dry-run` shows `render_job` (preview.py).
"""

from __future__ import annotations

import shlex

from hpcjup.config.environment import guess_runtime, launcher_python, setup_lines
from hpcjup.config.resources import time_to_seconds
from hpcjup.envs.chsquash import ARG as IMAGE_ARG
from hpcjup.envs.chsquash import mount_args
from hpcjup.job import DASK_DIR, ENVLOCAL_FILE, JOB_SCRIPT, RELAY_FILE, SETUP_FILE, WRAP_VARIABLE, job_files
from hpcjup.schedulers.base import JobSpec, Scheduler
from hpcjup.session.layout import SessionPaths
from hpcjup.session.request import StartRequest

# Ask for the walltime warning this long before the limit (short jobs: a quarter of their time).
_WARN_SECONDS = 300


def session_files(paths: SessionPaths, scheduler: Scheduler, request: StartRequest) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (content, mode) of everything the job needs, rendered for this session."""
    files = {name: (code, 0o600) for name, code in job_files().items()}
    if request.envs is not None:
        files.update(request.envs.files())  # module-set kernels' wrappers
    setup = setup_lines(request.settings) if request.settings else []
    files[SETUP_FILE] = (
        (
            "\n".join(["# hpcjup: the session's environment, sourced by the job and its workers", *setup]) + "\n"
        ).encode(),
        0o600,
    )
    if request.dask is not None:
        from hpcjup.session.dasktls import make_credentials

        limit = request.resources.time
        cert, key = make_credentials(paths.name, time_to_seconds(limit) if limit else None)
        files[f"{DASK_DIR}/cert.pem"] = (cert, 0o600)
        files[f"{DASK_DIR}/key.pem"] = (key, 0o600)
    files[JOB_SCRIPT] = (render_job(paths, scheduler, request).encode(), 0o700)
    return files


def render_job(paths: SessionPaths, scheduler: Scheduler, request: StartRequest) -> str:
    """The job script of the session at `paths` (what `start` uploads, what `start --dry-run` shows)."""
    spec = JobSpec(
        name=paths.name,
        session_dir=paths.dir,
        command=launcher_command(request, paths, scheduler),
        resources=request.resources,
        warn_seconds=_warn_seconds(request.resources.time_min or request.resources.time),
        setup=(f". {shlex.quote(paths.file(SETUP_FILE))}",),
        requeue=request.preemptible,
    )
    return scheduler.render(spec)


def python_command(request: StartRequest, paths: SessionPaths, scheduler: Scheduler) -> str:
    """session.json's `python_command`: the command that runs the workers' Python, shell-quoted, when it is more
    than `python`: a container runtime's prefix, or env_wrapper's (the env from this node's copy of its image).
    Worker groups run theirs the same way. "" otherwise."""
    python = record_python(request, paths)
    wrap = env_wrapper(request, paths, scheduler, python)
    if wrap:
        return shlex.join([*wrap, python])
    launcher = _launcher_python(request, paths)
    images = mount_args([launcher]) if scheduler.name != "local" else []
    if images:  # a Charliecloud SquashFS image: mounted on the worker's node first (envlocal.sh)
        return shlex.join(["sh", paths.file(ENVLOCAL_FILE), _env_mode(request), *images, "--", *launcher])
    return shlex.join(launcher) if len(launcher) > 1 else ""


def unwrapped(python: list[str], paths: SessionPaths) -> list[str]:
    """A worker_python without env_wrapper's prefix: for what runs on the login node (nothing to copy there).
    A Charliecloud SquashFS image keeps it: ch-run cannot run the file, the login node mounts it too."""
    wrapped = python[:2] == ["sh", paths.file(ENVLOCAL_FILE)] and "--" in python
    if wrapped and not any(word.startswith(IMAGE_ARG) for word in python[: python.index("--")]):
        return python[python.index("--") + 1 :]
    return python


def record_python(request: StartRequest, paths: SessionPaths) -> str:
    """session.json's `python`: where Dask's workers run (worker groups too): the default kernel's Python with
    --env/--kernel, the server env's on a bare cluster, else the `python` setting."""
    if request.envs is not None:
        envs = request.envs.at(paths.dir)
        return envs.dask_python or envs.server_python
    return request.python


def _launcher_python(request: StartRequest, paths: SessionPaths) -> list[str]:
    """The argv prefix that runs the launcher: the server env's Python, else as the settings say."""
    if request.envs is not None:
        return [request.envs.server_python]
    return launcher_python(request.settings, paths.home) if request.settings else [request.python]


def env_wrapper(request: StartRequest, paths: SessionPaths, scheduler: Scheduler, python: str = "") -> list[str]:
    """The job's environments from node-local copies of their images (job/envlocal.sh): `sh envlocal.sh MODE
    ENVDIR... --`, run before the launcher (and, through $HPCJUP_ENV_WRAP, before Dask's workers on every host).
    With `python`: only the environment that Python is in (a worker-group job copies no other). Empty without
    environments hpcjup built, with `env_mode = "direct"`, or --local (the laptop's envs are on its own disk).
    Without `python`, also `image:FILE` for each Charliecloud SquashFS image the launcher or a kernel runs
    (envs/chsquash.py: mounted on every node, whatever env_mode says)."""
    mode = _env_mode(request)
    built = [check[2:] for check in request.envs.checks if check.startswith("b:")] if request.envs else []
    built = [env for env in built if python.startswith(env.rstrip("/") + "/")] if python else built
    built = [] if mode == "direct" else built
    commands = [_launcher_python(request, paths), *(k for _, k in request.envs.kernels)] if request.envs else []
    images = [] if python else mount_args(commands or [_launcher_python(request, paths)])
    if not (built or images) or scheduler.name == "local":
        return []
    return ["sh", paths.file(ENVLOCAL_FILE), mode, *built, *images, "--"]


def _env_mode(request: StartRequest) -> str:
    return (request.settings.value("env_mode") if request.settings else None) or "auto"


def relayed(request: StartRequest, scheduler: Scheduler) -> bool:
    """Whether the job runs its launcher through the host-side relay (job/relay.sh): Dask on several nodes with the
    launcher inside a container image (Apptainer, Singularity, Charliecloud).

    Why a relay, and not the launcher on the host running each Python child through the runtime: the launcher needs
    no change and stays one way for every session (it checks Jupyter, kernels, `distributed` and the dashboard's
    proxy in its own interpreter, which is the image's); the host needs only POSIX sh (a host Python >= 3.9 is not a
    given: RHEL 8's /usr/bin/python3 is 3.6, and a second way for hosts without one would be a second launcher);
    and the scheduler's knowledge stays in HPCJUP_LAUNCH: the relay runs whatever argv the launcher hands it, for
    srun, pbsdsh, blaunch and qrsh alike. The relay execs the launcher, which stays the job's main process (signals
    and exit code as in every session). It costs one sh process on the host and a FIFO in the session directory,
    which the container sees at the same path (the launcher lives there); no remote command."""
    settings = request.settings
    if settings is None or request.envs is not None or request.dask is None or request.resources.nodes < 2:
        return False
    image = settings.value("image")
    runtime = settings.value("container_runtime") or (guess_runtime(image) if image else "")
    return bool(image) and runtime != "podman" and scheduler.name != "local"


def launcher_command(request: StartRequest, paths: SessionPaths, scheduler: Scheduler) -> list[str]:
    python = _launcher_python(request, paths)
    wrap = env_wrapper(request, paths, scheduler)
    # `env` execs the wrapper, which stays the job's main process: the scheduler's signals reach it, it passes them on.
    prefix = ["env", f"{WRAP_VARIABLE}={shlex.join(wrap)}", *wrap] if wrap else []
    launcher = python
    if request.settings and relayed(request, scheduler):  # relay.sh leaves its server on the host, execs the launcher
        prefix = [*prefix, "sh", paths.file(RELAY_FILE), "--"]  # after envlocal.sh: the image mounted first
        launcher = launcher_python(request.settings, paths.home, relayed=True)
    command = [
        *prefix,
        *launcher,
        paths.launcher,
        "--session-dir",
        paths.dir,
        "--ready-timeout",
        str(request.ready_timeout),
    ]
    if len(python) > 1:
        command += ["--python-command", shlex.join(python)]
    if request.envs is not None:
        envs = request.envs.at(paths.dir)  # a module set's kernel: its wrapper in the session directory
        for name, kernel in envs.kernels:  # the first is the default kernel
            command += ["--kernel", f"{name}={kernel}"]
        if envs.dask_python:
            command += ["--dask-python", envs.dask_python]
    if request.workdir:
        command += ["--workdir", request.workdir]
    if scheduler.bind_address:
        command += ["--bind", scheduler.bind_address]
    if request.socket:
        command += ["--socket"]
    if request.preemptible:
        command += ["--preemptible"]
    if request.idle_timeout:
        command += ["--idle-timeout", str(request.idle_timeout)]
    dask = request.dask
    if dask is not None:
        command += ["--dask"]
        command += ["--workers", str(dask.workers)] if dask.workers is not None else []
        command += ["--worker-cores", str(dask.worker_cores)] if dask.worker_cores else []
        command += ["--worker-memory", dask.worker_memory] if dask.worker_memory else []
        if request.resources.time:  # workers retire cleanly a minute before the walltime warning
            lifetime = (
                time_to_seconds(request.resources.time)
                - (_warn_seconds(request.resources.time_min or request.resources.time) or 0)
                - 60
            )
            command += ["--lifetime", str(max(60, lifetime))]
    return command


def _warn_seconds(time_limit: str | None) -> int | None:
    """How long before the limit the job wants SIGUSR1 to shut down cleanly."""
    if time_limit is None:
        return _WARN_SECONDS
    return max(30, min(_WARN_SECONDS, time_to_seconds(time_limit) // 4))

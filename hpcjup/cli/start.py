"""`hpcjup start`: submit, wait for Jupyter, forward a port, hold it."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.detach import Detacher
from hpcjup.cli.profile import RENAMED, profile_option, typed_options
from hpcjup.cli.serve import Holder, terminate_as_interrupt
from hpcjup.config.profiles import resolve
from hpcjup.config.resources import parse_duration
from hpcjup.errors import ExitCode, HpcjupError, Interrupted, JobCannotStart, JobFailedError, SubmitError, UsageError
from hpcjup.session import envplan
from hpcjup.session.groups import WorkerGroup
from hpcjup.session.layout import check_name
from hpcjup.session.request import DaskRequest, StartRequest
from hpcjup.ui.tables import duration, expected_start

if TYPE_CHECKING:
    from collections.abc import Callable

    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.session.layout import SessionPaths
    from hpcjup.session.record import Connection, SessionRecord
    from hpcjup.session.wait import Progress
    from hpcjup.transport.base import Transport


@click.command(context_settings={"show_default": True})
@host_options
@click.option("-p", "--partition", help="Slurm partition (default: the cluster's default).")
@click.option("-A", "--account", help="Account (project) to charge.")
@click.option("-t", "--time", "time_limit", metavar="TIME", help="Time limit: minutes, HH:MM:SS or D-HH:MM:SS.")
@click.option(
    "--time-min",
    metavar="TIME",
    help="Let the scheduler shorten the time limit down to this to start sooner (Slurm backfill).",
)
@click.option("-N", "--nodes", type=click.IntRange(min=1), default=1, help="Nodes to allocate.")
@click.option("-c", "--cpus", type=click.IntRange(min=1), help="CPUs for Jupyter's task.")
@click.option("--mem", help="Memory per node, e.g. 16G.")
@click.option("--gpus", help="GPUs, e.g. 4 or a100:4.")
@click.option("-n", "--name", help="Session name, unique on the host (default: lab-XXXX).")
@click.option("--workdir", help="Jupyter's root directory on the cluster (default: your home).")
@click.option(
    "--python",
    "python",
    default="python3",
    help="The cluster-side Python that has JupyterLab (with --env/--kernel: the Python environments are built from).",
)
@click.option(
    "--env",
    "env",
    metavar="DIR|FILE",
    help="The default kernel's environment from a spec (requirements.txt, environment.yml, pyproject.toml, binder/), "
    "built on the cluster once; JupyterLab then runs from hpcjup's server environment.",
)
@click.option(
    "--kernel",
    "kernels",
    multiple=True,
    metavar="[NAME=]SPEC",
    help="Another kernel (repeatable): a spec directory or file, or cluster:/path of an existing venv or conda env.",
)
@click.option(
    "-y", "--yes", is_flag=True, help="Build what the start needs without asking (hpcjup's server environment)."
)
@click.option("--local-port", type=click.IntRange(1, 65535), help="Local port of the tunnel (default: a free one).")
@click.option(
    "--socket/--tcp",
    "use_socket",
    default=None,
    show_default=False,
    help="Jupyter on a private Unix socket on the node, reached by SSH to the node (--tcp: on a port, the default).",
)
@click.option("--no-browser", is_flag=True, help="Print the URL, do not open a browser.")
@click.option(
    "--timeout",
    "pending_timeout",
    metavar="DURATION",
    help="Give up (and cancel the job) if it still pends after this long, e.g. 30m.",
)
@click.option(
    "--idle-timeout",
    metavar="DURATION",
    default="1h",
    help="End the session after this long without kernels or browser activity (0: never).",
)
@click.option("--workers", type=click.IntRange(min=0), help="Dask worker processes in all (default: one per node).")
@click.option(
    "--worker-cores", type=click.IntRange(min=1), help="Threads per Dask worker (default: --cpus, or the node's)."
)
@click.option("--worker-memory", help="Memory limit per Dask worker, e.g. 8GB (default: Dask's auto).")
@click.option("--no-dask", is_flag=True, help="JupyterLab only, no Dask scheduler and workers.")
@click.option(
    "--worker-group",
    "worker_groups",
    multiple=True,
    metavar="PARTITION:JOBS[xCORES]",
    help="Extra Dask worker jobs on another partition (repeatable).",
)
@click.option(
    "-d", "--detach", is_flag=True, help="Return once the URL answers; a background process keeps the tunnel."
)
@click.option(
    "--directive",
    "directives",
    multiple=True,
    metavar="OPT",
    help="An extra batch-system option written verbatim as a directive, e.g. '--constraint=gpu' (repeatable).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Submit nothing: print the job script and the scheduler's start estimate for each partition.",
)
@profile_option
@click.option("--site", help="Site preset (see `hpcjup sites`), e.g. juwels.")
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    host: str | None,
    local: bool,
    partition: str | None,
    account: str | None,
    time_limit: str | None,
    time_min: str | None,
    nodes: int,
    cpus: int | None,
    mem: str | None,
    gpus: str | None,
    name: str | None,
    workdir: str | None,
    python: str,
    env: str | None,
    kernels: tuple[str, ...],
    yes: bool,
    local_port: int | None,
    use_socket: bool | None,
    no_browser: bool,
    pending_timeout: str | None,
    idle_timeout: str,
    workers: int | None,
    worker_cores: int | None,
    worker_memory: str | None,
    no_dask: bool,
    worker_groups: tuple[str, ...],
    detach: bool,
    directives: tuple[str, ...],
    dry_run: bool,
    profile: str | None,
    site: str | None,
    reach: Reach,
) -> None:
    """Submit a job that runs JupyterLab on a compute node, and open it through a tunnel.

    The URL (with its token) is printed as soon as Jupyter answers. Ctrl-C detaches:
    the job keeps running until `hpcjup stop`, its time limit, or the idle timeout.
    """
    # Every setting below comes from the one resolver: command line > environment > profile > site > built-in.
    app: App = ctx.obj
    if name is not None:
        check_name(name)  # before anything else looks at the environment or the network
    settings = resolve(typed_options(ctx, {**RENAMED, "ssh_backend": "ssh", "use_socket": "socket"}), profile=profile)
    settings.check_site()
    if settings.value("scheduler") not in (None, "auto"):
        from hpcjup.schedulers import get_scheduler

        get_scheduler(settings.value("scheduler"))  # an unknown name lists the known ones now, before connecting
    resources = settings.resources()
    cpus, local_port = settings.value("cpus"), settings.value("local_port")
    dask = (
        None
        if no_dask
        else DaskRequest(
            settings.value("workers"), settings.value("worker_cores") or cpus, settings.value("worker_memory")
        )
    )
    groups = [WorkerGroup.parse(text) for text in worker_groups]
    if groups and (no_dask or local):
        raise UsageError("--worker-group needs Dask on a batch system (not --no-dask or --local).")
    if dask is not None:
        dask.check_fits(resources)
    request = StartRequest(
        resources=resources,
        dask=dask,
        name=name,
        workdir=settings.value("workdir"),
        python=settings.value("python"),
        idle_timeout=parse_duration(settings.value("idle_timeout"), "--idle-timeout"),
        socket=bool(settings.value("socket")),
        settings=settings,
    )
    pending = parse_duration(pending_timeout, "--timeout", allow_zero=False) if pending_timeout else None
    host = app.resolve_host(None if local else settings.value("host"), local)
    plan = envplan.plan(settings)
    if dry_run:
        with app.connect_with_status(host, reach) as transport:
            # Asked afresh: the script shows the host's real paths (no upload checks a remembered home here).
            scheduler = app.choose_scheduler(transport, host, reach, remembered=False)
            scheduler.check_request(request.resources)
            rows: list[dict[str, str]] = []
            if plan is not None:
                located, rows = envplan.survey(transport, plan)
                request = dataclasses.replace(request, envs=located)
            return show_preview(ctx, app, transport, scheduler, request, rows)
    detacher = Detacher.prepare(local_port, detach)
    with app.connect_with_status(host, reach) as transport:
        scheduler = app.choose_scheduler(transport, host, reach)
        scheduler.check_request(request.resources)
        envs = _Envs(app, transport, transport.destination or host, settings, plan, yes, bare=not local)
        request = envs.first(request)
        scheduler, record, paths, conn, time_left, granted = _submit_and_wait(
            app,
            transport,
            scheduler,
            request,
            pending,
            lambda: app.relearn(transport, host, reach),
            envs,
        )
        if conn.dask_missing:
            app.ui.warn(f"This session has no Dask: {conn.dask_missing}")
        asked = request.resources.time_seconds
        if granted and asked and granted < asked:
            app.ui.info(f"The scheduler shortened the time limit to {duration(granted)} (--time-min) to start sooner.")
        holder = Holder(app, transport, record, paths, conn, reach=reach)
        shown = False

        def ready() -> None:
            nonlocal shown
            shown = True
            detacher.ready(app.store.log_path(host, record.name))

        try:
            with terminate_as_interrupt():
                _reach_node(app, transport, scheduler, record, paths, holder)
                _start_groups(app, transport, record, paths, conn, groups)
                holder.serve(
                    local_port=local_port, open_browser=not (no_browser or detach), on_ready=ready, time_left=time_left
                )
        except BaseException as exc:
            if shown or (holder.conn.socket and isinstance(exc, HpcjupError | Interrupted)):
                raise  # after the URL: the session is the user's; socket mode: _reach_node cancelled already
            _give_up(app, transport, scheduler, record, paths, exc)
            raise


class _Envs:
    """The environments of one start: located before the upload, built (and the upload retried) when it says
    one is missing, or, on a bare cluster whose python3 has no JupyterLab, hpcjup's server env built."""

    def __init__(
        self,
        app: App,
        transport: Transport,
        key: str,
        settings: Resolved,
        plan: envplan.Plan | None,
        yes: bool,
        *,
        bare: bool,
    ) -> None:
        self.app, self.transport, self.key, self.settings, self.yes = app, transport, key, settings, yes
        self.plan = plan
        self.bare = bare and plan is None and envplan.bare(settings)

    def first(self, request: StartRequest) -> StartRequest:
        """The request with its envs located (built first if the host has never been asked)."""
        from hpcjup.session import hostfacts

        if self.bare:
            facts = hostfacts.load(self.app.store, self.key)
            python = self.settings.value("python") or "python3"
            if facts is not None and python in facts.no_jupyter:
                self.plan = envplan.server_plan(self.settings)
            else:
                home = self.transport.home().rstrip("/")
                return dataclasses.replace(request, check_jupyter=home + python[1:] if python[:2] == "~/" else python)
        if self.plan is None:
            return request
        return dataclasses.replace(request, envs=self._prepare(fresh=False), check_jupyter=None)

    def retry(self, request: StartRequest, exc: Exception) -> StartRequest:
        """After the upload refused: build what is missing (asking first for a bare cluster's server env)."""
        from hpcjup.session import hostfacts
        from hpcjup.session.claim import NoJupyter

        if isinstance(exc, NoJupyter):
            self._confirm_server()
            self.plan = envplan.server_plan(self.settings)
            located = self._prepare(fresh=True)
            facts = hostfacts.load(self.app.store, self.key)
            if facts is not None:
                python = self.settings.value("python") or "python3"
                hostfacts.learn(self.app.store, self.key, no_jupyter=sorted({*facts.no_jupyter, python}))
            return dataclasses.replace(request, envs=located, check_jupyter=None)
        return dataclasses.replace(request, envs=self._prepare(fresh=True))

    def _prepare(self, *, fresh: bool) -> envplan.Located:
        assert self.plan is not None
        return envplan.prepare(self.app.store, self.key, self.transport, self.plan, self.app.ui, fresh=fresh)

    def _confirm_server(self) -> None:
        where = self.transport.destination or self.transport.name
        python = self.settings.value("python") or "python3"
        said = f"{python} on {where} has no JupyterLab (and no env, venv, conda, modules or image is set)."
        if self.yes:
            self.app.ui.info(f"{said} Building hpcjup's server environment there (--yes).")
            return
        if not sys.stdin.isatty():
            raise UsageError(
                f"{said} Nothing was submitted.",
                hint=f"Run again with --yes to build hpcjup's server environment there (JupyterLab, shared by every "
                f"session), or build it ahead: `hpcjup env build --server --host {where}`. Or set --python/--venv.",
            )
        if not click.confirm(f"{said}\nBuild hpcjup's server environment there now (a few minutes, once)?", err=True):
            raise UsageError(
                "Nothing was submitted.", hint="Set --python, --venv or --env to a Python with JupyterLab."
            )


def show_preview(
    ctx: click.Context,
    app: App,
    transport: Transport,
    scheduler: Scheduler,
    request: StartRequest,
    envs: list[dict[str, str]] | None = None,
) -> None:
    """--dry-run: the script and each partition's verdict; exit 5 unless every partition would take the job."""
    from hpcjup.session.preview import preview

    found = preview(transport, scheduler, request)
    rows = [{**p.to_dict(), "estimate_relative": expected_start(p.estimate)} for p in found.partitions]
    data: dict[str, object] = {
        "script": found.script,
        "scheduler": found.scheduler,
        "host": found.host,
        "session": found.session,
        "partitions": rows,
        "envs": envs or [],
    }
    error = None
    refused = [p for p in found.partitions if not p.can_take]
    if refused:  # one refused partition of several: Slurm refuses `-p a,b` with an unknown partition in it
        words = "; ".join(f"{p.name or 'the default partition'}: {p.refusal}" for p in refused)
        where = "" if len(refused) == len(found.partitions) else " in every partition asked for"
        error = SubmitError(
            f"{scheduler.title or scheduler.name} would not take the job{where} ({words}).", hint=refused[0].hint
        )
        data["error"] = error.to_dict()
    title = scheduler.title or scheduler.name
    lines = [f"# The job script for session {found.session}, as `hpcjup start` would submit it:", found.script]
    lines += [preview_line(title, row) for row in rows]
    verbs = {"built": "built, reused", "missing": "not built: `start` builds it first", "existing": "used as it is"}
    lines += [f"environment {e['env']} ({e['source']}): {verbs[e['state']]}" for e in envs or []]
    app.ui.result(data, text="\n".join(lines))
    if error is not None:
        if not app.ui.json_mode:
            raise error
        app.ui.warn(f"{error.message} Hint: {error.hint}")
        ctx.exit(int(ExitCode.SUBMIT))


def preview_line(title: str, row: dict[str, object]) -> str:
    """One partition's verdict in words."""
    name = row["name"] or "the default partition"
    if row["refusal"]:
        return f"{name}: {title} would refuse the job: {row['refusal']}" + (f" ({row['hint']})" if row["hint"] else "")
    parts = [f"{title} would start it {row['estimate_relative']}"] if row["estimate"] else []
    limit = row["time_limit_seconds"]
    parts.append(f"time limit {duration(limit) if isinstance(limit, int) else 'none'}")
    if row["total_nodes"] is not None:
        parts.append(f"{row['idle_nodes']} of {row['total_nodes']} nodes idle")
    if row["total_slots"] is not None:
        parts.append(f"{row['free_slots']} of {row['total_slots']} slots free")
    if row["note"]:
        parts.append(str(row["note"]))
    return f"{name}: " + "; ".join(parts)


def _submit_and_wait(
    app: App,
    transport: Transport,
    scheduler: Scheduler,
    request: StartRequest,
    pending: int | None,
    relearn: Callable[[], Scheduler],
    envs: _Envs | None = None,
) -> tuple[Scheduler, SessionRecord, SessionPaths, Connection, int | None, int | None]:
    """Submit and wait for Jupyter; interrupted before it answers, the job is cancelled (nothing to lose yet).
    The scheduler returned is the one the session was submitted with (the host may have changed since the
    last start remembered it: `relearn`)."""
    from hpcjup.schedulers import get_scheduler
    from hpcjup.session.claim import EnvMissing, NoJupyter
    from hpcjup.session.submit import submit
    from hpcjup.session.wait import ReadyWaiter

    for attempt in range(3):
        try:
            with app.ui.status() as line, terminate_as_interrupt():
                line.update("Submitting…")
                record, paths = submit(transport, scheduler, request, relearn=relearn)
            break
        except (EnvMissing, NoJupyter) as exc:  # nothing was claimed or submitted: build, then upload again
            if envs is None or attempt == 2:
                raise SubmitError(
                    "An environment the session needs is still not there after it was built.",
                    hint="Another start or `hpcjup env rm` may be removing it; run the command again.",
                ) from None
            with terminate_as_interrupt():
                request = envs.retry(request, exc)
    with app.ui.status() as line, terminate_as_interrupt():
        scheduler = get_scheduler(record.scheduler)
        # Cached at once: `hpcjup stop NAME` then finds the host without --host, whatever happens next.
        app.store.save(record.host, record.name, {"host": record.host, "record": asdict(record)})
        app.ui.info(f"Submitted job {record.job_id} as session {record.name} on {record.host}.")
        waiter = ReadyWaiter(
            transport, scheduler, record, paths, lambda p: line.update(*progress_text(p)), pending_timeout=pending
        )
        try:
            conn = waiter.wait()
            return scheduler, record, paths, conn, waiter.status.time_left, waiter.status.time_limit
        except JobFailedError:
            raise  # the job ended by itself; its log stays in the session directory for `hpcjup logs`
        except BaseException as exc:
            _abandon(transport, scheduler, record, paths)
            app.store.forget(record.host, record.name)
            if isinstance(exc, KeyboardInterrupt):
                raise Interrupted(f"Cancelled job {record.job_id} before Jupyter started; nothing was lost.") from None
            if isinstance(exc, JobCannotStart):
                raise JobCannotStart(f"{exc.message} Cancelled it; nothing was lost.", hint=exc.hint) from None
            raise


def _give_up(
    app: App, transport: Transport, scheduler: Scheduler, record: SessionRecord, paths: SessionPaths, exc: BaseException
) -> None:
    """Jupyter answered, but the URL never reached the user (Ctrl-C, a failed tunnel): nobody can have
    used the session, so cancel its job rather than leave it holding nodes unseen."""
    try:
        _abandon(transport, scheduler, record, paths, running=True)
    except HpcjupError as cleanup:  # the login connection may be gone too: say so, but report the cause
        app.ui.warn(f"Could not cancel job {record.job_id} ({cleanup.message}); run `hpcjup stop {record.name}`.")
        return
    app.store.forget(record.host, record.name)
    if isinstance(exc, KeyboardInterrupt):
        raise Interrupted(f"Cancelled job {record.job_id} before its URL was shown; nothing was lost.") from None
    app.ui.info(f"Cancelled job {record.job_id}: its URL could not be shown; nothing was lost.")


def _reach_node(
    app: App, transport: Transport, scheduler: Scheduler, record: SessionRecord, paths: SessionPaths, holder: Holder
) -> None:
    """Socket mode: SSH to the node now. If that fails (or is interrupted), the job is of no use: cancel it."""
    if not holder.conn.socket:
        return
    try:
        with terminate_as_interrupt():
            holder.route.connect()
    except BaseException as exc:
        holder.route.close()
        try:
            _abandon(transport, scheduler, record, paths, running=True)
        except HpcjupError as cleanup:  # the login connection may be gone too: say so, but report the cause
            app.ui.warn(f"Could not cancel job {record.job_id} ({cleanup.message}); run `hpcjup stop {record.name}`.")
        else:
            if not isinstance(exc, KeyboardInterrupt):
                app.ui.info(
                    f"Cancelled job {record.job_id}: Jupyter's socket on {holder.conn.node} was not reached; nothing was lost."
                )
        if isinstance(exc, KeyboardInterrupt):
            raise Interrupted(f"Cancelled job {record.job_id} before Jupyter was reached; nothing was lost.") from None
        raise


def _abandon(
    transport: Transport, scheduler: Scheduler, record: SessionRecord, paths: SessionPaths, running: bool = False
) -> None:
    """Cancel a job that never served anyone and remove its session directory (no notebook can be lost yet)."""
    scheduler.cancel(transport, record.job_id, graceful=False)
    if running:  # its launcher writes state.json as it goes: remove the directory after, not during
        from hpcjup.session.stop import wait_until_gone

        wait_until_gone(transport, scheduler, paths, record, 30.0)
    transport.rmtree(paths.dir)


def _start_groups(
    app: App,
    transport: Transport,
    record: SessionRecord,
    paths: SessionPaths,
    conn: Connection,
    groups: list[WorkerGroup],
) -> None:
    """Submit the worker groups; one that the scheduler refuses is reported and the session goes on."""
    from hpcjup.errors import SubmitError
    from hpcjup.session.groups import scale_group

    for group in groups:
        try:
            ids = scale_group(transport, paths, record, (conn.dask or {})["scheduler"], group, group.jobs)
            app.ui.info(f"Worker group {group.name}: job(s) {' '.join(ids)} on partition {group.partition}.")
        except SubmitError as exc:
            app.ui.warn(
                f"Worker group {group.name} was not submitted: {exc.message} ({exc.hint}) The session keeps running."
            )


def progress_text(p: Progress) -> tuple[str, str]:
    """(status line, change key): the key leaves out the clock, so plain output prints changes only."""
    parts = [p.state.lower()]
    if p.reason:
        parts.append(f"reason: {p.reason}")
    if p.expected_start:
        parts.append(f"expected start: {expected_start(p.expected_start)}")
    if p.node:
        parts.append(f"node: {p.node}")
    key = ", ".join(parts)
    return f"Job {key} ({p.elapsed:.0f} s)", key

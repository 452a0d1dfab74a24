"""`hpcjup start`: submit, wait for Jupyter, forward a port, hold it.

This module parses and prints; which job is cancelled, and when, is session/lifecycle.py's.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.detach import Detacher
from hpcjup.cli.dryrun import show_preview
from hpcjup.cli.holder import Holder, terminate_as_interrupt
from hpcjup.cli.profile import profile_option, typed_options
from hpcjup.cli.settingopts import setting_option
from hpcjup.config.profiles import resolve
from hpcjup.config.resources import parse_duration
from hpcjup.envs import container
from hpcjup.errors import HpcjupError, Interrupted, UsageError
from hpcjup.session import envplan
from hpcjup.session.groups import WorkerGroup
from hpcjup.session.layout import check_name
from hpcjup.session.lifecycle import give_up, reach_node, start_groups, submit_and_wait
from hpcjup.session.request import DaskRequest, StartRequest
from hpcjup.ui.tables import duration, expected_start

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.session.wait import Progress
    from hpcjup.transport.base import Transport


@click.command(context_settings={"show_default": True})
@host_options
@setting_option(
    "partition", "-p", "--partition", more="Slurm takes several, -p booster,batch: the first that can start."
)
@setting_option("account", "-A", "--account")
@setting_option("time", "-t", "--time", metavar="TIME")
@setting_option("time_min", "--time-min", metavar="TIME")
@setting_option("nodes", "-N", "--nodes")
@setting_option("cpus", "-c", "--cpus")
@setting_option("mem", "--mem")
@setting_option("gpus", "--gpus")
@click.option("-n", "--name", help="Session name, unique on the host (default: lab-XXXX).")
@setting_option("workdir", "--workdir", more="Default: your home.")
@setting_option("python", "--python", more="With --env/--kernel: the Python environments are built from.")
@setting_option("env", "--env", metavar="DIR|FILE", more="JupyterLab then runs from hpcjup's server environment.")
@setting_option("kernels", "--kernel", metavar="[NAME=]SPEC", more="Repeatable.")
@setting_option("build", "--build")
@click.option(
    "-y", "--yes", is_flag=True, help="Build what the start needs without asking (hpcjup's server environment)."
)
@setting_option("local_port", "--local-port", more="Default: a free one.")
@setting_option("socket", "--socket/--tcp", more="--tcp: on a port, the default.")
@setting_option("preemptible", "--preemptible/--not-preemptible", more="Default: not requeueable.")
@click.option("--no-browser", is_flag=True, help="Print the URL, do not open a browser.")
@click.option(
    "--timeout",
    "pending_timeout",
    metavar="DURATION",
    help="Give up (and cancel the job) if it still pends after this long, e.g. 30m.",
)
@setting_option("idle_timeout", "--idle-timeout", metavar="DURATION")
@setting_option("workers", "--workers", more="Default: one per node.")
@setting_option("worker_cores", "--worker-cores", more="Default: --cpus, or the node's.")
@setting_option("worker_memory", "--worker-memory", more="Default: Dask's auto.")
@click.option("--no-dask", is_flag=True, help="JupyterLab only, no Dask scheduler and workers.")
@click.option(
    "--worker-group",
    "worker_groups",
    multiple=True,
    metavar="PARTITION:[MIN-]JOBS[xCORES][:preemptible]",
    help="Extra Dask worker jobs on another partition (repeatable); MIN-MAX: adaptive, as the work needs.",
)
@click.option(
    "-d", "--detach", is_flag=True, help="Return once the URL answers; a background process keeps the tunnel."
)
@setting_option("directives", "--directive", metavar="OPT", more="E.g. --directive=--constraint=gpu; repeatable.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Submit nothing: print the job script and the scheduler's start estimate for each partition.",
)
@profile_option
@setting_option("site", "--site", more="E.g. juwels.")
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    host: str | None,
    local: bool,
    name: str | None,
    yes: bool,
    no_browser: bool,
    pending_timeout: str | None,
    no_dask: bool,
    worker_groups: tuple[str, ...],
    detach: bool,
    dry_run: bool,
    profile: str | None,
    reach: Reach,
    **settings_typed: Any,  # the setting options: read through the resolver (typed_options), not one by one
) -> None:
    """Submit a job that runs JupyterLab on a compute node, and open it through a tunnel.

    The URL (with its token) is printed as soon as Jupyter answers. Ctrl-C detaches:
    the job keeps running until `hpcjup stop`, its time limit, or the idle timeout.
    """
    # Every setting below comes from the one resolver: command line > environment > profile > site > built-in.
    app: App = ctx.obj
    if name is not None:
        check_name(name)  # before anything else looks at the environment or the network
    settings = resolve(typed_options(ctx, {"ssh_backend": "ssh"}), profile=profile)
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
    adapt_idle = parse_duration(settings.value("adapt_idle"), "adapt_idle")
    groups = [WorkerGroup.parse(text, idle=adapt_idle) for text in worker_groups]
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
        preemptible=bool(settings.value("preemptible")),
    )
    pending = parse_duration(pending_timeout, "--timeout", allow_zero=False) if pending_timeout else None
    host = app.resolve_host(None if local else settings.value("host"), local)
    plan = envplan.plan(settings)
    image = container.checked_image(settings)  # read now, before anything connects
    if dry_run:
        with app.connect_with_status(host, reach) as transport:
            # Asked afresh: the script shows the host's real paths (no upload checks a remembered home here).
            scheduler = app.choose_scheduler(transport, host, reach, remembered=False)
            request.check(scheduler)
            rows: list[dict[str, str]] = []
            if plan is not None:
                located, rows = envplan.survey(transport, plan)
                request = dataclasses.replace(request, envs=located)
            return show_preview(ctx, app, transport, scheduler, request, rows)
    detacher = Detacher.prepare(local_port, detach)
    with app.connect_with_status(host, reach) as transport:
        scheduler = app.choose_scheduler(transport, host, reach)
        request.check(scheduler)
        if image is not None:  # pulled once into the env root (the job runs the cached copy), or Podman's on --local
            pulled = (
                container.with_local_engine(settings)
                if local
                else container.with_local_image(transport, settings, app.ui)
            )
            request = dataclasses.replace(request, settings=pulled)
        if plan is not None and not local:  # a `--kernel image:docker://...` runs its cached copy
            plan = dataclasses.replace(
                plan, kernels=container.pull_kernel_images(transport, plan.kernels, settings, app.ui)
            )
        envs = _Envs(app, transport, transport.destination or host, settings, plan, yes, bare=not local)
        request = envs.first(request)
        scheduler, record, paths, conn, time_left, granted = submit_and_wait(
            app.ui,
            app.store,
            transport,
            scheduler,
            request,
            pending,
            lambda: app.relearn(transport, host, reach),
            progress_text,
            envs.retry,
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
                reach_node(app.ui, transport, scheduler, record, paths, holder.route, holder.conn)
                start_groups(app.ui, transport, record, paths, conn, groups)
                holder.serve(
                    local_port=local_port, open_browser=not (no_browser or detach), on_ready=ready, time_left=time_left
                )
        except BaseException as exc:
            if shown or (holder.conn.socket and isinstance(exc, HpcjupError | Interrupted)):
                raise  # after the URL: the session is the user's; socket mode: reach_node cancelled already
            give_up(app.ui, app.store, transport, scheduler, record, paths, exc)
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
        where = self.transport.host
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

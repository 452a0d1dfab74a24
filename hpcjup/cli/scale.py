"""`hpcjup scale`: change a Dask worker group of a running session."""

from __future__ import annotations

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.complete import complete_session
from hpcjup.errors import UsageError


@click.command()
@click.argument("session", shell_complete=complete_session)
@click.argument("group")
@click.argument("jobs", metavar="JOBS|MIN-MAX")
@host_options
@click.option("--partition", help="Partition of a new group (default: the group's name).")
@click.option(
    "--cores", type=click.IntRange(min=1), default=1, show_default=True, help="Cores per worker job of a new group."
)
@click.option("--preemptible", is_flag=True, help="The group's jobs may be preempted: Dask tolerates lost workers.")
@click.option("--profile", help="Profile for the adapt_idle setting.")
@json_option
@click.pass_obj
def command(
    app: App,
    session: str,
    group: str,
    jobs: str,
    host: str | None,
    local: bool,
    partition: str | None,
    cores: int,
    preemptible: bool,
    profile: str | None,
    reach: Reach,
) -> None:
    """Set worker GROUP of SESSION to JOBS worker jobs (0 removes them), or make it adaptive between MIN and MAX
    jobs as the work needs (the session's job grows and shrinks it); a new group is created."""
    from hpcjup.config.profiles import resolve
    from hpcjup.config.resources import parse_duration
    from hpcjup.session.groupjobs import scale_group
    from hpcjup.session.groups import WorkerGroup, check_group_name, check_partition, parse_range
    from hpcjup.session.overview import ended_error, named_session
    from hpcjup.session.record import Connection

    check_group_name(group)  # before anything: it becomes a file name in the session directory
    low, high = parse_range(jobs)
    idle = parse_duration(resolve({}, profile=profile).value("adapt_idle") or "5m", "adapt_idle")
    if partition is not None:
        check_partition(partition)
    host = app.resolve_host(host, local, session)
    if host == "local":
        raise UsageError("Worker groups need a batch system; --local sessions have none.")
    with app.connect(host, reach) as transport:
        view = named_session(transport, app.store, session)
        if not view.active:
            raise ended_error(view, transport)
        try:
            conn = Connection.from_json(transport.read_file(view.paths.connection))
        except FileNotFoundError:
            raise UsageError(
                f"Session {session} is not ready yet.", hint="Wait for `hpcjup attach` to print its URL."
            ) from None
        address = (conn.dask or {}).get("scheduler")
        if not address:
            raise UsageError(f"Session {session} has no Dask cluster (started with --no-dask).")
        spec = WorkerGroup(group, partition or group, low, cores, maximum=high, preemptible=preemptible, idle=idle)
        ids = scale_group(transport, view.paths, view.record, address, spec, low)
    size = f"adaptive, {low}-{high} job(s) as the work needs; now" if high is not None else ""
    app.ui.result(
        {"session": session, "group": group, "jobs": ids, "min": low, "max": high if high is not None else low},
        text=f"Worker group {group} of {session}: {size} {len(ids)} job(s) {' '.join(ids)}".replace("  ", " ").rstrip(),
    )

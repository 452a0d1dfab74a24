"""`hpcjup scale`: change a Dask worker group of a running session."""

from __future__ import annotations

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.complete import complete_session
from hpcjup.errors import UsageError


@click.command()
@click.argument("session", shell_complete=complete_session)
@click.argument("group")
@click.argument("jobs", type=click.IntRange(min=0))
@host_options
@click.option("--partition", help="Partition of a new group (default: the group's name).")
@click.option(
    "--cores", type=click.IntRange(min=1), default=1, show_default=True, help="Cores per worker job of a new group."
)
@json_option
@click.pass_obj
def command(
    app: App,
    session: str,
    group: str,
    jobs: int,
    host: str | None,
    local: bool,
    partition: str | None,
    cores: int,
    reach: Reach,
) -> None:
    """Set worker GROUP of SESSION to JOBS worker jobs (0 removes them); a new group is created."""
    from hpcjup.session.groups import WorkerGroup, check_group_name, check_partition, scale_group
    from hpcjup.session.overview import ended_error, view_of
    from hpcjup.session.record import Connection

    check_group_name(group)  # before anything: it becomes a file name in the session directory
    if partition is not None:
        check_partition(partition)
    host = app.resolve_host(host, local, session)
    if host == "local":
        raise UsageError("Worker groups need a batch system; --local sessions have none.")
    with app.connect(host, reach) as transport:
        view = view_of(transport, app.store, session)
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
        spec = WorkerGroup(group, partition or group, jobs, cores)
        ids = scale_group(transport, view.paths, view.record, address, spec, jobs)
    app.ui.result(
        {"session": session, "group": group, "jobs": ids},
        text=f"Worker group {group} of {session}: {len(ids)} job(s) {' '.join(ids)}".rstrip(),
    )

"""`hpcjup doctor`: check a profile against the cluster, each check with its fix."""

from __future__ import annotations

from typing import Any

import click

from hpcjup.cli.app import App, Reach, host_options, json_option
from hpcjup.cli.profile import profile_option, typed_options
from hpcjup.cli.settingopts import setting_option

_MARKS = {"pass": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "skip"}


@click.command("doctor")
@profile_option
@host_options
@setting_option("partition", "-p", "--partition", more="Checked.")
@setting_option("account", "-A", "--account", more="Checked.")
@setting_option("time", "-t", "--time", metavar="TIME", more="Checked against the partition's limit.")
@setting_option("python", "--python", more="Checked.")
@setting_option("site", "--site", metavar="NAME")
@click.option("--no-dask", is_flag=True, help="Do not require Dask (`distributed`).")
@click.option(
    "--node",
    is_flag=True,
    help="Also submit one short job that reads the env root (and the server environment) back from a compute node.",
)
@json_option
@click.pass_context
def command(
    ctx: click.Context,
    profile: str | None,
    host: str | None,
    local: bool,
    no_dask: bool,
    node: bool,
    reach: Reach,
    **settings_typed: Any,  # the setting options: read through the resolver (typed_options)
) -> None:
    """Check that `hpcjup start` can work: SSH, the scheduler, partition, account, environment, Jupyter, Dask.

    Uses the same settings as `start` (options, HPCJUP_* variables, --profile, [defaults], site).
    Nothing is submitted, except with --node (one short job, cancelled if it waits too long). Exit code 0 when nothing failed, 3 or 4 when the host cannot be reached
    or refuses the login, 10 when a check failed.
    """
    from hpcjup.config.profiles import resolve
    from hpcjup.session.doctor import run_checks

    app: App = ctx.obj
    # --ssh is the setting `ssh` typed on the command line: command line > $HPCJUP_SSH > profile > built-in.
    resolved = resolve(typed_options(ctx, {"ssh_backend": "ssh"}), profile=profile)
    host = app.resolve_host(None if local else resolved.value("host"), local)
    with app.ui.status() as line:
        report = run_checks(
            resolved,
            host,
            lambda where: app.connect(where, reach),  # as every command connects: --ssh, --accept-new-host-key, prompts
            # Once connected: --scheduler, the profile's or site's `scheduler`, or the one the host has.
            scheduler=None
            if local
            else lambda transport: app.choose_scheduler(transport, host, reach, remembered=False),
            dask=not no_dask,
            node=node,
            progress=line.update,
        )
    data = {**report.to_dict(), "profile": resolved.profile, "site": resolved.site.name if resolved.site else None}
    app.ui.result(data, text=lambda: render(report.to_dict()))
    failed = [c for c in report.checks if c.status.value == "fail"]
    if failed:
        app.ui.info(f"{len(failed)} of {len(report.checks)} checks failed.")
    if report.exit_code:
        # Not ctx.exit(): click's non-standalone main() returns that code, and hpcjup.cli.main ignores return values.
        raise SystemExit(int(report.exit_code))


def render(report: dict) -> str:
    """The text form: one line per check; the fix (and details) under a failure or warning."""
    width = max(len(check["name"]) for check in report["checks"])
    lines = []
    for check in report["checks"]:
        lines.append(f"{_MARKS[check['status']]}  {check['name'].ljust(width)}  {check['summary']}")
        if check["fix"] and check["status"] in ("fail", "warn"):
            lines.append(f"{' ' * (width + 8)}fix: {check['fix']}")
        if check["details"] and check["status"] == "fail":
            lines += [f"{' ' * (width + 8)}| {text}" for text in check["details"].splitlines()]
    return "\n".join(lines)

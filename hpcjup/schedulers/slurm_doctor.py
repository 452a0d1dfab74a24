"""Slurm's own `hpcjup doctor` checks after the queue check (queues.py): the account, and the whole request
(`sbatch --test-only`)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from hpcjup.transport.base import Transport

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.checks import Check


def check_account(transport: Transport, resolved: Resolved) -> Check:
    """An account is set where the site needs one, and Slurm's accounting knows it for this user."""
    from hpcjup.schedulers.checks import Check, Status, first_line

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
            f"{account}: sacctmgr cannot answer ({first_line(result.stderr)}); the request check still tests it",
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
    from hpcjup.schedulers.checks import Check, Status, first_line

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
            f"Slurm would refuse the job: {first_line(text)}",
            fix="Change what it names (partition, account, time, resources); `sinfo -s` and `sacctmgr show assoc user=$USER` help.",
            details=shlex.join(argv),
        )
    return Check("request", Status.PASS, f"Slurm would accept the job: {first_line(text) or 'ok'}")

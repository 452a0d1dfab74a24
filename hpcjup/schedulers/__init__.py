"""Scheduler adapters: one module per batch system, one registry line each here.

A session records its scheduler's name in session.json and every command reads it back
(`for_record`); `start` takes `--scheduler NAME` (or `scheduler = "..."` in a profile or site
preset), and with "auto" asks the host which batch system it has (`detect`, in the same remote
command that learns the home directory).
"""

from __future__ import annotations

import functools
from importlib import import_module

from hpcjup.errors import SubmitError, UsageError
from hpcjup.schedulers.base import JobState, JobStatus, Scheduler
from hpcjup.transport.base import Transport

__all__ = ["REGISTRY", "JobState", "JobStatus", "Scheduler", "detect", "get_scheduler"]

#: name -> "module:Class". The order is detection's: the first whose commands the host has wins.
REGISTRY = {
    "slurm": "hpcjup.schedulers.slurm:Slurm",
    "pbs": "hpcjup.schedulers.pbs:PBSPro",
    "pbs-nci": "hpcjup.schedulers.pbs_nci:NCIGadi",
    "lsf": "hpcjup.schedulers.lsf:LSF",
    "sge": "hpcjup.schedulers.sge:GridEngine",
    "none": "hpcjup.schedulers.none:NoScheduler",
    "local": "hpcjup.schedulers.local:LocalProcess",
}
#: Dialects of another adapter, chosen by name (a site preset: NCI Gadi's PBS Pro), never detected.
CHOSEN_ONLY = frozenset({"pbs-nci"})
#: Names a user may choose (`local` is what `--local` means, not a choice of its own).
CHOICES = tuple(name for name in REGISTRY if name != "local")
AUTO = "auto"


@functools.cache
def get_scheduler(name: str) -> Scheduler:
    """The adapter called `name`; an unknown name lists the known ones (exit 2)."""
    if name not in REGISTRY:
        raise UsageError(
            f"Unknown scheduler {name!r}.",
            hint=f"Use one of {', '.join(CHOICES)} (or `auto` to detect it on the host, `--local` for this machine).",
        )
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(import_module(module), cls)()


# One remote command: the home directory on the first line, then "have NAME" for each adapter whose
# commands the host's non-interactive shell finds (as the job's commands will be run), and what
# `qstat` says of itself (PBS Pro, OpenPBS, Torque and Grid Engine all have a `qstat`).
_PROBE = r"""
cd -P || exit 1
printf '%s\n' "$PWD"
for entry in "$@"; do
    name=${entry%%:*} cmds=${entry#*:} ok=1
    old_ifs=$IFS IFS=,
    for c in $cmds; do command -v "$c" >/dev/null 2>&1 || ok=; done
    IFS=$old_ifs
    [ -n "$ok" ] && printf 'have %s\n' "$name"
done
if command -v qstat >/dev/null 2>&1; then
    printf 'qstat %s\n' "$( { qstat --version 2>&1; qstat -help 2>&1; } | head -n 3 | tr '\n' ' ')"
fi
exit 0
"""


def detect(transport: Transport) -> str:
    """The batch system the host has, by its commands (and `qstat`'s own words for the qsub flavours);
    learns the home directory in the same remote command. SubmitError (exit 5) if it has none."""
    entries = [
        f"{name}:{','.join(get_scheduler(name).commands)}"
        for name in REGISTRY
        if get_scheduler(name).commands and name not in CHOSEN_ONLY
    ]
    result = transport.run(["sh", "-c", _PROBE, "sh", *entries], check=False)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or not lines or not lines[0].startswith("/"):
        raise SubmitError(f"Could not ask {transport.host} which batch system it has.")
    transport._home = lines[0]
    found = [line.split(" ", 1)[1] for line in lines[1:] if line.startswith("have ")]
    qstat = next((line[6:] for line in lines[1:] if line.startswith("qstat ")), "")
    flavour = _qstat_flavour(qstat)
    found = [name for name in found if name not in ("pbs", "sge") or name == flavour]
    if found:
        return found[0]
    if flavour == "torque":
        raise SubmitError(
            f"{transport.host} runs Torque, which hpcjup does not support (its qstat has no JSON output).",
            hint="Ask your centre whether a PBS Pro, OpenPBS or Slurm system is available, or use `--scheduler none` on a workstation.",
        )
    looked = sorted({c for entry in entries for c in entry.split(":", 1)[1].split(",")})
    raise SubmitError(
        f"No batch system found on {transport.host}: none of {', '.join(looked)} is on "
        "the PATH of a command run over SSH.",
        hint="For a plain SSH host (a workstation) use `--scheduler none`; on a cluster, name it with "
        f"--scheduler ({', '.join(c for c in CHOICES if c != 'none')}) and check `ssh HOST command -v sbatch`.",
    )


def _qstat_flavour(text: str) -> str | None:
    """Which `qstat` this is: "pbs" (PBS Pro, OpenPBS, Torque) or "sge" (Son of/Univa/Altair Grid Engine)."""
    words = text.lower()
    if "pbs_version" in words:  # PBS Pro and OpenPBS
        return "pbs"
    if words.startswith("version:"):  # Torque: "Version: 6.1.3"
        return "torque"
    if any(mark in words for mark in ("sge ", "ge 8", "ge 2", "univa", "ogs/ge", "grid engine")):
        return "sge"
    return None

"""The notebook's own Dask jobs (dask-jobqueue's scale-out): their defaults, and the submit wrapper that records them.

Standard library only, Python >= 3.9, shipped beside dasklaunch.py, whose DaskCluster takes these methods from
ScaleOut. dask/config/jobqueue.yaml gives the notebook's `SLURMCluster()` (or PBSCluster, ...) this session's
queue, account, environment, container prefix and TLS, and a job name (scale_name) that only the session's
scale-out jobs carry. The submit wrapper, first on the kernels' PATH under the submit command's name, drops the
surrounding job's variables that break a submission from inside a job and appends the id of each scale-out job it
submits to dask/jobs, which `hpcjup stop` cancels: those and only those, never a job of the user's own.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil

from atomic import write_private  # beside this file (the launcher puts its directory on sys.path)
from contract import (
    ENV_ACCOUNT,
    ENV_JOBQUEUE,
    ENV_PARTITION,
    ENV_SCRUB,
    ENV_SCRUB_KEEP,
    ENV_SUBMIT,
    JOBS_FILE,
    SETUP_FILE,
    WRAP_VARIABLE,
)

_COMMAND = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")  # the submit command's name: a file name, no path
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # a variable, or a prefix of variables (goes into a sed regex)

# The submit wrapper put first on PATH for Jupyter's kernels, under the submit command's name
# (@REAL@, @JOBS@, @NAME@: quoted; @SCRUB@, @KEEP@: checked words). It records only the session's Dask scale-out
# jobs: dask-jobqueue submits `COMMAND [EXTRA...] SCRIPT` whose header names the job (the name the session's
# jobqueue config gives: hpcjup+SESSION+scale); anything else (a job submitted by hand from a terminal or a
# cell, a submission by hand named `production-run`) is the user's own, and `hpcjup stop` must never cancel it.
_SUBMIT_WRAPPER = r"""#!/bin/sh
# hpcjup: @SCRUBBING@record the id of the session's own Dask jobs.
@SCRUB@name=@NAME@
ours=no
for arg; do script=$arg; done
if [ -n "$name" ] && [ "$#" -ge 1 ] && [ -f "$script" ] && [ -r "$script" ] && \
    grep -qxF -e "#SBATCH -J $name" -e "#PBS -N $name" -e "#BSUB -J $name" -e "#\$ -N $name" "$script"; then
    ours=yes
    i=1
    for arg; do  # a name given on the command line wins over the script's: then it is not ours
        [ "$i" -lt "$#" ] || break
        case $arg in -J* | -N* | --job-name*) ours=no ;; esac
        i=$((i + 1))
    done
fi
# The trailing x keeps the output's own trailing newlines; the subshell's exit code is the command's.
out=$(@REAL@ "$@"; code=$?; printf x; exit $code)
code=$?
out=${out%x}
printf '%s' "$out"
if [ "$code" -eq 0 ]; then
    # The id in each batch system's words: "Submitted batch job ID[ on cluster C]", "ID[;CLUSTER]" (parsable,
    # terse), "ID.SERVER", "Job <ID> is submitted ...", "Your job[-array] ID ..."; a dry run prints none.
    id=$(printf '%s\n' "$out" | sed -n -e 's/^Submitted batch job \([0-9][0-9]*\).*/\1/p' \
        -e 's/^\([0-9][0-9]*\)\(;.*\)\{0,1\}$/\1/p' \
        -e 's/^\([0-9][0-9]*\.[A-Za-z0-9][A-Za-z0-9.-]*\)$/\1/p' \
        -e 's/^Job <\([0-9][0-9]*\)> is submitted.*/\1/p' \
        -e 's/^Your job\(-array\)\{0,1\} \([0-9][0-9]*\).*/\2/p' | head -n 1)
    [ -z "$id" ] || [ "$ours" != yes ] || (umask 077 && printf '%s\n' "$id" >>@JOBS@)
fi
exit $code
"""
# Jobs submitted from inside a job inherit its variables, and some break the submission (Slurm: the
# allocation's node list, CPU counts): drop those under the prefix, but the ones to keep.
_SCRUB = r"""for v in $(env | sed -n 's/^\(@PREFIX@[A-Za-z0-9_]*\)=.*/\1/p'); do
    case " @KEEP@ " in *" $v "*) ;; *) unset "$v" ;; esac
done
"""


def submit_wrapper(real: str, jobs_file: str, scrub: str = "", keep: str = "", name: str = "") -> str:
    """The wrapper script: drop the `scrub`-prefixed variables (but those in `keep`), run the real
    submit command, pass its output and exit code on unchanged, and record the id it printed if the job
    is the session's: a job script whose header names it `name` (empty: record nothing)."""
    scrub = scrub if _VARIABLE.fullmatch(scrub) else ""
    keep = " ".join(name for name in keep.split() if _VARIABLE.fullmatch(name))
    block = _SCRUB.replace("@PREFIX@", scrub).replace("@KEEP@", keep) if scrub else ""
    return (
        _SUBMIT_WRAPPER.replace("@SCRUBBING@", f"drop the surrounding job's {scrub}* variables, " if scrub else "")
        .replace("@SCRUB@", block)
        .replace("@REAL@", shlex.quote(real))
        .replace("@JOBS@", shlex.quote(jobs_file))
        .replace("@NAME@", shlex.quote(name))
    )


class ScaleOut:
    """The scale-out half of a session's DaskCluster (dasklaunch.py), which sets the attributes below."""

    dir: str  # the session's dask/ directory
    config_dir: str
    address: str  # where the scheduler listens
    python: str
    python_command: str
    worker_cores: int

    @property
    def scale_name(self) -> str:
        """The name of the notebook's Dask scale-out jobs (dask-jobqueue's config): '+' is in no session name."""
        return f"hpcjup+{os.path.basename(os.path.dirname(self.dir))}+scale"

    def write_submit_wrapper(self) -> None:
        """The submit command (HPCJUP_SUBMIT, e.g. Slurm's) for kernels, wrapped: jobs submitted from inside a
        job inherit its variables, and those under HPCJUP_SCRUB break the submission (but HPCJUP_SCRUB_KEEP's);
        the wrapper drops them. It appends the id of each accepted scale-out job of the session (named
        scale_name) to dask/jobs (0600): `hpcjup stop` cancels those and only those, never a job of the user's own. The command's output and exit code pass through unchanged."""
        name = os.environ.get(ENV_SUBMIT, "")
        real = shutil.which(name) if _COMMAND.fullmatch(name) else None
        if real is None:
            return
        bindir = os.path.join(self.dir, "bin")
        os.makedirs(bindir, mode=0o700, exist_ok=True)
        path = os.path.join(bindir, name)
        scrub, keep = os.environ.get(ENV_SCRUB, ""), os.environ.get(ENV_SCRUB_KEEP, "")
        script = submit_wrapper(real, os.path.join(self.dir, JOBS_FILE), scrub, keep, self.scale_name)
        write_private(path, script.encode())
        os.chmod(path, 0o700)

    def scale_python(self) -> str:
        """The command a scale-out job runs its worker with. Where the job runs its environments from node-local
        copies (envlocal.sh, $HPCJUP_ENV_WRAP), the Python's path is this node's copy, which another node lacks:
        the job then goes through the same wrapper, which makes that node's copy and renames the path to it (a
        container image's mount too: the runtime's command names this node's)."""
        wrap = os.environ.get(WRAP_VARIABLE, "")
        if wrap:
            return f"{wrap} {self.python_command}"
        return self.python_command

    def jobqueue_config(self) -> dict:
        """Defaults for dask-jobqueue's cluster class in a notebook (the section HPCJUP_JOBQUEUE names):
        this session's queue, account, environment and TLS, so `SLURMCluster().scale(n)` (or PBSCluster, ...)
        needs no arguments. Empty where the job has no batch system."""
        section = os.environ.get(ENV_JOBQUEUE, "")
        if not _VARIABLE.fullmatch(section):
            return {}
        setup = shlex.quote(os.path.join(os.path.dirname(self.dir), SETUP_FILE))
        prologue = [
            "umask 077",  # Dask's scratch and logs on the worker's node are nobody else's
            f"if [ -r {setup} ]; then . {setup}; fi",  # the profile's environment; older sessions have none
            f"export DASK_CONFIG={shlex.quote(self.config_dir)}",
            f"export PATH={shlex.quote(os.path.dirname(self.python))}:$PATH",
        ]
        options = {
            "cores": self.worker_cores,
            "processes": 1,
            "memory": f"{max(1, self.worker_cores)}GB",
            "python": self.scale_python(),
            "queue": os.environ.get(ENV_PARTITION) or None,
            "account": os.environ.get(ENV_ACCOUNT) or None,
            "walltime": "01:00:00",
            "name": self.scale_name,
            "job-script-prologue": prologue,
            "worker-extra-args": ["--death-timeout", "60"],
            "log-directory": os.path.join(self.dir, "logs"),
            "scheduler-options": {"protocol": "tls", "host": self.address},
        }
        return {"jobqueue": {section: options}}

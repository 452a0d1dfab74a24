"""The claim: one remote command that checks the host, unpacks the session's files, claims its name and submits.

submit.py decides which name and files; this is the command on the login node (a POSIX sh script with the files
as a tar archive on stdin) and what its exit code means. Of two starts racing for a name exactly one wins (one
atomic mkdir), and session.json is completed with the job id in the same command, so a connection lost in between
leaves no job without a record.
"""

from __future__ import annotations

import posixpath
import secrets

from hpcjup.errors import RemoteCommandError, UnsafeSessionRoot, UsageError
from hpcjup.schedulers.base import Scheduler
from hpcjup.session.layout import SessionPaths
from hpcjup.transport.base import Transport
from hpcjup.transport.batch import pack

_IN_USE = 73
_CHANGED = 77
_UNSAFE = 78
_CLAIMED = "hpcjup-claimed"
_RECORDED = "hpcjup-recorded"
#: session.json as uploaded, its job id still to come: the claim completes it right after the submission, in the
#: same remote command, so a connection lost in between leaves no job without a record.
RECORD_TEMPLATE = "session.json.in"
JOB_ID_SLOT = "@HPCJUP_JOB_ID@"


_NO_PREFIX = 75
_ENV_MISSING = 76
_NO_JUPYTER = 79
_NO_IPYKERNEL = 80


class HostChanged(Exception):
    """The upload found another home directory, or no scheduler command, than the start assumed."""


class EnvMissing(Exception):
    """The upload found an environment the start needs not built (or the server env moved): build, then retry."""


class NoJupyter(Exception):
    """The upload found no JupyterLab in the Python of a start that set none (a bare cluster)."""


# Runs on the login node (POSIX sh, tar). First, ~/.hpcjup and its sessions directory must be the user's own
# and writable by no one else (exit 78): another user who can write there could swap a session's files.
# Then unpack the archive on stdin into a private staging
# directory, then claim the name with one mkdir (atomic: of two racing starts one wins) and move
# the files in. With a job id in $4, first move aside the ended session of that job, under a lock.
# Then, in the session directory, the scheduler's submit command ($5): after the line $8 (_CLAIMED) on
# stderr, the exit code and output are the scheduler's. Before anything, check that $6 is the home
# directory and $7 (the scheduler's command) is on the PATH, as the start assumed (exit 77 if not).
# Once the scheduler took the job, session.json is the uploaded template ($10) with the job id in its slot ($11):
# the id is the last line the submit command printed, cut at a ";" (Slurm's "id;cluster"), or the N of LSF's
# "Job <N> is submitted ...". The line "$9 ID" on stderr says it was recorded; the laptop still parses the
# output the adapter's way (parse_submission) and rewrites the record if the two differ.
# Before all that, the session's environments ($12...): `b:DIR` built (its marker; marked used; exit 76 too when a
# job found its image corrupt, DIR.sqsh.bad, or an env without its tree lost its image: the start's build packs it
# again or builds it anew; `t:DIR` built with its tree, for
# env_mode direct: exit 76 where it was dropped, the build unpacks it back), `c:ROOT:NAME` the
# server env `env upgrade-server` chose is still NAME (exit 76 if not), `p:DIR` an existing env's
# bin/python (exit 75, its path on stderr), `j:PYTHON` that Python has JupyterLab (exit 79), `m:LABEL WRAPPER`
# a module-set kernel's wrapper (kernelkinds.Kernel.wrapper) run with a check: exit 80, LABEL on stderr, only when the set
# loads here and its python3 has no ipykernel (a set that does not load here may on the nodes: the job says so).
_CLAIM = r"""
umask 077
root=$1 name=$2 tag=$3 old=$4 submit=$5 home=$6 need=$7 claimed=$8 recorded=$9 template=${10} slot=${11}
shift 11
[ "$(cd -P -- "$home" 2>/dev/null && pwd -P)" = "$(cd -P && pwd -P)" ] || exit 77
[ -z "$need" ] || command -v "$need" >/dev/null 2>&1 || exit 77
for e; do
    case $e in
        b:*) [ -f "${e#b:}/.hpcjup-env.json" ] && [ ! -e "${e#b:}.sqsh.bad" ] && { [ -e "${e#b:}/bin" ] || [ -f "${e#b:}.sqsh" ]; } ||
                 exit 76; : >"${e#b:}/.hpcjup-used" ;;
        t:*) [ -f "${e#t:}/.hpcjup-env.json" ] && [ -e "${e#t:}/bin" ] || exit 76; : >"${e#t:}/.hpcjup-used" ;;
        c:*) r=${e#c:}; n=${r##*:}; r=${r%:*}
             [ "$(readlink -- "$r/server-current" 2>/dev/null)" = "$n" ] || { [ -z "$n" ] && [ ! -e "$r/server-current" ]; } || exit 76 ;;
        p:*) [ -x "${e#p:}/bin/python" ] || { printf '%s\n' "${e#p:}" >&2; exit 75; } ;;
        j:*) "${e#j:}" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("jupyterlab") is None)' \
                 >/dev/null 2>&1 || exit 79 ;;
        m:*) r=${e#m:}
             sh -c "${r#* }" sh -c 'import importlib.util as u, sys; sys.exit(3 * (u.find_spec("ipykernel_launcher") is None))' \
                 >/dev/null 2>&1
             [ $? -ne 3 ] || { printf '%s\n' "${r%% *}" >&2; exit 80; } ;;
    esac
done
final=$root/$name stage=$root/.stage-$tag lock=
mkdir -p -- "$root" || exit 70
for d in "${root%/*}" "$root"; do
    [ -O "$d" ] || exit 78
    case $(ls -ld -- "$d") in ?????w*|????????w*) exit 78 ;; esac
done
mkdir -- "$stage" || exit 70
trap 'rm -rf -- "$stage" "$root/.old-$tag"; [ -z "$lock" ] || rmdir -- "$lock"' EXIT
tar -xf - -C "$stage" || exit 72
if [ -n "$old" ]; then
    mkdir -- "$root/.lock-$name" 2>/dev/null || exit 73
    lock=$root/.lock-$name
    grep -q "\"job_id\": \"$old\"" "$final/session.json" 2>/dev/null || exit 73
    mv -- "$final" "$root/.old-$tag" || exit 73
fi
mkdir -- "$final" 2>/dev/null || exit 73
for f in "$stage"/*; do mv -- "$f" "$final/" || exit 74; done
rm -rf -- "$root/.old-$tag"
cd -- "$final" || exit 74
printf '%s\n' "$claimed" >&2
out=$(eval "$submit")
rc=$?
printf '%s\n' "$out"
[ "$rc" -eq 0 ] || exit "$rc"
id=$(printf '%s\n' "$out" | sed -n '$s/^Job <\([^>]*\)>.*/\1/;$s/;.*//;$p')
case $id in ''|*[!A-Za-z0-9_.+-]*) exit 0 ;; esac
sed "s/\"job_id\": \"$slot\"/\"job_id\": \"$id\"/" "$template" >.session.json.new &&
    mv -f -- .session.json.new session.json && rm -f -- "$template" && printf '%s %s\n' "$recorded" "$id" >&2
exit 0
"""


def upload_and_submit(
    transport: Transport,
    scheduler: Scheduler,
    paths: SessionPaths,
    files: dict[str, tuple[bytes, int]],
    replace: str,
    checks: tuple[str, ...] = (),
) -> tuple[str, str] | None:
    """Run the claim script with the files as a tar archive on stdin, then the scheduler's submit command:
    (the job id, the id session.json was completed with or ""), or None if the name is in use. A refused
    submission leaves no directory behind."""
    tag = secrets.token_hex(4)
    need = scheduler.commands[0] if scheduler.commands else ""
    args = [paths.root, paths.name, tag, replace, scheduler.submit_command, paths.home, need, _CLAIMED, _RECORDED]
    args += [RECORD_TEMPLATE, JOB_ID_SLOT, *checks]
    argv = ["sh", "-c", _CLAIM, "sh", *args]
    rc, out, err = transport.run_raw(argv, input=pack(files), timeout=300)
    text = err.decode(errors="replace")
    before, claimed, after = text.partition(_CLAIMED + "\n")
    if not claimed:
        if rc == _IN_USE:
            return None
        if rc == _CHANGED:
            raise HostChanged
        if rc == _ENV_MISSING:
            raise EnvMissing
        if rc == _NO_JUPYTER:
            raise NoJupyter
        if rc == _NO_IPYKERNEL:
            label = before.strip().splitlines()[-1] if before.strip() else "a module set"
            raise UsageError(
                f"--kernel {label}: that module set's python3 on {transport.host} has no ipykernel, which runs "
                "Jupyter kernels. Nothing was submitted.",
                hint="Add a module that provides ipykernel to the set, or install it for that Python "
                "(after `module load ...`: python3 -m pip install --user ipykernel).",
            )
        if rc == _NO_PREFIX:
            where = before.strip().splitlines()[-1] if before.strip() else "an env"
            raise UsageError(
                f"{where} on {transport.host} has no bin/python: it is not an environment "
                "there. Nothing was submitted.",
                hint="Give --kernel cluster:PREFIX the prefix of a venv or conda env on the cluster.",
            )
        if rc == _UNSAFE:
            raise UnsafeSessionRoot(
                f"{paths.root} (or {posixpath.dirname(paths.root)}) on {transport.host} is "
                "not yours alone: it belongs to another user, or others may write to it. Nothing was created.",
                hint=f"On the cluster: `ls -ld {posixpath.dirname(paths.root)} {paths.root}`; make both yours with "
                f"`chmod go-w` (or move them away if another user owns them).",
            )
        if rc == 74:  # claimed, but a file could not be moved in: nothing was submitted, take it all back
            transport.rmtree(paths.dir)
        raise RemoteCommandError(["upload", paths.dir], rc, "", before)
    after, _, recorded = after.partition(_RECORDED + " ")
    try:
        stdout = out.decode(errors="replace")
        if rc != 0:
            raise scheduler.refusal(RemoteCommandError([scheduler.submit_command], rc, stdout, after))
        return scheduler.parse_submission(stdout, after), recorded.strip()
    except BaseException:
        transport.rmtree(paths.dir)  # the scheduler took no job (or printed no id): nothing to keep
        raise

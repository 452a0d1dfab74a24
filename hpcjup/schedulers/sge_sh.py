"""The POSIX sh the Grid Engine adapter sends: the state of the user's jobs in one remote command (qstat, the
error reasons of jobs in error state, accounting for finished ones), the user's own jobs by name, and
`start --dry-run`'s one remote command. Read by sge_parse.py."""

from __future__ import annotations

from hpcjup.schedulers.shell import BOUNDED, FRAME

# All of the user's jobs; then, framed, the error reasons of those in error state (Eqw), which only
# `qstat -j` shows: one remote command, and a second qstat only while some job is in error state.
# Then, framed, accounting for those of the wanted jobs ($2...) that qstat no longer lists: `qacct -j ID`
# for one, one scan of the user's last $1 days for several (each qacct reads the whole accounting file).
# Each query bounded (shell.BOUNDED): a qmaster that takes the connection and never answers costs one wait.
QSTAT = f"""{BOUNDED}
days=$1; shift
xml=$(bounded qstat -xml -r -u "$(id -un)") || exit $?
printf '%s\\n{FRAME} errors\\n' "$xml"
ids=$(printf '%s\\n' "$xml" | awk -F'[<>]' '$2 == "JB_job_number" {{ j = $3 }} $2 == "state" && $3 ~ /E/ {{ print j }}')
[ -z "$ids" ] || bounded qstat -j "$(printf '%s' "$ids" | tr '\\n' ',')" 2>&1 | grep -E '^(job_number|error reason)'
missing=
for id in "$@"; do
    case "$xml" in *"<JB_job_number>$id</JB_job_number>"*) ;; *) missing="$missing $id" ;; esac
done
set -- $missing
if [ $# -gt 0 ] && command -v qacct >/dev/null 2>&1; then
    printf '{FRAME} qacct\\n'
    if [ $# -eq 1 ]; then bounded qacct -j "$1"; else bounded qacct -o "$(id -un)" -d "$days" -j; fi 2>/dev/null
fi
exit 0"""
# awk: `ID NAME` for each job in `qstat -xml` (one element a line; an array job's tasks repeat the id).
OWN_JOBS = r"""
/<JB_job_number>/ { id = $0; sub(/.*<JB_job_number>/, "", id); sub(/<.*/, "", id) }
/<JB_name>/ { name = $0; sub(/.*<JB_name>/, "", name); sub(/<\/JB_name>.*/, "", name) }
/<\/job_list>/ { if (id != "") print id, name; id = name = "" }
"""
# One remote command for `start --dry-run` (after `set -- SCRIPT QUEUE...`, "" for any queue); framed (shell.FRAME).
PREVIEW = f"""
script=$1; shift
printf '{FRAME} slots\\n'; qstat -g c 2>&1; printf '\\n{FRAME} end %s\\n' "$?"
for q in "$@"; do
    printf '{FRAME} verify %s\\n' "$q"
    printf '%s' "$script" | qsub -w v ${{q:+-q "$q"}} 2>&1
    printf '\\n{FRAME} end %s\\n' "$?"
    [ -z "$q" ] && continue
    printf '{FRAME} limit %s\\n' "$q"; qconf -sq "$q" 2>&1 | grep -E '^h_rt '; printf '\\n{FRAME} end %s\\n' "$?"
done
"""

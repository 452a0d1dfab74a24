"""The POSIX sh the Slurm adapter sends: the state of many jobs in one remote command (squeue, then sacct), and
`start --dry-run`'s one remote command (sinfo, then `sbatch --test-only` per partition). Read by slurm_parse.py."""

from __future__ import annotations

from hpcjup.schedulers.shell import BOUNDED, FRAME

# squeue fields: state, reason, expected start, node list, time left, time limit.
SQUEUE_FORMAT = "%T|%r|%S|%N|%L|%l|%i"
SACCT_FIELDS = "State,ExitCode,NodeList,Timelimit"
# One remote command for the state of many jobs ($1: ids joined by commas): squeue for all of them, then,
# for those it no longer shows, accounting (finished jobs leave squeue after MinJobAge; sacct remembers
# them where accounting is enabled). Older Slurm refuses a whole list for one id it has forgotten
# ("Invalid job id specified"): then one id at a time. Any other failure (no controller to ask) is the
# answer for all of them: no second query, no accounting (bounded: shell.BOUNDED), so a stopped controller
# costs one bounded wait, not one per job. Framed sections (shell.FRAME) that `statuses` reads; the squeue
# section holds Slurm's own words when it ends with a non-zero code.
STATUSES = (
    BOUNDED
    + r"""
ids=$1 fmt=$2 acct=$3 frame=$4
printf '%s squeue\n' "$frame"
out=$(bounded squeue -h -t all -j "$ids" -o "$fmt" 2>&1); rc=$?
case $rc:$out in
0:*) ;;
*"Invalid job id"*)
    out= rc=0 some=
    old_ifs=$IFS IFS=,
    for id in $ids; do
        if line=$(bounded squeue -h -t all -j "$id" -o "$fmt" 2>&1); then
            some=1
            [ -n "$line" ] && out="$out
$line"
            continue
        fi
        case $line in *"Invalid job id"*) ;; *) out=$line rc=1; break ;; esac
    done
    IFS=$old_ifs
    # Every id refused as forgotten: a query of one's own jobs tells that from a controller that cannot answer.
    if [ "$rc" = 0 ] && [ -z "$some" ]; then
        line=$(bounded squeue -h -u "$(id -un)" -o %i 2>&1) || { out=$line rc=1; }
    fi ;;
esac
printf '%s\n%s end %s\n' "$out" "$frame" "$rc"
[ "$rc" = 0 ] || exit 0
missing=
old_ifs=$IFS IFS=,
for id in $ids; do
    case "$out
" in *"|$id
"*) ;; *) missing=${missing:+$missing,}$id ;; esac
done
IFS=$old_ifs
if [ -n "$missing" ] && command -v sacct >/dev/null 2>&1; then
    printf '%s sacct\n' "$frame"
    bounded sacct -n -P -X -j "$missing" -o "$acct" 2>/dev/null
    printf '%s end %s\n' "$frame" "$?"
fi
exit 0
"""
)
# sh, in the job: the limit Slurm granted it in seconds (with --time-min it may be shorter than asked).
GRANTED_LIMIT = (
    '"$(squeue -h -j "$SLURM_JOB_ID" -o %l 2>/dev/null | awk -F\'[-:]\' '
    "'{ n = NF; s = $n + 60 * $(n-1) + (n > 2 ? 3600 * $(n-2) : 0) + (n > 3 ? 86400 * $(n-3) : 0); print s + 0 }')\""
)
# One remote command for `start --dry-run` (after `set -- SCRIPT PARTITION...`, "" for the default partition).
# Each answer is framed (shell.FRAME), so the parser knows what printed it and how it exited.
PREVIEW = f"""
script=$1; shift
printf '{FRAME} sinfo\\n'; sinfo -h -o '%P|%a|%l|%F' 2>&1; printf '\\n{FRAME} end %s\\n' "$?"
for p in "$@"; do
    printf '{FRAME} test %s\\n' "$p"
    printf '%s' "$script" | sbatch --test-only ${{p:+"--partition=$p"}} 2>&1
    printf '\\n{FRAME} end %s\\n' "$?"
done
"""

# hpcjup's per-host launches for a launcher inside a container image (POSIX sh, on the host, outside the image).
#
#   sh relay.sh -- COMMAND ARGS...        (COMMAND: the container runtime that runs the launcher)
#
# Why it exists: the launcher of an image session runs INSIDE the image (ch-run/apptainer exec ... python3), where
# the scheduler's per-host launch (srun, pbsdsh, blaunch, qrsh: $HPCJUP_LAUNCH) is not; this script is the job's
# main process on the host, so it has them. It starts COMMAND as its child with $HPCJUP_RELAY naming its channel,
# a FIFO in relay/ beside this script (the session directory: the container sees it at the same path, since the
# launcher itself lives there), and runs what the launcher asks for there (dasklaunch.py `Relay`):
#   launch N       run the argv in relay/N.argv (shell words, written by the launcher before it asks) in the
#                  background; its pid goes to relay/N.pid, its exit code to relay/N.exit (and a line in the job log
#                  where it is not 0): that is how the launcher learns that a host's workers ended or failed;
#   signal N SIG   kill -SIG that launch (the launcher's stop: TERM, then KILL after its grace).
# A launch is the scheduler's own (srun ... -w HOST ... ch-run IMAGE -- python -m distributed.cli.dask_worker): its
# end is the scheduler's business on the other host, as for a launcher outside any image. Every signal the job
# gets is passed on to COMMAND (as envlocal.sh does); COMMAND's exit code is this script's. When COMMAND ends (also
# killed outright) every launch still running gets SIGTERM, then SIGKILL after GRACE seconds, and relay/ goes.
# Nothing secret passes here: argv files hold paths and options (the token stays in the session's 0600 files).
umask 077
[ "${1:-}" = -- ] && shift
dir=${0%/*}/relay
GRACE=10
rm -rf "$dir" # a run before this one (a requeued job) may have left it
if ! mkdir "$dir" || ! mkfifo "$dir/requests"; then
    echo "hpcjup: cannot make the relay's channel $dir/requests (a FIFO) for the Dask workers on the other nodes" >&2
    exit 1
fi

launch() { # $1: N. The argv's words are the launcher's shlex.join: `eval set --` gives them back one for one.
    (
        n=$1
        eval "set -- $(cat "$dir/$n.argv")" || exit
        "$@" &
        pid=$!
        echo "$pid" >"$dir/$n.pid.tmp" && mv "$dir/$n.pid.tmp" "$dir/$n.pid"
        trap '' TERM # the relay's end stops the launch itself (by its pid), not this watcher
        while :; do
            wait "$pid"
            rc=$?
            kill -0 "$pid" 2>/dev/null || break
        done
        [ "$rc" -eq 0 ] || echo "hpcjup: relay: launch $n ($dir/$n.argv) exited with code $rc" >&2
        echo "$rc" >"$dir/$n.exit.tmp" && mv "$dir/$n.exit.tmp" "$dir/$n.exit"
    ) &
}

serve() {
    exec 3<>"$dir/requests" # read and write: opening never waits for a writer, reading never ends at EOF
    while IFS=' ' read -r what n sig <&3; do
        case $n in '' | *[!0-9]*) continue ;; esac
        case $what in
            launch) [ -r "$dir/$n.argv" ] && launch "$n" ;;
            signal)
                case $sig in TERM | KILL | INT) [ -r "$dir/$n.pid" ] && kill "-$sig" "$(cat "$dir/$n.pid")" 2>/dev/null ;; esac
                ;;
        esac
    done
}

serve </dev/null &
server=$!
HPCJUP_RELAY=$dir/requests
export HPCJUP_RELAY
"$@" &
child=$!
for s in TERM INT HUP USR1 USR2; do trap "kill -$s $child 2>/dev/null" "$s"; done
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
done
kill -KILL "$server" 2>/dev/null

# What the launcher did not stop (it was killed, or its stop ran out of time): TERM, then KILL after GRACE seconds.
running() { # the pids of launches without an exit code that are still there
    for f in "$dir"/*.pid; do
        [ -r "$f" ] && [ ! -e "${f%.pid}.exit" ] && p=$(cat "$f") && kill -0 "$p" 2>/dev/null && echo "$p"
    done
}
left=$(running)
if [ -n "$left" ]; then
    echo "hpcjup: relay: stopping what the launcher left running on the other nodes" >&2
    kill -TERM $left 2>/dev/null
    i=0
    while [ "$i" -lt "$GRACE" ] && [ -n "$(running)" ]; do
        sleep 1
        i=$((i + 1))
    done
    left=$(running)
    [ -z "$left" ] || kill -KILL $left 2>/dev/null
fi
rm -rf "$dir"
exit "$rc"

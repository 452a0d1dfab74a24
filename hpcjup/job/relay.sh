# hpcjup's per-host launches for a launcher inside a container image (POSIX sh, on the host, outside the image).
#
#   sh relay.sh -- COMMAND ARGS...        (COMMAND: the container runtime that runs the launcher)
#
# Why it exists: the launcher of an image session runs INSIDE the image (ch-run/apptainer exec ... python3), where
# the scheduler's per-host launch (srun, pbsdsh, blaunch, qrsh: $HPCJUP_LAUNCH) is not. This script makes a
# channel, a FIFO in relay/ beside it (the session directory: the container sees it at the same path, since the
# launcher itself lives there), leaves a server behind on the host, and execs COMMAND with $HPCJUP_RELAY naming
# the FIFO: the launcher is the job's main process as in any session (the scheduler's signals reach it, its exit
# code is the job's), and the server, its child, runs what it asks for (relayed.py `Relayed`, for dasklaunch.py):
#   launch N       run the argv in relay/N.argv (shell words, written by the launcher before it asks) in the
#                  background; its pid goes to relay/N.pid, its exit code to relay/N.exit (and a line in the job log
#                  where it is not 0): that is how the launcher learns that a host's workers ended or failed;
#   signal N SIG   kill -SIG that launch (the launcher's stop: TERM, then KILL after its grace).
# A launch is the scheduler's own (srun ... -w HOST ... ch-run IMAGE -- python -m distributed.cli.dask_worker): its
# end is the scheduler's business on the other host, as for a launcher outside any image. Once the launcher is
# gone (it ended, or was killed outright) every launch still running gets SIGTERM, then SIGKILL after GRACE
# seconds, and relay/ goes; the batch system ends whatever is left with the job, as always.
# Nothing secret passes here: argv files hold paths and options (the token stays in the session's 0600 files).
umask 077
[ "${1:-}" = -- ] && shift
dir=${0%/*}/relay
main=$$ # this shell's pid: the launcher's once it execs
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
        trap '' TERM # the relay stops the launch itself (by its pid), not this watcher: an ignored signal ends no wait
        wait "$pid"
        rc=$?
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

running() { # the pids of launches without an exit code that are still there
    for f in "$dir"/*.pid; do
        [ -r "$f" ] && [ ! -e "${f%.pid}.exit" ] && p=$(cat "$f") && kill -0 "$p" 2>/dev/null && echo "$p"
    done
}

ended() { # the launcher is gone: what it did not stop (killed, or its stop ran out of time) gets TERM, then KILL
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
}

alive() { # the launcher: there, and not a zombie its parent (the batch system) has yet to reap
    kill -0 "$main" 2>/dev/null || return 1
    case $(sed 's/.*) \(.\).*/\1/' "/proc/$main/stat" 2>/dev/null) in Z | X) return 1 ;; esac
}

(
    serve </dev/null &
    server=$!
    # A child cannot wait for its parent: it looks every 2 s (one short `sleep` each time: nothing to speak of).
    while alive; do sleep 2; done
    kill -KILL "$server" 2>/dev/null
    ended
) </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &  # envlocal.sh's locks (a mounted image) stay the launcher's
HPCJUP_RELAY=$dir/requests
export HPCJUP_RELAY
exec "$@"

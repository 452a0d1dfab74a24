# hpcjup's environments from node-local storage (POSIX sh; shipped with every job beside launcher.py).
#
#   sh envlocal.sh MODE ENVDIR... -- COMMAND ARGS...
#
# Runs before any Python of the job on each node: the job script runs the launcher through it, and the per-host
# launch of Dask's workers (dasklaunch.py, $HPCJUP_ENV_WRAP) runs them through it on every host. For each ENVDIR
# (an environment hpcjup built, its image ENVDIR.sqsh and the image's sha256 in ENVDIR/.hpcjup-env.json) it:
# - copies the image once per node to node-local storage ($HPCJUP_ENV_LOCAL, else $TMPDIR, /dev/shm, /tmp: local
#   file systems with room), into <local>/hpcjup-UID/envs/DIGEST/, a directory of this user only (0700, owner
#   checked: a directory someone else made is never used), checking its sha256 as it copies: a mismatch is never
#   used, ENVDIR.sqsh.bad tells the next start to pack it again;
# - MODE auto: unpacks it into RAM (tmpfs) where its tree fits in a quarter of the job's memory (ram_kb), else
#   mounts it with squashfuse_ll (else squashfuse) where FUSE works, else unpacks it on local disk; MODE image
#   only mounts, MODE unpack only unpacks (RAM within the same bound first); a copy another job made is used as is;
# - else (MODE direct, no image, no room, no tools) the environment is used in place, with a warning saying why;
#   one whose tree was dropped after packing (envs/pack.py: the image is all there is on the shared filesystem) is
#   unpacked into this session's directory instead (<session>/nodes/HOST/, removed as the node's copies are), and where
#   that cannot be either (its image corrupt, no unsquashfs), this script ends with exit 3 and says why.
# All of one user's jobs on a node share one copy per digest: each holds DIGEST.lock with `flock -s` for its
# life; setup and cleanup take .lock with `flock -x`; a cleaner removes what nobody holds (`flock -xn`), at the
# end of every job and at the start of the next (a mount a killed job left). Then COMMAND runs with every argument
# that names a path in an ENVDIR (or in another node's copy of its image: Dask's workers get the launcher's paths)
# renamed to this node's copy; signals the job gets are passed on to it; its exit code is this script's.
# An argument `image:FILE` is a container image file (a Charliecloud SquashFS image, envs/chsquash.py) handled the
# same way (copied, mounted or unpacked, shared, cleaned), keyed by the sha256 its name holds (sha256-HEX.sqfs, as
# hpcjup pulls them: the copy is checked against it; a mismatch marks FILE.bad, the next start pulls it again), else
# by its path, size and mtime (a user's own file, used as it is); env_mode direct mounts it all the same. FILE is
# renamed to the mount directory also inside an argument (a --kernel or --python-command command line). It has no
# in-place fallback (ch-run cannot run the file): where it cannot be mounted or unpacked, the job ends saying why.
umask 077
mode=$1
shift
# Warnings go to the job's log and to envlocal.txt beside this script (the session directory; contract.py
# ENVLOCAL_WARNINGS: the laptop shows them while it waits).
warn() { printf 'hpcjup: warning: %s\n' "$*" >&2; printf '%s\n' "$*" >>"${0%/*}/envlocal.txt" 2>/dev/null; }
uid=$(id -u)
n=0 envs=
images=  # any image:FILE argument: it is mounted whatever the mode (direct: as auto), nothing to use in place
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    n=$((n + 1))
    case $1 in image:*) images=yes ;; esac
    eval "e_$n=\$1"
    shift
done
[ "$#" -gt 0 ] && shift

# squashfuse_ll (libfuse's low-level API: inode numbers, no path walk per call, the kernel caches entries and
# pages for good) before squashfuse: `import xarray, dask.distributed` from a fresh mount took 0.76-1.03 s with it
# against 1.22-1.43 s with squashfuse, 0.48-0.56 s from local disk (issue 21: 4 runs each on the mini-cluster).
squash=$(command -v squashfuse_ll 2>/dev/null || command -v squashfuse 2>/dev/null)
fuse_ok() {
    [ -c /dev/fuse ] && [ -r /dev/fuse ] && [ -w /dev/fuse ] && [ -n "$squash" ] &&
        { command -v fusermount3 >/dev/null 2>&1 || command -v fusermount >/dev/null 2>&1; }
}
unmount() { fusermount3 -u "$1" 2>/dev/null || fusermount -u "$1" 2>/dev/null || fusermount3 -uz "$1" 2>/dev/null || fusermount -uz "$1" 2>/dev/null; }
mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }
meta() {
    case $1 in
        image:*) image_meta "${1#image:}" "$2" ;;
        *) sed -n "s/.*\"image\": {[^}]*\"$2\": \"\{0,1\}\([0-9a-f]*\).*/\1/p" "$1/.hpcjup-env.json" 2>/dev/null ;;
    esac
}
image_meta() {  # $1 FILE, $2 sha256|bytes|tree_kb|check: meta's answers for an image file (no metadata beside it)
    case $2 in
        bytes) stat -L -c %s "$1" 2>/dev/null ;;
        tree_kb) echo $(($(stat -L -c %s "$1" 2>/dev/null || echo 0) * 4 / 1024)) ;;  # unpacked: ~3x gzip's size
        sha256 | check)
            h=$(printf %s "${1##*/}" | sed -n 's/^sha256-\([0-9a-f]\{64\}\)\.sqfs$/\1/p')
            if [ -n "$h" ]; then echo "$h"; elif [ "$2" = sha256 ]; then
                printf '%s %s\n' "$1" "$(stat -L -c '%s %Y' "$1" 2>/dev/null)" | sha256sum | cut -d' ' -f1
            fi ;;
    esac
}
free_kb() { df -Pk "$1" 2>/dev/null | awk 'NR==2 {print $4}'; }
mine() {  # a real directory of this user, 0700: anything else is never used
    [ -d "$1" ] && [ ! -L "$1" ] && [ "$(stat -c '%u %a' "$1" 2>/dev/null)" = "$uid 700" ]
}
local_fs() {
    case $(stat -f -c %T "$1" 2>/dev/null) in
        '' | nfs* | lustre | gpfs | fuse* | cifs | smb* | beegfs | ceph | panfs | afs | 9p) return 1 ;;
    esac
}

can_unpack() { command -v unsquashfs >/dev/null 2>&1; }
has_tree() { [ -e "$1/bin" ]; }  # envs/pack.py's: an environment whose tree was dropped has its image only
# The copies of an environment without its tree, where no node-local storage could take one: this session's own,
# this node's (the session directory is on a shared filesystem, and private: 0700).
shared=${0%/*}/nodes/$(uname -n 2>/dev/null || hostname)
in_ram() { case $(stat -f -c %T "$1" 2>/dev/null) in tmpfs | ramfs) return 0 ;; esac; return 1; }

# >>> ram_kb (envs/pack.py's doctor runs this function too: one place for the bound)
ram_kb() {  # the KB of RAM auto may fill with unpacked environments on tmpfs: a quarter of the smallest of the
    # node's MemAvailable, the memory the scheduler gave the job ($HPCJUP_JOB_MEMORY_KB, its adapter's export) and
    # every memory limit of its cgroup (v2 memory.max, v1 memory.limit_in_bytes, up to the root): tmpfs pages count
    # against the memory cgroup of the job that writes them, so three quarters stay the job's own.
    {
        sed -n 's/^MemAvailable: *\([0-9]*\) kB$/kb \1/p' /proc/meminfo 2>/dev/null
        echo "kb ${HPCJUP_JOB_MEMORY_KB:-}"
        while IFS=: read -r _ ctl path; do
            case $ctl in
                '') top=/sys/fs/cgroup f=memory.max ;;
                *memory*) top=/sys/fs/cgroup/memory f=memory.limit_in_bytes ;;
                *) continue ;;
            esac
            d=$top${path%/}
            while [ "${#d}" -ge "${#top}" ]; do
                [ ! -r "$d/$f" ] || echo "b $(cat "$d/$f" 2>/dev/null)"
                d=${d%/*}
            done
        done </proc/self/cgroup 2>/dev/null
    } | awk '$2 ~ /^[0-9]+$/ {
        k = $1 == "kb" ? $2 : $2 / 1024
        if (k != "" && (m == "" || k < m)) m = k
    } END { printf "%d\n", m / 4 }'
}
# <<< ram_kb

ram=
picked=
pick() {  # $1 ram|disk|any, $2 KB: sets $base to the first local candidate of that kind with that much room
    # (tmpfs only within what is left of $ram) that is (or now is) a private directory of this user
    for c in $cands; do
        [ -d "$c" ] && [ -w "$c" ] && local_fs "$c" || continue
        if in_ram "$c"; then [ "$1" != disk ] && [ "$2" -le "$ram" ] || continue; else [ "$1" != ram ] || continue; fi
        [ "$(free_kb "$c")" -ge "$2" ] 2>/dev/null || continue
        mkdir -p -m 0700 "$c/hpcjup-$uid/envs" 2>/dev/null
        if mine "$c/hpcjup-$uid" && mine "$c/hpcjup-$uid/envs"; then
            base=$c/hpcjup-$uid/envs
            ! in_ram "$c" || ram=$((ram - $2))
            return 0
        fi
        case " $picked " in *" $c "*) ;; *) picked="$picked $c"; warn "$c/hpcjup-$uid is not a private directory of yours: not used" ;; esac
    done
    return 1
}

# How this node uses an environment's image, and where: unpacked, mounted, or not at all (why, for the warning).
# auto, by the slow-filesystem benchmark on the mini-cluster (benchmarks/results/slowfs.md, n=3, 0.1 and 0.5 ms;
# issue 21's target: within 1.3x of local disk):
# - unpacked into RAM (tmpfs: /dev/shm, or $TMPDIR where it is one) where its tree fits in ram_kb: JupyterLab's
#   start 0.67-1.21x and a kernel's `import xarray, dask.distributed` 0.90-1.16x local disk; first use (both envs'
#   copies and unpacks) 2.9-4.7 s (unsquashfs of the 389 MB server env alone: 0.95 s into /dev/shm, 3.5 s into /tmp
#   on this VM's disk; two nodes unpacking into /tmp at once took 11-16 s);
# - else mounted with squashfuse_ll where FUSE works: a first use of 1.7-1.9 s, but 1.37-1.90x and 2.0-2.2x;
# - else unpacked on local disk (imports at disk speed, a slow first use).
# image and unpack choose only among their own (unpack: RAM within ram_kb first, then disk).
decide() {  # $1 ENVDIR: sets $how (direct|image|unpack), $base and $why (direct: why not)
    how=direct base= why=
    case $mode in
        direct) return ;;
        auto | image | unpack) ;;
        *) why="unknown env_mode $mode"; return ;;
    esac
    command -v flock >/dev/null 2>&1 || { why="no flock(1) here to share copies safely"; return; }
    t=$(meta "$1" tree_kb) b=$(meta "$1" bytes)
    t=${t:-0} b=$((${b:-0} / 1024 + 1024))
    d=$(meta "$1" sha256 | cut -c1-16)
    for c in $cands; do  # a copy another job made on this node: used as it is
        if [ -n "$d" ] && [ -f "$c/hpcjup-$uid/envs/$d/ready" ] && mine "$c/hpcjup-$uid/envs"; then
            base=$c/hpcjup-$uid/envs how=unpack
            ! mounted "$base/$d/env" || how=image
            return
        fi
    done
    [ -n "$ram" ] || ram=$(ram_kb)
    case $mode in auto | unpack) ! can_unpack || ! pick ram $((t + b)) || { how=unpack; return; } ;; esac
    case $mode in auto | image) ! fuse_ok || ! pick any "$b" || { how=image; return; } ;; esac
    case $mode in auto | unpack) ! can_unpack || ! pick disk $((t + b)) || { how=unpack; return; } ;; esac
    inram=" (tmpfs only within $ram KB, a quarter of the job's memory)"
    case $mode in
        auto) if fuse_ok || can_unpack; then why="no node-local storage with $b KB free and a private directory of yours$inram"
            else why="no usable FUSE (/dev/fuse, squashfuse, fusermount) nor unsquashfs here"; fi ;;
        image) if fuse_ok; then why="no node-local storage with $b KB free and a private directory of yours$inram"
            else why="no usable FUSE here (/dev/fuse, squashfuse, fusermount)"; fi ;;
        unpack) if can_unpack; then why="no node-local storage with $((t + b)) KB free and a private directory of yours$inram"
            else why="no unsquashfs here"; fi ;;
    esac
}
cands=${HPCJUP_ENV_LOCAL:-${TMPDIR:-} /dev/shm /tmp}

sweep() {  # every copy nobody holds, in every candidate's directory of ours (under its .lock), goes (unmounted
    # first): a job's end, or one a killed job left (wherever it was: another job may have chosen elsewhere)
    command -v flock >/dev/null 2>&1 || return 0
    for c in $cands "$shared"; do
        s=$c/hpcjup-$uid/envs
        mine "$s" || continue
        exec 9<>"$s/.lock" && flock -x 9 || continue
        for l in "$s"/*.lock; do
            [ -f "$l" ] || continue
            d=${l%.lock}
            flock -xn "$l" true 2>/dev/null || continue
            if mounted "$d/env" && ! unmount "$d/env"; then warn "could not unmount $d/env"; continue; fi
            rm -rf "$d" && rm -f "$l"
        done
        exec 9>&-
    done
}

now() { date +%s.%N 2>/dev/null; }
took() {  # seconds since $1 (a `now`), "" where date has no %N
    awk -v a="$1" -v b="$(now)" 'BEGIN { if (a b ~ /^[0-9.]+$/) printf "%.2f", b - a }'
}

use() {  # $1 ENVDIR, $2 the fd that holds its copy (under $base/.lock): sets $got to the copy's path (and $first,
    # the seconds this job spent making it: the first use on this node), or leaves it ENVDIR
    e=$1 img=$1.sqsh sha=$(meta "$1" sha256) bad=$1.sqsh.bad has=.hpcjup-env.json left="$1 used in place"
    want=$sha again="packs it again" slower=" (slower on a shared filesystem)"
    case $e in
        image:*) img=${e#image:} want=$(meta "$e" check) bad=${e#image:}.bad has=etc left="${e#image:} not usable" again="pulls it again" slower= ;;
        *) has_tree "$e" || left="$1 not used here" slower= again="builds it again" ;;  # its tree was dropped
    esac
    if [ -z "$sha" ] || [ ! -f "$img" ]; then warn "$e has no image: $left"; return; fi
    if [ -e "$bad" ]; then warn "$img was found corrupt: $left until the next start $again"; return; fi
    d=$(printf %s "$sha" | cut -c1-16)
    dir=$base/$d
    if [ ! -f "$dir/ready" ] || [ ! -e "$dir/env/$has" ]; then
        rm -rf "$dir" && mkdir "$dir" || { warn "cannot make $dir: $left"; return; }
        t0=$(now)
        # One read of the shared file system: the copy and its hash in one pass.
        copied=$({ tee "$dir/image.sqsh" <"$img" 2>/dev/null || : >"$dir/failed"; } | sha256sum | cut -d' ' -f1)
        if [ -e "$dir/failed" ]; then
            warn "could not copy $img to $dir (no room?): $left"; rm -rf "$dir"; return
        fi
        if [ -n "$want" ] && [ "$copied" != "$want" ]; then
            warn "$img is corrupt (sha256 $copied, built as $want): never used; $left$slower; the next start $again"
            : >"$bad"
            rm -rf "$dir"
            return
        fi
        if [ "$how" = image ]; then
            # squashfuse stays in the background: none of our lock descriptors may go with it.
            mkdir "$dir/env" && "$squash" "$dir/image.sqsh" "$dir/env" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- ||
                { warn "${squash##*/} could not mount $img: $left"; rm -rf "$dir"; return; }
        else
            unsquashfs -q -n -d "$dir/env" "$dir/image.sqsh" >/dev/null 2>&1 && rm -f "$dir/image.sqsh" ||
                { warn "could not unpack $img in $dir (no room?): $left"; rm -rf "$dir"; return; }
        fi
        [ -e "$dir/env/$has" ] || { warn "$dir/env is not $e: $left"; mounted "$dir/env" && unmount "$dir/env"; rm -rf "$dir"; return; }
        : >"$dir/ready"
        first=$(took "$t0")
    fi
    eval "exec $2<>\"\$dir.lock\"" && flock -s "$2" && got=$dir/env
}

stop() { warn "$e cannot run on $(uname -n): $1"; sweep; exit 3; }  # an environment without its tree, no copy
[ "$mode$images" = direct ] || sweep
given=$mode
i=1
while [ "$i" -le "$n" ]; do
    eval "e=\$e_$i"
    got=$e sha=$(meta "$e" sha256) first=
    case $e in image:*) [ "$given" != direct ] || mode=auto ;; *) mode=$given ;; esac
    decide "$e"
    if [ "$how" = direct ]; then
        [ -z "$why" ] || [ -z "$sha" ] || ! has_tree "$e" || warn "$e used in place, not from its image ($why): slower where that file system is slow"
    elif [ "$i" -le 6 ]; then  # fds 3..8 hold the copies (more environments than that: in place)
        exec 9<>"$base/.lock" && flock -x 9 && use "$e" $((i + 2))
        exec 9>&-
    fi
    if [ "$got" = "$e" ] && [ "${e#image:}" = "$e" ] && ! has_tree "$e"; then  # no tree to run in place: this
        # session's own copy, or nothing
        [ ! -e "$e.sqsh.bad" ] || stop "its image is corrupt and its tree was dropped; the next start builds it again"
        [ "$i" -le 6 ] || stop "more than 6 environments without their trees in one job"
        can_unpack || stop "no local copy (${why:-see above}) and no unsquashfs to unpack one; set env_mode = \"direct\" (the next start unpacks its tree on the shared filesystem) or install squashfs-tools on the nodes"
        mkdir -p -m 0700 "$shared/hpcjup-$uid/envs" 2>/dev/null
        mine "$shared/hpcjup-$uid" && mine "$shared/hpcjup-$uid/envs" || stop "$shared is not a private directory of yours"
        base=$shared/hpcjup-$uid/envs how=unpack
        warn "$e unpacked into $shared: no node-local copy here (${why:-see above}); slower, and its files count on the shared filesystem until the job ends"
        exec 9<>"$base/.lock" && flock -x 9 && use "$e" $((i + 2))
        exec 9>&-
        [ "$got" != "$e" ] || stop "it could not be unpacked into $shared either (see above)"
    fi
    # The first use on a node says what it cost (benchmarks/slowfs.py reads it): the copy plus mount or unpack.
    [ -z "$first" ] || first=", first use on this node: copy + $how in $first s"
    [ "$got" = "$e" ] || printf 'hpcjup: %s from %s (%s)%s\n' "$e" "$got" "$how" "$first" >&2
    case $e in image:*)
        if [ "$got" = "$e" ]; then  # ch-run cannot run the file itself: nothing to fall back on
            warn "cannot run the container image ${e#image:} on $(uname -n): ${why:-see above}. Fix: unpack it once (ch-convert ${e#image:} DIR, then image = DIR), or use Apptainer"
            exit 1
        fi
        e=${e#image:} got=$got/ ;;  # FILE -> DIR/: renamed also inside an argument (below)
    esac
    eval "o_$i=\$e n_$i=\$got d_$i=\$(printf %s \"\$sha\" | cut -c1-16)"
    i=$((i + 1))
done

inside() {  # $1 with every $2 in it replaced by $3
    s=$1 out=
    while :; do
        case $s in *"$2"*) out=$out${s%%"$2"*}$3 s=${s#*"$2"} ;; *) break ;; esac
    done
    printf '%s' "$out$s"
}
rename() {  # $1: an argument; ENVDIR/... or another node's <local>/hpcjup-UID/envs/DIGEST/env/... -> ours
    a=$1 k=
    case $a in [A-Za-z0-9_.-]*=/*) k=${a%%=*}= a=${a#*=} ;; esac
    j=1
    while [ "$j" -le "$n" ]; do
        eval "o=\$o_$j new=\$n_$j d=\$d_$j"
        case $new in */)  # an image file: renamed wherever it is in the argument; then only another node's copy
            case $a in *"$o"*) a=$(inside "$a" "$o" "${new%/}"; printf x); a=${a%x} ;; esac
            o=/dev/null/ new=${new%/} ;;
        esac
        case $a in
            "$o" | "$o"/*) a=$new${a#"$o"}; break ;;
            */hpcjup-"$uid"/envs/"$d"/env | */hpcjup-"$uid"/envs/"$d"/env/*) [ -z "$d" ] || { a=$new${a#*/hpcjup-"$uid"/envs/"$d"/env}; break; } ;;
        esac
        j=$((j + 1))
    done
    printf '%s' "$k$a"
}
c=$#
while [ "$c" -gt 0 ]; do
    a=$(rename "$1"; printf x)
    shift
    set -- "$@" "${a%x}"
    c=$((c - 1))
done

# The command as our child (not exec'd: the copies are released when it ends), every signal passed on; our stdin
# is its stdin (sh gives a background command /dev/null: a worker group's render on the login node reads its spec).
exec 9<&0
"$@" <&9 9<&- &
child=$!
exec 9<&-
for s in TERM INT HUP USR1 USR2; do trap "kill -$s $child 2>/dev/null" "$s"; done
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
done
i=3
while [ "$i" -le 8 ]; do eval "exec $i>&-"; i=$((i + 1)); done
[ "$given$images" = direct ] || sweep
exit "$rc"

# hpcjup's environments from node-local storage (POSIX sh; shipped with every job beside launcher.py).
#
#   sh envlocal.sh MODE ENVDIR... -- COMMAND ARGS...
#
# Runs before any Python of the job on each node: the job script runs the launcher through it, and the per-host
# launch of Dask's workers (dasklaunch.py, $HPCJUP_ENV_WRAP) runs them through it on every host. For each ENVDIR
# (an environment hpcjup built, its image ENVDIR.sqsh and the image's sha256 in ENVDIR/.hpcjup-env.json) it:
# - copies the image once per node to node-local storage ($HPCJUP_ENV_LOCAL, else $TMPDIR, /dev/shm, /tmp: the
#   first that is a local file system with room), into <local>/hpcjup-UID/envs/DIGEST/, a directory of this user
#   only (0700, owner checked: a directory someone else made is never used);
# - checks the copy's sha256: a mismatch is never used, ENVDIR.sqsh.bad tells the next start to pack it again;
# - mounts it with squashfuse_ll, else squashfuse (MODE image, or auto where /dev/fuse is usable), else unpacks it
#   (unsquashfs; MODE unpack, or auto without FUSE);
# - else (MODE direct, no image, no room, no tools) the environment is used in place, with a warning saying why.
# All of one user's jobs on a node share one copy per digest: each holds DIGEST.lock with `flock -s` for its
# life; setup and cleanup take .lock with `flock -x`; a cleaner removes what nobody holds (`flock -xn`), at the
# end of every job and at the start of the next (a mount a killed job left). Then COMMAND runs with every argument
# that names a path in an ENVDIR (or in another node's copy of its image: Dask's workers get the launcher's paths)
# renamed to this node's copy; signals the job gets are passed on to it; its exit code is this script's.
umask 077
mode=$1
shift
# Warnings go to the job's log and to envlocal.txt beside this script (the session directory; contract.py
# ENVLOCAL_WARNINGS: the laptop shows them while it waits).
warn() { printf 'hpcjup: warning: %s\n' "$*" >&2; printf '%s\n' "$*" >>"${0%/*}/envlocal.txt" 2>/dev/null; }
uid=$(id -u)
n=0 envs=
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    n=$((n + 1))
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
meta() { sed -n "s/.*\"image\": {[^}]*\"$2\": \"\{0,1\}\([0-9a-f]*\).*/\1/p" "$1/.hpcjup-env.json" 2>/dev/null; }
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

room() {  # $1 image|unpack: sets $base to the first local candidate with room for the images
    # (mounted), or also their trees (unpacked), that is a private directory of this user; $need to the KB needed
    need=0 i=1
    while [ "$i" -le "$n" ]; do
        eval "e=\$e_$i"
        b=$(meta "$e" bytes) t=$(meta "$e" tree_kb)
        need=$((need + ${b:-0} / 1024 + 1024))
        [ "$1" != unpack ] || need=$((need + ${t:-0}))
        i=$((i + 1))
    done
    base=
    for c in ${HPCJUP_ENV_LOCAL:-${TMPDIR:-} /dev/shm /tmp}; do
        [ -d "$c" ] && [ -w "$c" ] && local_fs "$c" || continue
        [ "$(free_kb "$c")" -ge "$need" ] 2>/dev/null || continue
        mkdir -p -m 0700 "$c/hpcjup-$uid/envs" 2>/dev/null
        if mine "$c/hpcjup-$uid" && mine "$c/hpcjup-$uid/envs"; then base=$c/hpcjup-$uid/envs; return 0; fi
        warn "$c/hpcjup-$uid is not a private directory of yours: not used"
    done
    return 1
}

# How this node uses an image: mounted, unpacked, or not at all (why, for the warning). auto mounts where FUSE works:
# every job pays the first use on its node (the copy goes when the last job there ends), and a mount costs 1.6-2.1 s
# there against 11-16 s for an unpack, while imports from a mount are slower (benchmarks/results/slowfs.md, n=3 at
# 0.1 and 0.5 ms: a kernel's `import xarray, dask.distributed` 2.1-2.2x local disk mounted, 0.96-1.06x unpacked):
# env_mode=unpack is for long sessions that import much. Without FUSE auto unpacks wherever there is room.
how= why= base=
case $mode in
    direct) how=direct ;;
    auto) if fuse_ok; then how=image; elif can_unpack; then how=unpack; else
        how=direct why="no usable FUSE (/dev/fuse, squashfuse, fusermount) nor unsquashfs here"; fi ;;
    image) if fuse_ok; then how=image; else how=direct why="no usable FUSE here (/dev/fuse, squashfuse, fusermount)"; fi ;;
    unpack) if can_unpack; then how=unpack; else how=direct why="no unsquashfs here"; fi ;;
    *) how=direct why="unknown env_mode $mode" ;;
esac
if [ "$how" != direct ] && [ -z "$base" ] && [ "$n" -gt 0 ] && ! room "$how"; then
    how=direct why="no node-local storage with ${need} KB free and a private directory of yours"
fi
if [ "$how" != direct ] && ! command -v flock >/dev/null 2>&1; then how=direct why="no flock(1) here to share copies safely"; fi

sweep() {  # under .lock: every copy nobody holds goes (unmounted first): a job's end, or one a killed job left
    for l in "$base"/*.lock; do
        [ -f "$l" ] || continue
        d=${l%.lock}
        flock -xn "$l" true 2>/dev/null || continue
        if mounted "$d/env" && ! unmount "$d/env"; then warn "could not unmount $d/env"; continue; fi
        rm -rf "$d" && rm -f "$l"
    done
}

now() { date +%s.%N 2>/dev/null; }
took() {  # seconds since $1 (a `now`), "" where date has no %N
    awk -v a="$1" -v b="$(now)" 'BEGIN { if (a b ~ /^[0-9.]+$/) printf "%.2f", b - a }'
}

use() {  # $1 ENVDIR, $2 the fd that holds its copy: sets $got to the copy's path (and $first, the seconds this
    # job spent making it: the first use on this node), or leaves it ENVDIR
    e=$1 img=$1.sqsh sha=$(meta "$1" sha256)
    if [ -z "$sha" ] || [ ! -f "$img" ]; then warn "$e has no image: used in place"; return; fi
    if [ -e "$e.sqsh.bad" ]; then warn "$img was found corrupt: $e used in place until the next start packs it again"; return; fi
    d=$(printf %s "$sha" | cut -c1-16)
    dir=$base/$d
    if [ ! -f "$dir/ready" ] || [ ! -f "$dir/env/.hpcjup-env.json" ]; then
        rm -rf "$dir" && mkdir "$dir" || { warn "cannot make $dir: $e used in place"; return; }
        t0=$(now)
        if ! cp "$img" "$dir/image.sqsh" 2>/dev/null; then
            warn "could not copy $img to $dir (no room?): $e used in place"; rm -rf "$dir"; return
        fi
        copied=$(sha256sum <"$dir/image.sqsh" | cut -d' ' -f1)
        if [ "$copied" != "$sha" ]; then
            warn "$img is corrupt (sha256 $copied, built as $sha): never used; $e used in place (slower on a shared filesystem); the next start packs it again"
            : >"$e.sqsh.bad"
            rm -rf "$dir"
            return
        fi
        if [ "$how" = image ]; then
            # squashfuse stays in the background: none of our lock descriptors may go with it.
            mkdir "$dir/env" && "$squash" "$dir/image.sqsh" "$dir/env" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- ||
                { warn "${squash##*/} could not mount $img: $e used in place"; rm -rf "$dir"; return; }
        else
            unsquashfs -q -n -d "$dir/env" "$dir/image.sqsh" >/dev/null 2>&1 && rm -f "$dir/image.sqsh" ||
                { warn "could not unpack $img in $dir (no room?): $e used in place"; rm -rf "$dir"; return; }
        fi
        [ -f "$dir/env/.hpcjup-env.json" ] || { warn "$dir/env is not $e: used in place"; mounted "$dir/env" && unmount "$dir/env"; rm -rf "$dir"; return; }
        : >"$dir/ready"
        first=$(took "$t0")
    fi
    eval "exec $2<>\"\$dir.lock\"" && flock -s "$2" && got=$dir/env
}

i=1
if [ "$how" != direct ]; then
    exec 9<>"$base/.lock" && flock -x 9
    sweep
fi
while [ "$i" -le "$n" ]; do
    eval "e=\$e_$i"
    got=$e sha=$(meta "$e" sha256) first=
    if [ "$how" = direct ]; then
        [ -z "$why" ] || [ -z "$sha" ] || warn "$e used in place, not from its image ($why): slower where that file system is slow"
    elif [ "$i" -le 6 ]; then  # fds 3..8 hold the copies (more environments than that: in place)
        use "$e" $((i + 2))
    fi
    # The first use on a node says what it cost (benchmarks/slowfs.py reads it): the copy plus mount or unpack.
    [ -z "$first" ] || first=", first use on this node: copy + $how in $first s"
    [ "$got" = "$e" ] || printf 'hpcjup: %s from %s (%s)%s\n' "$e" "$got" "$how" "$first" >&2
    eval "o_$i=\$e n_$i=\$got d_$i=\$(printf %s \"\$sha\" | cut -c1-16)"
    i=$((i + 1))
done
[ "$how" = direct ] || exec 9>&-

rename() {  # $1: an argument; ENVDIR/... or another node's <local>/hpcjup-UID/envs/DIGEST/env/... -> ours
    a=$1 k=
    case $a in [A-Za-z0-9_.-]*=/*) k=${a%%=*}= a=${a#*=} ;; esac
    j=1
    while [ "$j" -le "$n" ]; do
        eval "o=\$o_$j new=\$n_$j d=\$d_$j"
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

# The command as our child (not exec'd: the copies are released when it ends), every signal passed on.
"$@" &
child=$!
for s in TERM INT HUP USR1 USR2; do trap "kill -$s $child 2>/dev/null" "$s"; done
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
done
i=3
while [ "$i" -le 8 ]; do eval "exec $i>&-"; i=$((i + 1)); done
if [ "$how" != direct ]; then
    exec 9<>"$base/.lock" && flock -x 9 && sweep
    exec 9>&-
fi
exit "$rc"

"""The env root's own bookkeeping in POSIX sh, part of script.SCRIPT (its actions `ls`, `rm`, `prune`): every built
environment with its size, files and last use (and what lies beside it: image, bad-mark, log, whether its tree was
dropped: envs/pack.py), removal all or nothing, and pruning of the unused. envs/catalog.py reads and runs them.
Uses the script's `say`, `absroot` and pack.PACK's `has_tree`."""

SH = r"""
list() {
    root=$(absroot "$1") || exit 3
    say root "$root"
    current=$(readlink "$root/server-current" 2>/dev/null)
    [ -z "$current" ] || say current "$current"
    for m in "$root"/*/.hpcjup-env.json; do
        [ -f "$m" ] || continue
        d=${m%/.hpcjup-env.json}
        [ ! -L "$d" ] || continue  # server-current: a name for one of the others
        used=$(stat -c %Y "$d/.hpcjup-used" 2>/dev/null || stat -c %Y "$m")
        printf '@@env %s %s %s %s\n' "${d##*/}" "$(du -sk "$d" | cut -f1)" "$(find "$d" | wc -l)" "$used"
        cat "$m"; echo
        # Its own files beside it (image, its bad-mark, logs): what it costs on the shared filesystem besides the tree.
        printf '@@beside %s' "${d##*/}"; for f in "$d.sqsh" "$d.sqsh.bad" "$d.log"; do [ ! -e "$f" ] || printf ' %s' "${f##*.}"; done
        has_tree "$d" && echo || echo ' notree'  # dropped after packing (pack.py): the image is the environment
    done
}

remove() {
    root=$(absroot "$1") || exit 3; shift
    for name; do  # all or nothing: check every name before removing any
        case $name in */*|.*|'') echo "bad name $name" >&2; exit 2 ;; esac
        if [ -d "$root/.lock-$name" ]; then echo "$name is being built" >&2; exit 5; fi
        [ -e "$root/$name" ] || { echo "no environment $name" >&2; exit 6; }
    done
    for name; do
        # Renamed first: a start checking at this moment sees it gone, never half removed.
        mv "$root/$name" "$root/.rm-$name-$$" && rm -rf "$root/.rm-$name-$$" "$root/$name.log" "$root/$name.failed.log" "$root/$name.sqsh" "$root/$name.sqsh.bad"
        say removed "$name"
    done
}

prune() {
    root=$(absroot "$1") || exit 3; days=$2; shift 2
    current=$(readlink "$root/server-current" 2>/dev/null)
    for name; do
        case $name in */*|.*|'') continue ;; esac
        [ -f "$root/$name/.hpcjup-env.json" ] && [ "$name" != "$current" ] && [ ! -d "$root/.lock-$name" ] || continue
        used="$root/$name/.hpcjup-used"
        [ -e "$used" ] || used="$root/$name/.hpcjup-env.json"
        # Checked again here: a start since the laptop listed it marked it used.
        [ -n "$(find "$used" -mmin +$((days * 1440)) 2>/dev/null)" ] || continue
        mv "$root/$name" "$root/.rm-$name-$$" && rm -rf "$root/.rm-$name-$$" "$root/$name.log" "$root/$name.failed.log" "$root/$name.sqsh" "$root/$name.sqsh.bad"
        say removed "$name"
    done
}
"""

"""An environment as one file: the SquashFS image packed beside it when it is built (POSIX sh, run on the host).

`PACK` is sh the build script (script.py) includes: `pack_image ROOT NAME` packs ROOT/NAME into ROOT/NAME.sqsh
with mksquashfs (the fastest codec it has: zstd at a low level, else lz4, else gzip), its bytecode compiled
first (an image is read-only: no import from it could write a missing .pyc), records the image's sha256, size and
codec in the environment's metadata (`image` in .hpcjup-env.json, rewritten whole: temp file and rename; `compiled`
marks images with bytecode, the next build packs older ones again) and only then renames the image into place: a killed pack leaves its temp file (swept with the build's
leftovers) and no image, and a pack killed between the two renames leaves an image whose hash the metadata does
not match, which no job uses and the next build or start packs again. A job that finds an image whose hash does
not match marks it `NAME.sqsh.bad` (job/envlocal.sh); the probe then says `repack` and the build packs it again.

Only environments uv built are packed: uv makes them relocatable (`uv venv --relocatable`: the scripts find their
Python relative to themselves), so they run from wherever a job mounts or unpacks the image. `python -m venv`
writes its own path into every script: such an environment runs in place only. No mksquashfs on the host: no
image (`@@hpcjup image none WHY`), the environment is used in place.

Then the tree goes (`drop_tree`, issue 21: inode quotas): on the shared filesystem an environment is its image, its
log and a directory of a handful of files (`KEPT`: the metadata that says it is built, its last use, its lock and
spec), not tens of thousands. Only a build that made the env drops its tree (one built earlier may be in use in place),
only where unsquashfs reads the new image back, and not with HPCJUP_ENV_TREE=keep (the laptop's choice for
env_mode direct and --local, which run it in place: a dropped tree is then unpacked back, `restore_tree`). What the
tree served before: a node that can neither mount nor unpack locally unpacks into the session's directory
(job/envlocal.sh); a corrupt or lost image is built again from the env's lock (`broken`; script.py); the login node
runs a worker group's render through envlocal.sh too; `env lock` reads the lock that stays.

The lines: `@@hpcjup image PATH SHA256 BYTES CODEC` or `@@hpcjup image none WHY`; `@@hpcjup tree dropped FILES`,
`@@hpcjup tree kept WHY`, `@@hpcjup tree restored`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIX = ".sqsh"
BAD = ".sqsh.bad"  # beside the image: a job found its hash wrong; never used again, packed anew

PACK = r"""
image_codec() {  # the fastest codec this mksquashfs has (decompression speed matters most: every start reads)
    help=$(mksquashfs -help 2>&1)
    case $help in
        *zstd*) echo "-comp zstd -Xcompression-level 3" ;;
        *lz4*) echo "-comp lz4" ;;
        *) echo "-comp gzip" ;;
    esac
}

needs_image() {  # $1: ROOT/NAME; whether it should have an image and has none (or a bad one)
    grep -q '"tool": "uv"' "$1/.hpcjup-env.json" 2>/dev/null || return 1
    command -v mksquashfs >/dev/null 2>&1 || return 1
    [ -e "$1.sqsh.bad" ] || [ ! -f "$1.sqsh" ] || ! grep -q '"sha256"' "$1/.hpcjup-env.json" ||
        ! grep -q '"compiled": true' "$1/.hpcjup-env.json"  # packed by an older hpcjup, without bytecode
}

pack_image() {  # $1 ROOT, $2 NAME: ROOT/NAME.sqsh and its hash in the metadata; never fails the build
    dir="$1/$2" part="$1/.tmp-$2-$$.sqsh"
    if ! grep -q '"tool": "uv"' "$dir/.hpcjup-env.json" 2>/dev/null; then
        say image none "built with python -m venv (not relocatable): used in place"; return 0
    fi
    if ! command -v mksquashfs >/dev/null 2>&1; then
        say image none "no mksquashfs on $(uname -n): used in place"; return 0
    fi
    say phase packing
    # Bytecode first, with the env's own Python: an image is read-only, so an import from it whose .pyc is missing
    # compiles the source again at every start (seen: a kernel's `import xarray, dask.distributed` 2.77 s from the
    # mounted image against 0.47 s in a tree whose first run had written its __pycache__). Files that do not
    # compile (a package's Python 2 test data) are skipped: compileall's exit code is not the build's.
    "$dir/bin/python" -m compileall -q -j 0 "$dir" >>"${log:-/dev/null}" 2>&1 || :
    codec=$(image_codec)
    # The used-marker changes at every start: never part of the image (its hash would not matter, but its time does).
    if ! mksquashfs "$dir" "$part" -noappend -quiet -no-progress $codec -e .hpcjup-used >>"${log:-/dev/null}" 2>&1; then
        rm -f "$part"; say image none "mksquashfs failed (see the log): used in place"; return 0
    fi
    sha=$(sha256sum <"$part" | cut -d' ' -f1) bytes=$(wc -c <"$part" | tr -d ' ') kb=$(du -sk "$dir" | cut -f1)
    files=$(find "$dir" | wc -l | tr -d ' ')
    set -- $codec
    "${py:-python3}" - "$dir/.hpcjup-env.json" "$sha" "$bytes" "$2" "$kb" "$files" <<'EOF' || { rm -f "$part"; say image none "could not record its hash"; return 0; }
import json, os, sys
path, sha, size, codec, kb, files = sys.argv[1:7]
meta = json.load(open(path))
meta["image"] = {"sha256": sha, "bytes": int(size), "codec": codec, "tree_kb": int(kb), "tree_files": int(files),
                 "compiled": True}
with open(path + ".new", "w") as f:
    json.dump(meta, f, sort_keys=True)
os.rename(path + ".new", path)
EOF
    mv -f "$part" "$dir.sqsh" && rm -f "$dir.sqsh.bad" || { rm -f "$part"; say image none "could not rename it"; return 0; }
    say image "$dir.sqsh" "$sha" "$bytes" "$2"
}

# What stays of an environment whose tree was dropped: its metadata (the marker), last use, lock and spec.
KEPT=".hpcjup-env.json .hpcjup-used .hpcjup-lock.txt .hpcjup-spec"
has_tree() { [ -e "$1/bin" ]; }  # $1: ROOT/NAME
broken() {  # $1 ROOT/NAME: its tree dropped and its image bad (a job found its hash wrong) or gone: built again
    ! has_tree "$1" && { [ -e "$1.sqsh.bad" ] || [ ! -f "$1.sqsh" ]; }
}

drop_tree() {  # $1 ROOT, $2 NAME: once its image is packed and lists its Python, the tree goes (HPCJUP_ENV_TREE=keep:
    # it stays); what stays is KEPT. The directory is swapped whole (a start never sees half a tree).
    [ "${HPCJUP_ENV_TREE:-drop}" = drop ] || return 0
    dir="$1/$2" keep="$1/.tmp-$2-$$.kept" gone="$1/.rm-$2-$$"
    grep -q '"sha256"' "$dir/.hpcjup-env.json" 2>/dev/null && [ -f "$dir.sqsh" ] || return 0
    # unsquashfs restores it (env_mode = direct) and proves the image reads: no unsquashfs, the tree stays.
    command -v unsquashfs >/dev/null 2>&1 || { say tree kept "no unsquashfs on $(uname -n)"; return 0; }
    unsquashfs -l -n "$dir.sqsh" bin/python 2>/dev/null | grep -q '/bin/python$' ||
        { say tree kept "its image does not list bin/python"; return 0; }
    mkdir "$keep" || return 0
    for f in $KEPT; do [ ! -e "$dir/$f" ] || cp -Rp "$dir/$f" "$keep/" || { rm -rf "$keep"; return 0; }; done
    n=$(find "$dir" | wc -l | tr -d ' ')
    mv "$dir" "$gone" && mv "$keep" "$dir" || { [ -e "$dir" ] || mv "$gone" "$dir"; rm -rf "$keep"; return 0; }
    # Removed in the background: on a slow shared filesystem that takes as long as writing it did (server env,
    # 23,000 files over sshfs at 0.1 / 0.5 ms: 21 / 50 s; benchmarks/envtree.py), and nothing waits for it. Not in
    # a build job (HPCJUP_ENV_JOB): its end would cut the removal short (seen on Grid Engine); there the job waits.
    # A removal cut short otherwise (a rebooted login node) is finished by a later build's sweep.
    if [ -n "${HPCJUP_ENV_JOB:-}" ]; then rm -rf "$gone"; else rm -rf "$gone" </dev/null >/dev/null 2>&1 & fi
    say tree dropped "$n"
}

needs_tree() {  # $1 ROOT/NAME: HPCJUP_ENV_TREE=keep (env_mode direct, --local) and its tree was dropped
    [ "${HPCJUP_ENV_TREE:-drop}" = keep ] && ! has_tree "$1" && [ -f "$1.sqsh" ]
}

restore_tree() {  # $1 ROOT, $2 NAME: the dropped tree back from its image, if the image is the one built; else fails
    dir="$1/$2" part="$1/.tmp-$2-$$"
    sha=$(sha256sum <"$dir.sqsh" 2>/dev/null | cut -d' ' -f1)
    [ -n "$sha" ] && grep -q "\"sha256\": \"$sha\"" "$dir/.hpcjup-env.json" || return 1
    say phase restoring
    rm -rf "$part"
    unsquashfs -q -n -d "$part" "$dir.sqsh" >/dev/null 2>&1 || { rm -rf "$part"; return 1; }
    # The metadata outside is the newer one (the image's copy predates its own hash); last use too.
    cp -p "$dir/.hpcjup-env.json" "$dir/.hpcjup-used" "$part/" 2>/dev/null
    mv "$dir" "$1/.rm-$2-$$" && mv "$part" "$dir" || { rm -rf "$part"; return 1; }
    rm -rf "$1/.rm-$2-$$"
    say tree restored
}
"""


@dataclass(frozen=True)
class Image:
    """An environment's image as its metadata records it: sha256, size, codec; `bad` when a job found it corrupt."""

    sha256: str
    bytes: int
    codec: str
    bad: bool = False


def image_of(meta: dict[str, Any], bad: bool = False) -> Image | None:
    """The image an environment's metadata records, or None (not packed: no mksquashfs, or built with pip)."""
    found = meta.get("image")
    if not isinstance(found, dict) or not isinstance(found.get("sha256"), str):
        return None
    size = found.get("bytes")
    return Image(found["sha256"], size if isinstance(size, int) else 0, str(found.get("codec", "?")), bad)


def _envlocal_function(name: str) -> str:
    """A function of job/envlocal.sh (between its `# >>> NAME` and `# <<< NAME` lines): the probe runs the job's own."""
    text = (Path(__file__).resolve().parents[1] / "job" / "envlocal.sh").read_text()
    return text[text.index(f"# >>> {name}") : text.index(f"# <<< {name}")]


#: `doctor`'s look at what this host can do with images (in the environment check's one command): one line
#: `HPCJUP-IMAGES FUSE SQUASHFUSE UNSQUASHFS MKSQUASHFS RAM`, each `yes` or why not. FUSE is tried for real: a tiny
#: image packed and mounted by this user, read and unmounted. RAM is `KB:DIR`: the first tmpfs envlocal.sh would
#: unpack into ($TMPDIR, /dev/shm) and how much of it auto may fill here (envlocal.sh's own ram_kb, its free space
#: at most), or `no-tmpfs`.
DOCTOR_MARK = "HPCJUP-IMAGES "
DOCTOR = (
    r"""(
has() { command -v "$1" >/dev/null 2>&1 && echo yes || echo "no-$1"; }
sq=no-squashfuse un=$(has unsquashfs) mk=$(has mksquashfs)
mount=$(command -v squashfuse_ll || command -v squashfuse) && sq=yes  # envlocal.sh's choice, tried as it mounts
um=no-fusermount; { command -v fusermount3 || command -v fusermount; } >/dev/null 2>&1 && um=yes
if [ ! -c /dev/fuse ]; then fuse=no-/dev/fuse
elif [ ! -r /dev/fuse ] || [ ! -w /dev/fuse ]; then fuse=/dev/fuse-not-yours
elif [ "$sq" != yes ] || [ "$um" != yes ]; then fuse="${sq#yes}${um#yes}"
elif [ "$mk" != yes ]; then fuse=untried
else
    t=$(mktemp -d) && mkdir "$t/s" "$t/m" && echo ok >"$t/s/f" &&
        mksquashfs "$t/s" "$t/i" -quiet -no-progress >/dev/null 2>&1 && "$mount" "$t/i" "$t/m" 2>/dev/null &&
        [ "$(cat "$t/m/f" 2>/dev/null)" = ok ] && fuse=yes || fuse=mount-refused
    fusermount3 -u "$t/m" 2>/dev/null || fusermount -u "$t/m" 2>/dev/null
    rm -rf "$t"
fi
"""
    + _envlocal_function("ram_kb")
    + r"""ram=no-tmpfs
for c in ${TMPDIR:-} /dev/shm; do
    case $(stat -f -c %T "$c" 2>/dev/null) in tmpfs | ramfs) ;; *) continue ;; esac
    [ -d "$c" ] && [ -w "$c" ] || continue
    ram=$(df -Pk "$c" | awk -v b="$(ram_kb)" 'NR==2 {print ($4 < b ? $4 : b)}'):$c
    break
done
echo "HPCJUP-IMAGES $fuse $sq $un $mk $ram"
) 2>/dev/null"""
)


def doctor_words(line: str, mode: str) -> tuple[str, str, str]:
    """(status word pass|warn|skip, what a job on this host would do with an image and why, the fix or "") from
    DOCTOR's line and the `env_mode` setting; the summary starts with the first choice (`unpack in RAM:`,
    `image:`, `unpack:`, `direct:`), as job/envlocal.sh's `decide` makes it."""
    fields = (line.split() + ["?"] * 5)[:5]
    fuse, _, unsquashfs, mksquashfs, ram = fields
    why = fuse.replace("no-", "no ").replace("-", " ")
    kb, _, where = ram.partition(":")
    pack = "" if mksquashfs == "yes" else "; no mksquashfs: environments get no image and run in place"
    fix = "" if mksquashfs == "yes" else "Install squashfs-tools (mksquashfs) on the login node, or ask the site."
    status = "pass" if not pack else "warn"
    if mode == "direct":
        return "skip", "env_mode = direct: environments run in place on the shared file system", ""
    mounts = fuse == "yes" and mode in ("auto", "image")
    unpacks = unsquashfs == "yes" and mode in ("auto", "unpack")
    reason = "env_mode = unpack" if mode == "unpack" else "no usable FUSE: " + why
    if mounts:
        rest, larger = "image: squashfuse mounts work here for you", "mounted (squashfuse mounts work here for you)"
    elif unpacks:
        rest = f"unpack: images are unpacked on node-local storage ({reason})"
        larger = f"unpacked on local disk ({reason})"
    else:
        rest = larger = ""
    if unpacks and kb.isdigit() and int(kb) > 0:
        return (
            status,
            f"unpack in RAM: an environment whose tree fits in a quarter of the job's memory is unpacked into tmpfs "
            f"{where} (up to {int(kb) // 1024} MiB here now; imports at local-disk speed; the memory counts as the "
            f"job's); larger ones {larger}{pack}",
            fix,
        )
    if rest:
        return status, rest + pack, fix
    return (
        "warn",
        f"direct: environments run in place (slower on a parallel file system): FUSE {why}, unsquashfs {unsquashfs}{pack}",
        fix or "Install squashfuse (or squashfs-tools for unsquashfs) on the nodes, or ask the site.",
    )

"""The POSIX sh that pulls a container image once into the env root (one remote command, run on the login node).

`sh -c SCRIPT hpcjup-image ROOT RUNTIME KEY REF`: ROOT as env builds take it (relative to home, ~/..., $VAR/...),
RUNTIME charliecloud, apptainer, singularity or auto (the first the host has of apptainer, singularity,
Charliecloud's ch-image), KEY the cache key of (runtime, ref) (container.cache_key), REF
`docker://...`. Cached images live in ROOT/images/, each named by its digest; ROOT/images/ref-KEY is a symlink to
the one a ref was last pulled as. A ref already there costs nothing but this command: `@@hpcjup image cached
RUNTIME PATH`.
Else one puller per key (flock on ROOT/images/.lock-KEY: a second start waits, then finds it cached); the pull
goes into ROOT/images/.pull-KEY-XXXXXX and is renamed into place last, so a refused, unreachable or interrupted
pull leaves nothing cached. Lines: `@@hpcjup phase P`, the runtime's own lines, then `@@hpcjup image pulled
RUNTIME PATH DIGEST` or `@@hpcjup failed PHASE RUNTIME` (exit 4).

- Charliecloud: `ch-image pull` into a private storage directory (CH_IMAGE_STORAGE), trusting the system's
  CA store (REQUESTS_CA_BUNDLE, unless the user set one), the digest is the sha256 of
  the image manifest it downloaded, then `ch-convert -o dir` to ROOT/images/sha256-DIGEST.ch (a directory:
  Debian's ch-run 0.31 has no built-in SquashFUSE, so it cannot run a SquashFS file itself).
- Apptainer/Singularity: `RUNTIME pull OUT.sif REF`, named ROOT/images/sha256-DIGEST.sif by the file's own sha256
  (the SIF is what the runtime checks and runs).
"""

from __future__ import annotations

#: The directory under the env root that holds pulled images.
IMAGES = "images"

SCRIPT = r"""
export LC_ALL=C
umask 077
say() { printf '@@hpcjup %s\n' "$*"; }
runtime=$2
fail() { say failed "$1" "$runtime"; exit "${2:-4}"; }  # PHASE [EXIT]
r=$1
case $r in
    '~'/*) r="$HOME/${r#'~/'}" ;;
    '$'*) v=${r#'$'}; v=${v%%/*}; rest=${r#'$'"$v"}; val=$(printenv "$v") || { echo "no \$$v here"; fail root 3; }; r="$val$rest" ;;
    /*) ;;
    *) r="$HOME/$r" ;;
esac
key=$3 ref=$4
if [ "$runtime" = auto ]; then
    for c in apptainer singularity ch-image; do command -v "$c" >/dev/null 2>&1 && { runtime=$c; break; }; done
    [ "$runtime" != ch-image ] || runtime=charliecloud
fi
dir="$r/@IMAGES@"
{ mkdir -p "$dir" && dir=$(cd "$dir" && pwd -P); } 2>&1 || { fail storing 3; }
ptr="$dir/ref-$key"
cached() {
    t=$(readlink "$ptr" 2>/dev/null) && [ -e "$dir/$t" ] || return 1
    touch -h "$ptr" 2>/dev/null  # its last use, for pruning
    case $t in *.ch) runtime=charliecloud ;; esac
    say image cached "$runtime" "$dir/$t"
    exit 0
}
cached
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.lock-$key"
    flock -n 9 || { say phase "waiting for another pull of $ref"; flock 9; }
    cached
fi
tmp=$(mktemp -d "$dir/.pull-$key-XXXXXX" 2>&1) || { echo "$tmp"; fail storing 3; }
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
src=${ref#docker://}
case $runtime in
    charliecloud)
        command -v ch-image >/dev/null 2>&1 || { echo "ch-image: command not found" ; fail pulling; }
        CH_IMAGE_STORAGE="$tmp/store"; export CH_IMAGE_STORAGE
        # ch-image runs under whichever python3 is first on PATH (often a venv or conda's, whose certifi bundle
        # lacks a site's own registry CA): the system's trust store, where sites install theirs, unless one is set.
        if [ -z "${REQUESTS_CA_BUNDLE:-}${CURL_CA_BUNDLE:-}" ]; then
            for b in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
                [ -r "$b" ] && { REQUESTS_CA_BUNDLE=$b; export REQUESTS_CA_BUNDLE; break; }
            done
        fi
        say phase pulling
        ch-image --no-cache pull "$src" 2>&1 || fail pulling
        for m in "$tmp/store/dlcache/"*.manifest.json; do :; done
        [ -f "$m" ] || { echo "ch-image left no manifest"; fail pulling; }
        digest=$(sha256sum <"$m") && digest=${digest%% *}
        name="sha256-$digest.ch"
        if [ ! -e "$dir/$name" ]; then
            say phase converting
            ch-convert -i ch-image -o dir "$src" "$tmp/out" 2>&1 || fail converting
        fi ;;
    apptainer|singularity)
        command -v "$runtime" >/dev/null 2>&1 || { echo "$runtime: command not found"; fail pulling; }
        say phase pulling
        "$runtime" pull "$tmp/out" "$ref" 2>&1 || fail pulling
        digest=$(sha256sum <"$tmp/out") && digest=${digest%% *}
        name="sha256-$digest.sif" ;;
    auto) echo "no container runtime here (apptainer, singularity or Charliecloud's ch-image)"; say failed pulling; exit 4 ;;
    *) echo "unknown container runtime $runtime"; say failed pulling; exit 4 ;;
esac
# Renamed into place last: the cache never holds half an image. The same digest pulled by another ref is reused.
[ -e "$dir/$name" ] || mv "$tmp/out" "$dir/$name" || fail storing
ln -s "$name" "$tmp/ptr" && mv -fT "$tmp/ptr" "$ptr" || fail storing
say image pulled "$runtime" "$dir/$name" "$digest"
""".replace("@IMAGES@", IMAGES)

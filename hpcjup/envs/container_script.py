"""The POSIX sh that pulls a container image once into the env root (one remote command, run on the login node),
and the one that lists and prunes the pulled images (`env ls`, `prune --envs`).

`sh -c SCRIPT hpcjup-image ROOT RUNTIME KEY REF [URL [always]]`: ROOT as env builds take it (relative to home, ~/..., $VAR/...),
RUNTIME charliecloud, apptainer, singularity or auto (the first the host has of apptainer, singularity,
Charliecloud's ch-image), KEY the cache key of (runtime, ref) (container.cache_key), REF `docker://...`, URL the
registry's manifest URL of a tag (container.manifest_url; none for a ref pinned by `@sha256:`). Cached images live
in ROOT/images/, each named by its content (sha256-HEX.sqfs or .sif; sha256-DIGEST.ch from older versions) with
NAME.info beside it (`ref REF`, `runtime RUNTIME`, `remote DIGEST`: the registry's manifest digest it was pulled
as; its mtime is the image's last use);
ROOT/images/ref-KEY is a symlink to the one a ref was last pulled as. NAME.bad beside an image: a job found the
file's sha256 not its name's (envlocal.sh); it is never used again and the next start pulls it anew.

With URL, the tag is asked for its current digest first (RESOLVE: one HEAD request, plus the registry's anonymous
token where it wants one, each at most CHECK_TIMEOUT seconds; after no answer, not asked again for BACKOFF minutes
unless `always`): the same digest as the cached image's, or no answer (`@@hpcjup warn TEXT`: the cached copy is
used), costs nothing more: `@@hpcjup image cached RUNTIME PATH`. A moved
tag (`@@hpcjup moved REF OLD NEW`) or no cached copy pulls: one puller per key (flock on ROOT/images/.lock-KEY: a
second start waits, then finds it cached); the pull goes into ROOT/images/.pull-KEY-XXXXXX and is renamed into place
last, so a refused, unreachable or interrupted pull leaves nothing cached (and the old image, if the tag moved, in
place until `prune --envs`). Lines: `@@hpcjup phase P`, the runtime's own lines, then `@@hpcjup image pulled
RUNTIME PATH DIGEST` or `@@hpcjup failed PHASE RUNTIME` (exit 4).

- Charliecloud: `ch-image pull` into a private storage directory (CH_IMAGE_STORAGE), trusting the system's
  CA store (REQUESTS_CA_BUNDLE, unless the user set one), the digest is the sha256 of
  the image manifest it downloaded, then `ch-convert -o dir` (its mount points made) packed by mksquashfs with
  the fastest codec it has (pack.py's image_codec) to ROOT/images/sha256-HEX.sqfs, named by the file's own sha256: ONE file on the shared filesystem, not the
  thousands of a directory (inode quotas). Debian's ch-run 0.31 has no built-in SquashFUSE and cannot run it
  itself: each job mounts (or unpacks) it on node-local storage first (job/envlocal.sh, `image:` arguments), and
  checks the copy against that sha256. Directories pulled by older versions (sha256-DIGEST.ch) stay usable.
- Apptainer/Singularity: `RUNTIME pull OUT.sif REF`, named ROOT/images/sha256-DIGEST.sif by the file's own sha256
  (the SIF is what the runtime checks and runs).

`sh -c CATALOG hpcjup-images ls ROOT`: one `@@image NAME KB FILES USED RUNTIME REMOTE CURRENT REF` line per image
(`-` for what is not known; CURRENT 1 when a ref's pointer names it, 0 for one a moved tag left behind).
`sh -c CATALOG hpcjup-images prune ROOT DAYS NAME...`: removes those of NAME... still unused for DAYS days (a start
since the laptop's listing keeps its image) with their info and pointers: `@@hpcjup removed NAME`.
"""

from __future__ import annotations

import shlex

from hpcjup.envs.pack import PACK

#: The directory under the env root that holds pulled images.
IMAGES = "images"
CHECK_TIMEOUT = 5  # seconds each registry request of the tag check may take before the cached copy is used
BACKOFF = 10  # minutes a ref's registry is not asked again after it did not answer (a firewall costs CHECK_TIMEOUT)

#: Asks a registry for a tag's current manifest digest (login node's python3, standard library only). argv[1]: the
#: manifest URL. Prints `sha256:HEX`, or one line saying why not and exits 1. The anonymous token, if the registry
#: wants one, stays in this process (never argv, never printed).
RESOLVE = r"""
import hashlib, json, os, re, ssl, sys, urllib.error, urllib.parse, urllib.request

ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
CTX = None


def challenge(header):
    # WWW-Authenticate: `Bearer realm="...",service="...",scope="..."` -> ("bearer", {"realm": ..., ...})
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict((k.lower(), v) for k, v in re.findall(r'([A-Za-z_]+)="([^"]*)"', rest))


def digest_of(headers, body):
    # The registry's Docker-Content-Digest; else, for a GET, the sha256 of the manifest's bytes (what it is defined as).
    said = (headers.get("Docker-Content-Digest") or "").strip()
    if re.match(r"^sha256:[0-9a-f]{64}$", said):
        return said
    return "sha256:" + hashlib.sha256(body).hexdigest() if body is not None else None


def context():
    # Pythons from a venv or conda may not read the system's trust store, where sites install their registry's CA.
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if os.environ.get(name):
            return ssl.create_default_context(cafile=os.environ[name])
    for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"):
        if os.access(path, os.R_OK):
            return ssl.create_default_context(cafile=path)
    return ssl.create_default_context()


def ask(url, method, token):
    request = urllib.request.Request(url, method=method, headers={"Accept": ACCEPT})
    if token:
        request.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=@TIMEOUT@, context=CTX) as answer:
        return answer.headers, (answer.read() if method == "GET" else None)


def token_for(header):
    scheme, params = challenge(header)
    if scheme != "bearer" or not params.get("realm", "").startswith("https://"):
        raise LookupError("the registry wants a login to be asked")
    query = urllib.parse.urlencode([(k, params[k]) for k in ("service", "scope") if k in params])
    with urllib.request.urlopen(params["realm"] + ("?" + query if query else ""), timeout=@TIMEOUT@, context=CTX) as a:
        data = json.loads(a.read().decode())
    return data.get("token") or data.get("access_token") or ""


def resolve(url):
    token = None
    for method in ("HEAD", "GET"):  # a registry that names no digest on HEAD: the manifest's own sha256
        while True:
            try:
                headers, body = ask(url, method, token)
            except urllib.error.HTTPError as exc:
                if exc.code != 401 or token is not None:
                    raise
                token = token_for(exc.headers.get("WWW-Authenticate", ""))
                continue
            found = digest_of(headers, body)
            if found:
                return found
            break
    raise LookupError("the registry names no digest")


if __name__ == "__main__":
    CTX = context()
    try:
        print(resolve(sys.argv[1]))
    except urllib.error.HTTPError as exc:
        print("HTTP %d %s" % (exc.code, exc.reason))
        sys.exit(1)
    except (OSError, LookupError, ValueError) as exc:
        print(getattr(exc, "reason", None) or exc or type(exc).__name__)
        sys.exit(1)
""".replace("@TIMEOUT@", str(CHECK_TIMEOUT))

# ROOT as env builds take it (relative to home, ~/..., $VAR/...), expanded without eval into $r, and $dir, the
# images directory in it. $1 is ROOT; `fail` is the caller's.
_ROOT = r"""
r=$1
case $r in
    '~'/*) r="$HOME/${r#'~/'}" ;;
    '$'*) v=${r#'$'}; v=${v%%/*}; rest=${r#'$'"$v"}; val=$(printenv "$v") || { echo "no \$$v here"; fail root 3; }; r="$val$rest" ;;
    /*) ;;
    *) r="$HOME/$r" ;;
esac
dir="$r/@IMAGES@"
"""

SCRIPT = (
    r"""
export LC_ALL=C
umask 077
say() { printf '@@hpcjup %s\n' "$*"; }
runtime=$2
fail() { say failed "$1" "$runtime"; exit "${2:-4}"; }  # PHASE [EXIT]
@PACK@
@ROOT@
{ mkdir -p "$dir" && dir=$(cd "$dir" && pwd -P); } 2>&1 || { fail storing 3; }
key=$3 ref=$4 url=${5:-} always=${6:-}
if [ "$runtime" = auto ]; then
    for c in apptainer singularity ch-image; do command -v "$c" >/dev/null 2>&1 && { runtime=$c; break; }; done
    [ "$runtime" != ch-image ] || runtime=charliecloud
fi
ptr="$dir/ref-$key"
RESOLVE=@RESOLVE@
remote= why=
case $ref in *@sha256:*) remote=${ref##*@} ;; esac  # pinned: never asked again
unanswered="$dir/.unanswered-$key"  # the registry's last silence: not asked again for BACKOFF minutes
if [ -n "$url" ]; then
    if [ -z "$always" ] && [ -n "$(find "$unanswered" -mmin -@BACKOFF@ 2>/dev/null)" ]; then
        why="not asked: it did not answer at $(date -r "$unanswered" +%H:%M); asked again after @BACKOFF@ minutes, or by hpcjup env pull"
    elif py=$(command -v python3 2>/dev/null); then
        answer=$("$py" -c "$RESOLVE" "$url" 2>&1) && remote=$answer || why=$(printf '%s' "$answer" | tail -n 1)
        case $remote in sha256:*) rm -f "$unanswered" ;; *) remote=; : >"$unanswered" ;; esac
    else
        why="no python3 on the host to ask it"
    fi
fi
cached() {
    t=$(readlink "$ptr" 2>/dev/null) && [ -e "$dir/$t" ] && [ ! -e "$dir/$t.bad" ] || return 1
    if [ -n "$url" ] && [ -z "$remote" ]; then
        say warn "could not ask the registry whether $ref moved ($why): using the copy cached $(date -r "$dir/$t" '+%Y-%m-%d %H:%M')"
    elif [ -n "$url" ]; then
        had=$(sed -n 's/^remote //p' "$dir/$t.info" 2>/dev/null)
        if [ "$had" != "$remote" ]; then [ -n "${1:-}" ] || say moved "$ref" "${had:--}" "$remote"; return 1; fi
    fi
    touch "$dir/$t.info" 2>/dev/null  # its last use, for pruning
    case $t in *.ch | *.sqfs) runtime=charliecloud ;; esac
    say image cached "$runtime" "$dir/$t"
    exit 0
}
cached
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.lock-$key"
    flock -n 9 || { say phase "waiting for another pull of $ref"; flock 9; }
    cached quiet  # pulled meanwhile by another start
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
        say phase converting
        # ch-convert's directory (its mount points made), packed with the fastest codec this mksquashfs has (envs'
        # images' choice, pack.py): `ch-convert -o squash` packs with gzip at level 9, 5x slower here for the same
        # size. Root-owned, 64 KiB blocks and ch/git.pickle left out, as ch-convert's own SquashFS.
        ch-convert -i ch-image -o dir "$src" "$tmp/tree" 2>&1 || fail converting
        mksquashfs "$tmp/tree" "$tmp/out" -noappend -quiet -no-progress -all-root -b 65536 $(image_codec) \
            -e "$tmp/tree/ch/git.pickle" 2>&1 || fail converting
        sum=$(sha256sum <"$tmp/out") && name="sha256-${sum%% *}.sqfs" || fail converting ;;
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
# The registry's digest is the one asked before the pull: a tag moved during it is found moved by the next start.
if [ -e "$dir/$name.bad" ]; then  # a corrupt copy under this name (a job found its hash wrong): replaced
    mv -f "$tmp/out" "$dir/$name" && rm -f "$dir/$name.bad" || fail storing
fi
[ -e "$dir/$name" ] || mv "$tmp/out" "$dir/$name" || fail storing
printf 'ref %s\nruntime %s\nremote %s\n' "$ref" "$runtime" "$remote" >"$tmp/info" && mv -f "$tmp/info" "$dir/$name.info" || fail storing
ln -s "$name" "$tmp/ptr" && mv -fT "$tmp/ptr" "$ptr" || fail storing
say image pulled "$runtime" "$dir/$name" "$digest"
""".replace("@ROOT@", _ROOT)
    .replace("@IMAGES@", IMAGES)
    .replace("@RESOLVE@", shlex.quote(RESOLVE))
    .replace("@BACKOFF@", str(BACKOFF))
    .replace("@PACK@", PACK)
)

CATALOG = r"""
export LC_ALL=C
umask 077
say() { printf '@@hpcjup %s\n' "$*"; }
fail() { echo "images: $1" >&2; exit "${2:-4}"; }
action=$1; shift
@ROOT@
shift
[ -d "$dir" ] || exit 0  # no image pulled here yet (listing makes nothing)
dir=$(cd "$dir" && pwd -P) || exit 3
field() { v=$(sed -n "s/^$1 //p" "$2" 2>/dev/null | head -n 1); printf '%s' "${v:--}"; }
case $action in
    ls)
        current=" "
        for p in "$dir"/ref-*; do [ -L "$p" ] && current="$current$(readlink "$p") "; done
        for f in "$dir"/sha256-*; do
            case $f in *.info | *.bad) continue ;; esac
            [ -e "$f" ] || continue
            n=${f##*/}
            used=$(stat -c %Y "$f.info" 2>/dev/null || stat -c %Y "$f")
            case $current in *" $n "*) cur=1 ;; *) cur=0 ;; esac
            rt=$(field runtime "$f.info"); [ "$rt" != - ] || case $n in *.ch | *.sqfs) rt=charliecloud ;; esac
            printf '@@image %s %s %s %s %s %s %s %s\n' "$n" "$(du -sk "$f" | cut -f1)" "$(find "$f" | wc -l)" "$used" \
                "$rt" "$(field remote "$f.info")" "$cur" "$(field ref "$f.info")"
        done ;;
    prune)
        days=$1; shift
        for n; do
            case $n in sha256-*) ;; *) continue ;; esac
            case $n in */*|*.info|*.bad) continue ;; esac
            f="$dir/$n"; [ -e "$f" ] || continue
            used="$f.info"; [ -e "$used" ] || used=$f
            # Checked again here: a start since the laptop listed it marked it used.
            [ -n "$(find "$used" -maxdepth 0 -mmin +$((days * 1440)) 2>/dev/null)" ] || continue
            for p in "$dir"/ref-*; do [ "$(readlink "$p" 2>/dev/null)" != "$n" ] || rm -f "$p"; done
            # Renamed first: a start checking at this moment sees it gone, never half removed.
            mv "$f" "$dir/.rm-$n-$$" && rm -rf "$dir/.rm-$n-$$" "$f.info" "$f.bad"
            say removed "$n"
        done ;;
    *) fail "unknown action $action" 2 ;;
esac
""".replace("@ROOT@", _ROOT).replace("@IMAGES@", IMAGES)

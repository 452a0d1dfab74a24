"""The POSIX sh that checks and builds environments on the login node (one remote command each).

`sh -c SCRIPT hpcjup-env ACTION ARGS...`, actions:

- `probe ROOT PREFIX DIGEST PYTHON [UVVERSION stage [INDEX [URL]]]` (with `stage`, stdin is a tar of the spec): finds the
  Python (`3.12` or a command), names the environment (hash of digest, Python X.Y, machine, libc),
  says whether it is built (and marks it used; `repack`: built, its image marked bad), and stages the spec for a build. Lines:
  `@@hpcjup python VERSION MACHINE LIBC PATH`, `@@hpcjup root ABSROOT`, `@@hpcjup home HOME`, `@@hpcjup env NAME built|missing`,
  `@@hpcjup stage DIR`, `@@hpcjup uv PATH host|SHA256` or `@@hpcjup uv none`, and for a build INDEX `auto`:
  `@@hpcjup index online|offline URL` (a HEAD request to the index through the user's proxy settings, at most
  REACH_TIMEOUT seconds; URL: a conda spec's first channel, else pip's index; `offline`: the laptop fetches the
  packages), and for a conda spec `@@hpcjup conda TOOL|rattler|none KERNEL` (hpcjup.envs.conda). The check of a start that rides in another
  command is this action with an empty stdin.
- `build ROOT NAME STAGE PYTHONPATH UV [EXTRA [SOLVER]]` (stdin kept open by the laptop: its end, when the laptop
  goes away or is interrupted, stops the build): one builder per name (a mkdir lock; a dead
  builder's lock on this host is taken over, another host's after LOCK_STALE seconds), builds into
  ROOT/.tmp-NAME-PID, runs postBuild, writes the lock, renames to ROOT/NAME. Failure or a signal
  leaves nothing but ROOT/NAME.failed.log. Progress: `@@hpcjup phase P`, the tools' own lines,
  then `@@hpcjup done PATH built|reused` or `@@hpcjup failed PHASE`. A built env is packed into ROOT/NAME.sqsh
  (envs/pack.py: phase `packing`, then `@@hpcjup image ...`); a reused one whose image is missing or marked bad too. EXTRA: packages every build of this
  env adds when the spec lacks them (`ipykernel` for a user's env: it becomes a kernel). A stage holding
  `.wheels/` (uploaded by the laptop for an offline host) installs from there only: `--no-index`, its
  lock. SOLVER (a conda spec: hpcjup.envs.conda_solve's text) builds environment.yml with conda_build
  (hpcjup.envs.conda). A failed build says `@@hpcjup space DIR KB FILES AVAILKB FREEINODES` (what it had written, what the
  file system has left: the laptop's words for a full disk or quota) before its `failed` line.
- `ls ROOT`: `@@hpcjup current NAME` (what server-current points at), then one line per built environment:
  `@@env NAME KB FILES USED` then its metadata JSON line, then `@@beside NAME [sqsh] [bad] [log] [notree]`: its files beside
  it, and `notree` where its tree was dropped (envs/pack.py).
- `rm ROOT NAME...`: removes environments (and their logs) not being built right now.
- `prune ROOT DAYS NAME...`: removes those of NAME... still unused for DAYS days (a start since the
  laptop's listing keeps its env), never the one `server-current` points at; `@@hpcjup removed NAME`.
"""

from __future__ import annotations

from hpcjup.envs import conda, listing
from hpcjup.envs.pack import PACK

# Marker written last inside a built env: its metadata. Its presence is what "built" means.
MARKER = ".hpcjup-env.json"
USED = ".hpcjup-used"
LOCK_STALE = 3600
REACH_TIMEOUT = 3  # seconds the probe waits for the package index before calling the host offline

SCRIPT = (
    r"""
export LC_ALL=C
umask 077
action=$1; shift
say() { printf '@@hpcjup %s\n' "$*"; }
@PACK@
absroot() {  # a root like $PROJECT/envs or ~/x, expanded without eval, made and printed absolute
    r=$1
    case $r in
        '~'/*) r="$HOME/${r#'~/'}" ;;
        '$'*) v=${r#'$'}; v=${v%%/*}; rest=${r#'$'"$v"}; val=$(printenv "$v") || { echo "no \$$v here" >&2; return 1; }; r="$val$rest" ;;
        /*) ;;
        *) r="$HOME/$r" ;;
    esac
    mkdir -p "$r" && cd "$r" && pwd -P
}

find_python() {  # $1: 3.12 (a version: python3.12, else python3 of that version) or a command
    case $1 in
        [0-9]*.[0-9]*)
            for c in "python$1" python3; do
                p=$(command -v "$c") || continue
                v=$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
                [ "$v" = "$1" ] && { echo "$p"; return 0; }
            done
            return 1 ;;
        *) command -v "$1" ;;
    esac
}

INFO='import sys, platform, hashlib
v = "%d.%d" % sys.version_info[:2]
m = platform.machine() or "unknown"
lib, lv = platform.libc_ver()
c = (lib + lv) or "unknown"
n = hashlib.sha256(("%s\n%s\n%s\n%s" % (sys.argv[1], v, m, c)).encode()).hexdigest()[:16]
print(v, m, c, sys.argv[2] + "-" + n)'

REACH='import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=@REACH_TIMEOUT@)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)'

probe() {
    root=$(absroot "$1") || exit 3
    prefix=$2 digest=$3 request=$4 uvversion=$5 staging=$6 index=${7:-} indexurl=${8:-}
    say root "$root"
    say home "$HOME"
    py=$(find_python "$request") || { say python none "$request"; exit 0; }
    info=$("$py" -c "$INFO" "$digest" "$prefix") || { say python none "$request"; exit 0; }
    set -- $info
    say python "$1" "$2" "$3" "$py"
    name=$4
    if [ -f "$root/$name/.hpcjup-env.json" ]; then
        : >"$root/$name/.hpcjup-used"
        # No image yet (built before hpcjup packed them, a pack killed) or a job found it corrupt: a build packs
        # it again, the env itself stays. Its tree dropped too: built again from its lock. Its tree dropped and
        # wanted (env_mode direct): the build unpacks it from the image.
        # A bad image this host can no longer pack again goes: the env is used in place.
        if broken "$root/$name"; then say env "$name" rebuild
        elif needs_image "$root/$name"; then say env "$name" repack
        elif needs_tree "$root/$name"; then say env "$name" restore
        else
            [ ! -e "$root/$name.sqsh.bad" ] || rm -f "$root/$name.sqsh" "$root/$name.sqsh.bad"
            say env "$name" built; exit 0
        fi
    else
        say env "$name" missing
    fi
    [ "$staging" = stage ] || exit 0
    stage="$root/.stage-$name-$$"
    mkdir -p "$stage" && (cd "$stage" && tar -xf - 2>/dev/null) || { rm -rf "$stage"; stage=; }
    [ -n "$stage" ] && [ -n "$(ls -A "$stage")" ] && say stage "$stage" || { [ -n "$stage" ] && rm -rf "$stage"; }
    # The host's own uv first; else the one hpcjup brought (the laptop checks its sha256).
    if uv=$(command -v uv 2>/dev/null) && "$uv" --version >/dev/null 2>&1; then
        say uv "$uv" host
    elif [ -n "$uvversion" ] && [ -x "$HOME/.hpcjup/bin/uv-$uvversion" ]; then
        uv="$HOME/.hpcjup/bin/uv-$uvversion"
        say uv "$uv" "$(sha256sum <"$uv" 2>/dev/null | cut -d' ' -f1)"
    else
        say uv none
    fi
    # Only a build asks (a start whose env is built pays nothing); any HTTP answer means reachable.
    url=${indexurl:-${UV_DEFAULT_INDEX:-${UV_INDEX_URL:-${PIP_INDEX_URL:-https://pypi.org/simple/}}}}
    case $index in
        auto) if "$py" -c "$REACH" "$url" 2>/dev/null; then say index online "$url"; else say index offline "$url"; fi ;;
        offline) say index offline "$url" ;;  # the `offline` setting: nothing asked
    esac
    [ -z "$stage" ] || [ ! -f "$stage/environment.yml" ] || conda_probe "$1"  # a conda spec (hpcjup.envs.conda)
}

take_lock() {  # one builder per name; a second waits, then finds the env built (or builds it)
    said=
    while ! mkdir "$lock" 2>/dev/null; do
        owner=$(cat "$lock/owner" 2>/dev/null)
        set -- $owner
        # A builder killed outright (kill -9, a rebooted login node) leaves its lock: on this host a dead
        # pid shows it; from another login node only the lock's age can. Its half-built directory goes too.
        if { [ -n "$owner" ] && [ "$1" = "$(uname -n)" ] && ! kill -0 "$2" 2>/dev/null; } ||
            [ -n "$(find "$lock" -maxdepth 0 -mmin +$((STALE / 60)) 2>/dev/null)" ]; then
            say stale-lock "$owner"
            dead=$(cat "$lock/stage" 2>/dev/null)
            case $dead in "$root/.stage-$name-"*) rm -rf "$dead" ;; esac
            rm -rf "$lock" "$root/.tmp-$name-$2" "$root/.tmp-$name-$2".*
            continue
        fi
        [ -n "$said" ] || { say phase waiting "$owner"; said=1; }
        sleep 1
    done
    echo "$(uname -n) $$" >"$lock/owner"
    printf '%s' "$stage" >"$lock/stage"
}

sweep() {  # what killed builders of other specs left on this host (their dead pid shows it), and old stages
    for other in "$root"/.lock-*; do
        [ -d "$other" ] && [ "$other" != "$lock" ] || continue
        set -- $(cat "$other/owner" 2>/dev/null)
        [ "$#" -ge 2 ] && [ "$1" = "$(uname -n)" ] && ! kill -0 "$2" 2>/dev/null || continue
        n=${other#"$root/.lock-"}
        dead=$(cat "$other/stage" 2>/dev/null)
        case $dead in "$root/.stage-$n-"*) rm -rf "$dead" ;; esac
        rm -rf "$other" "$root/.tmp-$n-$2" "$root/.tmp-$n-$2".*
    done
    # A stage whose build never started (the laptop went away after the probe): gone after a day.
    # A build job's directory (script and output) the laptop never came back to remove: likewise; and a tree a
    # killed build was removing (drop_tree, remove).
    find "$root" -maxdepth 1 \( -name '.stage-*' -o -name '.job-*' -o -name '.rm-*' \) -mmin +1440 -exec rm -rf {} + 2>/dev/null
}

cleanup() {
    [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
    [ -n "$tmp" ] && rm -rf "$tmp"
    [ -n "$work" ] && rm -rf "$work.rc" "$work.req" "$work.offline" "$work.sqsh" "$work.kept"
    [ -n "$relock" ] && rm -f "$relock"
    [ -n "$stage" ] && rm -rf "$stage"
    [ -n "$locked" ] && rm -rf "$lock"
}

fail() {  # $1: the phase (or "interrupted"), $2: the exit code; the tools' words stay in NAME.failed.log
    trap '' INT TERM HUP
    # What the build had written when it stopped, and what the file system has left: the laptop tells a
    # full disk or quota (the tools' words; the log itself may not have been written) with these figures.
    if [ -n "$tmp" ] && [ -d "$tmp" ]; then kb=$(du -sk "$tmp" 2>/dev/null | cut -f1) files=$(find "$tmp" 2>/dev/null | wc -l); fi
    avail=$(df -Pk "$root" 2>/dev/null | awk 'NR==2 {print $4}') inodes=$(df -Pi "$root" 2>/dev/null | awk 'NR==2 {print $4}')
    say space "$root" "${kb:-0}" "${files:-0}" "${avail:-?}" "${inodes:-?}"
    [ -n "$log" ] && [ -f "$log" ] && mv -f "$log" "$root/$name.failed.log"
    cleanup
    say failed "$1" "$root/$name.failed.log"
    exit "${2:-1}"
}

step() {  # run a command, its output to the laptop and to the log; its exit code
    { "$@" </dev/null; echo $? >"$work.rc"; } 2>&1 | tee -a "$log"
    rc=$(cat "$work.rc" 2>/dev/null || echo 1)
    return "$rc"
}

install_pip() {  # the spec's packages into $tmp with uv (or pip, when there is no uv)
    cd "$stage" || return 1
    if [ -d .wheels ]; then  # an offline host: the laptop's lock, from the wheels it uploaded, nothing else
        if [ -n "$uv" ]; then
            step "$uv" pip sync --python "$tmp/bin/python" --offline --no-index --find-links .wheels .wheels/hpcjup.lock
        else
            step "$tmp/bin/python" -m pip install --no-index --find-links .wheels --no-deps --require-hashes -r .wheels/hpcjup.lock
        fi || return 1
        # Kept for write_lock; the wheels go now (the spec's copy in the env holds no wheels).
        mv .wheels/hpcjup.lock "$work.offline" && rm -rf .wheels
        return
    fi
    if [ -n "$uv" ]; then
        p="--python $tmp/bin/python"
        # An env whose tree was dropped and whose image went bad: exactly what it was (its lock), not a new resolution.
        if [ -n "$relock" ]; then step "$uv" pip sync $p "$relock" && add_extra; return; fi
        if [ -f hpcjup.lock ]; then step "$uv" pip sync $p hpcjup.lock && add_extra; return; fi
        if [ -f uv.lock ]; then
            step "$uv" export --frozen --no-emit-project --format requirements-txt -o "$work.req" || return 1
            step "$uv" pip sync $p "$work.req" && add_extra; return
        fi
        if [ -f pylock.toml ]; then step "$uv" pip sync $p pylock.toml && add_extra; return; fi
        # EXTRA in the same resolution as the spec: nothing else changes.
        [ ! -f requirements.txt ] || step "$uv" pip install $p -r requirements.txt $extra || return 1
        [ ! -f pyproject.toml ] || step "$uv" pip install $p -r pyproject.toml $extra
    else
        pip="$tmp/bin/python -m pip"
        if [ -f hpcjup.lock ]; then step $pip install --no-deps --require-hashes -r hpcjup.lock && add_extra; return; fi
        [ ! -f requirements.txt ] || step $pip install -r requirements.txt $extra
    fi
}

add_extra() {  # after a lock: EXTRA's packages it lacks (a lock hpcjup wrote has them already)
    for x in $extra; do
        if [ -n "$uv" ]; then
            "$uv" pip show -q --python "$tmp/bin/python" "$x" >/dev/null 2>&1 || step "$uv" pip install --python "$tmp/bin/python" "$x" || return 1
        else
            "$tmp/bin/python" -m pip show -q "$x" >/dev/null 2>&1 || step "$tmp/bin/python" -m pip install "$x" || return 1
        fi
    done
}

write_lock() {  # the exact result: versions and hashes (uv), else versions (pip)
    if [ -n "$solver" ]; then conda_lock; return; fi  # a conda spec (hpcjup.envs.conda)
    if [ -f "$work.offline" ]; then  # installed from exactly the laptop's lock (hashes checked): it is the result
        mv -f "$work.offline" "$tmp/.hpcjup-lock.txt"
    elif [ -n "$uv" ]; then
        # The hashes come from the index pages the install just cached (--offline: no second round of
        # requests); online only if the cache lacks some, and versions alone if even that fails.
        set -- pip compile -q --no-header --no-annotate --generate-hashes --python "$tmp/bin/python" -o "$tmp/.hpcjup-lock.txt"
        "$uv" pip freeze --python "$tmp/bin/python" >"$work.req" 2>>"$log" &&
        { "$uv" "$@" --offline "$work.req" >>"$log" 2>&1 || "$uv" "$@" "$work.req" >>"$log" 2>&1 ||
          cp "$work.req" "$tmp/.hpcjup-lock.txt"; }
    else
        "$tmp/bin/python" -m pip freeze >"$tmp/.hpcjup-lock.txt" 2>>"$log"
    fi
}

build() {
    root=$(absroot "$1") || exit 3
    name=$2 stage=$3 py=$4 uv=$5 extra=${6:-} solver=${7:-} conda_tool= plat=
    STALE=${HPCJUP_LOCK_STALE:-3600}
    final="$root/$name" lock="$root/.lock-$name" tmp= work= log= locked= watchdog= relock=
    trap '' PIPE
    trap 'fail interrupted 130' INT TERM HUP
    # The laptop keeps our stdin open; its end (Ctrl-C, a lost connection) stops the whole build. In a build
    # job (HPCJUP_ENV_JOB) stdin is nothing: the laptop's end cancels the job instead (envs/buildjob.py).
    if [ -z "${HPCJUP_ENV_JOB:-}" ]; then
        exec 3<&0
        ( cat <&3 >/dev/null 2>&1; kill -TERM 0 2>/dev/null ) &
        watchdog=$!
        exec 3<&-
    fi
    # Where it runs, for the laptop and the log: a job's node (the job contract's HPCJUP_NODE), else this host.
    say host "${HPCJUP_NODE:-$(uname -n)}"
    take_lock; locked=1
    sweep
    # A dropped tree wanted back (env_mode direct) whose image is not the one built: that image is bad.
    if [ -f "$final/.hpcjup-env.json" ] && needs_tree "$final" && ! restore_tree "$root" "$name"; then
        : >"$final.sqsh.bad"
    fi
    if [ -f "$final/.hpcjup-env.json" ] && ! broken "$final"; then
        : >"$final/.hpcjup-used"
        if needs_image "$final"; then work="$root/.tmp-$name-$$" log="$root/.tmp-$name-$$.log"; : >"$log"; pack_image "$root" "$name"; rm -f "$log"; fi
        cleanup; say done "$final" reused; exit 0
    fi
    if [ -f "$final/.hpcjup-env.json" ]; then  # its tree dropped, its image bad or gone: built again, as its lock says
        relock="$root/.tmp-$name-$$.relock"
        cp "$final/.hpcjup-lock.txt" "$relock" 2>/dev/null || relock=
        say rebuild "$final.sqsh${relock:+ from its lock}"
        rm -f "$final.sqsh" "$final.sqsh.bad"
    fi
    rm -rf "$final"  # an in-place build a killed builder left (pip: no marker, never used)
    started=$(date +%s)
    export UV_CACHE_DIR="${UV_CACHE_DIR:-$root/.uv-cache}" UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 NO_COLOR=1
    # The login node's certificate store is the one its site keeps (a site CA, a TLS-inspecting proxy):
    # uv's built-in roots would refuse those. Both names: UV_NATIVE_TLS for older uv on the host.
    export UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}" UV_NATIVE_TLS="${UV_NATIVE_TLS:-1}"
    if [ -n "$uv" ] && [ -z "$solver" ]; then
        tmp="$root/.tmp-$name-$$"
    else
        tmp=$final  # venv + pip and conda write absolute paths: built in place, the marker (last) says it is complete
    fi
    work="$root/.tmp-$name-$$"
    log="$work.log"
    : >"$log"
    echo "hpcjup: building $name on ${HPCJUP_NODE:-$(uname -n)}${HPCJUP_JOB_ID:+ in job $HPCJUP_JOB_ID}" >>"$log"
    if [ -n "$solver" ]; then  # a conda spec: SOLVER is hpcjup.envs.conda_solve's text
        conda_build || fail resolving
    else
        say phase creating
        if [ -n "$uv" ]; then
            step "$uv" venv -q --relocatable --python "$py" "$tmp" || fail creating
        else
            step "$py" -m venv "$tmp" || fail creating
        fi
        say phase resolving
        install_pip || fail resolving
    fi
    if [ -f "$stage/postBuild" ]; then
        say phase postBuild
        chmod +x "$stage/postBuild"
        (cd "$stage" && export PATH="$tmp/bin:$PATH" VIRTUAL_ENV="$tmp" && step ./postBuild) || fail postBuild
    fi
    say phase locking
    write_lock || fail locking
    mkdir -p "$tmp/.hpcjup-spec" && cp -R "$stage/." "$tmp/.hpcjup-spec/" || fail locking
    mpy=$py  # the metadata's python is the env's: a conda env's own, else the one it was made from
    [ -z "$solver" ] || [ ! -x "$tmp/bin/python" ] || mpy="$tmp/bin/python"
    "$mpy" - "$stage/spec.json" "$tmp/.hpcjup-env.json" "$name" "$started" "${conda_tool:-${uv:-pip}}" <<'EOF' || fail locking
import json, sys, time, platform
meta = json.load(open(sys.argv[1]))
lib, lv = platform.libc_ver()
meta.update(name=sys.argv[3], python="%d.%d.%d" % sys.version_info[:3], machine=platform.machine(),
            libc=(lib + lv) or "unknown", built_at=int(time.time()), seconds=int(time.time()) - int(sys.argv[4]),
            tool=sys.argv[5] if sys.argv[5] in ("pip", "micromamba", "mamba", "conda", "rattler") else "uv")
with open(sys.argv[2], "w") as f:
    json.dump(meta, f, sort_keys=True)
EOF
    : >"$tmp/.hpcjup-used"
    if [ "$tmp" != "$final" ]; then mv "$tmp" "$final" || fail locking; fi
    tmp=
    rm -f "$final.sqsh" "$final.sqsh.bad"  # an image of an env that was removed and is built anew: not this one
    pack_image "$root" "$name"
    drop_tree "$root" "$name"  # only here, once: an env built earlier may be in use in place
    mv -f "$log" "$root/$name.log"
    rm -f "$root/$name.failed.log"
    cleanup
    say done "$final" built
}

@LISTING@
@CONDA@
case $action in
    probe) probe "$@" ;;
    prune) prune "$@" ;;
    build) build "$@" ;;
    ls) list "$@" ;;
    rm) remove "$@" ;;
    *) echo "unknown action $action" >&2; exit 2 ;;
esac
""".replace("@REACH_TIMEOUT@", str(REACH_TIMEOUT))
    .replace("@CONDA@", conda.SH)
    .replace("@LISTING@", listing.SH)
    .replace("@PACK@", PACK)
)

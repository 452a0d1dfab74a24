"""Conda specs (environment.yml): built with the host's micromamba, mamba or conda, else with py-rattler.

The build action of hpcjup.envs.script calls `conda_build` (below, POSIX sh, part of that script) for a
spec of kind "conda". It takes the host's first conda tool: `micromamba`, `mamba`, `conda` (each with
its own create command, `conda_create`), and where the host has none, the solver hpcjup brings:
py-rattler (the conda solver and installer pixi is built on), installed once by uv into a tool venv
`~/.hpcjup/tools/rattler-VERSION-pyX.Y` (made beside, renamed into place: reused by every build after),
running hpcjup.envs.conda_solve, which is shipped as text on the build's command line. Either way:

- the env is built in its final place (a conda prefix is not relocatable: its files hold their own
  path), and the marker written last is what says it is built, as for the pip route without uv;
- `ipykernel` is added to the same solve when the file lacks it (each env becomes a kernel);
- a `pip:` section is installed afterwards into the prefix, with uv (rattler route) or by the tool;
- the lock is conda's explicit format written from the prefix's conda-meta records, whichever tool
  installed it (`hpcjup env lock` writes it beside the spec as conda-PLATFORM.lock); a spec directory
  holding the lock for the host's platform installs exactly that;
- a host that reaches no channel (the build's probe: `conda_probe` names its tool and kernel) installs the
  laptop's upload, `.conda-offline/` in the stage (hpcjup.envs.conda_offline): local channels and their lock,
  the pip section's wheels, py-rattler's wheel when the host has no tool; nothing else is fetched.
"""

from __future__ import annotations

from pathlib import Path

from hpcjup.envs import conda_solve

#: The py-rattler hpcjup installs on a host without a conda tool (a new version: a new tool venv).
RATTLER_VERSION = "0.28.0"
#: `uname -m` -> conda's platform (subdir) name.
PLATFORMS = {"x86_64": "linux-64", "aarch64": "linux-aarch64", "arm64": "linux-aarch64", "ppc64le": "linux-ppc64le"}
TOOLS = ("micromamba", "mamba", "conda")  # the host's own, in the order they are tried


def solver_text() -> str:
    """conda_solve.py's source: the build's sh runs it with `python -c`."""
    return Path(conda_solve.__file__).read_text()


def lock_file_name(lock: bytes) -> str:
    """`conda-linux-64.lock` for a lock whose `# platform:` line says linux-64 (conda-lock's name for it)."""
    for line in lock.decode(errors="replace").splitlines():
        if line.startswith("# platform:"):
            return f"conda-{line.split(':', 1)[1].strip()}.lock"
    return "conda-explicit.lock"


def package_count(lock: bytes) -> int:
    """How many packages a conda lock holds (its URL lines and its pip pins)."""
    urls, _, pip = conda_solve.read_lock(lock.decode(errors="replace"))
    return len(urls) + len(pip)


def is_lock_name(name: str) -> bool:
    """Whether a spec directory's file is a conda lock hpcjup reads (conda-PLATFORM.lock)."""
    return name.startswith("conda-") and name.endswith(".lock") and "/" not in name


_PLATFORM_CASES = " ;; ".join(f"{machine}) echo {platform}" for machine, platform in PLATFORMS.items())

SH = r"""
conda_platform() {  # conda's name for this host's platform
    case $(uname -m) in
        @PLATFORMS@ ;;
        *) echo "hpcjup knows no conda platform for $(uname -m)" >&2; return 1 ;;
    esac
}

conda_tool_find() {  # the host's first conda tool ($MAMBA_EXE/$CONDA_EXE: set where one is activated)
    for t in "${MAMBA_EXE:-}" micromamba mamba "${CONDA_EXE:-}" conda; do
        [ -n "$t" ] || continue
        c=$(command -v "$t" 2>/dev/null) && [ -f "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
    done
    return 1
}

conda_create() {  # $1 the tool, $2 the prefix, $3 an environment file (*.yml) or an explicit lock
    t=$1 p=$2 f=$3 kind=explicit base=${1##*/}
    case $f in *.yml|*.yaml) kind=env ;; esac
    if [ "$base" = mamba ]; then  # mamba 2 is micromamba's command line; mamba 1 is conda's
        case $("$t" --version 2>/dev/null | head -n 1) in 'mamba 1.'*|'mamba 0.'*|1.*|0.*) base=conda ;; *) base=micromamba ;; esac
    fi
    case $base:$kind in
        micromamba:*) step "$t" create -y -p "$p" -f "$f" ;;
        *:env) step "$t" env create -p "$p" -f "$f" ;;
        *) step "$t" create -y -p "$p" --file "$f" ;;
    esac
}

conda_note() { echo "$*" | tee -a "$log"; }

rattler_python() {  # sets $toolpy: the tool venv's Python with py-rattler, installed once per version and Python
    xy=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || return 1
    case $xy in [0-2].*|3.[0-9])
        conda_note "The conda solver hpcjup brings (py-rattler) needs Python 3.10 or newer; $py is $xy. Set \`python\` to a newer one, or install micromamba on the host."
        return 1 ;;
    esac
    tools="$HOME/.hpcjup/tools" dir="$HOME/.hpcjup/tools/rattler-@RATTLER@-py$xy"
    toolpy="$dir/bin/python"
    [ -f "$dir/.complete" ] && return 0
    say phase "installing the conda solver (py-rattler @RATTLER@)"
    mkdir -p "$tools" || return 1
    find "$tools" -maxdepth 1 -name 'rattler-*.part-*' -mmin +60 -exec rm -rf {} + 2>/dev/null
    part="$dir.part-$$"
    # An offline host: from the wheel the laptop uploaded beside the packages, nothing else.
    local_=; [ ! -d "$stage/.conda-offline/tool" ] || local_="--no-index --find-links $stage/.conda-offline/tool"
    if [ -n "$uv" ]; then
        step "$uv" venv -q --python "$py" "$part" &&
            step "$uv" pip install -q --python "$part/bin/python" ${local_:+--offline} $local_ "py-rattler==@RATTLER@"
    else
        step "$py" -m venv "$part" && step "$part/bin/python" -m pip install -q $local_ "py-rattler==@RATTLER@"
    fi || { rm -rf "$part"; return 1; }
    : >"$part/.complete"
    mv -T "$part" "$dir" 2>/dev/null || rm -rf "$part"  # another build was first: its copy is the same
}

conda_probe() {  # for a build's probe: the host's conda tool (or hpcjup's rattler for Python $1, or none), its kernel
    if t=$(conda_tool_find); then w=${t##*/}; elif [ -f "$HOME/.hpcjup/tools/rattler-@RATTLER@-py$1/.complete" ]; then w=rattler; else w=none; fi
    say conda "$w" "$(uname -r)"
}

conda_build() {  # conda_install, then the laptop's upload (an offline host) goes: the env's spec copy holds none
    off=; [ ! -d "$stage/.conda-offline" ] || off="$stage/.conda-offline"
    conda_install; rc=$?
    [ -z "$off" ] || rm -rf "$off"
    return "$rc"
}

conda_install() {  # the stage's environment.yml (or its lock for this platform, or the laptop's upload) into $tmp
    plat=$(conda_platform) || return 1
    cache="$root/.conda-pkgs" lockf=
    [ ! -f "$stage/conda-$plat.lock" ] || lockf="$stage/conda-$plat.lock"
    : >"$work.req"
    if conda_tool=$(conda_tool_find); then
        say phase "resolving (${conda_tool##*/})"
        if [ -n "$off" ]; then  # the laptop's packages as file:// URLs; then the records say where they came from
            step "$py" -c "$solver" explicit "$off" "$off/local.lock" && conda_create "$conda_tool" "$tmp" "$off/local.lock" &&
                step "$py" -c "$solver" relabel "$tmp" "$off" && cp "$off/pip.txt" "$work.req" || return 1
        elif [ -n "$lockf" ]; then
            conda_create "$conda_tool" "$tmp" "$lockf" && step "$py" -c "$solver" pins "$lockf" "$work.req" || return 1
        else
            aug="$stage/.hpcjup-environment.yml"
            step "$py" -c "$solver" augment "$stage/environment.yml" "$aug" $extra || return 1
            conda_create "$conda_tool" "$tmp" "$aug"; rc=$?
            rm -f "$aug"
            [ "$rc" = 0 ] || return 1
        fi
        conda_tool=${conda_tool##*/}
    else
        conda_tool=rattler
        rattler_python || return 1
        say phase "resolving (rattler)"
        if [ -n "$off" ]; then
            step "$toolpy" -c "$solver" offline "$off" "$tmp" "$plat" "$cache" "$work.req" || return 1
        elif [ -n "$lockf" ]; then
            step "$toolpy" -c "$solver" locked "$lockf" "$tmp" "$plat" "$cache" "$work.req" || return 1
        else
            step "$toolpy" -c "$solver" solve "$stage/environment.yml" "$tmp" "$plat" "$cache" "$work.req" $extra || return 1
        fi
    fi
    [ -s "$work.req" ] || return 0
    # The pip section (or the lock's pip pins, exact: no dependencies of their own) into the conda prefix.
    say phase "installing the pip section"
    nodeps=; [ -z "$lockf" ] || nodeps=--no-deps
    if [ -n "$off" ] && [ -d "$off/wheels" ]; then  # the laptop's lock of the pip section, from its wheels only
        # Without what conda installed already (the laptop resolved the section alone): as an online install.
        step "$py" -c "$solver" pipfilter "$off/wheels/hpcjup.lock" "$tmp" "$work.req" || return 1
        [ -s "$work.req" ] || return 0
        if [ -n "$uv" ]; then
            step "$uv" pip install --python "$tmp/bin/python" --offline --no-index --find-links "$off/wheels" --no-deps -r "$work.req"
        else
            step "$tmp/bin/python" -m pip install --no-index --find-links "$off/wheels" --no-deps -r "$work.req"
        fi
        return
    fi
    if [ -n "$uv" ]; then
        step "$uv" pip install --python "$tmp/bin/python" $nodeps -r "$work.req"
    else
        step "$tmp/bin/python" -m pip install $nodeps -r "$work.req"
    fi
}

conda_lock() {  # the lock of the built prefix: its conda-meta records, and what pip installed beside them
    if [ -n "$uv" ]; then
        "$uv" pip freeze --python "$tmp/bin/python" >"$work.req" 2>>"$log" || : >"$work.req"
    else
        "$tmp/bin/python" -m pip freeze >"$work.req" 2>>"$log" || : >"$work.req"
    fi
    step "$py" -c "$solver" lock "$tmp" "$plat" "$work.req" "$tmp/.hpcjup-lock.txt"
}
""".replace("@PLATFORMS@", _PLATFORM_CASES).replace("@RATTLER@", RATTLER_VERSION)

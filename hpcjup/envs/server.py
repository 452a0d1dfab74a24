"""The server environment JupyterLab runs from: a built-in spec, built like a user's, shared by every session.

Its top-level packages are pinned here, so every host builds the same server until hpcjup moves
the pins; `hpcjup env upgrade-server` builds the newest releases instead (a new environment, named
by the day's date among its files) and points ROOT/server-current at it. Users' environments are
kernels beside it: nothing they install reaches the server, and an upgrade leaves them alone.
"""

from __future__ import annotations

import time

from hpcjup.envs.spec import EnvSpec

SOURCE = "hpcjup's server environment"
POINTER = "server-current"  # under the env root: a symlink to the server env sessions use

# Resolved on PyPI for Python 3.11 when these pins were set; jupyter_server >= 2.20 is required
# (a token-stealing XSS was fixed there; it also reports the real port for port=0).
PINNED = b"""jupyterlab==4.6.6
jupyter_server==2.21.1
jupyter-server-proxy==4.6.0
dask-labextension==7.0.0
ipykernel==7.4.0
"""
NEWEST = b"""jupyterlab>=4.6
jupyter_server>=2.20
jupyter-server-proxy>=4.6
dask-labextension>=7.0
ipykernel>=7.4
"""


def server_spec() -> EnvSpec:
    """The pinned server spec."""
    return EnvSpec("pip", SOURCE, {"requirements.txt": PINNED})


def upgraded_spec(today: str | None = None) -> EnvSpec:
    """The newest releases of the server's packages (another name each day it is asked for)."""
    day = today or time.strftime("%Y-%m-%d")
    return EnvSpec("pip", f"{SOURCE} (upgraded {day})", {"requirements.txt": NEWEST, "upgraded": day.encode()})


def point_argv(root_abs: str, name: str) -> list[str]:
    """Make ROOT/server-current name `name` (a new symlink renamed over the old: sessions never see none)."""
    swap = 'cd "$1" && ln -sfn "$2" ".$3.new" && mv -Tf ".$3.new" "$3"'
    return ["sh", "-c", swap, "sh", root_abs, name, POINTER]

"""What an environment is called and where it lives: content-addressed under the env root.

The name is `PREFIX-HASH`, HASH the first 16 hex digits of sha256 over the spec's digest (its
files' bytes, kind and asked Python), the Python's X.Y, the host's machine (`uname -m`) and its
libc: the same spec on another Python or platform is another environment, and an edited spec a
new one (a running session keeps the old). The login node computes it (script.INFO) from the
Python it found; `env_name` is the same rule here, for `--local` and the tests.
"""

from __future__ import annotations

import hashlib
import os

#: The default env root, relative to the host's home ($HPCJUP_ENV_ROOT or --root override it;
#: `$VAR/...` is expanded on the host, so a site preset may say `$PROJECT/.hpcjup/envs`).
DEFAULT_ROOT = ".hpcjup/envs"
USER_PREFIX = "env"
SERVER_PREFIX = "server"


def env_root(given: str | None = None) -> str:
    """The env root a command uses: --root, else $HPCJUP_ENV_ROOT, else ~/.hpcjup/envs on the host."""
    return given or os.environ.get("HPCJUP_ENV_ROOT") or DEFAULT_ROOT


def env_name(prefix: str, digest: str, python: str, machine: str, libc: str) -> str:
    """The environment's directory name for a spec digest on a Python X.Y, machine and libc."""
    key = f"{digest}\n{python}\n{machine}\n{libc or 'unknown'}"
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

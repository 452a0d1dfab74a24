"""A cluster user whose login node reaches no package index, for tests of offline environment builds.

Secured centres' login nodes often reach no index. The stand-in: a dead proxy (127.0.0.1:9, nothing
listens there) in the user's login environment, in ~/.bashrc and ~/.profile, which non-interactive
ssh commands read; uv, pip and Python's urllib all use those variables. This machine's pip also
reads /etc/pip.conf, which names local wheel directories: PIP_CONFIG_FILE=/dev/null for this user
too, or pip would still find some packages. The user is the same kind of account as the cluster
user (files.ensure_user), with the harness key authorized; each laptop reaches it as Host
`minicluster-offline` (add_to_laptop).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.cluster import files

USER = "hpcoffline"
ALIAS = "minicluster-offline"
DEAD_PROXY = "http://127.0.0.1:9"
BEGIN = "# >>> hpcjup-offline >>>"
END = "# <<< hpcjup-offline <<<"


def block() -> str:
    """The shell lines that cut the user off from every index."""
    names = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
    lines = "".join(f"export {name}={DEAD_PROXY}\n" for name in names)
    return f"{BEGIN}\n{lines}export PIP_CONFIG_FILE=/dev/null\nunset no_proxy NO_PROXY\n{END}\n"


def ensure_offline_user(conf: Path, public_key: str) -> str:
    """The offline user (made once), its start-up files cutting it off, the harness key authorized; its name."""
    home = files.ensure_user(USER, conf)
    entry = pwd.getpwnam(USER)
    for name in (".profile", ".bashrc"):
        path = home / name
        text = path.read_text()
        if BEGIN in text:
            head, rest = text.split(BEGIN, 1)
            text = head + rest.split(END, 1)[1].lstrip("\n")
        # Right after the cluster's block at the top: Debian's .bashrc returns early for non-interactive shells.
        head, _, rest = text.partition(files.BLOCK_END + "\n")
        path.write_text(head + files.BLOCK_END + "\n" + block() + rest)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    files.authorize_key(USER, public_key)
    return USER


def add_to_laptop(home: Path, ssh_port: int) -> None:
    """Give a laptop (made with the mini-cluster's ~/.ssh) the Host alias `minicluster-offline`."""
    files.add_laptop_host(home, ALIAS, ssh_port, USER)

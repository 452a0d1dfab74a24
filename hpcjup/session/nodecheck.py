"""`hpcjup doctor --node`: the env root (and hpcjup's server environment in it) read back from a compute node.

A home or $PROJECT that the login node mounts and the compute nodes do not (or mount without exec) passes every
login-side check and fails only when the session's job starts. This check submits one short job through the
scheduler adapter (envs/buildjob.py's submit and follower: rendered by the adapter's template, its output
streamed, cancelled if the laptop gives up) that looks at the env root as the login node names it: whether it is
there and readable, and whether the server environment's Python runs there.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from hpcjup.errors import HpcjupError
from hpcjup.schedulers.checks import Check, Status

if TYPE_CHECKING:
    from hpcjup.config.profiles import Resolved
    from hpcjup.schedulers.base import Scheduler
    from hpcjup.transport.base import Transport

WAIT = 120.0  # seconds the check waits for its job (queue and run) before it gives up and cancels it
_MARK = "hpcjup-node "
# $1: the env root's absolute path on the login node. Runs on the compute node (POSIX sh).
NODE = r"""
r=$1
say() { printf 'hpcjup-node %s\n' "$*"; }
say host "${HPCJUP_NODE:-$(uname -n)}"
if [ ! -d "$r" ]; then say root missing "$r"
elif ! ls "$r" >/dev/null 2>&1; then say root unreadable "$r"
else
    say root ok "$r"
    s=$(readlink "$r/server-current" 2>/dev/null)
    [ -n "$s" ] || s=$(ls -t "$r" 2>/dev/null | grep '^server-' | while read -r n; do [ -f "$r/$n/.hpcjup-env.json" ] && { echo "$n"; break; }; done)
    if [ -z "$s" ]; then say server none
    elif out=$("$r/$s/bin/python" -c 'import jupyterlab, sys; print(sys.version.split()[0])' 2>&1); then say server ok "$s"
    else say server fail "$s" "$(printf '%s' "$out" | tail -n 1)"
    fi
fi
printf '@@hpcjup done checked\n'
"""


class _Lines:
    """The job's lines as they come (hpcjup.envs.build's Progress)."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}

    def phase(self, name: str) -> None:
        pass

    def line(self, text: str) -> None:
        if text.startswith(_MARK):
            key, _, rest = text[len(_MARK) :].partition(" ")
            self.found[key] = rest.split(" ")


def check_node(transport: Transport, scheduler: Scheduler, resolved: Resolved, root: str) -> Check:
    """Submit the short job and judge what it saw of `root` (absolute, as the login node has it)."""
    from hpcjup.envs import buildjob
    from hpcjup.envs.build import stream

    fix = (
        "Put env_root on a file system the compute nodes mount too (e.g. $PROJECT/.hpcjup/envs or your home), "
        "and check it with `hpcjup doctor --node` again."
    )
    where = buildjob.place(scheduler, resolved.resources())
    directory = f"{transport.home()}/.hpcjup/.doctor-{secrets.token_hex(4)}"
    try:  # the submission makes the directory (and ~/.hpcjup if need be): one remote command
        job_id = buildjob.submit(transport, where, directory, "doctor", ["sh", "-c", NODE, "sh", root])
    except HpcjupError as exc:
        return Check("env-root-node", Status.WARN, f"not checked: the job was refused: {exc.message}", fix=exc.hint)
    seen = _Lines()
    watch = buildjob.JobWatch(transport, scheduler, job_id, seen)
    deadline = time.monotonic() + WAIT

    def tick() -> str | None:
        if time.monotonic() > deadline:
            return f"its job {job_id} did not run within {WAIT:.0f} s (cancelled)"
        return watch()

    try:
        stream(transport, buildjob.follow_argv(directory, "", scheduler, job_id), seen, tick=tick)
    except HpcjupError as exc:
        return Check(
            "env-root-node", Status.WARN, f"not checked: {exc.message}", fix="Run it again when the queue is shorter."
        )
    return judge(seen.found, root, job_id, fix)


def judge(found: dict[str, list[str]], root: str, job_id: str, fix: str) -> Check:
    """The check from what the job said (its `hpcjup-node` lines, by their first word)."""
    node = (found.get("host") or ["a compute node"])[0]
    on = f"on {node} (job {job_id})"
    state = (found.get("root") or ["?"])[0]
    if state != "ok":
        what = {"missing": "not there", "unreadable": "not readable"}.get(
            state, "not seen (the job said nothing of it)"
        )
        return Check("env-root-node", Status.FAIL, f"{root} is {what} {on}: compute nodes do not see it", fix=fix)
    server = [*(found.get("server") or ["none"]), "?"]
    if server[0] == "none":
        return Check("env-root-node", Status.PASS, f"{root} is visible {on} (no server environment built yet)")
    if server[0] != "ok":
        said = " ".join(server[2:-1])
        return Check(
            "env-root-node",
            Status.FAIL,
            f"{root} is visible {on}, but the server environment {server[1]}'s Python does not run there: {said}",
            fix=fix + " A file system mounted noexec on compute nodes cannot hold environments.",
        )
    return Check("env-root-node", Status.PASS, f"{root} is visible {on}, and {server[1]}'s Python runs there")

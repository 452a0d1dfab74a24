"""A second cluster user on the same nodes, for tests of what a node neighbour can reach of a session.

The neighbour holds no file of the session: it sees what any user of a shared compute node sees
(the listening sockets in /proc/net/tcp, every path under /tmp) and tries them with the cluster
environment's Python (pyzmq for ZeroMQ, urllib for HTTP). Its probes run as that user through
`runuser`, so the kernel's permission checks are the real ones. It also preempts: its job in the
high-tier partition (`urgent_job`) takes the nodes from every job of the preemptible one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.cluster import files

USER = "hpcneighbour"
PYTHON = "/opt/hpcjup-cluster-env/bin/python"


def ensure_neighbour(conf: Path) -> str:
    """The neighbour's account (made once, like the cluster user's); its name."""
    files.ensure_user(USER, conf)
    return USER


def run_as_neighbour(
    cmd: list[str], timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `cmd` as the neighbour in its home, with a plain environment (nothing of the session's)."""
    home = pwd.getpwnam(USER).pw_dir
    env = {"HOME": home, "USER": USER, "LOGNAME": USER, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}
    argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", USER, "--", *cmd]
    return subprocess.run(argv, env=env, cwd=home, input=stdin, capture_output=True, text=True, timeout=timeout)


def listening_ports(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state held by one of `pids` (read as root, from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # the process ended meanwhile
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].rsplit(":", 1)
                found.append((_address(address), int(port, 16)))
    return sorted(set(found))


def _address(hexed: str) -> str:
    if len(hexed) == 8:  # IPv4, little-endian
        return ".".join(str(int(hexed[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "::"  # IPv6: the probe connects to ::1 (any IPv6 listener there is the session's)


def process_tree(root: int) -> set[int]:
    """`root` and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = {root}, [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.update(kids)
        todo += kids
    return found


def environ_pids(marker: str) -> set[int]:
    """Processes whose environment contains `marker` (e.g. the session's directory): the session's, wherever they were reparented."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.add(int(entry))
            except OSError:
                continue
    return found


# What the neighbour runs: subscribe to every port with ZeroMQ (no key needed to read a PUB socket)
# and ask each for Dask's JSON and dashboard over HTTP; print what it got as one JSON document.
PROBE = r"""
import json, sys, time, urllib.request
import zmq
ports, seconds = json.loads(sys.argv[1]), float(sys.argv[2])
ctx = zmq.Context()
subs = []
for host, port in ports:
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://{'[::1]' if host == '::' else host}:{port}")
    subs.append(s)
poller = zmq.Poller()
for s in subs:
    poller.register(s, zmq.POLLIN)
got = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    for s, _ in poller.poll(200):
        got.append(b"".join(s.recv_multipart()).decode(errors="replace"))
http = {}
for host, port in ports:
    for path in ("/json/identity.json", "/status", "/info/main/workers.html", "/metrics"):
        url = f"http://{'[::1]' if host == '::' else host}:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                http[url] = [r.status, r.read(2000).decode(errors="replace")]
        except Exception as exc:
            http[url] = [getattr(exc, "code", None), ""]
print(json.dumps({"zmq": got, "http": http}))
"""


def probe(ports: list[tuple[str, int]], seconds: float) -> dict:
    """What the neighbour reads from these ports in `seconds`: {"zmq": [messages], "http": {url: [status, body]}}."""
    result = run_as_neighbour([PYTHON, "-c", PROBE, json.dumps(ports), str(seconds)], timeout=seconds + 120)
    if result.returncode != 0:
        raise AssertionError(f"the neighbour's probe failed: {result.stderr}")
    return json.loads(result.stdout)


@contextlib.contextmanager
def urgent_job(conf: Path, seconds: int = 600) -> Iterator[str]:
    """The neighbour's exclusive two-node job in the high-tier partition, for the block: it preempts every job of the
    preemptible partition (SIGTERM, GraceTime, requeue) and is cancelled at the end. Yields its job id."""
    from tests.cluster.files import URGENT

    ensure_neighbour(conf)
    env = ["env", f"SLURM_CONF={conf}"]
    submit = [*env, "sbatch", "--parsable", "-p", URGENT, "-N2", "--exclusive", "-t", "10", "-o", "/dev/null"]
    done = run_as_neighbour([*submit, "--wrap", f"sleep {seconds}"])
    if done.returncode != 0:
        raise AssertionError(f"the neighbour's urgent job was refused: {done.stderr}")
    job = done.stdout.strip().split(";")[0]
    try:
        yield job
    finally:
        run_as_neighbour([*env, "scancel", job])

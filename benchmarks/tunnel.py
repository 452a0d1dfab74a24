"""Tunnel throughput and round trip: `ssh -L` vs hpcjup's Tunnel over the OpenSSH and paramiko backends.

    python benchmarks/tunnel.py [--size MIB] [--rounds N] [--pings N] [--streams] [--only WORDS]

Needs the mini-cluster (root on Debian; see tests/cluster). A server on the "compute node"
(127.0.0.2) sends or swallows bulk data and echoes small messages; each path forwards a local
port to it through the mini-cluster's sshd. The measuring client and the server run as separate
processes, like a browser and Jupyter, so only the forwarding shares the benchmark's process.
Prints figures and ratios against `ssh -L`; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

NODE = "127.0.0.2"
CHUNK = 1 << 20


# -- the server on the node and the measuring client (each a subprocess of this script) ------------


def serve() -> None:
    """Per connection: b"D"+size: send size bytes; b"U": read to EOF, reply the count; b"E": echo."""
    srv = socket.create_server((NODE, 0), backlog=128)
    print(srv.getsockname()[1], flush=True)

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = conn.recv(1)
            if mode == b"D":
                left = struct.unpack(">Q", _recv_exact(conn, 8))[0]
                block = b"\0" * CHUNK
                while left > 0:
                    conn.sendall(block[: min(left, CHUNK)])
                    left -= min(left, CHUNK)
            elif mode == b"U":
                total = 0
                while data := conn.recv(CHUNK):
                    total += len(data)
                conn.sendall(struct.pack(">Q", total))
            elif mode == b"E":
                while data := conn.recv(65536):
                    conn.sendall(data)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed early")
        data += chunk
    return bytes(data)


def client(port: int, size: int, pings: int) -> None:
    """Measure download and upload (MB/s) and the median round trip of a 64-byte message (µs); print JSON."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        started = time.perf_counter()
        s.sendall(b"D" + struct.pack(">Q", size))
        got = 0
        while got < size:
            chunk = s.recv(CHUNK)
            if not chunk:
                raise EOFError(f"download ended after {got} of {size} bytes")
            got += len(chunk)
        down = size / (time.perf_counter() - started) / 1e6
    with socket.create_connection(("127.0.0.1", port)) as s:
        block = b"\0" * CHUNK
        started = time.perf_counter()
        s.sendall(b"U")
        for _ in range(size // CHUNK):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        assert struct.unpack(">Q", _recv_exact(s, 8))[0] == size // CHUNK * CHUNK
        up = size / (time.perf_counter() - started) / 1e6
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"E")
        message, times = b"m" * 64, []
        for i in range(pings + 50):
            t0 = time.perf_counter()
            s.sendall(message)
            _recv_exact(s, len(message))
            if i >= 50:  # the first ones warm up the path
                times.append(time.perf_counter() - t0)
    print(json.dumps({"down": down, "up": up, "rtt_us": statistics.median(times) * 1e6}), flush=True)


# -- the three forwarding paths ------------------------------------------------------------------


def _wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def ssh_l(home: Path, port: int) -> Iterator[int]:
    """A plain `ssh -L` with the laptop's ssh config: the reference."""
    local = _free_port()
    ssh = home / ".ssh"
    argv = [
        "ssh",
        "-F",
        str(ssh / "config"),
        "-o",
        f"UserKnownHostsFile={ssh / 'known_hosts'}",
        "-o",
        "ExitOnForwardFailure=yes",
        "-N",
        "-L",
        f"127.0.0.1:{local}:{NODE}:{port}",
        "minicluster",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        _wait_listening(local)
        yield local
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def hpcjup_tunnel(backend: str, port: int, handoff: bool = True) -> Iterator[int]:
    """hpcjup's Tunnel over one backend's transport, in this process, built as hpcjup builds it:
    the browser's socket handed to the OpenSSH master, streams with paramiko (or with handoff=False)."""
    from hpcjup.transport import connect
    from hpcjup.tunnel import Tunnel

    transport = connect("minicluster", backend=backend)
    try:
        with Tunnel(
            lambda: transport.open_stream(NODE, port),
            handoff=(lambda c: transport.forward_socket(c, NODE, port)) if handoff else None,
        ) as tunnel:
            yield tunnel.local_port
    finally:
        if backend == "openssh":
            transport.terminate()  # type: ignore[attr-defined]
        transport.close()


def measure(local_port: int, size: int, pings: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", str(local_port), "--size", str(size), "--pings", str(pings)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="MiB per bulk transfer (default 512)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per path, interleaved; medians are shown (default 3)"
    )
    parser.add_argument("--pings", type=int, default=2000, help="small-message round trips per round (default 2000)")
    parser.add_argument(
        "--streams",
        action="store_true",
        help="also measure the OpenSSH backend with streams copied in Python (no handoff)",
    )
    parser.add_argument(
        "--only", help="comma-separated words: measure only the paths whose names contain one (ssh -L always runs)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.client:
        return client(args.client, args.size, args.pings)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.cluster.fixtures import make_laptop_env
    from tests.cluster.minicluster import MiniCluster

    cluster = MiniCluster()
    cluster.up()
    home = Path(tempfile.mkdtemp(prefix="hpcjup-bench-"))
    os.environ.update(make_laptop_env(cluster, home / "laptop"))
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        paths: dict[str, Callable[[], object]] = {
            "ssh -L": lambda: ssh_l(home / "laptop", port),
            "hpcjup/openssh": lambda: hpcjup_tunnel("openssh", port),
            "hpcjup/paramiko": lambda: hpcjup_tunnel("paramiko", port),
        }
        if args.streams:
            paths["hpcjup/openssh streams"] = lambda: hpcjup_tunnel("openssh", port, handoff=False)
        if args.only:
            paths = {
                name: path
                for name, path in paths.items()
                if name == "ssh -L" or any(word in name for word in args.only.split(","))
            }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        size = args.size * CHUNK
        for r in range(args.rounds):
            for name, path in paths.items():
                with path() as local:  # type: ignore[attr-defined]
                    results[name].append(measure(local, size, args.pings))
                print(f"round {r + 1}/{args.rounds} {name}: {results[name][-1]}", file=sys.stderr)
        report(results, args)
    finally:
        server.kill()


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Medians of the figures; ratios are the medians of each round's ratio (the machine's load drifts between rounds)."""
    keys = ("down", "up", "rtt_us")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in results.items()}
    ref = results["ssh -L"]
    ratio = {
        name: {k: statistics.median(r[k] / ref[i][k] for i, r in enumerate(rs)) for k in keys}
        for name, rs in results.items()
    }
    print(
        f"\nTunnel benchmark: {args.size} MiB each way, {args.pings} round trips of 64 bytes, median of {args.rounds} rounds"
    )
    print(
        f"{'path':<23} {'download MB/s':>14} {'upload MB/s':>12} {'round trip µs':>14}   {'ratios vs ssh -L (down, up, rtt)':>30}"
    )
    for name, m in med.items():
        r = ratio[name]
        ratios = f"{r['down']:.2f}x, {r['up']:.2f}x, {r['rtt_us']:.2f}x"
        print(f"{name:<23} {m['down']:>14.0f} {m['up']:>12.0f} {m['rtt_us']:>14.0f}   {ratios:>30}")
    print("targets: throughput OpenSSH >= 0.9x, paramiko >= 0.5x; round trip median <= 1.5x")


if __name__ == "__main__":
    main()

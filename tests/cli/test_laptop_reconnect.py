"""A reconnect goes where this laptop's `attach` went, not to the destination as the starting laptop spelt it.

Laptop A starts the session as `minicluster`; laptop B knows the same cluster only as `viaproxy` (through a
TCP proxy it can cut). B attaches, the proxy drops B's connection, and B's holder must come back through
B's own destination: session.json says `minicluster`, which B's ~/.ssh/config does not know.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import http_get, run, wait_for
from tests.cluster import files
from tests.cluster.delay import DelayProxy
from tests.cluster.fixtures import laptop_environ, make_laptop_home
from tests.cluster.minicluster import USER

pytestmark = [pytest.mark.cluster, pytest.mark.transport]


def point(home: Path, cluster: Any, alias: str, port: int) -> None:
    """`alias` in laptop `home`'s ~/.ssh goes to 127.0.0.1:port, whose host key is the cluster's."""
    key_line = cluster.host_key_line().replace(f"]:{cluster.ssh_port} ", f"]:{port} ")
    files.write_laptop_ssh(home, alias, port, USER, cluster.key_path, key_line)


def test_a_reconnect_uses_this_laptops_destination(
    minicluster: Any, laptop_env: dict[str, str], tmp_path: Path
) -> None:
    name = f"roam-{uuid.uuid4().hex[:6]}"
    started = run(["start", "--host", "minicluster", "-d", "--json", "--no-dask", "--name", name], laptop_env)
    assert started.returncode == 0, started.stderr
    assert run(["disconnect", name], laptop_env).returncode == 0
    other_home = make_laptop_home(tmp_path / "laptop-b")
    other = {**laptop_environ(other_home), "HPCJUP_SSH": laptop_env.get("HPCJUP_SSH", "")}
    other = {k: v for k, v in other.items() if v}
    try:
        with DelayProxy(minicluster.ssh_port, rtt_ms=0) as proxy:
            point(other_home, minicluster, "viaproxy", proxy.port)
            attached = run(["attach", name, "--host", "viaproxy", "-d", "--json"], other)
            assert attached.returncode == 0, attached.stderr
            info = json.loads(attached.stdout)
            assert http_get(f"http://127.0.0.1:{info['local_port']}/api/status", info["token"])[0] == 200
            # From now on `viaproxy` reaches the cluster directly; the proxy goes, and the holder's connection with it.
            point(other_home, minicluster, "viaproxy", minicluster.ssh_port)
        url = f"http://127.0.0.1:{info['local_port']}/api/status"
        logs = Path(other["XDG_STATE_HOME"], "hpcjup", "logs")

        def said() -> str:
            return "".join(p.read_text() for p in logs.glob(f"*/{name}.log"))

        wait_for(lambda: "Reconnected to viaproxy" in said(), 60, "the holder to reconnect through viaproxy")
        assert http_get(url, info["token"])[0] == 200
        assert "minicluster" not in said()
        # This laptop's own tools find the tunnel under the destination it used.
        held = run(["url", name, "--host", "viaproxy", "--json"], other)
        assert held.returncode == 0 and json.loads(held.stdout)["local_port"] == info["local_port"], held.stderr
    finally:
        run(["disconnect", name], other)
        run(["stop", name, "--host", "minicluster"], laptop_env)

"""Extra sshds next to the mini-cluster's: a bastion (ProxyJump host) and the compute nodes' sshd here,
a 2FA login node in twofactor.py.

Each extra sshd has its own directory under the cluster root (host key, config, pid, log), listens
on a free port of its loopback addresses, and lets the cluster user in with the cluster's client
key. Needs root, like the mini-cluster itself.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.cluster import procs
from tests.cluster.minicluster import MiniCluster


class ExtraSshd:
    """One more sshd on 127.0.0.1 for the cluster user; subclasses say what is special about it."""

    name = "extra"
    program = "/usr/sbin/sshd"
    log_level = "VERBOSE"
    addresses: tuple[str, ...] = ("127.0.0.1",)

    def __init__(self, cluster: MiniCluster) -> None:
        self.cluster = cluster
        self.root = cluster.root / self.name
        self.port = 0

    def extra_config(self) -> str:
        """Lines added to the sshd_config."""
        return "UsePAM no\nKbdInteractiveAuthentication no\n"

    def sshd_config(self) -> str:
        """The whole sshd_config: key logins, forwarding and sftp, like the cluster's sshd."""
        return (
            f"Port {self.port}\n{self._listen_lines()}HostKey {self.root}/ssh_host_ed25519_key\nPidFile {self.root}/sshd.pid\n"
            "PermitRootLogin no\nPubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\nPasswordAuthentication no\n"
            "AllowTcpForwarding yes\nX11Forwarding no\nPrintMotd no\nSubsystem sftp internal-sftp\n"
            f"SetEnv SLURM_CONF={self.cluster.conf}\nLogLevel {self.log_level}\nMaxSessions 100\nMaxStartups 100\n"
            + self.extra_config()
        )

    def _listen_lines(self) -> str:
        return "".join(f"ListenAddress {address}\n" for address in self.addresses)

    @property
    def log_path(self) -> Path:
        return self.root / "sshd.log"

    def log(self) -> str:
        """Everything this sshd logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def host_key_line(self) -> str:
        """The known_hosts line for this sshd."""
        kind, key = (self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}"

    def start(self) -> ExtraSshd:
        """Start on a free port (stopping an earlier one of this name first)."""
        self.stop()
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.root / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-host", "-f", str(key)], check=True
            )
        self.port = procs.free_port()
        (self.root / "sshd_config").write_text(self.sshd_config())
        self.log_path.write_text("")
        os.chmod(self.log_path, 0o600)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        argv = [self.program, "-f", str(self.root / "sshd_config"), "-E", str(self.log_path)]
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
        for address in self.addresses:
            procs.wait_until(
                lambda a=address: procs.ssh_banner(self.port, a), 15, f"{self.name} sshd on {address}:{self.port}"
            )
        return self

    def stop(self) -> None:
        """Stop this sshd and every connection it serves."""
        pid = procs.pid_from_file(self.root / "sshd.pid", "sshd")
        if pid is not None:
            procs.stop([pid, *(p for p in procs.descendants(pid) if "sshd" in procs.cmdline(p))])

    def laptop_entry(self, alias: str, key: Path, port: int | None = None, extra: str = "") -> str:
        """A `Host` block of a laptop's ~/.ssh/config for this sshd (or another port)."""
        return (
            f"\nHost {alias}\n    HostName 127.0.0.1\n    Port {port or self.port}\n    User {self.cluster.user}\n"
            f"    IdentityFile {key}\n    IdentitiesOnly yes\n{extra}"
        )

    def add_to_laptop(self, home: Path, alias: str, extra: str = "", port: int | None = None) -> None:
        """Append a Host block to the laptop's ~/.ssh/config and this sshd's key to its known_hosts."""
        ssh = Path(home) / ".ssh"
        with (ssh / "config").open("a") as fh:
            fh.write(self.laptop_entry(alias, ssh / "id_minicluster", port, extra))
        with (ssh / "known_hosts").open("a") as fh:
            fh.write(self.host_key_line() + "\n")


class Bastion(ExtraSshd):
    """A jump host: logs forwarded connections (debug level), so a test can see the hop was used."""

    name = "bastion"
    log_level = "DEBUG1"  # "server_request_direct_tcpip: originator ..., target HOST port PORT"

    def add_to_laptop(self, home: Path, alias: str = "bastion", extra: str = "", port: int | None = None) -> None:
        """`Host bastion`, and `Host minicluster-via-bastion` (the cluster's sshd with ProxyJump bastion)."""
        super().add_to_laptop(home, alias, extra, port)
        ssh = Path(home) / ".ssh"
        with (ssh / "config").open("a") as fh:
            fh.write(
                self.laptop_entry(
                    "minicluster-via-bastion", ssh / "id_minicluster", self.cluster.ssh_port, f"    ProxyJump {alias}\n"
                )
            )

    def forwards_to(self, port: int) -> int:
        """How many direct-tcpip forwards to 127.0.0.1:port the bastion opened."""
        return self.log().count(f"target 127.0.0.1 port {port}")

    def logins(self) -> int:
        """How many logins the bastion accepted."""
        return self.log().count("Accepted publickey")


class NodeSshd(ExtraSshd):
    """An sshd on the compute nodes' addresses (node1 127.0.0.2, node2 127.0.0.3), as centres that allow
    SSH to a node running your job have; the laptop reaches it through the login node (socket mode)."""

    name = "nodes"
    log_level = "DEBUG1"  # "server_request_direct_streamlocal: originator ..., path PATH"

    def __init__(self, cluster: MiniCluster) -> None:
        super().__init__(cluster)
        self.addresses = tuple(addr for addr, _ in cluster.nodes.values())

    def extra_config(self) -> str:
        return super().extra_config() + "AllowStreamLocalForwarding yes\n"

    def add_to_laptop(self, home: Path, alias: str = "", extra: str = "", port: int | None = None) -> None:
        """A `Host node1 node2` block with only the port (user and key come from the login node) and the host key."""
        names = " ".join(self.cluster.nodes)
        ssh = Path(home) / ".ssh"
        with (ssh / "config").open("a") as fh:
            fh.write(f"\nHost {names}\n    Port {self.port}\n{extra}")
        kind, key = (self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        with (ssh / "known_hosts").open("a") as fh:
            fh.write(",".join(f"[{name}]:{self.port}" for name in self.cluster.nodes) + f" {kind} {key}\n")

    def logins(self) -> int:
        """How many logins the nodes' sshd accepted."""
        return self.log().count("Accepted publickey")

    def socket_forwards(self, path: str) -> int:
        """How many streamlocal forwards to `path` it opened."""
        return self.log().count(f"server_request_direct_streamlocal: originator  port 0, target {path}\n")

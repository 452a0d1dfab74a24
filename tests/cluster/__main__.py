"""`python -m tests.cluster up|down [--purge]|status`: the mini-cluster by hand, for demos and debugging."""

from __future__ import annotations

import shlex
import sys

from tests.cluster.fixtures import make_laptop_home
from tests.cluster.minicluster import MiniCluster, missing_requirements

USAGE = "usage: python -m tests.cluster up | down [--purge] | status"


def up(cluster: MiniCluster) -> int:
    """Start (or reuse) the cluster and print how to use it by hand."""
    started = cluster.up()
    home = make_laptop_home(cluster.root / "laptop", cluster)
    took = cluster.state().get("up_seconds")
    print(
        f"{'Started' if started else 'Reusing'} the mini-cluster in {cluster.root}"
        + (f" ({took} s)." if started else ".")
    )
    ssh = [
        "ssh",
        "-F",
        str(home / ".ssh/config"),
        "-o",
        f"UserKnownHostsFile={home / '.ssh/known_hosts'}",
        "minicluster",
    ]
    print(f"  ssh:     {shlex.join(ssh)}")
    print(f"           (or: ssh -i {cluster.key_path} -p {cluster.ssh_port} {cluster.user}@127.0.0.1)")
    print(f"  hpcjup:  HOME={home} hpcjup start --host minicluster --partition booster")
    print(f"  slurm:   SLURM_CONF={cluster.conf} squeue")
    print("  stop:    python -m tests.cluster down")
    return 0


def status(cluster: MiniCluster) -> int:
    """Print nodes, jobs and the ssh port; 1 if the cluster is not up and healthy."""
    problems = cluster.problems()
    if problems:
        print(f"The mini-cluster in {cluster.root} is not healthy: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print(f"root:  {cluster.root}\nsshd:  127.0.0.1:{cluster.ssh_port} (user {cluster.user}, key {cluster.key_path})")
    print(f"slurm: SLURM_CONF={cluster.conf}\n")
    print(cluster.slurm("sinfo").stdout)
    print(cluster.slurm("squeue", "-a").stdout, end="")
    return 0


def main(argv: list[str]) -> int:
    """Dispatch one command; the exit status."""
    if argv not in (["up"], ["status"], ["down"], ["down", "--purge"]):
        print(USAGE, file=sys.stderr)
        return 2
    reason = missing_requirements()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    cluster = MiniCluster()
    try:
        if argv[0] == "up":
            return up(cluster)
        if argv[0] == "status":
            return status(cluster)
        cluster.down(purge=argv[1:] == ["--purge"])
        print(f"The mini-cluster is down{' and ' + str(cluster.root) + ' removed' if argv[1:] else ''}.")
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Bring the mini-cluster up or down by hand, for a demo: `python -m tests.cluster up|down|status`."""

from __future__ import annotations

import sys

from tests.cluster.minicluster import MiniCluster


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    cluster = MiniCluster()
    try:
        if command == "up":
            started = cluster.up()
            print(("Started" if started else "Reusing") + f" the mini-cluster in {cluster.root}.")
            print(f"  ssh:    ssh -i {cluster.key_path} -p {cluster.ssh_port} -o StrictHostKeyChecking=accept-new {cluster.user}@127.0.0.1")
            print("  hpcjup: cluster.write_laptop_ssh(HOME) writes an ssh config with the alias 'minicluster', then")
            print("          hpcjup start --host minicluster --partition booster")
            print(f"  slurm:  SLURM_CONF={cluster.conf} squeue")
        elif command == "down":
            cluster.down()
            print("The mini-cluster is down.")
        elif command == "status":
            if not cluster.healthy():
                print("The mini-cluster is not running.")
                return 1
            print(cluster.slurm("sinfo").stdout + cluster.slurm("squeue").stdout + f"sshd on 127.0.0.1:{cluster.ssh_port}")
        else:
            print(f"usage: python -m tests.cluster up|down|status (not {command!r})", file=sys.stderr)
            return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

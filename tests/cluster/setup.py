"""The mini-cluster's one-time setup: the user, /etc/hosts, munge, and the config files."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from tests.cluster.minicluster import CLUSTER_ENV, NODES, USER, wait_until

PROFILE_LINES = f'export PATH="{CLUSTER_ENV}/bin:$PATH"\n'


def user_account() -> None:
    """The cluster user: unlocked for key logins, the cluster env first on a login shell's PATH."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
    subprocess.run(["usermod", "-p", "*", USER], check=True)  # useradd leaves it locked; sshd refuses locked accounts
    home = Path(pwd.getpwnam(USER).pw_dir)
    for name in (".profile", ".bashrc"):
        path = home / name
        text = path.read_text() if path.exists() else ""
        if PROFILE_LINES not in text:
            path.write_text(PROFILE_LINES + text)  # first, before .bashrc's "not interactive: return"
            subprocess.run(["chown", f"{USER}:{USER}", str(path)], check=True)


def hosts_file() -> None:
    hosts = Path("/etc/hosts")
    text = hosts.read_text()
    for node, (addr, _) in NODES.items():
        if f" {node}\n" not in text and not text.rstrip().endswith(f" {node}"):
            text = text.rstrip("\n") + f"\n{addr} {node}\n"
    hosts.write_text(text)


def write_configs(root: Path, ssh_port: int) -> None:
    """slurm.conf, sshd_config, host and client keys, the user's authorized_keys."""
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    for sub in ("spool", "state", "log"):
        (root / sub).mkdir(exist_ok=True)
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr={addr} Port={port} CPUs=2 RealMemory=4000 State=UNKNOWN"
        for n, (addr, port) in NODES.items()
    )
    (root / "slurm.conf").write_text(f"""ClusterName=mini
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort=6817
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=15
MinJobAge=300
SchedulerType=sched/backfill
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
{nodes}
PartitionName=batch Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP
PartitionName=booster Nodes=node1,node2 MaxTime=INFINITE State=UP
""")
    for key in ("ssh_host_ed25519_key", "client_ed25519"):
        if not (root / key).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(root / key)], check=True)
    (root / "sshd_config").write_text(f"""Port {ssh_port}
ListenAddress 127.0.0.1
HostKey {root}/ssh_host_ed25519_key
PidFile {root}/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
Subsystem sftp internal-sftp
SetEnv SLURM_CONF={root}/slurm.conf
LogLevel VERBOSE
MaxSessions 100
MaxStartups 100
""")
    home = Path(pwd.getpwnam(USER).pw_dir)
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
    os.chmod(ssh / "authorized_keys", 0o600)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(ssh)], check=True)


def start_munge(root: Path) -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists() or key.stat().st_size < 1024:
        key.write_bytes(os.urandom(1024))
    subprocess.run(["chown", "munge:munge", str(key)], check=True)
    os.chmod(key, 0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(exist_ok=True)
    subprocess.run(["chown", "munge:munge", str(run_dir)], check=True)
    subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True)  # pid file: /run/munge/munged.pid
    wait_until(lambda: _munge_ok(), 15, "munged")


def _munge_ok() -> bool:
    munge = subprocess.run(["munge", "-n"], capture_output=True)
    return munge.returncode == 0 and subprocess.run(["unmunge"], input=munge.stdout, capture_output=True).returncode == 0

"""The mini-cluster's configuration files and one-time system setup (user, /etc/hosts, keys)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

CLUSTER_ENV = Path("/opt/hpcjup-cluster-env")
BLOCK_BEGIN = "# >>> hpcjup-minicluster >>>"
BLOCK_END = "# <<< hpcjup-minicluster <<<"
LEGACY_LINE = f'export PATH="{CLUSTER_ENV}/bin:$PATH"\n'  # what earlier harness versions prepended


def slurm_conf(root: Path, host: str, ctld_port: int, nodes: dict[str, tuple[str, int]]) -> str:
    """slurm.conf for one controller and the given {name: (address, port)} nodes on this machine."""
    node_lines = "".join(
        f"NodeName={name} NodeHostname={host} NodeAddr={addr} Port={port} CPUs=2 RealMemory=4000 State=UNKNOWN\n"
        for name, (addr, port) in nodes.items()
    )
    names = ",".join(nodes)
    return f"""# Written by tests/cluster; rewritten on every cold `up`.
ClusterName=mini
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire={CRED_EXPIRE}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
KillWait=15
MinJobAge=300
InactiveLimit=0
MailProg=/bin/true
SchedulerParameters={SCHEDULER_PARAMETERS}
{PREEMPTION}StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
{node_lines}PartitionName=batch Nodes={names} Default=YES MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=booster Nodes={names} MaxTime=INFINITE State=UP PreemptMode=OFF
{preemption_partitions(names)}"""


# A requeued job may start again only cred_expire seconds later (slurm.conf(5), AuthInfo; 120 by default, at least 5):
# the preemption tests wait through that hold, so the harness shortens it (a credential still outlives any step
# launch on one machine by far: slurmd receives it within a second of its making).
CRED_EXPIRE = 10

# Slurm starts a job whose BeginTime has passed (a requeued one) only at its next scheduling pass: backfill's
# bf_interval (30 s by default) or the main loop's sched_interval (60 s). Measured here: requeue to run again took
# 43-60 s with cred_expire=30 and the defaults (the preemption tests wait for that twice). Every 5 s instead: a small
# site's value; it changes when Slurm looks, not what it decides (backfill still plans the same, test_schedulers).
SCHEDULER_PARAMETERS = "bf_interval=5,sched_interval=10"

# Real preemption (issue 22): jobs in the low-tier partition are requeued (SIGTERM, GraceTime s, then killed and
# requeued) when a job of the high tier needs their nodes; the other partitions are never preempted.
PREEMPTION = "PreemptType=preempt/partition_prio\nPreemptMode=REQUEUE\n"
PREEMPTIBLE, URGENT, GRACE_TIME = "preempt", "urgent", 15


def preemption_partitions(names: str) -> str:
    """The two partitions of the preemption tests, on the same nodes as the others."""
    return (
        f"PartitionName={PREEMPTIBLE} Nodes={names} MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE "
        f"GraceTime={GRACE_TIME}\n"
        f"PartitionName={URGENT} Nodes={names} MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF\n"
    )


def sshd_config(root: Path, port: int) -> str:
    """sshd_config for key-only logins on 127.0.0.1:port, with forwarding and sftp."""
    return f"""# Written by tests/cluster.
Port {port}
ListenAddress 127.0.0.1
HostKey {root}/ssh_host_ed25519_key
PidFile {root}/sshd.pid
UsePAM no
PermitRootLogin no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
SetEnv SLURM_CONF={root}/slurm.conf
LogLevel VERBOSE
MaxSessions 100
MaxStartups 100
"""


def profile_block(conf: Path) -> str:
    """Shell lines that put the cluster env first on PATH and default SLURM_CONF."""
    return (
        f"{BLOCK_BEGIN}\n"
        f'case ":$PATH:" in *":{CLUSTER_ENV}/bin:"*) ;; *) export PATH="{CLUSTER_ENV}/bin:$PATH" ;; esac\n'
        f'export SLURM_CONF="${{SLURM_CONF:-{conf}}}"\n'
        f"{BLOCK_END}\n"
    )


def _with_block(text: str, block: str) -> str:
    """`text` with our block (re)placed at the top and any older version of it removed."""
    if BLOCK_BEGIN in text and BLOCK_END in text:
        head, rest = text.split(BLOCK_BEGIN, 1)
        text = head + rest.split(BLOCK_END, 1)[1].lstrip("\n")
    return block + text.replace(LEGACY_LINE, "")


def ensure_user(user: str, conf: Path) -> Path:
    """The cluster user, unlocked for key logins, its shells set up for the cluster; its home."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
    # useradd leaves the account locked ("!"), and sshd refuses locked accounts even for keys.
    subprocess.run(["usermod", "-p", "*", user], check=True)
    entry = pwd.getpwnam(user)
    home = Path(entry.pw_dir)
    os.chmod(home, home.stat().st_mode & 0o755)  # StrictModes: no group/other write
    # .bashrc too: bash reads it for sshd's non-interactive `bash -c CMD`; the block goes above
    # Debian's "not interactive: return" line.
    for name in (".profile", ".bashrc"):
        path = home / name
        skeleton = Path("/etc/skel", name)
        text = path.read_text() if path.exists() else (skeleton.read_text() if skeleton.exists() else "")
        path.write_text(_with_block(text, profile_block(conf)))
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return home


def shell_startup(shell: str, conf: Path) -> tuple[str, str, str]:
    """(login shell program, start-up file relative to home, its lines putting the cluster env on PATH).

    sshd runs every remote command as `SHELL -c CMD`, and tcsh reads ~/.cshrc, fish its config.fish
    for those too: the cluster environment belongs there, in the shell's own syntax.
    """
    if shell == "tcsh":
        lines = f"setenv PATH {CLUSTER_ENV}/bin:$PATH\nif (! $?SLURM_CONF) setenv SLURM_CONF {conf}\n"
        return "/usr/bin/tcsh", ".cshrc", lines
    if shell == "fish":
        lines = f"set -gx PATH {CLUSTER_ENV}/bin $PATH\nset -q SLURM_CONF; or set -gx SLURM_CONF {conf}\n"
        return "/usr/bin/fish", ".config/fish/config.fish", lines
    raise ValueError(f"no start-up file known for the login shell {shell!r}")


def ensure_shell_user(user: str, shell: str, conf: Path) -> Path:
    """A cluster user whose login shell is `shell` (tcsh, fish), unlocked for key logins, its cluster
    environment in that shell's own start-up file (setenv, set -gx); its home."""
    program, startup, lines = shell_startup(shell, conf)
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", program, user], check=True)
    subprocess.run(["usermod", "-s", program, "-p", "*", user], check=True)
    entry = pwd.getpwnam(user)
    home = Path(entry.pw_dir)
    os.chmod(home, home.stat().st_mode & 0o755)
    path = home / startup
    for directory in reversed(path.relative_to(home).parents[:-1]):
        (home / directory).mkdir(exist_ok=True)
        os.chown(home / directory, entry.pw_uid, entry.pw_gid)
    path.write_text(f"{BLOCK_BEGIN}\n{lines}{BLOCK_END}\n")
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return home


def authorize_key(user: str, public_key: str) -> None:
    """Add `public_key` to the user's authorized_keys (0600 in a 0700 ~/.ssh), keeping others."""
    entry = pwd.getpwnam(user)
    ssh = Path(entry.pw_dir, ".ssh")
    ssh.mkdir(exist_ok=True)
    keys = ssh / "authorized_keys"
    lines = keys.read_text().splitlines() if keys.exists() else []
    if public_key.strip() not in lines:
        lines.append(public_key.strip())
    keys.write_text("\n".join(lines) + "\n")
    for path, mode in ((ssh, 0o700), (keys, 0o600)):
        os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, mode)


def ensure_hosts(nodes: dict[str, tuple[str, int]]) -> None:
    """Make the node names resolve to their loopback addresses via /etc/hosts."""
    hosts = Path("/etc/hosts")
    lines = hosts.read_text().splitlines()
    known = {name for line in lines for name in line.split("#")[0].split()[1:]}
    missing = [f"{addr} {name}" for name, (addr, _) in nodes.items() if name not in known]
    if missing:
        hosts.write_text("\n".join(lines + missing) + "\n")


def ensure_keys(root: Path) -> None:
    """The sshd host key and the client key (no passphrase), generated once per root."""
    for name in ("ssh_host_ed25519_key", "client_ed25519"):
        if not (root / name).exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"minicluster-{name}", "-f", str(root / name)],
                check=True,
            )


def prepare_munge(root: Path) -> Path:
    """This cluster's own munge directory (key, socket, pid, log), owned by munge; its path."""
    munge = root / "munge"
    munge.mkdir(exist_ok=True)
    key = munge / "munge.key"
    if not key.exists() or key.stat().st_size != 1024:
        key.write_bytes(os.urandom(1024))
    entry = pwd.getpwnam("munge")
    for path in [munge, *munge.iterdir()]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(munge, 0o755)  # clients (root and the user) reach the socket through it
    os.chmod(key, 0o400)
    return munge


def make_dirs(root: Path) -> None:
    """The root and its state, spool and log directories."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # the user's commands read slurm.conf; the secrets inside are 0600
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(exist_ok=True)


def write_laptop_ssh(home: Path, alias: str, port: int, user: str, key: Path, host_key_line: str) -> None:
    """A laptop's ~/.ssh: a config entry `alias`, a copy of the key, known_hosts with the host key."""
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh, 0o700)
    identity = ssh / "id_minicluster"
    shutil.copyfile(key, identity)
    os.chmod(identity, 0o600)
    config = ssh / "config"
    config.write_text(host_block(alias, port, user, identity))
    os.chmod(config, 0o600)
    (ssh / "known_hosts").write_text(host_key_line + "\n")


def host_block(alias: str, port: int, user: str, identity: Path) -> str:
    """One `Host` entry of a laptop's ~/.ssh/config for the cluster's sshd."""
    return (
        f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n    User {user}\n"
        f"    IdentityFile {identity}\n    IdentitiesOnly yes\n"
    )


def add_laptop_host(home: Path, alias: str, port: int, user: str) -> None:
    """Another `Host alias` in a laptop's ~/.ssh/config (written by write_laptop_ssh): the same key and
    sshd, logging in as `user`."""
    ssh = home / ".ssh"
    config = ssh / "config"
    config.write_text(config.read_text() + host_block(alias, port, user, ssh / "id_minicluster"))
